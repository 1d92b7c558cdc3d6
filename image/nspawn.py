"""Boot a MuMu rootfs under real systemd in ``systemd-nspawn``, as a Pi would boot its SD card.

:class:`Container` is the one harness: ``image/boot``, the image tests (the built aarch64 image
under qemu-user) and the over-the-air update tests (an x86_64 Debian rootfs, natively) use it::

    with Container(rootfs, boot_files=boot_dir, name="cam1") as cam:   # "the SD card"
        cam.start()                                       # power on
        cam.console.wait_for(r"multi-user", timeout=120)  # the console, streamed and searchable
        cam.run(["systemctl", "is-active", "mumu-agent"]) # a command inside
        cam.poweroff()                                    # clean shutdown (systemd halts)
        cam.start()                                       # power on again: same "card"
        cam.kill()                                        # power cut: SIGKILL to everything

Before a boot, the card can be prepared from outside (:meth:`Container.write`,
:meth:`Container.chroot`, :meth:`Container.enable`), as an image build or a person with a card
reader would.

The card is an overlay: the rootfs given (read-only, shared, e.g. an image build's output) below
a per-container upper directory that keeps every write across power cycles, like a real card.
The boot partition's files are a per-container copy mounted at ``/boot/firmware``.

On an x86 host the aarch64 binaries run under qemu-user (binfmt_misc); the container shares the
host's network, so an agent inside reaches a cloud on 127.0.0.1.  This sandbox has no systemd as
PID 1, hence ``--register=no --keep-unit`` and a tmpfs on ``/run/systemd/nspawn``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Self

NSPAWN_STATE = Path("/run/systemd/nspawn")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


class ContainerError(RuntimeError):
    pass


class Console:
    """Everything the container printed on its console, kept as lines; searchable while it
    grows.  ``mark()`` + ``wait_for(..., since=mark)`` look only at what came after a point
    (after a power cycle, say)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._partial = ""
        self.closed = True
        self.echo: IO[str] | None = None

    def feed(self, chunk: str) -> None:
        with self._cond:
            text = self._partial + ANSI.sub("", chunk)
            *complete, self._partial = text.split("\n")
            self.lines.extend(complete)
            if self.echo is not None and complete:
                self.echo.write("\n".join(complete) + "\n")
                self.echo.flush()
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            if self._partial:
                self.lines.append(self._partial)
                self._partial = ""
            self.closed = True
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def text(self, since: int = 0) -> str:
        with self._cond:
            return "\n".join(self.lines[since:])

    def search(self, pattern: str | re.Pattern[str], since: int = 0) -> re.Match[str] | None:
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        return regex.search(self.text(since))

    def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float, since: int = 0
    ) -> re.Match[str]:
        """The first match of ``pattern`` in the console after line ``since`` (waiting for
        it).  TimeoutError (with the console's tail) if it does not come, ContainerError if the
        container stops first."""
        regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = regex.search("\n".join(self.lines[since:]))
                if found:
                    return found
                if self.closed:
                    raise ContainerError(
                        f"the container stopped before {regex.pattern!r}:\n{self.tail()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"no {regex.pattern!r} on the console within {timeout:.0f}s:\n"
                        + self.tail()
                    )
                self._cond.wait(min(left, 1.0))

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])


def prepare_host() -> None:
    """What systemd-nspawn needs on a host without systemd as PID 1 (idempotent)."""
    if shutil.which("systemd-nspawn") is None:
        raise ContainerError("systemd-nspawn is missing (Debian: systemd-container)")
    NSPAWN_STATE.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(NSPAWN_STATE):
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(NSPAWN_STATE)], check=True)
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if os.uname().machine != "aarch64":
        if not (binfmt / "status").exists():
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], check=False)
        if not (binfmt / "qemu-aarch64").exists() and shutil.which("update-binfmts"):
            subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], check=False)
        if not (binfmt / "qemu-aarch64").exists():
            raise ContainerError(
                "aarch64 binaries cannot run here: no qemu-aarch64 in binfmt_misc "
                "(Debian: qemu-user-static binfmt-support; update-binfmts --enable qemu-aarch64)"
            )


class Container:
    """One "camera": a rootfs booted with systemd-nspawn (see the module doc)."""

    def __init__(
        self,
        rootfs: Path,
        instance_dir: Path,
        *,
        boot_files: Path | None = None,
        name: str = "mumu",
        echo: IO[str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        """``rootfs``: the image's root filesystem (never written); ``instance_dir``: where this
        card's own writes go (created; reused if it exists, as a card keeps its contents);
        ``boot_files``: the boot partition's files, copied in once (``mumu.txt`` and all)."""
        self.rootfs = Path(rootfs)
        self.dir = Path(instance_dir)
        self.name = re.sub(r"[^A-Za-z0-9-]", "-", name)[:60]
        self.extra_args = list(extra_args)
        self.console = Console()
        self.console.echo = echo
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.root = self.dir / "root"
        self.boot = self.dir / "boot"
        self.dir.mkdir(parents=True, exist_ok=True)
        if boot_files is not None and not self.boot.exists():
            shutil.copytree(boot_files, self.boot)
        self.boot.mkdir(exist_ok=True)
        #: ``time.monotonic()`` at each :meth:`start`.
        self.started_at = 0.0

    # --- the card ----------------------------------------------------------------------------

    def _mount(self) -> None:
        upper, work = self.dir / "upper", self.dir / "work"
        for d in (upper, work, self.root):
            d.mkdir(exist_ok=True)
        if os.path.ismount(self.root):
            return
        options = f"lowerdir={self.rootfs},upperdir={upper},workdir={work}"
        done = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options, str(self.root)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise ContainerError(f"cannot mount the overlay root: {done.stderr.strip()}")

    def _unmount(self) -> None:
        for _ in range(50):
            if not os.path.ismount(self.root):
                return
            if subprocess.run(["umount", str(self.root)], capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        subprocess.run(["umount", "--lazy", str(self.root)], check=False)

    def path(self, inside: str) -> Path:
        """A path inside the container's root as the host sees it (mounted while running)."""
        if not os.path.ismount(self.root):
            self._mount()
        if inside.startswith("/boot/firmware"):
            return self.boot / inside.removeprefix("/boot/firmware").lstrip("/")
        return self.root / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        """Write a file on the card (running or not)."""
        file = self.path(inside)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(text)
        file.chmod(mode)

    def chroot(self, *argv: str, timeout: float = 600) -> str:
        """Run a command on the card while it is off (a chroot, like an image build's); its
        standard output."""
        if self.running:
            raise ContainerError(f"{self.name} is running: use run()")
        self.path("/")
        done = subprocess.run(
            ["chroot", str(self.root), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )
        if done.returncode != 0:
            raise ContainerError(f"chroot {' '.join(argv)}: {(done.stderr or done.stdout)[-2000:]}")
        return done.stdout

    def enable(self, unit: str, target: str) -> None:
        """``systemctl enable`` from outside: ``unit`` (in /etc/systemd/system) wanted by
        ``target``."""
        wants = self.path(f"/etc/systemd/system/{target}.wants")
        wants.mkdir(parents=True, exist_ok=True)
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to(f"/etc/systemd/system/{unit}")

    # --- power -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Self:
        """Power on: boot the container; returns at once (watch :attr:`console`)."""
        if self.running:
            raise ContainerError(f"{self.name} is already running")
        prepare_host()
        self._mount()
        command = [
            "systemd-nspawn",
            "--quiet",
            "--boot",
            f"--directory={self.root}",
            f"--machine={self.name}",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
            "--resolv-conf=copy-host",
            "--timezone=off",
            f"--bind={self.boot}:/boot/firmware",
            *self.extra_args,
        ]
        self.console = _fresh_console(self.console)
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "SYSTEMD_NSPAWN_LOCK": "0",
                "SYSTEMD_LOG_LEVEL": "warning",
            },
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            self.console.feed(chunk.decode(errors="replace"))
        proc.wait()
        self.console.close()

    def leader(self) -> int:
        """The container's PID 1 as the host sees it."""
        if not self.running:
            raise ContainerError(f"{self.name} is not running")
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for pid in _descendants(self.proc.pid):
                if _ns_pid(pid) == 1:
                    return pid
            time.sleep(0.05)
        raise ContainerError(f"{self.name}: no init process found")

    def poweroff(self, timeout: float = 120.0) -> int:
        """A clean shutdown: ``systemctl poweroff`` inside; the exit status of nspawn.

        Not nspawn's own SIGTERM handling: it sends SIGRTMIN+3 (halt) to the container's init,
        and qemu-user maps host real-time signals to other guest ones (it keeps some for
        itself), so an emulated systemd receives SIGRTMIN+1 and isolates rescue.target."""
        if not self.running:
            return self._finish()
        assert self.proc is not None
        asked = self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=60)
        if asked.returncode != 0:
            self.kill()
            raise ContainerError(f"{self.name}: systemctl poweroff failed: {asked.stderr}")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ContainerError(
                f"{self.name} did not power off within {timeout:.0f}s:\n{self.console.tail()}"
            ) from None
        return self._finish()

    def kill(self) -> None:
        """A power cut: every process of the container is killed at once, nothing is synced
        beyond what the kernel already wrote."""
        if self.running:
            with contextlib.suppress(ContainerError, ProcessLookupError):
                os.kill(self.leader(), signal.SIGKILL)  # the whole PID namespace goes with it
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self._finish()

    def _finish(self) -> int:
        status = self.proc.returncode if self.proc is not None else 0
        if self._reader is not None:
            self._reader.join(10)
        self._unmount()
        return status if status is not None else 0

    def wait_stopped(self, timeout: float) -> int:
        """Wait for the container to stop by itself (``systemctl poweroff`` inside)."""
        assert self.proc is not None
        self.proc.wait(timeout)
        return self._finish()

    # --- inside --------------------------------------------------------------------------------

    def run(
        self,
        command: Sequence[str],
        *,
        timeout: float = 120.0,
        check: bool = True,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``command`` inside the running container (its namespaces and root) as root."""
        environment = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "SYSTEMD_PAGER": "",
            "SYSTEMD_COLORS": "0",
            **(env or {}),
        }
        full = [
            "nsenter",
            f"--target={self.leader()}",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--pid",
            "--root",
            "--wd",
            # The working directory: / inside (nsenter's --wd=DIR is resolved before the chroot).
            "/bin/sh",
            "-c",
            'cd / && exec "$@"',
            "sh",
            "env",
            "-i",
            *(f"{k}={v}" for k, v in environment.items()),
            *command,
        ]
        done = subprocess.run(
            full,
            input=input,
            capture_output=True,
            timeout=timeout,
        )
        result = subprocess.CompletedProcess(
            command,
            done.returncode,
            done.stdout.decode(errors="replace"),
            done.stderr.decode(errors="replace"),
        )
        if check and result.returncode != 0:
            raise ContainerError(
                f"{' '.join(command)} exited {result.returncode} in {self.name}:\n"
                f"{result.stdout}{result.stderr}"
            )
        return result

    def wait_booted(self, timeout: float = 120.0) -> str:
        """Wait for the boot to end (``running``, or ``degraded`` when a unit failed); the
        state."""
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            if not self.running:
                raise ContainerError(f"{self.name} stopped while booting:\n{self.console.tail()}")
            with contextlib.suppress(ContainerError, subprocess.TimeoutExpired):
                state = self.run(
                    ["systemctl", "is-system-running"], check=False, timeout=30
                ).stdout.strip()
                if state in ("running", "degraded"):
                    return state
            time.sleep(0.3)
        raise TimeoutError(
            f"{self.name} did not finish booting within {timeout:.0f}s (state {state!r}):\n"
            + self.console.tail()
        )

    def wait_until(self, command: Sequence[str], timeout: float, interval: float = 0.5) -> None:
        """Poll ``command`` inside until it succeeds (for states with no console line)."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.run(command, check=False, timeout=max(5.0, interval * 10))
            if last.returncode == 0:
                return
            time.sleep(interval)
        detail = "" if last is None else last.stdout + last.stderr
        raise TimeoutError(f"{' '.join(command)} did not succeed within {timeout:.0f}s: {detail}")

    def journal(self, *args: str) -> str:
        return self.run(["journalctl", "--no-pager", "-o", "cat", *args], check=False).stdout

    # --- clean-up ------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def destroy(self) -> None:
        """Power cut, then forget the card."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _fresh_console(old: Console) -> Console:
    """Each power-on keeps the console's history (so ``mark()`` works across boots)."""
    old.closed = False
    return old


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                for child in (task / "children").read_text().split():
                    found.append(int(child))
                    todo.append(int(child))
    return found


def _ns_pid(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            ids = line.split()[1:]
            return int(ids[-1]) if len(ids) > 1 else None
    return None
