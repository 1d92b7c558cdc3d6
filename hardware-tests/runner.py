"""``hardware-tests/run``: the hardware-in-the-loop runner (see hardware-tests/README.md).

On a target -- a Raspberry Pi over SSH, or the SD image booted in systemd-nspawn for the
self-test -- it:

1. reaches the target and checks it is a MuMu camera (``/opt/mumu/current``);
2. installs the current build (``--install BUNDLE``, an aarch64 release bundle: the updater's
   own installer, ``python3 -m device.update.install BUNDLE --activate``, then restarts the
   agent), or takes the flashed image as it is;
3. runs ``hardware-tests/`` there with the release's own Python (the agent stopped meanwhile,
   so that the camera is free), pytest writing JUnit XML -- tests whose hardware is absent skip;
4. checks the agent is back up under systemd;
5. watches the camera end to end from this host in headless Chromium: a new account pairs it
   with the code the camera shows, the web app plays its video, frames are counted;
6. writes ``REPORT/target.xml`` (the target's tests), ``REPORT/host.xml`` (the steps above),
   ``REPORT/summary.md`` and prints the summary table.  Exit status 1 if anything failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORK = "/var/tmp/mumu-hwtest"
RELEASE_PYTHON = "/opt/mumu/current/bin/python"
CODE = re.compile(r"^\s+(\d{3}) (\d{3})\s*$", re.MULTILINE)
TEST_REQUIREMENTS = ("pytest", "pytest-asyncio", "pytest-timeout", "pip")


class Target(Protocol):
    name: str

    def sh(
        self, script: str, *, input: bytes | None = None, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]: ...


class SshTarget:
    """A Pi over SSH (key authentication; ``sudo -n`` for what needs root)."""

    def __init__(self, destination: str) -> None:
        self.destination = destination
        self.name = f"ssh:{destination}"

    def sh(
        self, script: str, *, input: bytes | None = None, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=15",
            self.destination,
            f"sudo -n sh -c {shlex.quote(script)}",
        ]
        done = subprocess.run(command, input=input, capture_output=True, timeout=timeout)
        result = subprocess.CompletedProcess(
            command, done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode()
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{script!r} on {self.name}: {result.stdout}{result.stderr}")
        return result


class NspawnTarget:
    """The SD image booted in systemd-nspawn (:class:`image.nspawn.Container`)."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.name = f"nspawn:{container.name}"

    def sh(
        self, script: str, *, input: bytes | None = None, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done: subprocess.CompletedProcess[str] = self.container.run(
            ["sh", "-c", script], input=input, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{script!r} on {self.name}: {done.stdout}{done.stderr}")
        return done


# --- the report ----------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    outcome: str = "passed"  # passed | failed | skipped
    seconds: float = 0.0
    message: str = ""


@dataclass
class Report:
    directory: Path
    cases: list[Case] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Case]:
        case = Case(name)
        print(f"[hw] {name} ...", flush=True)
        began = time.monotonic()
        try:
            yield case
        except Skip as exc:
            case.outcome, case.message = "skipped", str(exc)
        except Exception as exc:
            case.outcome, case.message = "failed", f"{type(exc).__name__}: {exc}"
        case.seconds = time.monotonic() - began
        self.cases.append(case)
        print(f"[hw] {name}: {case.outcome} ({case.seconds:.1f} s) {case.message[:300]}")

    def write(self) -> list[tuple[str, str, str, float, str]]:
        suite = ET.Element(
            "testsuite",
            name="hardware-tests/run",
            tests=str(len(self.cases)),
            failures=str(sum(c.outcome == "failed" for c in self.cases)),
            skipped=str(sum(c.outcome == "skipped" for c in self.cases)),
        )
        for case in self.cases:
            element = ET.SubElement(
                suite, "testcase", classname="host", name=case.name, time=f"{case.seconds:.3f}"
            )
            if case.outcome == "failed":
                ET.SubElement(element, "failure", message=case.message[:500]).text = case.message
            elif case.outcome == "skipped":
                ET.SubElement(element, "skipped", message=case.message)
        ET.ElementTree(suite).write(self.directory / "host.xml", encoding="unicode")
        rows = [("host", c.name, c.outcome, c.seconds, c.message) for c in self.cases]
        target = self.directory / "target.xml"
        if target.exists():
            rows += [("target", *row) for row in junit_rows(target)]
        return rows


class Skip(Exception):
    pass


def junit_rows(path: Path) -> list[tuple[str, str, float, str]]:
    rows = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                outcome = "failed" if kind != "skipped" else "skipped"
                message = found.get("message") or (found.text or "")
        name = f"{case.get('classname', '')}::{case.get('name', '')}".strip(":")
        rows.append((name, outcome, float(case.get("time") or 0), message.splitlines()[0:1]))
    return [(n, o, t, m[0] if m else "") for n, o, t, m in rows]


def summary_table(rows: list[tuple[str, str, str, float, str]]) -> str:
    lines = ["| where | test | result | s | note |", "|---|---|---|---:|---|"]
    for where, name, outcome, seconds, note in rows:
        note = note.replace("|", "/")[:120]
        lines.append(f"| {where} | {name} | {outcome} | {seconds:.1f} | {note} |")
    counts = {o: sum(r[2] == o for r in rows) for o in ("passed", "failed", "skipped")}
    lines.append("")
    lines.append(", ".join(f"{n} {o}" for o, n in counts.items()))
    return "\n".join(lines)


# --- the steps -----------------------------------------------------------------------------------


def source_tarball() -> bytes:
    """What the target needs to run hardware-tests/: the tests, the suite's shared helpers they
    import, pyproject.toml (pytest's settings)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(REPO / "pyproject.toml", "src/pyproject.toml")
        for folder in ("hardware-tests", "tests"):
            for path in sorted((REPO / folder).rglob("*.py")):
                if "__pycache__" not in path.parts:
                    tar.add(path, f"src/{path.relative_to(REPO)}")
    return buffer.getvalue()


def test_wheels(python_version: str, into: Path) -> list[Path]:
    """pytest and its plugins as wheels the target can install offline (pure Python)."""
    from release.build import platforms as wheel_platforms

    platforms = [arg for tag in wheel_platforms("aarch64") for arg in ("--platform", tag)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            *platforms,
            "--python-version",
            python_version,
            "--dest",
            str(into),
            *TEST_REQUIREMENTS,
        ],
        check=True,
    )
    return sorted(into.glob("*.whl"))


def tar_of(files: list[Path], prefix: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in files:
            tar.add(path, f"{prefix}/{path.name}")
    return buffer.getvalue()


def run_hardware_tests(target: Target, report: Report, env: dict[str, str]) -> str:
    """Run them; the target's time just before the agent started again."""
    version = target.sh(
        f"{RELEASE_PYTHON} -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'"
    )
    python_version = version.stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        wheels = test_wheels(python_version, Path(tmp))
        target.sh(f"rm -rf {WORK} && mkdir -p {WORK}")
        target.sh(f"tar -x -C {WORK}", input=tar_of(wheels, "wheels"))
    target.sh(f"tar -xz -C {WORK}", input=source_tarball())
    pip = f"$(ls {WORK}/wheels/pip-*.whl | tail -n 1)/pip"
    target.sh(
        f"{RELEASE_PYTHON} {pip} install --quiet --no-index --disable-pip-version-check "
        f"--find-links {WORK}/wheels --target {WORK}/site pytest pytest-asyncio pytest-timeout",
        timeout=900,
    )
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    # The camera must be free: the agent stops while the hardware tests run.
    target.sh("systemctl stop mumu-agent.service")
    try:
        target.sh(
            f"cd {WORK}/src && env PYTHONPATH={WORK}/site:{WORK}/src {exports} "
            f"{RELEASE_PYTHON} -m pytest -p no:cacheprovider -q -rs "
            f"--junitxml={WORK}/target.xml hardware-tests",
            timeout=1800,
            check=False,
        )
    finally:
        restarted = target.sh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
        target.sh("systemctl start --no-block mumu-agent.service")
    xml = target.sh(f"cat {WORK}/target.xml").stdout
    (report.directory / "target.xml").write_text(xml)
    root = ET.fromstring(xml)
    suites = [root] if root.tag == "testsuite" else list(root)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    if failed:
        raise AssertionError(f"{failed} hardware test(s) failed on the target (target.xml)")
    return restarted


def wait_for(check: Callable[[], bool], timeout: float, what: str, interval: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout:.0f} s")
        time.sleep(interval)


def booted(target: Target) -> bool:
    state = target.sh("systemctl is-system-running", check=False, timeout=60).stdout.strip()
    return state in {"running", "degraded", "maintenance"}


def agent_active(target: Target) -> bool:
    return target.sh("systemctl is-active --quiet mumu-agent.service", check=False).returncode == 0


def current_code(target: Target, since: str) -> str | None:
    out = target.sh(
        f"journalctl --no-pager -o cat -u mumu-agent.service --since '{since}'", check=False
    ).stdout
    codes = CODE.findall(out)
    return codes[-1][0] + codes[-1][1] if codes else None


async def watch_in_chromium(
    target: Target, cloud_url: str, web_url: str, since: str, shots: Path
) -> dict[str, Any]:
    """Pair the camera to a new account with the code it shows, watch it in the web app."""
    from tests.browser import launch_chromium
    from tests.cloud_process import ApiClient
    from tests.e2e_stack import frames_flow, open_app, wait_playing

    code: list[str] = []

    def has_code() -> bool:
        found = current_code(target, since)
        if found:
            code.append(found)
        return bool(found)

    await asyncio.to_thread(wait_for, has_code, 300, "a pairing code from the camera", 2.0)
    api = ApiClient(cloud_url)
    try:
        account = await api.account()
        device = await api.pair_code(account, code[-1])
        device_id = str(device["device_id"])
        async with launch_chromium() as browser:
            context, page = await open_app(browser, web_url, account)
            try:
                await page.goto(f"{web_url}/#/watch/{device_id}")
                state = await wait_playing(page, timeout_ms=120_000)
                counts = await frames_flow(page, seconds=3, timeout_ms=30_000)
                await page.screenshot(path=str(shots / "watch.png"))
            finally:
                await context.close()
        await api.http.delete(f"/api/devices/{device_id}", headers=account.auth)
        return {"device_id": device_id, "video": state, "frames": counts}
    finally:
        await api.aclose()


def run(
    target: Target,
    cloud_url: str,
    web_url: str,
    report: Report,
    *,
    install: Path | None,
    hw_env: dict[str, str],
) -> bool:
    since = ""
    with report.step("reach the target") as case:
        # Until the boot is over (first boot applies mumu.txt with the current release).
        wait_for(lambda: booted(target), 600, "the end of the target's boot", 2.0)
        release = target.sh("readlink /opt/mumu/current && date '+%Y-%m-%d %H:%M:%S'").stdout
        current, since = release.split("\n")[0], release.split("\n")[1]
        case.message = f"release {current}"
    with report.step("install the current build") as case:
        if install is None:
            raise Skip("a flashed image: nothing to install")
        # A release of its own version (the running one is never rebuilt in place: build the
        # bundle as, say, 0.1.0+bench.<time>), installed by the updater's own installer and made
        # current and committed (the boot check would otherwise put the committed one back);
        # the previous release stays installed.
        from device.update.install import read_manifest

        manifest = read_manifest(install)
        target.sh(f"rm -rf {WORK}/install && mkdir -p {WORK}")
        target.sh(f"tar -x -C {WORK}", input=tar_of([install], "install"))
        bundle = f"{WORK}/install/{install.name}"
        target.sh(f"cd {WORK}/install && tar -xf {install.name} --wildcards 'wheels/mumu_camera-*'")
        out = target.sh(
            f"PYTHONPATH=$(ls {WORK}/install/wheels/mumu_camera-*.whl) "
            f"python3 -m device.update.install {bundle} --root /opt/mumu --activate",
            timeout=1800,
        )
        case.message = f"{manifest.version}: {out.stdout.strip()}"
        target.sh("systemctl daemon-reload && systemctl restart --no-block mumu-agent.service")
    with report.step("hardware tests on the target"):
        since = run_hardware_tests(target, report, hw_env)
    with report.step("agent running under systemd"):
        wait_for(lambda: agent_active(target), 300, "mumu-agent.service active")
    with report.step("end-to-end watch in headless Chromium") as case:
        result = asyncio.run(watch_in_chromium(target, cloud_url, web_url, since, report.directory))
        case.message = (
            f"{result['video']['width']}x{result['video']['height']}, frames {result['frames']}"
        )
        (report.directory / "watch.json").write_text(json.dumps(result, indent=2))
    rows = report.write()
    table = summary_table(rows)
    (report.directory / "summary.md").write_text(f"# Hardware run on {target.name}\n\n{table}\n")
    print(table)
    return not any(row[2] == "failed" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hardware-tests/run", description=__doc__.split("\n\n")[0]
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--ssh", metavar="USER@HOST", help="a Pi reachable by SSH (key auth)")
    where.add_argument("--nspawn", metavar="IMAGE", type=Path, help="boot this image here")
    parser.add_argument("--cloud", required=True, help="the cloud's URL (reachable by both)")
    parser.add_argument("--web", help="the web app's URL (default: the cloud's)")
    parser.add_argument(
        "--install",
        type=Path,
        metavar="BUNDLE",
        help="install this aarch64 release bundle first (image/build --bundle-only DIR "
        "--release VERSION, or mumu-release build)",
    )
    parser.add_argument("--camera", default="auto", help="--nspawn: camera= in mumu.txt")
    parser.add_argument("--report", type=Path, default=REPO / "artifacts" / "hardware-report")
    args = parser.parse_args(argv)
    report_dir = args.report.resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    for old in report_dir.glob("*.xml"):
        old.unlink()
    report = Report(report_dir)
    hw_env = {k: v for k, v in os.environ.items() if k.startswith("MUMU_HW_")}
    web = (args.web or args.cloud).rstrip("/")
    if args.ssh:
        return (
            0
            if run(
                SshTarget(args.ssh), args.cloud, web, report, install=args.install, hw_env=hw_env
            )
            else 1
        )
    from image.boot import rootfs_of
    from image.build import cache_dir
    from image.diskimage import extract_boot
    from image.nspawn import Container

    with tempfile.TemporaryDirectory(prefix="mumu-hw-card-") as card:
        image = args.nspawn.resolve()
        extract_boot(image, Path(card) / "boot")
        (Path(card) / "boot" / "mumu.txt").write_text(
            f"cloud_url={args.cloud}\ncamera={args.camera}\ndisplay=console\n"
        )
        container = Container(rootfs_of(image, cache_dir()), Path(card), name="mumu-hwtest")
        container.start()
        try:
            ok = run(
                NspawnTarget(container),
                args.cloud,
                web,
                report,
                install=args.install,
                hw_env=hw_env,
            )
        finally:
            container.kill()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
