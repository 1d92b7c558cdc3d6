"""``image/build``: a MuMu SD image for arm64 (Raspberry Pi 3/4/5, Zero 2), built here.

Steps, each printed with its time:

1. **release** -- the agent's first release: an aarch64 release bundle, the same artifact an
   over-the-air update installs (``mumu-release build``, its dependencies pinned to the versions
   this checkout is tested with), or one taken from a signed update repository; and that
   repository's TUF trust root, baked in so that the camera accepts its updates.
2. **base** -- a Debian bookworm arm64 rootfs standing in for Raspberry Pi OS Lite (pi-gen's
   stage0-2), made by mmdebstrap under qemu-user; cached by its inputs.
3. **stage-mumu** -- ``image/pi-gen-stage/stage-mumu`` run on a copy of the base by
   ``image/pigen/run-stage``, which follows pi-gen's conventions; the Raspberry-Pi-archive-only
   sub-stage is skipped and apt does not download.  The stage installs the bundle with the
   updater's own installer (:mod:`device.update.install`): ``releases/<version>``, ``current``
   and ``committed``, exactly what an update later switches.
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
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
#: bookworm's CPython: the release bundle's binary wheels are for it.
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


# --- 1. the release ---------------------------------------------------------------------------


def build_release(
    out: Path, cache: Path, version: str | None = None, python_version: str = TARGET_PYTHON
) -> Path:
    """An aarch64 release bundle of this checkout (``mumu-release build``), its dependencies
    pinned to the versions this checkout's own environment runs (the ones the suite tested) and
    downloaded through ``cache/wheels``; its path.  ``version``: default pyproject's."""
    from release.build import BuildError, environment_constraints, project_version
    from release.build import build as build_bundle

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("mumu-agent-*-aarch64.tar"):
        old.unlink()
    constraints = environment_constraints(out / ".constraints.txt")
    try:
        return build_bundle(
            version or project_version(),
            "aarch64",
            out,
            python=python_version,
            cache=cache / "wheels",
            constraints=constraints,
        )
    except BuildError as exc:
        raise SystemExit(f"image/build: {exc}") from None
    finally:
        constraints.unlink(missing_ok=True)


def repository_root(repo: Path) -> Path:
    """The newest ``N.root.json`` of a ``mumu-release`` repository: the trust root to bake in
    (the device follows later root versions from there)."""
    from release.repo import RepoError, UpdateRepository

    try:
        repository = UpdateRepository(repo)
        return repository.metadata_dir / f"{repository.root_version()}.root.json"
    except RepoError as exc:
        raise SystemExit(f"image/build: {exc}") from None


def published_release(repo: Path, version: str, out: Path) -> Path:
    """The aarch64 bundle of ``version`` as the repository publishes it, checked against its
    signed length and sha256, copied to ``out``."""
    from device.update.install import bundle_name
    from release.repo import RepoError, UpdateRepository

    name = bundle_name(version, "aarch64")
    try:
        target = UpdateRepository(repo).targets().signed.targets.get(name)
    except RepoError as exc:
        raise SystemExit(f"image/build: {exc}") from None
    if target is None:
        raise SystemExit(f"image/build: {repo} publishes no {name}")
    digest = target.hashes["sha256"]
    source = repo / "targets" / f"{digest}.{name}"
    data = source.read_bytes()
    if len(data) != target.length or hashlib.sha256(data).hexdigest() != digest:
        raise SystemExit(f"image/build: {source} does not match its signed length and hash")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("mumu-agent-*-aarch64.tar"):
        old.unlink()
    (out / name).write_bytes(data)
    return out / name


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
    """The cached base rootfs (made if missing).  Builds of several checkouts or test runs may
    share the cache: one makes a base while the others wait for it (a lock per base)."""

    packages = base_packages()
    key = base_key(packages)
    final = cache / f"base-{SUITE}-arm64-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{final.name}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.note(f"another build is making {final.name}: waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        return _base_rootfs(cache, final, packages, progress, log, rebuild)


def _base_rootfs(
    cache: Path, final: Path, packages: list[str], progress: Progress, log: Path, rebuild: bool
) -> Path:
    """Called with the base's lock held (``base_rootfs``): a second lock of the same file here
    would wait for itself forever (flock locks belong to each open of the file)."""
    if final.is_dir() and not rebuild:
        progress.note(f"cached: {final}")
        os.utime(final)  # recently used: kept by the clean-up below
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


def run_stage(base: Path, work: Path, bundle: Path, trust_root: Path | None, log: Path) -> Path:
    env = {
        **os.environ,
        "MUMU_OFFLINE": "1",
        "MUMU_BUNDLE": str(bundle),
        "MUMU_GIT_HASH": _git_hash(),
        "LANG": "C.UTF-8",
    }
    env.pop("LC_ALL", None)
    env.pop("MUMU_UPDATE_ROOT", None)
    if trust_root is not None:
        env["MUMU_UPDATE_ROOT"] = str(trust_root.resolve())
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


@dataclass(frozen=True)
class ReleaseSource:
    """Where the image's first release and its update trust root come from (``main``'s
    options): a signed repository (``repo``; ``version`` published there, else this checkout
    built), a bundle file, or this checkout built as ``version``; a trust root file."""

    repo: Path | None = None
    version: str | None = None
    bundle: Path | None = None
    trust_root: Path | None = None


def build(
    out: Path,
    cache: Path,
    *,
    release: ReleaseSource | None = None,
    rebuild_base: bool = False,
    keep_work: bool = False,
) -> Path:
    release = release or ReleaseSource()
    progress = Progress()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "build.log"
    log.write_text("")
    cache.mkdir(parents=True, exist_ok=True)
    with progress.step("host", "checking the host's tools"):
        check_host()
    with progress.step(
        "release", f"the first release: an aarch64 bundle for CPython {TARGET_PYTHON}"
    ):
        dist = out / "release"
        if release.bundle is not None:
            bundle = release.bundle.resolve()
        elif release.repo is not None and release.version is not None:
            bundle = published_release(release.repo, release.version, dist)
        else:
            bundle = build_release(dist, cache, release.version)
        trust_root = release.trust_root
        if trust_root is None and release.repo is not None:
            trust_root = repository_root(release.repo)
        progress.note(f"{bundle.name}, {bundle.stat().st_size >> 20} MiB")
        if trust_root is None:
            progress.note(
                "no update trust root (--update-repo or --update-root): "
                "this image will never accept an over-the-air update"
            )
        else:
            progress.note(f"update trust root: {trust_root}")
    with progress.step("base", f"Debian {SUITE} arm64 base rootfs (mmdebstrap, qemu-user)"):
        base = base_rootfs(cache, progress, log, rebuild_base)
    work = cache / "work"
    with progress.step("stage-mumu", "running the pi-gen stage on a copy of the base"):
        staged = run_stage(base, work, bundle, trust_root, log)
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
                "bundle": bundle.name,
                "update_root": _sha256_file(trust_root) if trust_root is not None else None,
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


def _sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


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
        "--update-repo",
        type=Path,
        metavar="DIR",
        help="the signed update repository (mumu-release init) whose trust root the image "
        "carries; with --release, the image's first release is taken from it",
    )
    parser.add_argument(
        "--update-root",
        type=Path,
        metavar="ROOT_JSON",
        help="the TUF root.json to bake in when the repository is not at hand",
    )
    parser.add_argument(
        "--release",
        metavar="VERSION",
        help="the first release's version: published in --update-repo, or this checkout built "
        "under that version (default: pyproject's)",
    )
    parser.add_argument(
        "--bundle",
        type=Path,
        metavar="TAR",
        help="install this aarch64 release bundle (mumu-release build) as the first release",
    )
    parser.add_argument(
        "--bundle-only",
        nargs="?",
        const=STAGE / "03-agent" / "files",
        type=Path,
        metavar="DIR",
        help="only build the release bundle (default DIR: the stage's files/, for pi-gen)",
    )
    parser.add_argument(
        "--python",
        default=TARGET_PYTHON,
        help=f"the target's CPython for --bundle-only (default {TARGET_PYTHON}; trixie: 3.13)",
    )
    args = parser.parse_args(argv)
    cache = (args.cache or cache_dir()).resolve()
    if args.bundle_only:
        print(build_release(args.bundle_only, cache, args.release, args.python))
        return 0
    if args.bundle is not None and (args.release is not None):
        parser.error("--bundle names its own release: no --release with it")
    image = build(
        args.out.resolve(),
        cache,
        release=ReleaseSource(
            repo=args.update_repo.resolve() if args.update_repo else None,
            version=args.release,
            bundle=args.bundle,
            trust_root=args.update_root,
        ),
        rebuild_base=args.rebuild_base,
        keep_work=args.keep_work,
    )
    print(image)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
