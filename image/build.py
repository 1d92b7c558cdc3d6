"""``image/build``: a MuMu SD image for arm64 (Raspberry Pi 3/4/5, Zero 2), built here.

Steps, each printed with its time:

1. **wheelhouse** -- the agent's wheel and every dependency as aarch64 wheels for the target's
   CPython (``pip download --platform ...``), pinned to the versions this checkout is tested with.
2. **base** -- a Debian bookworm arm64 rootfs standing in for Raspberry Pi OS Lite (pi-gen's
   stage0-2), made by mmdebstrap under qemu-user; cached by its inputs.
3. **stage-mumu** -- ``image/pi-gen-stage/stage-mumu`` run on a copy of the base by
   ``image/pigen/run-stage``, which follows pi-gen's conventions; the Raspberry-Pi-archive-only
   sub-stage is skipped and apt does not download.
4. **export** -- pi-gen's export-image hygiene (machine-id, SSH host keys, logs, backup files),
   the boot partition's files split off, PARTUUIDs set.
5. **image** -- a Pi-layout ``.img`` (FAT32 boot + ext4 root), without loop devices.

The output directory gets ``<name>.img``, ``rootfs/`` and ``bootfs/`` (what ``image/boot``
boots) and ``build.json``; the image's path is the last line printed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from image import diskimage

REPO: Final = Path(__file__).resolve().parent.parent
IMAGE_DIR: Final = REPO / "image"
STAGE: Final = IMAGE_DIR / "pi-gen-stage" / "stage-mumu"
RUN_STAGE: Final = IMAGE_DIR / "pigen" / "run-stage"
BASE_PACKAGES: Final = IMAGE_DIR / "base" / "packages.txt"
BASE_HOOK: Final = IMAGE_DIR / "base" / "customize.sh"
SUITE: Final = "bookworm"
#: bookworm's CPython: the wheelhouse's binary wheels are for it.
TARGET_PYTHON: Final = "3.11"
MIRROR: Final = os.environ.get("MUMU_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR: Final = os.environ.get(
    "MUMU_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security"
)
#: Cached bases kept (the most recently used ones).
KEEP_BASES: Final = 3
#: Bump to rebuild every cached base (a change in how it is made that its inputs do not show).
BASE_RECIPE: Final = "2"


def cache_dir() -> Path:
    """``$MUMU_IMAGE_CACHE``, else ``$XDG_CACHE_HOME/mumu-image`` (``~/.cache/mumu-image``)."""
    if os.environ.get("MUMU_IMAGE_CACHE"):
        return Path(os.environ["MUMU_IMAGE_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "mumu-image"


class Progress:
    """``[image] step ... 12.3 s`` lines, and the total."""

    def __init__(self, out: object = None) -> None:
        self.started = time.monotonic()
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str, what: str) -> Iterator[None]:
        print(f"[image] {name}: {what} ...", flush=True)
        began = time.monotonic()
        try:
            yield
        except BaseException:
            print(f"[image] {name}: FAILED after {time.monotonic() - began:.1f} s", flush=True)
            raise
        took = time.monotonic() - began
        self.times[name] = round(took, 1)
        print(f"[image] {name}: done in {took:.1f} s", flush=True)

    def note(self, text: str) -> None:
        print(f"[image]   {text}", flush=True)

    @property
    def total(self) -> float:
        return time.monotonic() - self.started


def _run(command: list[str], *, env: dict[str, str] | None = None, log: Path | None = None) -> None:
    """Run a build command; its output goes to ``log`` (shown in full if it fails)."""
    if log is None:
        subprocess.run(command, check=True, env=env)
        return
    with log.open("ab") as f:
        f.write(f"\n$ {' '.join(command)}\n".encode())
        f.flush()
        done = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-60:]
        raise SystemExit(
            f"image/build: {' '.join(command[:3])} failed ({done.returncode}); "
            f"log: {log}\n" + "\n".join(tail)
        )


# --- 1. the wheelhouse -------------------------------------------------------------------------


def _aarch64_platforms() -> list[str]:
    """Wheel platform tags bookworm's glibc (2.36) can run."""
    tags = [f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)]
    return [*tags, "manylinux2014_aarch64", "linux_aarch64"]


def _constraints(path: Path) -> Path:
    """The versions this checkout's own environment runs (the ones the suite tested), so the
    image gets them too; ``mumu-camera`` itself is left out."""
    frozen = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "freeze",
            "--exclude-editable",
            "--disable-pip-version-check",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    keep = [
        line
        for line in frozen.splitlines()
        if "==" in line and not line.lower().startswith(("mumu-camera", "mumu_camera"))
    ]
    path.write_text("\n".join(keep) + "\n")
    return path


def build_wheelhouse(
    out: Path, python_version: str = TARGET_PYTHON, log: Path | None = None
) -> Path:
    """``out`` holds the agent's wheel, its dependencies as aarch64 wheels for CPython
    ``python_version``, and pip (which installs them on the device)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(REPO)], log=log)
    wheels = sorted(out.glob("mumu_camera-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"image/build: expected one mumu_camera wheel in {out}")
    abi = "cp" + python_version.replace(".", "")
    platforms = [arg for tag in _aarch64_platforms() for arg in ("--platform", tag)]
    constraints = _constraints(out.parent / f".{out.name}-constraints.txt")
    _run(
        [
            *pip,
            "download",
            "--quiet",
            "--only-binary=:all:",
            *platforms,
            "--python-version",
            python_version,
            "--implementation",
            "cp",
            "--abi",
            abi,
            "--abi",
            "abi3",
            "--abi",
            "none",
            "--constraint",
            str(constraints),
            "--dest",
            str(out),
            f"{wheels[0]}[device]",
            "pip",
        ],
        log=log,
    )
    constraints.unlink()
    return out


# --- 2. the base rootfs ------------------------------------------------------------------------


def _package_lines(path: Path) -> list[str]:
    words: list[str] = []
    for line in path.read_text().splitlines():
        words += line.split("#", 1)[0].split()
    return words


def base_packages(offline: bool = True) -> list[str]:
    """The base's packages: ours, plus every package stage-mumu's sub-stages ask for (except
    those of sub-stages the offline build skips), so that the stage's apt runs offline."""
    packages = _package_lines(BASE_PACKAGES)
    for sub in sorted(p for p in STAGE.iterdir() if p.is_dir()):
        if offline and (sub / "NEEDS_RASPBERRYPI_ARCHIVE").exists():
            continue
        for f in sorted(sub.glob("[0-9][0-9]-packages*")):
            packages += _package_lines(f)
    return sorted(set(packages))


def base_key(packages: list[str]) -> str:
    h = hashlib.sha256()
    for part in (BASE_RECIPE, SUITE, MIRROR, SECURITY_MIRROR, " ".join(packages)):
        h.update(part.encode() + b"\0")
    h.update(BASE_HOOK.read_bytes())
    return h.hexdigest()[:16]


def base_rootfs(cache: Path, progress: Progress, log: Path, rebuild: bool = False) -> Path:
    """The cached base rootfs (made if missing)."""
    packages = base_packages()
    key = base_key(packages)
    final = cache / f"base-{SUITE}-arm64-{key}"
    if final.is_dir() and not rebuild:
        progress.note(f"cached: {final}")
        os.utime(final)  # recently used: kept by the clean-up below
        return final
    cache.mkdir(parents=True, exist_ok=True)
    # Several checkouts (or test runs) may share the cache: one builds, the others wait for it.
    with open(cache / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_dir() and not rebuild:
            progress.note(f"built meanwhile by another run: {final}")
            return final
        return _build_base(cache, final, packages, log)


def _build_base(cache: Path, final: Path, packages: list[str], log: Path) -> Path:
    tmp = final.with_name(final.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    # dpkg's fsyncs cost a lot on a VM's disk and buy nothing for a rootfs that is thrown away
    # if the build fails: eatmydata (mmdebstrap's own hook) while building, gone afterwards.
    eatmydata = Path("/usr/share/mmdebstrap/hooks/eatmydata")
    hooks = [f"--hook-directory={eatmydata}"] if eatmydata.is_dir() else []
    _run(
        [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            "--arch=arm64",
            "--components=main",
            *hooks,
            f"--include={','.join(packages)}",
            f'--customize-hook={BASE_HOOK} "$1"',
            "--skip=cleanup/apt/lists",
            SUITE,
            str(tmp),
            f"deb {MIRROR} {SUITE} main",
            f"deb {MIRROR} {SUITE}-updates main",
            f"deb {SECURITY_MIRROR} {SUITE}-security main",
        ],
        log=log,
    )
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    # Keep the few most recently used bases (several checkouts may share the cache, each
    # with its own stage package list), not every one ever made.
    bases = sorted(
        (p for p in cache.glob(f"base-{SUITE}-arm64-*") if p.is_dir() and p != final),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in bases[KEEP_BASES - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
    return final


# --- 3. the stage ------------------------------------------------------------------------------


def run_stage(base: Path, work: Path, wheelhouse: Path, log: Path) -> Path:
    env = {
        **os.environ,
        "MUMU_OFFLINE": "1",
        "MUMU_WHEELHOUSE": str(wheelhouse),
        "MUMU_GIT_HASH": _git_hash(),
        "LANG": "C.UTF-8",
    }
    env.pop("LC_ALL", None)
    _run([str(RUN_STAGE), str(STAGE), str(base), str(work)], env=env, log=log)
    return work / STAGE.name / "rootfs"


def _git_hash() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "unknown"


# --- 4. export hygiene -------------------------------------------------------------------------


def export_hygiene(rootfs: Path) -> None:
    """What pi-gen's export-image/05-finalise does that matters for identity and secrets."""
    for pattern in (
        "etc/ssh/ssh_host_*_key*",
        "var/lib/dbus/machine-id",
        "etc/*-",
        # One seed or credential key shared by every camera would be no secret at all.
        "var/lib/systemd/random-seed",
        "var/lib/systemd/credential.secret",
    ):
        for path in rootfs.glob(pattern):
            path.unlink()
    (rootfs / "etc/machine-id").write_text("")  # empty: systemd makes one at the first boot
    for path in (rootfs / "var/cache/debconf").glob("*-old"):
        path.unlink()
    for path in (rootfs / "var/lib/dpkg").glob("*-old"):
        path.unlink()
    mtab = rootfs / "etc/mtab"
    if mtab.is_symlink() or mtab.exists():
        mtab.unlink()
    mtab.symlink_to("/proc/mounts")
    for path in (rootfs / "var/log").rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.write_bytes(b"")
    for path in (rootfs / "var/log/journal").glob("*"):
        shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(rootfs / "var/lib/apt/lists", ignore_errors=True)
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True)
    for path in (rootfs / "var/cache/apt").glob("*.bin"):
        path.unlink()
    for path in (rootfs / "usr/bin").glob("qemu-*-static"):
        path.unlink()
    for path in (rootfs / "root").glob(".*_history"):
        path.unlink()
    for path in (rootfs / "tmp").glob("*"):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def split_boot(rootfs: Path, bootfs: Path) -> None:
    """Move ``rootfs/boot/firmware``'s files to ``bootfs`` (the FAT partition); the mount point
    stays, empty."""
    if bootfs.exists():
        shutil.rmtree(bootfs)
    firmware = rootfs / "boot/firmware"
    shutil.move(str(firmware), str(bootfs))
    firmware.mkdir(mode=0o755)


# --- 5. the whole build ------------------------------------------------------------------------


def image_name(version: str) -> str:
    return f"mumu-{dt.date.today().isoformat()}-{version}-arm64"


def release_version(rootfs: Path) -> str:
    return Path(os.readlink(rootfs / "opt/mumu/current")).name


def build(out: Path, cache: Path, *, rebuild_base: bool = False, keep_work: bool = False) -> Path:
    progress = Progress()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "build.log"
    log.write_text("")
    cache.mkdir(parents=True, exist_ok=True)
    with progress.step("host", "checking the host's tools"):
        check_host()
    with progress.step("wheelhouse", f"aarch64 wheels for CPython {TARGET_PYTHON}"):
        wheelhouse = build_wheelhouse(out / "wheelhouse", log=log)
        wheels = list(wheelhouse.glob("*.whl"))
        progress.note(f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) >> 20} MiB")
    with progress.step("base", f"Debian {SUITE} arm64 base rootfs (mmdebstrap, qemu-user)"):
        base = base_rootfs(cache, progress, log, rebuild_base)
    work = cache / "work"
    with progress.step("stage-mumu", "running the pi-gen stage on a copy of the base"):
        staged = run_stage(base, work, wheelhouse, log)
    rootfs, bootfs = out / "rootfs", out / "bootfs"
    with progress.step("export", "export hygiene, boot partition, PARTUUIDs"):
        if rootfs.exists():
            shutil.rmtree(rootfs)
        os.replace(staged, rootfs)
        export_hygiene(rootfs)
        split_boot(rootfs, bootfs)
        disk = diskimage.new_disk_id()
        diskimage.set_partuuids(rootfs, bootfs, disk)
    version = release_version(rootfs)
    image = out / f"{image_name(version)}.img"
    with progress.step("image", "FAT32 boot + ext4 root, Pi layout"):
        for old in out.glob("mumu-*.img"):
            old.unlink()
        parts = diskimage.assemble(rootfs, bootfs, image, disk)
        progress.note(
            f"{image.name}: {image.stat().st_size >> 20} MiB "
            f"(boot {parts[0].size >> 20} MiB, root {parts[1].size >> 20} MiB), disk id {disk}"
        )
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    (out / "build.json").write_text(
        json.dumps(
            {
                "image": image.name,
                "agent_version": version,
                "disk_id": disk,
                "git": _git_hash(),
                "base": base.name,
                "seconds": progress.times,
                "total_seconds": round(progress.total, 1),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"[image] built in {progress.total:.1f} s", flush=True)
    return image


def check_host() -> None:
    from image.nspawn import prepare_host

    missing = [
        tool
        for tool in ("mmdebstrap", "rsync", "capsh", "sfdisk", "mkfs.vfat", "mcopy", "mke2fs")
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing:
        raise SystemExit(
            f"image/build: missing tools: {' '.join(missing)} (scripts/bootstrap image)"
        )
    if os.geteuid() != 0:
        raise SystemExit("image/build: must run as root (chroot, mounts)")
    prepare_host()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image/build", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=REPO / "artifacts" / "image", help="default: artifacts/image"
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help=f"default: $MUMU_IMAGE_CACHE or {cache_dir()}"
    )
    parser.add_argument("--rebuild-base", action="store_true", help="ignore the cached base")
    parser.add_argument("--keep-work", action="store_true", help="keep the stage's work dir")
    parser.add_argument(
        "--wheelhouse-only",
        nargs="?",
        const=STAGE / "03-agent" / "files" / "wheelhouse",
        type=Path,
        metavar="DIR",
        help="only build the wheelhouse (default DIR: the stage's files/wheelhouse, for pi-gen)",
    )
    parser.add_argument(
        "--python",
        default=TARGET_PYTHON,
        help=f"the target's CPython for --wheelhouse-only (default {TARGET_PYTHON}; trixie: 3.13)",
    )
    args = parser.parse_args(argv)
    if args.wheelhouse_only:
        path = build_wheelhouse(args.wheelhouse_only, args.python)
        print(path)
        return 0
    image = build(
        args.out.resolve(),
        (args.cache or cache_dir()).resolve(),
        rebuild_base=args.rebuild_base,
        keep_work=args.keep_work,
    )
    print(image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
