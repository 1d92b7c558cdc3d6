"""The benchmarks still run: each with the smallest parameters, its ``--json`` parsed.

No figure is asserted (speed targets live in the benchmarks' tables and the README); this only
keeps a benchmark from rotting unseen, as ``bench/cloud_signaling.py`` did once the cloud began
to drop messages beyond a socket's budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str, timeout: float = 300) -> Any:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_cloud_signaling_bench_measures_the_relay_quiet_and_under_failed_logins() -> None:
    out = run_bench(
        "cloud_signaling.py",
        *("--only", "bare", "--only", "embedded", "--devices", "20", "--rate", "200"),
        *("--seconds", "1", "--repeats", "1", "--logins", "2"),
    )
    rows = out["results"]
    # each quiet, then with the password work: beside the floor, as failed logins in the cloud
    assert len(rows) == 4
    assert all(row["relay_p50_ms"] > 0 for row in rows)


def test_password_workers_bench_runs_every_scenario() -> None:
    out = run_bench("password_workers.py", "--jobs", "2", "--repeats", "1")
    assert len(out["results"]) == 5


def test_cloud_storm_bench_storms_a_cloud_lifted_and_at_its_defaults() -> None:
    out = run_bench(
        "cloud_storm.py",
        *("--only", "embedded", "--devices", "10", "--steady", "0", "--turnover", "0"),
    )
    rows = out["storms"]
    # SIGTERM and SIGKILL with the bounds lifted, then SIGTERM at the default settings
    assert [row["stop"] for row in rows] == ["SIGTERM", "SIGKILL", "SIGTERM"]
    assert rows[-1]["server"].endswith("default settings")
    assert all(row["readmit_s"] > 0 and row["hello_timeouts"] == 0 for row in rows)
