"""``mumu-firstboot``: applies ``mumu.txt`` from the SD card's boot partition.

``mumu-firstboot.service`` runs this at every boot, before the network and the agent start.  A
person edits ``mumu.txt`` on any computer (``key=value`` lines; Windows line endings, a UTF-8 BOM
and ``#`` comments are fine); each setting that is present is applied, each one that is absent
is left as it is (so Raspberry Pi Imager's own Wi-Fi, host name and user settings keep working):

========================  ==================================================================
``cloud_url``             ``cloud`` in ``/etc/mumu/agent.yaml``
``camera``                ``camera.backend``: auto, picamera2, v4l2, synthetic
``display``               ``displays``: oled, led, console (several: ``oled,led``)
``wifi_ssid``             a NetworkManager connection ``mumu-wifi`` (with ``wifi_password``;
                          an empty password is an open network)
``wifi_country``          the Wi-Fi regulatory country (``raspi-config`` where it exists, else
                          ``cfg80211.ieee80211_regdom=`` on the kernel command line)
``hostname``              ``/etc/hostname``, ``/etc/hosts`` and the running host name
``timezone``              ``/etc/localtime`` and ``/etc/timezone``
========================  ==================================================================

The Wi-Fi password is then removed from ``mumu.txt`` (the line becomes a comment saying so).
What was applied (never the password) and every problem go to
``/var/lib/mumu-firstboot/applied.json`` and to ``mumu-applied.txt`` beside ``mumu.txt``.  A bad
value is never silently ignored: it is logged (journal and console) and shown on the configured
display, and the rest is still applied.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

log = logging.getLogger("mumu-firstboot")

#: Where the boot partition is mounted: Raspberry Pi OS since bookworm, then older ones.
BOOT_DIRS: Final = ("boot/firmware", "boot")
SETTINGS_FILE: Final = "mumu.txt"
REPORT_FILE: Final = "mumu-applied.txt"
RECORD: Final = "var/lib/mumu-firstboot/applied.json"
AGENT_CONFIG: Final = "etc/mumu/agent.yaml"
WIFI_CONNECTION: Final = "etc/NetworkManager/system-connections/mumu-wifi.nmconnection"
CAMERAS: Final = ("auto", "picamera2", "v4l2", "synthetic")
DISPLAYS: Final = ("oled", "led", "console")
KEYS: Final = (
    "cloud_url",
    "wifi_ssid",
    "wifi_password",
    "wifi_country",
    "hostname",
    "camera",
    "display",
    "timezone",
)
SECRET_KEYS: Final = frozenset({"wifi_password"})
PASSWORD_REMOVED: Final = "# wifi_password: removed from this file after it was applied on {when}"

_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
_TIMEZONE = re.compile(r"^[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*\Z")
_COUNTRY = re.compile(r"^[A-Z]{2}\Z")


@dataclass
class Problem:
    """A setting that could not be applied: its line in mumu.txt, its key and why."""

    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"mumu.txt {where}{self.key}: {self.message}"


@dataclass
class Parsed:
    values: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def parse(text: str) -> Parsed:
    """``key=value`` lines of mumu.txt (BOM, CRLF, ``#`` comments and blank lines tolerated;
    keys are case-insensitive; a value may be quoted)."""
    result = Parsed()
    for number, raw in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip().lower()
        if not sep:
            result.problems.append(Problem(key or "?", "expected key=value", number))
            continue
        if key not in KEYS:
            result.problems.append(
                Problem(key, f"unknown setting (known: {', '.join(KEYS)})", number)
            )
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if key in result.values:
            result.problems.append(
                Problem(key, f"set twice (lines {result.lines[key]} and {number}); the last wins")
            )
        result.values[key] = value
        result.lines[key] = number
    return result


# --- validation ------------------------------------------------------------------------------


def valid_cloud_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname or " " in value:
        raise ValueError(f"expected a web address like https://camera.example.org, got {value!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"bad port in {value!r}") from None
    return value.rstrip("/")


def valid_hostname(value: str) -> str:
    if not _HOSTNAME.match(value):
        raise ValueError(
            f"{value!r} is not a host name (1 to 63 letters, digits and hyphens, "
            "not starting or ending with a hyphen)"
        )
    return value.lower()


def valid_camera(value: str) -> str:
    value = value.lower()
    if value not in CAMERAS:
        raise ValueError(f"{value!r} is not one of {', '.join(CAMERAS)}")
    return value


def valid_displays(value: str) -> list[str]:
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    if not names:
        raise ValueError(f"name at least one of {', '.join(DISPLAYS)}")
    for name in names:
        if name not in DISPLAYS:
            raise ValueError(f"{name!r} is not one of {', '.join(DISPLAYS)}")
    return list(dict.fromkeys(names))


def valid_ssid(value: str) -> str:
    if not 1 <= len(value.encode()) <= 32:
        raise ValueError("a Wi-Fi network name has 1 to 32 bytes")
    return value


def valid_wifi_password(value: str) -> str:
    if value == "":
        return value  # an open network
    if len(value) == 64 and all(c in "0123456789abcdefABCDEF" for c in value):
        return value
    if not 8 <= len(value) <= 63 or not all(32 <= ord(c) < 127 for c in value):
        raise ValueError("a WPA password has 8 to 63 printable ASCII characters (or 64 hex digits)")
    return value


def countries(root: Path) -> set[str] | None:
    """ISO 3166 codes from tzdata's ``iso3166.tab`` (None if it is not installed)."""
    try:
        text = (root / "usr/share/zoneinfo/iso3166.tab").read_text()
    except OSError:
        return None
    return {line.split("\t", 1)[0] for line in text.splitlines() if line and line[0] != "#"}


def valid_country(value: str, root: Path) -> str:
    value = value.upper()
    known = countries(root)
    if not _COUNTRY.match(value) or (known is not None and value not in known):
        raise ValueError(f"{value!r} is not a two-letter country code (ISO 3166, like GB or US)")
    return value


def valid_timezone(value: str, root: Path) -> str:
    path = root / "usr/share/zoneinfo" / value
    ok = bool(_TIMEZONE.match(value)) and ".." not in value and path.is_file()
    if ok:
        with path.open("rb") as f:
            ok = f.read(4) == b"TZif"
    if not ok:
        raise ValueError(f"{value!r} is not a time zone (like Europe/London)")
    return value


# --- applying ----------------------------------------------------------------------------------


@dataclass
class System:
    """Where things are (``root`` is ``/`` on a camera, a directory in tests) and how the running
    system is changed (only when ``live``)."""

    root: Path = Path("/")
    boot: Path | None = None
    live: bool = True
    run: Callable[[list[str]], int] = field(
        default=lambda cmd: subprocess.run(cmd, check=False).returncode
    )

    def path(self, relative: str) -> Path:
        return self.root / relative

    def boot_dir(self) -> Path | None:
        if self.boot is not None:
            return self.boot
        for candidate in BOOT_DIRS:
            if (self.root / candidate / SETTINGS_FILE).is_file():
                return self.root / candidate
        return None


@dataclass
class Outcome:
    applied: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    changed: bool = True

    def problem(self, key: str, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(key, message, line))


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` in one rename (on FAT too), durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.chmod(tmp, mode)  # FAT has no modes
    os.replace(tmp, path)
    with contextlib.suppress(OSError):
        dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)


def apply(system: System) -> Outcome:
    """Read mumu.txt, apply what it sets, remove the Wi-Fi password from it, keep a record."""
    outcome = Outcome()
    boot = system.boot_dir()
    if boot is None:
        log.info("no %s on the boot partition: nothing to apply", SETTINGS_FILE)
        outcome.changed = False
        return outcome
    source = boot / SETTINGS_FILE
    raw = source.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1252", errors="replace")
        outcome.problem("mumu.txt", "not UTF-8 text; read as Windows-1252")
    parsed = parse(text)
    outcome.problems.extend(parsed.problems)
    values, lines = parsed.values, parsed.lines
    previous = _read_record(system)
    digest = hashlib.sha256(raw).hexdigest()
    outcome.changed = previous.get("source_sha256") != digest

    def check(key: str, validate: Callable[[str], Any]) -> Any:
        if key not in values:
            return None
        try:
            return validate(values[key])
        except ValueError as exc:
            outcome.problem(key, str(exc), lines.get(key))
            return None

    cloud = check("cloud_url", valid_cloud_url)
    camera = check("camera", valid_camera)
    displays = check("display", valid_displays)
    hostname = check("hostname", valid_hostname)
    timezone = check("timezone", lambda v: valid_timezone(v, system.root))
    country = check("wifi_country", lambda v: valid_country(v, system.root))
    ssid = check("wifi_ssid", valid_ssid)
    password = check("wifi_password", valid_wifi_password)

    _apply_agent_config(system, outcome, cloud, camera, displays)
    if hostname:
        _apply_hostname(system, outcome, hostname)
    if timezone:
        _apply_timezone(system, outcome, timezone)
    if country:
        _apply_country(system, outcome, boot, country)
    if ssid is not None:
        _apply_wifi(system, outcome, ssid, password, "wifi_password" in values, lines)
    elif "wifi_password" in values and "wifi_ssid" not in values:
        outcome.problem("wifi_password", "given without wifi_ssid", lines.get("wifi_password"))

    if "wifi_password" in values:
        raw = _remove_password(source, text)
        digest = hashlib.sha256(raw).hexdigest()
    _write_record(system, outcome, digest, boot)
    return outcome


def _apply_agent_config(
    system: System,
    outcome: Outcome,
    cloud: str | None,
    camera: str | None,
    displays: list[str] | None,
) -> None:
    import yaml

    from device.config import ConfigError, load

    path = system.path(AGENT_CONFIG)
    config: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text())
            config = loaded if isinstance(loaded, dict) else {}
        except (OSError, yaml.YAMLError) as exc:
            outcome.problem("agent.yaml", f"{path} is unreadable ({exc}); writing a new one")
    if cloud:
        config["cloud"] = cloud
        outcome.applied["cloud_url"] = cloud
    if camera:
        section = config.get("camera")
        config["camera"] = {**(section if isinstance(section, dict) else {}), "backend": camera}
        outcome.applied["camera"] = camera
    if displays:
        old = {
            str(entry.get("backend")): entry
            for entry in config.get("displays") or []
            if isinstance(entry, dict)
        }
        config["displays"] = [old.get(name, {"backend": name}) for name in displays]
        outcome.applied["display"] = ",".join(displays)
    text = (
        "# Written by mumu-firstboot from mumu.txt on the boot partition; other keys are kept.\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    write_atomic(path, text.encode(), 0o644)
    try:
        load(str(path), env={})
    except ConfigError as exc:
        if "cloud: required" in str(exc):
            if not any(p.key == "cloud_url" for p in outcome.problems):
                outcome.problem("cloud_url", "not set: the camera cannot connect until it is")
        else:
            outcome.problem("agent.yaml", str(exc))


def _apply_hostname(system: System, outcome: Outcome, hostname: str) -> None:
    write_atomic(system.path("etc/hostname"), f"{hostname}\n".encode())
    hosts = system.path("etc/hosts")
    try:
        lines = hosts.read_text().splitlines()
    except OSError:
        lines = ["127.0.0.1\tlocalhost"]
    kept = [line for line in lines if not line.startswith("127.0.1.1")]
    kept.append(f"127.0.1.1\t{hostname}")
    write_atomic(hosts, ("\n".join(kept) + "\n").encode())
    if system.live:
        try:
            socket.sethostname(hostname)
        except OSError as exc:
            log.warning("cannot set the running host name (%s); it applies at the next boot", exc)
    outcome.applied["hostname"] = hostname


def _apply_timezone(system: System, outcome: Outcome, timezone: str) -> None:
    link = system.path("etc/localtime")
    tmp = link.with_name(".localtime.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(Path("/usr/share/zoneinfo") / timezone)
    os.replace(tmp, link)
    write_atomic(system.path("etc/timezone"), f"{timezone}\n".encode())
    outcome.applied["timezone"] = timezone


def _apply_country(system: System, outcome: Outcome, boot: Path, country: str) -> None:
    if system.live and shutil.which("raspi-config"):
        status = system.run(["raspi-config", "nonint", "do_wifi_country", country])
        if status != 0:
            outcome.problem("wifi_country", f"raspi-config refused {country} (status {status})")
            return
    else:
        cmdline = boot / "cmdline.txt"
        words = cmdline.read_text().split() if cmdline.exists() else []
        words = [w for w in words if not w.startswith("cfg80211.ieee80211_regdom=")]
        words.append(f"cfg80211.ieee80211_regdom={country}")
        write_atomic(cmdline, (" ".join(words) + "\n").encode())
        if system.live and shutil.which("iw"):
            system.run(["iw", "reg", "set", country])
    outcome.applied["wifi_country"] = country


def _apply_wifi(
    system: System,
    outcome: Outcome,
    ssid: str,
    password: str | None,
    password_given: bool,
    lines: dict[str, int],
) -> None:
    path = system.path(WIFI_CONNECTION)
    existing = _nm_value(path, "wifi", "ssid")
    if not password_given:
        if existing == ssid:
            outcome.applied["wifi_ssid"] = ssid  # the password was applied before
            return
        outcome.problem(
            "wifi_password",
            f"missing for network {ssid!r} (write wifi_password= with nothing after it for an "
            "open network)",
            lines.get("wifi_ssid"),
        )
        return
    if password is None:
        return  # invalid: reported already
    security = "[wifi-security]\nkey-mgmt=wpa-psk\n" + f"psk={password}\n" if password else ""
    keyfile = (
        "# Written by mumu-firstboot from mumu.txt\n"
        "[connection]\nid=mumu-wifi\ntype=wifi\nautoconnect=true\nautoconnect-priority=10\n\n"
        f"[wifi]\nmode=infrastructure\nssid={_nm_escape(ssid)}\n\n"
        + (security + "\n" if security else "")
        + "[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\naddr-gen-mode=default\n"
    )
    write_atomic(path, keyfile.encode(), 0o600)
    outcome.applied["wifi_ssid"] = ssid
    outcome.applied["wifi_password"] = "(set)" if password else "(open network)"


def _nm_escape(value: str) -> str:
    """A keyfile value: backslash escapes for what GKeyFile treats specially."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace(";", "\\;")


def _nm_value(path: Path, section: str, key: str) -> str | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    current = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and line.startswith(f"{key}="):
            return line[len(key) + 1 :].replace("\\;", ";").replace("\\\\", "\\")
    return None


def _remove_password(source: Path, text: str) -> bytes:
    """mumu.txt without its wifi_password line (a comment says it was removed); line endings and
    a BOM are kept as the person wrote them.  The new bytes."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    newline = "\r\n" if "\r\n" in text else "\n"
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        bare = line.removeprefix("\ufeff")
        key = bare.strip().partition("=")[0].strip().lower()
        if not bare.strip().startswith("#") and "=" in bare and key == "wifi_password":
            bom = "\ufeff" if line.startswith("\ufeff") else ""
            ending = line[len(line.rstrip("\r\n")) :] or newline
            out.append(bom + PASSWORD_REMOVED.format(when=when) + ending)
        else:
            out.append(line)
    data = "".join(out).encode()
    write_atomic(source, data)
    log.info("removed the Wi-Fi password from %s", source)
    return data


def _read_record(system: System) -> dict[str, Any]:
    try:
        data = json.loads(system.path(RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_record(system: System, outcome: Outcome, digest: str, boot: Path) -> None:
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    record = {
        "applied_at": now,
        "source_sha256": digest,
        "applied": outcome.applied,
        "problems": [str(p) for p in outcome.problems],
    }
    write_atomic(system.path(RECORD), (json.dumps(record, indent=2) + "\n").encode(), 0o600)
    lines = [f"# What the camera applied from {SETTINGS_FILE} ({now})", ""]
    lines += [f"{key}={value}" for key, value in outcome.applied.items()]
    if outcome.problems:
        lines += ["", "# Problems (fix them in mumu.txt and restart the camera):"]
        lines += [f"# {p}" for p in outcome.problems]
    else:
        lines += ["", "# No problems."]
    try:
        write_atomic(boot / REPORT_FILE, ("\r\n".join(lines) + "\r\n").encode())
    except OSError as exc:
        log.warning("cannot write %s: %s", boot / REPORT_FILE, exc)


# --- reporting ---------------------------------------------------------------------------------


def show_problems(problems: Iterable[Problem], system: System, hold_s: float) -> None:
    """Show the problems on the configured displays, for ``hold_s`` seconds (then the agent
    takes the display over) -- the console display prints them once."""
    from device.config import ConfigError, load
    from device.provisioning import DisplayError, OptionError, Phase, Screen, open_display

    problems = list(problems)
    if not problems:
        return
    entries: list[dict[str, Any]] = [{"backend": "console"}]
    try:
        entries = load(str(system.path(AGENT_CONFIG)), env={}).displays
    except ConfigError:
        import yaml

        with contextlib.suppress(OSError, yaml.YAMLError, AttributeError):
            raw = yaml.safe_load(system.path(AGENT_CONFIG).read_text()) or {}
            entries = list(raw.get("displays") or entries)
    detail = f"mumu.txt: {problems[0].key}" + (
        f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    )
    screen = Screen(Phase.ERROR, detail)
    hold = False
    for entry in entries:
        options = dict(entry)
        name = str(options.pop("backend", ""))
        if name not in DISPLAYS:
            continue
        try:
            display = open_display(name, options)
        except (OptionError, DisplayError) as exc:
            log.warning("cannot show the problem on display %s: %s", name, exc)
            continue
        try:
            display.show(screen)
            hold = hold or name != "console"
        finally:
            if name == "console":
                display.close()
    if hold and hold_s > 0:
        time.sleep(hold_s)


def parser() -> argparse.ArgumentParser:
    from protocol import about

    top = argparse.ArgumentParser(
        prog="mumu-firstboot", description="Apply mumu.txt from the boot partition."
    )
    top.add_argument("--root", type=Path, default=Path("/"), help="the system to change")
    top.add_argument("--boot", type=Path, help="the boot partition (default: found)")
    top.add_argument(
        "--hold",
        type=float,
        default=float(os.environ.get("MUMU_FIRSTBOOT_HOLD", "15")),
        help="seconds a problem stays on an OLED/LED before the agent starts "
        "($MUMU_FIRSTBOOT_HOLD)",
    )
    return about.finish(top)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from device.systemd import configure_logging

    configure_logging("info", identifier="mumu-firstboot")
    system = System(root=args.root, boot=args.boot, live=args.root == Path("/"))
    try:
        outcome = apply(system)
    except OSError as exc:
        log.error("cannot apply mumu.txt: %s", exc)
        return 1
    for key, value in outcome.applied.items():
        log.info("applied %s=%s", key, value)
    for problem in outcome.problems:
        log.error("%s", problem)
        print(f"[mumu] setup problem: {problem}", file=sys.stderr, flush=True)
    if not outcome.changed and not outcome.problems:
        log.info("mumu.txt unchanged since it was last applied")
    show_problems(outcome.problems, system, args.hold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
