"""Which failures mean "a dependency is down or overloaded" (answered 503 with ``Retry-After``
over HTTP, an ``error`` ``unavailable`` over a WebSocket that stays open) rather than "our code
is wrong" (a 500 / ``internal`` that is logged with its traceback)."""

from __future__ import annotations

from typing import Literal

Dependency = Literal["database", "live_state"]


def failed_dependency(exc: BaseException) -> Dependency | None:
    """``"database"`` or ``"live_state"`` (Redis) if ``exc`` says that one is unreachable, went
    away mid-query, refused a connection, or had no free pooled connection in time."""
    import redis.exceptions
    from limits.errors import StorageError
    from sqlalchemy import exc as sa

    if isinstance(
        exc, sa.OperationalError | sa.InterfaceError | sa.TimeoutError | sa.DisconnectionError
    ):
        return "database"
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return "database"
    if isinstance(exc, sa.DBAPIError) and "CannotConnectNow" in type(exc.orig).__name__:
        return "database"  # asyncpg: the server is starting up or shutting down
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return "live_state"
    if isinstance(exc, StorageError):
        return "live_state"
    if isinstance(exc, OSError | TimeoutError):
        # A connection refused or reset before a driver wrapped it: name the one it came from.
        module = _origin_module(exc)
        if module.startswith("redis"):
            return "live_state"
        if module.startswith(("asyncpg", "sqlalchemy", "aiosqlite")):
            return "database"
    return None


def is_unavailable_cause(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from, is a failed dependency."""
    seen = 0
    while exc is not None and seen < 8:
        if failed_dependency(exc) is not None:
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _origin_module(exc: BaseException) -> str:
    tb = exc.__traceback__
    names = []
    while tb is not None:
        names.append(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    for name in names:
        if name.startswith(("redis", "asyncpg", "sqlalchemy", "aiosqlite")):
            return name
    return ""
