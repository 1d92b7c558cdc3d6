"""A Debian rootfs booted under real systemd in ``systemd-nspawn``, for the update tests.

``base_rootfs(arch)`` builds (``mmdebstrap``, once, cached under ``~/.cache/mumu-ota``) a
minimal bookworm with systemd and python3.  :class:`Container` copies it, lets a test prepare
the copy (files, a chroot command), boots it (``--register=no --keep-unit`` with a tmpfs on
``/run/systemd/nspawn``: this sandbox has no systemd as PID 1), runs commands inside it through
``nsenter``, and can cut its power (SIGKILL to its init) and boot it again from the same disk.
The container shares the host's network, so an agent inside reaches a cloud on 127.0.0.1.

(The SD image branch brings its own harness for the image it builds; the two should become one.)
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

CACHE = Path(os.environ.get("MUMU_OTA_CACHE", Path.home() / ".cache" / "mumu-ota"))
PACKAGES = ("systemd", "systemd-sysv", "python3", "python3-venv", "libpython3.11")
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
NSPAWN_RUN = Path("/run/systemd/nspawn")


class ContainerError(Exception):
    pass


def tools_missing() -> list[str]:
    return [t for t in ("mmdebstrap", "systemd-nspawn", "nsenter") if shutil.which(t) is None]


def base_rootfs(arch: str = "amd64") -> Path:
    """The cached base rootfs for ``arch`` (Debian's name), built if missing (~2 min)."""
    key = hashlib.sha256(f"{SUITE} {arch} {' '.join(PACKAGES)}".encode()).hexdigest()[:12]
    path = CACHE / f"rootfs-{SUITE}-{arch}-{key}"
    if (path / ".complete").exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    # Several checkouts (or test runs) may share the cache: one builds, the others wait for it.
    with open(CACHE / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / ".complete").exists():
            return path
        return _build_base(path, arch)


def _build_base(path: Path, arch: str) -> Path:
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    done = subprocess.run(
        [
            "mmdebstrap",
            "--variant=apt",
            f"--architectures={arch}",
            f"--include={','.join(PACKAGES)}",
            "--format=directory",
            SUITE,
            str(partial),
            MIRROR,
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if done.returncode != 0:
        raise ContainerError(f"mmdebstrap failed: {done.stderr[-2000:]}")
    (partial / ".complete").touch()
    shutil.rmtree(path, ignore_errors=True)
    partial.rename(path)
    return path


def _ensure_nspawn_run() -> None:
    NSPAWN_RUN.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mountpoint", "-q", str(NSPAWN_RUN)], check=False).returncode != 0:
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(NSPAWN_RUN)], check=True)


class Container:
    def __init__(self, base: Path, root: Path) -> None:
        self.root = root
        self.log_path = root.with_name(root.name + ".console.log")
        self.proc: subprocess.Popen[bytes] | None = None
        if not root.exists():
            subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(root)], check=True)
            (root / ".complete").unlink(missing_ok=True)

    # --- the disk, while it is off (or from outside) -------------------------------------------

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        file = self.path(inside)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        file.chmod(mode)

    def chroot(self, *argv: str, timeout: float = 600) -> str:
        done = subprocess.run(
            ["chroot", str(self.root), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
        if done.returncode != 0:
            raise ContainerError(f"chroot {' '.join(argv)}: {done.stderr[-2000:]}")
        return done.stdout

    def enable(self, unit: str, target: str) -> None:
        wants = self.path(f"/etc/systemd/system/{target}.wants")
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to(f"/etc/systemd/system/{unit}")

    # --- power ---------------------------------------------------------------------------------

    def boot(self, timeout: float = 60) -> None:
        _ensure_nspawn_run()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "--register=no",
                "--keep-unit",
                "--quiet",
                f"--machine=mumu-ota-{os.getpid()}",
                "-D",
                str(self.root),
                "--boot",
                "--console=pipe",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ContainerError(f"nspawn exited with {self.proc.returncode}")
            if self._leader() is not None:
                state = self.run("systemctl", "is-system-running", check=False).strip()
                if state in ("running", "degraded"):
                    return
            time.sleep(0.2)
        raise ContainerError("the container did not finish booting")

    def _leader(self) -> int | None:
        """The container's PID 1 (seen from here): the child of the nspawn process."""
        if self.proc is None:
            return None
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        pids = children.split()
        return int(pids[0]) if pids else None

    def cut_power(self) -> None:
        """Power loss: SIGKILL to the container's init takes every process with it at once."""
        leader = self._leader()
        if leader is not None:
            os.kill(leader, 9)
        if self.proc is not None:
            self.proc.wait(30)
        self.proc = None

    def power_off(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.run("systemctl", "poweroff", check=False)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.cut_power()
        self.proc = None

    # --- inside --------------------------------------------------------------------------------

    def run(self, *argv: str, check: bool = True, timeout: float = 60) -> str:
        leader = self._leader()
        if leader is None:
            raise ContainerError("the container is not running")
        done = subprocess.run(
            ["nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
        if check and done.returncode != 0:
            raise ContainerError(f"{' '.join(argv)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def journal(self, unit: str, lines: int = 50) -> str:
        return self.run(
            "journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat", check=False
        )

    def links(self) -> tuple[str, str]:
        return (
            Path(os.readlink(self.path("/opt/mumu/current"))).name,
            Path(os.readlink(self.path("/opt/mumu/committed"))).name,
        )


def wait_until(what: str, check: object, timeout: float, every: float = 0.25) -> None:
    """Poll ``check()`` (a callable) until true; fail with ``what`` after ``timeout``."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # keep polling; report the last one
            last = exc
        time.sleep(every)
    raise TimeoutError(f"{what} within {timeout:g} s" + (f" (last error: {last})" if last else ""))
