"""Operators for tests: an account made an operator the way a person running the cloud does it
(``mumu-cloud operator add <e-mail>`` on the server), once its address is verified.

The address is proven as a person proves it: the sign-up's "verify" mail is read from the
suite's SMTP server and its link opened (``tests/verification.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.cloud_process import CloudProcess
from tests.verification import verify_emails_sync

BIN = Path(sys.executable).parent


def _env(cloud: CloudProcess) -> dict[str, str]:
    return {**os.environ, **cloud.env, "MUMU_DATA_DIR": str(cloud.data_dir)}


def operator_command(cloud: CloudProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``mumu-cloud operator ARGS`` against this cloud's database, as on its server."""
    return subprocess.run(
        [str(BIN / "mumu-cloud"), "operator", *args],
        env=_env(cloud),
        capture_output=True,
        text=True,
        timeout=120,
    )


def make_operator(cloud: CloudProcess, email: str) -> None:
    """The (signed-up) account with ``email``: verified, then granted operator rights."""
    verify_emails_sync(cloud, email)
    added = operator_command(cloud, "add", email)
    assert added.returncode == 0, added.stderr
