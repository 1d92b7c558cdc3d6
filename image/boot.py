"""``image/boot``: boot a MuMu SD image here and stream its console until stopped (Ctrl-C: a clean
power-off; twice: a power cut).

* default: the image's rootfs under real systemd in ``systemd-nspawn`` (aarch64 under qemu-user;
  the host's network), the boot partition's files at ``/boot/firmware`` as on a Pi;
* ``--qemu``: the whole image in ``qemu-system-aarch64 -M virt`` with Debian's arm64 kernel
  (made once and cached), slower but a real kernel, real partitions, a real first boot.

``--mumu-txt FILE`` replaces ``mumu.txt`` on the (copy of the) boot partition.  ``--card DIR``
keeps the card's writes in DIR across runs (like putting the same SD card back); by default each
run boots a fresh copy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from image import diskimage
from image.nspawn import Container


def rootfs_of(image: Path, cache: Path) -> Path:
    """The image's root filesystem as a directory: the build's own ``rootfs/`` beside the image
    when it is that build's, else extracted from the image once (``debugfs rdump``) and cached."""
    beside = image.parent / "rootfs"
    meta = image.parent / "build.json"
    if beside.is_dir() and meta.exists() and json.loads(meta.read_text())["image"] == image.name:
        return beside
    stat = image.stat()
    extracted = cache / f"extracted-{image.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if (extracted / "etc").is_dir():
        return extracted
    print(f"[boot] extracting the root filesystem of {image.name} (once) ...", flush=True)
    tmp = extracted.with_name(extracted.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    part = diskimage.RootPartition(image)
    try:
        part.debugfs(f"rdump / {tmp}")
    finally:
        part.close()
    tmp.replace(extracted)
    return extracted


def boot_nspawn(image: Path, card: Path, mumu_txt: Path | None, name: str) -> int:
    from image.build import cache_dir

    rootfs = rootfs_of(image, cache_dir())
    if not (card / "boot").exists():
        diskimage.extract_boot(image, card / "boot")  # the card's boot partition, as flashed
    container = Container(rootfs, card, name=name, echo=sys.stdout)
    if mumu_txt is not None:
        shutil.copyfile(mumu_txt, container.boot / "mumu.txt")
    stopping = threading.Event()

    def interrupted(signum: int, frame: object) -> None:
        if stopping.is_set():
            print("\n[boot] power cut", flush=True)
            container.kill()
            return
        stopping.set()
        print("\n[boot] powering off (Ctrl-C again: power cut) ...", flush=True)
        threading.Thread(target=container.poweroff, daemon=True).start()

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    container.start()
    print(f"[boot] {name}: booting {image.name} in systemd-nspawn; card: {card}", flush=True)
    assert container.proc is not None
    while container.proc.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            container.proc.wait(0.5)
    return container.wait_stopped(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image/boot", description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, required=True, help="an image from image/build")
    parser.add_argument("--mumu-txt", type=Path, help="replaces mumu.txt on the boot partition")
    parser.add_argument("--card", type=Path, help="keep the card's writes here across runs")
    parser.add_argument("--name", default="mumu-camera", help="the container's machine name")
    parser.add_argument(
        "--qemu", action="store_true", help="a whole arm64 machine (qemu-system-aarch64)"
    )
    parser.add_argument("--memory", default="1024", help="--qemu: MiB of memory (default 1024)")
    args = parser.parse_args(argv)
    image = args.image.resolve()
    if not image.is_file():
        parser.error(f"{image}: no such image")
    if args.mumu_txt is not None and not args.mumu_txt.is_file():
        parser.error(f"{args.mumu_txt}: no such file")
    if args.qemu:
        from image.qemu import boot_qemu

        return boot_qemu(image, args.mumu_txt, args.card, memory=args.memory)
    with tempfile.TemporaryDirectory(prefix="mumu-card-") as tmp:
        card = args.card.resolve() if args.card else Path(tmp)
        card.mkdir(parents=True, exist_ok=True)
        return boot_nspawn(image, card, args.mumu_txt, args.name)


if __name__ == "__main__":
    raise SystemExit(main())
