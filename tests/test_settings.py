"""The cloud's settings are declared once (cloud/config.py): the loader, ``mumu-cloud --help``
and the table in docs/settings.md must all agree with the declarations."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cloud.config import CONFIG_FILE, SECTIONS, ConfigError, Settings, declarations, load
from cloud.settings_table import DOC, rewrite

NUMBERED = [
    (each.name, decl.env, int(m[1]), int(m[2]))
    for each, decl in declarations()
    if (m := re.fullmatch(r"(\d+)\.\.(\d+)", decl.parser.accepts))
]


def test_the_docs_table_is_written_from_the_declarations() -> None:
    doc = DOC.read_text()
    assert doc == rewrite(doc), "run: python -m cloud.settings_table"
    for _, decl in declarations():
        assert f"| `{decl.env}` |" in doc, decl.env


def test_every_field_is_declared_once_with_a_variable_and_help() -> None:
    declared = declarations()
    names = [decl.env for _, decl in declared] + [CONFIG_FILE.env]
    assert len(names) == len(set(names)), "two settings share a variable"
    for _, decl in declared:
        assert re.fullmatch(r"MUMU_[A-Z0-9_]+", decl.env), decl.env
        assert decl.help.strip(), f"{decl.env}: no help"
    assert set(SECTIONS) <= {each.name for each, _ in declared}


def test_help_lists_every_setting() -> None:
    from cloud import cli

    text = cli.parser().format_help()
    for _, decl in declarations():
        assert f"  {decl.env} " in text, decl.env
    assert f"  {CONFIG_FILE.env} " in text


@pytest.mark.parametrize(("name", "env", "low", "high"), NUMBERED, ids=[n[1] for n in NUMBERED])
def test_whole_numbers_are_bounded_and_their_defaults_within(
    name: str, env: str, low: int, high: int, tmp_path: Path
) -> None:
    base = {"MUMU_DATA_DIR": str(tmp_path)}
    default = Settings.__dataclass_fields__[name].default
    assert low <= default <= high  # type: ignore[operator]
    assert getattr(load(base), name) == default
    assert getattr(load({**base, env: str(high)}), name) == high
    assert getattr(load({**base, env: ""}), name) == default
    for bad in (str(low - 1), str(high + 1), "soon"):
        with pytest.raises(ConfigError) as refused:
            load({**base, env: bad})
        message = str(refused.value)
        assert message.startswith(f"{env}: ") and "\n" not in message, message


def test_other_settings_are_checked_and_named(tmp_path: Path) -> None:
    base = {"MUMU_DATA_DIR": str(tmp_path)}
    for env, bad in [
        ("MUMU_DATABASE_URL", "sqlite://relative"),
        ("MUMU_REDIS_URL", "http://x"),
        ("MUMU_PUBLIC_URL", "cams.example.org"),
        ("MUMU_TRUSTED_PROXIES", "127.0.0.1,nowhere"),
        ("MUMU_LOGIN_RATE", "lots"),
        ("MUMU_STUN_URLS", "turn:x"),
        ("MUMU_SMTP_URL", "http://x"),
        ("MUMU_SMTP_CA_FILE", str(tmp_path / "none.pem")),
        ("MUMU_MAIL_FROM", "nobody"),
        ("MUMU_WEB_DIR", str(tmp_path)),
        ("MUMU_UPDATE_REPO_DIR", str(tmp_path)),
    ]:
        with pytest.raises(ConfigError) as refused:
            load({**base, env: bad})
        message = str(refused.value)
        assert message.startswith(f"{env}: ") and "\n" not in message, message
    loaded = load(
        {
            **base,
            "MUMU_PUBLIC_URL": "https://cams.example.org/",
            "MUMU_OPERATORS": " Ops@Example.org ,b@example.org",
            "MUMU_TRUSTED_PROXIES": "127.0.0.1, 10.0.0.0/8",
            "MUMU_SESSION_TTL": "30",
        }
    )
    assert loaded.public_url == "https://cams.example.org"
    assert loaded.operators == ("ops@example.org", "b@example.org")
    assert loaded.trusted_proxies == ("127.0.0.1", "10.0.0.0/8")
    assert loaded.session_ttl_s == 30.0 and isinstance(loaded.session_ttl_s, float)
    assert loaded.database_url == f"sqlite:///{tmp_path / 'mumu.db'}"


UNITS = {"": 1, "s": 1, "/s": 1, "min": 60, "h": 3600, "days": 86400, "KiB": 1024, "MiB": 1 << 20}


@pytest.mark.parametrize("page", ["README.md", "docs/security.md", "docs/updates.md"])
def test_defaults_quoted_elsewhere_in_the_docs_are_the_declared_ones(page: str) -> None:
    """Prose quotes defaults as `MUMU_X` (900 s), (30 days), (10/minute per account)…"""
    text = (DOC.parents[1] / page).read_text()
    defaults = {decl.env: each.default for each, decl in declarations()}
    quoted = re.findall(
        r"`(MUMU_[A-Z_]+)` \((\d+)(?:(/(?:second|minute|hour|day))| ?(s|/s|min|h|days|KiB|MiB))?"
        r"(?=[),; ])",
        text,
    )
    for env, number, rate_unit, unit in quoted:
        if env not in defaults:
            continue
        if rate_unit:
            assert f"{number}{rate_unit}" == defaults[env], f"{page}: {env} ({number}{rate_unit})"
        else:
            said = int(number) * UNITS[unit]
            assert said == defaults[env], (
                f"{page}: {env} ({number} {unit}) but it is {defaults[env]}"
            )
