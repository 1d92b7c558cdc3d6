"""A Raspberry Pi SD-card image from a rootfs, without loop devices or mounts.

The layout is pi-gen's (export-image/prerun.sh): an MBR with a FAT32 boot partition ("bootfs",
512 MiB at 8 MiB) and an ext4 root partition ("rootfs", sized to its contents + 20 % + 200 MiB),
both aligned to 8 MiB, identified by ``PARTUUID=<disk id>-01`` / ``-02`` in ``cmdline.txt`` and
``/etc/fstab`` (pi-gen: export-image/04-set-partuuid).  The filesystems are written straight into
the image file at their offsets: ``mkfs.vfat --offset`` + ``mcopy``, ``mke2fs -E offset= -d``.

:func:`read_file` and :func:`list_dir` read files back out of an image (``debugfs`` on the root
partition, ``mtype`` on the boot partition) for the export-hygiene checks.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MIB: Final = 1024 * 1024
ALIGN: Final = 8 * MIB
BOOT_SIZE: Final = 512 * MIB
SECTOR: Final = 512


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type: str


def _run(command: list[str], **kwargs: object) -> str:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed ({done.returncode}): {done.stderr}")
    return str(done.stdout)


def new_disk_id() -> str:
    """An MBR disk identifier (8 hex digits; PARTUUIDs are ``<id>-01``, ``<id>-02``)."""
    return f"{secrets.randbits(32) | 0x10000000:08x}"


def set_partuuids(rootfs: Path, bootfs: Path, disk_id: str) -> None:
    """Point ``cmdline.txt`` and ``/etc/fstab`` at this disk's partitions (placeholders
    ``BOOTDEV``/``ROOTDEV`` or earlier PARTUUIDs are replaced)."""
    import re

    boot_dev, root_dev = f"PARTUUID={disk_id}-01", f"PARTUUID={disk_id}-02"
    fstab = rootfs / "etc/fstab"
    text = fstab.read_text()
    text = re.sub(r"^(BOOTDEV|PARTUUID=[0-9a-f]{8}-01)\b", boot_dev, text, flags=re.M)
    text = re.sub(r"^(ROOTDEV|PARTUUID=[0-9a-f]{8}-02)\b", root_dev, text, flags=re.M)
    fstab.write_text(text)
    cmdline = bootfs / "cmdline.txt"
    if cmdline.exists():
        words = cmdline.read_text().split()
        words = [f"root={root_dev}" if w.startswith("root=") else w for w in words]
        cmdline.write_text(" ".join(words) + "\n")


def _du(path: Path) -> int:
    return int(_run(["du", "-x", "-s", "--apparent-size", "--block-size=1", str(path)]).split()[0])


def _round_up(value: int, to: int = ALIGN) -> int:
    return (value + to - 1) // to * to


def assemble(rootfs: Path, bootfs: Path, image: Path, disk_id: str) -> list[Partition]:
    """Write ``image`` (sparse): ``bootfs`` as partition 1 (FAT32), ``rootfs`` as partition 2
    (ext4).  ``rootfs/boot/firmware`` should be an empty mount point."""
    root_bytes = _du(rootfs)
    margin = int(root_bytes * 0.2) + 200 * MIB
    boot = Partition(1, ALIGN, _round_up(BOOT_SIZE), "c")
    root = Partition(2, boot.start + boot.size, _round_up(root_bytes + margin), "83")
    total = root.start + root.size
    tmp = image.with_name(f".{image.name}.tmp")
    tmp.unlink(missing_ok=True)
    with tmp.open("wb") as f:
        f.truncate(total)
    table = (
        "label: dos\n"
        f"label-id: 0x{disk_id}\n"
        "unit: sectors\n\n"
        f"start={boot.start // SECTOR}, size={boot.size // SECTOR}, type={boot.type}\n"
        f"start={root.start // SECTOR}, size={root.size // SECTOR}, type={root.type}\n"
    )
    _run(["sfdisk", "--no-reread", "--no-tell-kernel", "--quiet", str(tmp)], input=table)
    _run(
        [
            "mkfs.vfat",
            "-F",
            "32",
            "-n",
            "bootfs",
            "-s",
            "4",
            "--offset",
            str(boot.start // SECTOR),
            "-i",
            disk_id,
            str(tmp),
            str(boot.size // 1024),
        ]
    )
    files = sorted(str(p) for p in bootfs.iterdir())
    if files:
        _run(["mcopy", "-s", "-p", "-m", "-i", f"{tmp}@@{boot.start}", *files, "::/"])
    _run(
        [
            "mke2fs",
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            "rootfs",
            "-O",
            "^huge_file",
            "-E",
            f"offset={root.start},root_owner=0:0",
            "-d",
            str(rootfs),
            str(tmp),
            str(root.size // 1024) + "k",
        ]
    )
    os.replace(tmp, image)
    return [boot, root]


def partitions(image: Path) -> list[Partition]:
    import json

    table = json.loads(_run(["sfdisk", "--json", str(image)]))["partitiontable"]
    return [
        Partition(i + 1, p["start"] * SECTOR, p["size"] * SECTOR, p["type"])
        for i, p in enumerate(table["partitions"])
    ]


def disk_id(image: Path) -> str:
    import json

    table = json.loads(_run(["sfdisk", "--json", str(image)]))["partitiontable"]
    return str(table["id"]).removeprefix("0x")


class RootPartition:
    """The image's ext4 partition, copied out sparsely once, read with ``debugfs``."""

    def __init__(self, image: Path) -> None:
        root = partitions(image)[1]
        self._dir = tempfile.TemporaryDirectory(prefix="mumu-rootpart-")
        self.path = Path(self._dir.name) / "root.ext4"
        _run(
            [
                "dd",
                f"if={image}",
                f"of={self.path}",
                "bs=1M",
                f"skip={root.start // MIB}",
                f"count={root.size // MIB}",
                "conv=sparse",
                "status=none",
            ]
        )

    def debugfs(self, request: str) -> str:
        return _run(["debugfs", "-R", request, str(self.path)])

    def read(self, path: str) -> bytes:
        done = subprocess.run(["debugfs", "-R", f"cat {path}", str(self.path)], capture_output=True)
        return done.stdout

    def exists(self, path: str) -> bool:
        done = subprocess.run(
            ["debugfs", "-R", f"stat {path}", str(self.path)], capture_output=True, text=True
        )
        return "Inode:" in done.stdout

    def listdir(self, path: str) -> list[str]:
        out = self.debugfs(f"ls -p {path}")
        names = []
        for line in out.splitlines():
            fields = line.strip().strip("/").split("/")
            if len(fields) >= 5 and fields[4] not in {".", ".."}:
                names.append(fields[4])
        return names

    def size(self, path: str) -> int:
        out = self.debugfs(f"stat {path}")
        for word in out.replace("\n", " ").split("  "):
            if word.strip().startswith("Size:"):
                return int(word.split(":")[1].split()[0])
        raise KeyError(path)

    def close(self) -> None:
        self._dir.cleanup()


def boot_files(image: Path) -> dict[str, bytes]:
    """Every file on the boot partition (top level): name -> contents."""
    boot = partitions(image)[0]
    spec = f"{image}@@{boot.start}"
    names = _run(["mdir", "-b", "-i", spec, "::/"]).split()
    out: dict[str, bytes] = {}
    for name in names:
        base = name.removeprefix("::/")
        done = subprocess.run(["mtype", "-i", spec, f"::/{base}"], capture_output=True)
        out[base] = done.stdout
    return out


def extract_boot(image: Path, into: Path) -> None:
    """The boot partition's files into ``into`` (a directory that is created)."""
    boot = partitions(image)[0]
    into.mkdir(parents=True, exist_ok=True)
    _run(["mcopy", "-s", "-p", "-m", "-n", "-i", f"{image}@@{boot.start}", "::/*", str(into)])
