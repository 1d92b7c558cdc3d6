"""How one cloud setting is declared: its variable, parser, default, unit and help, in one place.

``Settings`` in ``cloud/config.py`` declares each of its fields with :func:`setting`; the loader,
``mumu-cloud --help`` and the table in ``docs/settings.md`` are all read from those declarations.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast
from urllib.parse import urlsplit

from limits import parse as parse_rate_limit

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

#: The key under which a field's :class:`Declared` sits in ``dataclasses.Field.metadata``.
METADATA_KEY = "mumu_setting"


class ConfigError(ValueError):
    """One setting is invalid; the message (one line) names it."""


@dataclass(frozen=True)
class Parser(Generic[T_co]):
    """Turns a variable's text into its value, or raises ``ValueError`` saying what was expected
    (one line, without the variable's name: the loader prefixes it)."""

    parse: Callable[[str], T_co]
    #: what the docs say the variable accepts, e.g. ``10..86400``
    accepts: str


@dataclass(frozen=True)
class Declared:
    """A setting's declaration, kept in its field's metadata."""

    env: str
    parser: Parser[Any]
    help: str
    unit: str = ""
    #: for a default computed at load time: a function of the settings loaded before this one
    derive: Callable[[Mapping[str, Any]], Any] | None = None
    #: how the docs describe a default that is not a plain value (a derived one, or None)
    default_doc: str | None = None


def setting(
    env: str,
    parser: Parser[T],
    default: T,
    help: str,
    *,
    unit: str = "",
    default_doc: str | None = None,
) -> T:
    """A field of ``Settings``, read from ``env`` with ``parser`` (unset or empty: ``default``)."""
    declared = Declared(env, parser, help, unit, default_doc=default_doc)
    return field(default=default, metadata={METADATA_KEY: declared})


def derived_setting(
    env: str,
    parser: Parser[T],
    derive: Callable[[Mapping[str, Any]], T],
    help: str,
    *,
    default_doc: str,
) -> T:
    """A field whose default is computed when loading, from the settings declared before it."""
    declared = Declared(env, parser, help, derive=derive, default_doc=default_doc)
    return cast(T, field(metadata={METADATA_KEY: declared}))


# --- parsers ------------------------------------------------------------------------------------


def whole(low: int, high: int) -> Parser[int]:
    """A whole number in ``low..high``."""

    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"expected a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}..{high}")
        return value

    return Parser(parse, f"{low}..{high}")


def whole_as_float(low: int, high: int) -> Parser[float]:
    """A whole number in ``low..high``, kept as a float (durations and rates used as floats)."""
    ints = whole(low, high)
    return Parser(lambda raw: float(ints.parse(raw)), ints.accepts)


def text() -> Parser[str]:
    """Any text (a secret, say)."""
    return Parser(lambda raw: raw, "text")


def rate() -> Parser[str]:
    """A rate in the ``limits`` syntax, e.g. ``10/minute``; kept as text."""

    def parse(raw: str) -> str:
        try:
            parse_rate_limit(raw)
        except ValueError:
            raise ValueError(f"expected a rate like 10/minute, got {raw!r}") from None
        return raw

    return Parser(parse, "a rate, e.g. `10/minute`")


def url_list(*schemes: str) -> Parser[tuple[str, ...]]:
    """Comma-separated URLs, each starting with one of ``schemes`` (e.g. ``turn:``)."""

    def parse(raw: str) -> tuple[str, ...]:
        urls = _items(raw)
        for url in urls:
            if not url.startswith(schemes):
                raise ValueError(f"{url!r} does not start with {' or '.join(schemes)}")
        return urls

    return Parser(parse, "comma-separated " + " or ".join(f"`{s}`" for s in schemes) + " URLs")


def addresses() -> Parser[tuple[str, ...]]:
    """Comma-separated e-mail addresses, lower-cased."""
    return Parser(
        lambda raw: tuple(item.lower() for item in _items(raw)), "comma-separated e-mail addresses"
    )


def networks() -> Parser[tuple[str, ...]]:
    """Comma-separated IP addresses or networks, or ``*``."""

    def parse(raw: str) -> tuple[str, ...]:
        found = _items(raw)
        for each in found:
            if each == "*":
                continue
            try:
                ipaddress.ip_network(each, strict=False)
            except ValueError:
                raise ValueError(f"{each!r} is not an IP address or network") from None
        return found

    return Parser(parse, "comma-separated IP addresses or networks, or `*`")


def sql_database() -> Parser[str]:
    def parse(url: str) -> str:
        scheme = urlsplit(url).scheme
        if scheme == "sqlite":
            if not url.startswith("sqlite:///"):
                raise ValueError(f"expected sqlite:///path, got {url!r}")
            return url
        if scheme in {"postgresql", "postgres"}:
            if not urlsplit(url).hostname and "host=" not in url:
                raise ValueError(f"no host in {url!r}")
            return url
        raise ValueError(f"expected sqlite:///path or postgresql://..., got {url!r}")

    return Parser(parse, "`sqlite:///path` or `postgresql://user@host/db`")


def redis_server() -> Parser[str]:
    def parse(url: str) -> str:
        if urlsplit(url).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(f"expected redis://host:port/db, got {url!r}")
        return url

    return Parser(parse, "`redis://host:port/db`, `rediss://…` or `unix://…`")


def origin() -> Parser[str]:
    """An ``http(s)://host[:port]`` origin, without a trailing slash."""

    def parse(url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(f"expected http(s)://host[:port], got {url!r}")
        return url.rstrip("/")

    return Parser(parse, "`https://host[:port]`")


def smtp_server() -> Parser[str]:
    def parse(url: str) -> str:
        from cloud.mail.transport import SmtpSettings

        SmtpSettings.parse(url)  # its ValueError says what is wrong
        return url

    return Parser(parse, "a URL")


def mail_address() -> Parser[str]:
    def parse(raw: str) -> str:
        if "@" not in raw or "\n" in raw or "\r" in raw:
            raise ValueError(f"expected an address like Name <a@b.org>, got {raw!r}")
        return raw

    return Parser(parse, "`Name <a@b.org>`")


def directory() -> Parser[Path]:
    """A directory (created when needed), ``~`` expanded."""
    return Parser(lambda raw: Path(raw).expanduser(), "a directory")


def directory_holding(entry: str, is_dir: bool, hint: str = "") -> Parser[Path]:
    """An existing directory with ``entry`` in it (a file, or with ``is_dir`` a directory)."""

    def parse(raw: str) -> Path:
        path = Path(raw).expanduser().resolve()
        target = path / entry
        if not (target.is_dir() if is_dir else target.is_file()):
            shown = f"{entry}/" if is_dir else entry
            raise ValueError(f"no {shown} in {path}{f' ({hint})' if hint else ''}")
        return path

    return Parser(parse, f"a directory holding `{entry}{'/' if is_dir else ''}`")


def existing_file() -> Parser[str]:
    def parse(raw: str) -> str:
        if not Path(raw).is_file():
            raise ValueError(f"no such file {raw!r}")
        return raw

    return Parser(parse, "a file")


def file_path() -> Parser[Path]:
    """A file that may not exist yet."""
    return Parser(lambda raw: Path(raw), "a file path")


def _items(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())
