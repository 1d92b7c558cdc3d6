"""The agent's configuration: a YAML file (``/etc/mumu/agent.yaml``) under command-line flags.

Every key, with its default::

    cloud: https://cam.example.com   # the cloud's URL (http:// or https://); required
    name: null                       # the device's name at registration (default: "Camera xxxxxx")
    state_dir: /var/lib/mumu         # where the device's credentials are kept
    keep_warm: false                 # keep the camera running with no viewer (faster first frame)
    log_level: info                  # debug | info | warning | error
    camera:
      backend: auto                  # auto | picamera2 | v4l2 | synthetic
      device: null                   # /dev/videoN for v4l2, a camera index for picamera2
      width: 1280
      height: 720
      fps: 30
      bitrate: 2000000               # bits per second
      keyframe_interval: 2.0         # seconds between keyframes (they also come on request)
    displays:                        # where the pairing code and the state are shown
      - backend: console             # console | oled | led | png, with that backend's options
    button: null                     # {pin: 27, hold_seconds: 5}: held at boot = factory reset
    heartbeat_interval: null         # seconds; null: what the cloud says in hello_ack (30)
    reconnect:
      base: 0.5                      # first reconnection delay bound, seconds
      cap: 30.0                      # longest reconnection delay, seconds
    offer_timeout: 30.0              # seconds a watch request may wait for the viewer's offer
    update_repo_url: null            # the signed update repository (default: <cloud>/updates/)
    max_sessions: 4                  # viewers at once (sized for a Pi Zero 2 W); more are
                                     # refused with watch_end {reason: device_busy}
    frame_timeout: 10.0              # a viewer none of whose pictures left for this long, while
                                     # the camera delivers, is frozen: its session ends
    snapshots:                       # JPEGs of the current picture, over a viewer's data channel
      enabled: true
      interval: 1.0                  # at most one per session this often, seconds
      workers: 1                     # pictures decoded at once (worker threads)
      queue: 2                       # more waiting; beyond that: "busy"
      max_width: 1920                # pixels; larger pictures are scaled down
      timeout: 5.0                   # seconds the camera may take to give a picture

The camera's size, frame rate and flips changed from the app (``device_settings_request``) are
kept in ``<state_dir>/camera-settings.json`` and win over the ``camera`` section at every start;
delete that file to go back to this file's values.

Unknown keys and invalid values raise :class:`ConfigError`, whose text is one line naming the
key (the CLI prints it and exits with status 2).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import msgspec
import yaml

DEFAULT_CONFIG_FILE: Final = Path("/etc/mumu/agent.yaml")
CONFIG_ENV: Final = "MUMU_AGENT_CONFIG"
DEFAULT_STATE_DIR: Final = Path("/var/lib/mumu")
CAMERA_BACKENDS: Final = ("auto", "picamera2", "v4l2", "synthetic")

Seconds = Annotated[float, msgspec.Meta(gt=0, le=3600)]


class ConfigError(ValueError):
    """The configuration is unusable; the message is one line naming the key."""


class CameraSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    backend: str = "auto"
    device: str | None = None
    width: Annotated[int, msgspec.Meta(ge=64, le=7680, multiple_of=2)] = 1280
    height: Annotated[int, msgspec.Meta(ge=64, le=4320, multiple_of=2)] = 720
    fps: Annotated[int, msgspec.Meta(ge=1, le=120)] = 30
    bitrate: Annotated[int, msgspec.Meta(ge=50_000, le=50_000_000)] = 2_000_000
    keyframe_interval: Annotated[float, msgspec.Meta(gt=0, le=600)] = 2.0


class SnapshotsSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    enabled: bool = True
    interval: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 1.0
    workers: Annotated[int, msgspec.Meta(ge=1, le=8)] = 1
    queue: Annotated[int, msgspec.Meta(ge=0, le=64)] = 2
    max_width: Annotated[int, msgspec.Meta(ge=64, le=8192)] = 1920
    timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0


class ReconnectSection(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    base: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    cap: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    cloud: str | None = None
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    state_dir: str = str(DEFAULT_STATE_DIR)
    keep_warm: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    camera: CameraSection = msgspec.field(default_factory=CameraSection)
    displays: list[dict[str, Any]] = msgspec.field(default_factory=lambda: [{"backend": "console"}])
    button: dict[str, Any] | None = None
    heartbeat_interval: Seconds | None = None
    reconnect: ReconnectSection = msgspec.field(default_factory=ReconnectSection)
    offer_timeout: Seconds = 30.0
    update_repo_url: str | None = None
    max_sessions: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    frame_timeout: Seconds = 10.0
    snapshots: SnapshotsSection = msgspec.field(default_factory=SnapshotsSection)

    @property
    def cloud_url(self) -> str:
        assert self.cloud is not None  # load() checks it
        return self.cloud

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)


def _where(path: str) -> str:
    """msgspec's ``$.camera.fps`` / ``$.displays[0]`` as ``camera.fps`` / ``displays[0]``."""
    return path.removeprefix("$").removeprefix(".") or "(top level)"


_UNKNOWN = re.compile(
    r"^Object contains unknown field `(?P<key>[^`]*)`(?: - at `(?P<at>[^`]*)`)?\Z"
)
_MISSING = re.compile(
    r"^Object missing required field `(?P<key>[^`]*)`(?: - at `(?P<at>[^`]*)`)?\Z"
)
_AT = re.compile(r"^(?P<what>.*) - at `(?P<at>[^`]*)`\Z")


def explain(exc: msgspec.ValidationError | str) -> str:
    """A msgspec validation error as ``"key.path: what is wrong"``."""
    text = str(exc)
    for pattern, problem in ((_UNKNOWN, "unknown key"), (_MISSING, "required")):
        found = pattern.match(text)
        if found:
            at = _where(found["at"] or "$")
            key = found["key"] if at == "(top level)" else f"{at}.{found['key']}"
            return f"{key}: {problem}"
    located = _AT.match(text)
    if located:
        what = located["what"]
        return f"{_where(located['at'])}: {what[0].lower()}{what[1:]}"
    return text


def explain_option_error(text: str) -> str:
    """A provisioning ``OptionError`` (``"display 'x': <msgspec text>"``) made as readable."""
    what, sep, detail = text.partition(": ")
    return f"{what}: {explain(detail)}" if sep else text


def read_file(path: Path) -> dict[str, Any]:
    """The mapping in a YAML config file (an empty file is an empty mapping)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def config_file(explicit: str | None, env: Mapping[str, str]) -> tuple[Path, bool]:
    """Which file to read, and whether it was named explicitly (then it must exist)."""
    if explicit:
        return Path(explicit), True
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]), True
    return DEFAULT_CONFIG_FILE, False


def load(
    explicit_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> AgentConfig:
    """Read the config file (``explicit_file``, else ``$MUMU_AGENT_CONFIG``, else the default,
    which may be missing) and apply ``overrides`` (from flags; dotted keys like
    ``camera.backend``) on top."""
    path, named = config_file(explicit_file, os.environ if env is None else env)
    if named or path.exists():
        raw = read_file(path)
        source = str(path)
    else:
        raw, source = {}, "flags"
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = raw
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            child = node[part]
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: {part}: must be a mapping")
            node = child
        node[leaf] = value
    try:
        config = msgspec.convert(raw, AgentConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {explain(exc)}") from None
    _check(config, source)
    return config


def _check(config: AgentConfig, source: str) -> None:
    if config.cloud is None:
        raise ConfigError(f"{source}: cloud: required (the cloud's URL, or --cloud URL)")
    parts = urlsplit(config.cloud)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"{source}: cloud: expected http(s)://host[:port], got {config.cloud!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ConfigError(f"{source}: cloud: bad port in {config.cloud!r}") from None
    if config.camera.backend not in CAMERA_BACKENDS:
        raise ConfigError(
            f"{source}: camera.backend: unknown backend {config.camera.backend!r} "
            f"(known: {', '.join(CAMERA_BACKENDS)})"
        )
    if config.reconnect.cap < config.reconnect.base:
        raise ConfigError(f"{source}: reconnect.cap: must be at least reconnect.base")
    for i, entry in enumerate(config.displays):
        if not isinstance(entry.get("backend"), str):
            raise ConfigError(f"{source}: displays[{i}].backend: required (a display backend)")
    if config.button is not None:
        from device.provisioning.button import parse_button_options
        from device.provisioning.display import OptionError

        try:
            parse_button_options(config.button)
        except OptionError as exc:
            raise ConfigError(f"{source}: {explain_option_error(str(exc))}") from None
