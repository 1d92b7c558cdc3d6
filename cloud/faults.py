"""Telling a fault of our own servers (the database, Redis) from a bug.

A fault is answered with 503 + ``Retry-After`` over HTTP (nginx fails over to another process,
clients retry) and with an ``error`` frame ``unavailable`` over a WebSocket that stays open;
a bug is still a logged 500 / ``internal``.
"""

from __future__ import annotations

import asyncio

#: Seconds a client is asked to wait before trying again after a fault.
RETRY_AFTER_S = 5


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database or Redis could not be reached or is overloaded."""
    if isinstance(exc, ConnectionError | TimeoutError | asyncio.TimeoutError | OSError):
        return True
    module = type(exc).__module__
    if module.startswith("redis"):
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        return isinstance(exc, RedisConnectionError | RedisTimeoutError)
    if module.startswith("sqlalchemy"):
        from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
        from sqlalchemy.exc import TimeoutError as PoolTimeoutError

        if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
            return True
        return isinstance(exc, DBAPIError) and (
            exc.connection_invalidated or is_unavailable_cause(exc.orig)
        )
    if module.startswith("asyncpg"):
        import asyncpg

        return isinstance(
            exc,
            asyncpg.PostgresConnectionError
            | asyncpg.InterfaceError
            | asyncpg.CannotConnectNowError
            | asyncpg.TooManyConnectionsError,
        )
    if module.startswith("sqlite3") or module.startswith("aiosqlite"):
        import sqlite3

        return isinstance(exc, sqlite3.OperationalError)
    return False


def is_unavailable_cause(exc: BaseException | None) -> bool:
    """Like :func:`is_unavailable`, following ``__cause__`` chains of wrapped driver errors."""
    seen = 0
    while exc is not None and seen < 8:
        if is_unavailable(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False
