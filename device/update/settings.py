"""The updater's settings: ``/etc/mumu/update.yaml`` (optional; every key has a default).

::

    root: /opt/mumu                    # releases/, current, committed, downloads/
    state_dir: /var/lib/mumu-update    # state.json, status.json, the TUF metadata cache
    trust_root: /etc/mumu/update-root.json   # root.json v1, baked into the image
    agent_config: /etc/mumu/agent.yaml # for cloud and update_repo_url
    agent_unit: mumu-agent.service
    agent_state_dir: /var/lib/mumu     # where the agent leaves the offer it received
    agent_runtime_dir: /run/mumu       # where the agent says how many viewers watch
    python: /usr/bin/python3           # the interpreter releases' venvs are built on
    health_timeout: 60                 # s: the new version must reach the cloud by then
    probation: 600                     # s: healthy without a restart for this long = commit
    crash_limit: 3                     # automatic restarts during probation = crash loop
    max_probation_boots: 1             # boots during probation before it rolls back
    retry_after: 3600                  # s: an interrupted update (power loss) is retried after
    max_attempts: 3                    # interrupted attempts before a version counts as bad
    poll: 1.0                          # s between looks at the agent during probation
    space_factor: 3.0                  # free space needed, in bundle sizes (releases signed
                                       # without their sizes)
    space_reserve: 67108864            # bytes left free beyond download + unpacked + installed
    min_rate: 1024                     # bytes/s: a transfer slower than this on average ...
    rate_window: 60                    # s: ... over this long is given up (resumes next run)
    fetch_deadline: 1800               # s: metadata and bundle of one run, in all
    quiet_wait: 3600                   # s: a run waits this long for no viewer / the window,
                                       # then ends (the timer's next run waits again)
    clock_wait: 300                    # s: a run waits this long for the clock to be set from
                                       # the network before it checks the metadata's expiry
                                       # (then checks against the clock it has); 0: no wait

A run therefore ends within about ``clock_wait`` + ``fetch_deadline`` + ``quiet_wait`` + the
probation (more
only while the cloud is unreachable during probation); ``RuntimeMaxSec=`` on
``mumu-update.service`` is the backstop, and every step survives being stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final

import msgspec
import yaml

DEFAULT_FILE: Final = Path("/etc/mumu/update.yaml")
Positive = Annotated[float, msgspec.Meta(gt=0)]


class SettingsError(ValueError):
    pass


class UpdaterSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    root: str = "/opt/mumu"
    state_dir: str = "/var/lib/mumu-update"
    trust_root: str = "/etc/mumu/update-root.json"
    agent_config: str = "/etc/mumu/agent.yaml"
    agent_unit: str = "mumu-agent.service"
    agent_state_dir: str = "/var/lib/mumu"
    agent_runtime_dir: str = "/run/mumu"
    python: str = "/usr/bin/python3"
    health_timeout: Positive = 60.0
    probation: Positive = 600.0
    crash_limit: Annotated[int, msgspec.Meta(ge=1)] = 3
    max_probation_boots: Annotated[int, msgspec.Meta(ge=1)] = 1
    retry_after: Positive = 3600.0
    max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 3
    poll: Positive = 1.0
    space_factor: Annotated[float, msgspec.Meta(ge=1)] = 3.0
    space_reserve: Annotated[int, msgspec.Meta(ge=0)] = 64 * 1024 * 1024
    min_rate: Annotated[float, msgspec.Meta(ge=0)] = 1024.0
    rate_window: Positive = 60.0
    fetch_deadline: Positive = 1800.0
    quiet_wait: Positive = 3600.0
    clock_wait: Annotated[float, msgspec.Meta(ge=0)] = 300.0


def load(path: Path = DEFAULT_FILE) -> UpdaterSettings:
    if not path.exists():
        return UpdaterSettings()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return msgspec.convert(raw, UpdaterSettings)
    except (OSError, yaml.YAMLError, msgspec.ValidationError) as exc:
        raise SettingsError(f"{path}: {exc}") from None
