"""``image/boot --qemu``: the whole image in ``qemu-system-aarch64 -M virt`` (software emulation).

A Pi's kernel and firmware cannot run in QEMU's ``virt`` machine, so Debian's arm64 kernel and an
initramfs (``MODULES=most``: virtio, ext4, vfat) are made once with mmdebstrap under qemu-user and
cached (``kernel-<key>/`` in the image cache; ~15 minutes the first time).  The image itself boots
unchanged from a virtio disk: its MBR, its ``PARTUUID=`` root from ``cmdline.txt``, the FAT boot
partition at ``/boot/firmware``, first boot and all.  QEMU's user-mode network gives the guest the
host's loopback at ``10.0.2.2`` (so ``cloud_url=http://10.0.2.2:8000`` in ``mumu.txt``).

The disk is a sparse copy of the image (``--card DIR`` keeps it across runs); the image file is
never written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Final

from image import diskimage

KERNEL_PACKAGES: Final = ("linux-image-arm64", "initramfs-tools", "zstd")
KERNEL_RECIPE: Final = "1"
#: Modules the image needs from the kernel that its initramfs does not load: the FAT boot
#: partition.  A Pi image carries its own kernel's modules; for QEMU's kernel they are written
#: into the disk copy's root filesystem (with the kernel's module index), nothing else changes.
MODULES: Final = (
    "kernel/fs/fat/fat.ko",
    "kernel/fs/fat/vfat.ko",
    "kernel/fs/nls/nls_cp437.ko",
    "kernel/fs/nls/nls_ascii.ko",
    "kernel/fs/nls/nls_utf8.ko",
    "kernel/fs/nls/nls_iso8859-1.ko",
)


def kernel_dir(cache: Path) -> Path:
    """The cached ``vmlinuz`` + ``initrd.img`` (made if missing)."""
    from image.build import MIRROR, SUITE

    key = hashlib.sha256(
        f"{KERNEL_RECIPE} {SUITE} {MIRROR} {' '.join(KERNEL_PACKAGES)}".encode()
    ).hexdigest()[:16]
    final = cache / f"kernel-{SUITE}-arm64-{key}"
    if (final / "vmlinuz").exists() and (final / "initrd.img").exists():
        return final
    print("[qemu] making Debian's arm64 kernel + initramfs (once; ~15 min) ...", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".kernel-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "mmdebstrap",
                "--mode=root",
                "--variant=minbase",
                "--arch=arm64",
                f"--include={','.join(KERNEL_PACKAGES)}",
                "--quiet",
                SUITE,
                str(rootfs),
                f"deb {MIRROR} {SUITE} main",
            ],
            check=True,
        )
        out = Path(tmp) / "out"
        out.mkdir()
        vmlinuz = sorted((rootfs / "boot").glob("vmlinuz-*"))[-1]
        initrd = sorted((rootfs / "boot").glob("initrd.img-*"))[-1]
        shutil.copyfile(vmlinuz, out / "vmlinuz")
        shutil.copyfile(initrd, out / "initrd.img")
        version = vmlinuz.name.removeprefix("vmlinuz-")
        (out / "version").write_text(version + "\n")
        save_modules(rootfs / "lib/modules" / version, out / "modules" / version)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(out, final)
    return final


def save_modules(source: Path, into: Path) -> None:
    """The module index and :data:`MODULES` from a kernel's ``/lib/modules/<version>``."""
    into.mkdir(parents=True)
    for index in source.glob("modules.*"):
        shutil.copyfile(index, into / index.name)
    for module in MODULES:
        (into / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / module, into / module)


#: The test image has no network manager of its own (in nspawn it shares the host's network);
#: Raspberry Pi OS has NetworkManager.  In QEMU, systemd-networkd does DHCP on the virtio NIC.
NETWORK: Final = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n"


def add_modules(disk: Path, kernel: Path) -> None:
    """Write the kernel's modules (and a DHCP network for QEMU's NIC) into the disk copy's root
    filesystem (``debugfs -w`` on the partition copied out and back: no mounts)."""
    version = (kernel / "version").read_text().strip()
    modules = kernel / "modules" / version
    root = diskimage.partitions(disk)[1]
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / "root.ext4"
        skip = f"skip={root.start // diskimage.MIB}"
        count = f"count={root.size // diskimage.MIB}"
        subprocess.run(
            ["dd", f"if={disk}", f"of={part}", "bs=1M", skip, count, "conv=sparse", "status=none"],
            check=True,
        )
        target = f"/usr/lib/modules/{version}"
        commands = ["mkdir /usr/lib/modules", f"mkdir {target}"]  # an existing one: ignored
        dirs = sorted(p for p in modules.rglob("*") if p.is_dir())  # parents first
        for d in dirs:
            commands.append(f"mkdir {target}/{d.relative_to(modules)}")
        for f in sorted(p for p in modules.rglob("*") if p.is_file()):
            commands.append(f'write "{f}" {target}/{f.relative_to(modules)}')
        network = Path(tmp) / "qemu.network"
        network.write_text(NETWORK)
        unit = "systemd-networkd.service"
        wants = f"/etc/systemd/system/multi-user.target.wants/{unit}"
        commands += [
            "mkdir /etc/systemd/network",
            f'write "{network}" /etc/systemd/network/50-qemu.network',
            f"symlink {wants} /lib/systemd/system/{unit}",
        ]
        script = Path(tmp) / "commands"
        script.write_text("\n".join(commands) + "\n")
        subprocess.run(
            ["debugfs", "-w", "-f", str(script), str(part)], check=True, capture_output=True
        )
        seek = f"seek={root.start // diskimage.MIB}"
        subprocess.run(
            ["dd", f"if={part}", f"of={disk}", "bs=1M", seek, "conv=notrunc,sparse", "status=none"],
            check=True,
        )


def command(kernel: Path, disk: Path, cmdline: str, memory: str) -> list[str]:
    return [
        "qemu-system-aarch64",
        "-M",
        "virt",
        "-cpu",
        "cortex-a72",
        "-smp",
        "2",
        "-m",
        memory,
        "-nographic",
        "-no-reboot",
        "-kernel",
        str(kernel / "vmlinuz"),
        "-initrd",
        str(kernel / "initrd.img"),
        "-append",
        cmdline,
        "-drive",
        f"if=none,file={disk},format=raw,id=hd0",
        "-device",
        "virtio-blk-pci,drive=hd0",
        "-netdev",
        "user,id=net0",
        "-device",
        "virtio-net-pci,netdev=net0,romfile=",
        "-device",
        "virtio-rng-pci",
    ]


def kernel_cmdline(disk: Path) -> str:
    """The image's own ``cmdline.txt`` with QEMU's serial console instead of the Pi's."""
    text = diskimage.boot_files(disk)["cmdline.txt"].decode()
    words = [w for w in text.split() if not w.startswith("console=")]
    return " ".join(["console=ttyAMA0", *words])


def boot_qemu(image: Path, mumu_txt: Path | None, card: Path | None, *, memory: str) -> int:
    from image.build import cache_dir

    kernel = kernel_dir(cache_dir())
    with tempfile.TemporaryDirectory(prefix="mumu-qemu-") as tmp:
        where = card.resolve() if card else Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        disk = where / "disk.img"
        if not disk.exists():
            subprocess.run(["cp", "--sparse=always", str(image), str(disk)], check=True)
            add_modules(disk, kernel)
        if mumu_txt is not None:
            boot = diskimage.partitions(disk)[0]
            subprocess.run(
                ["mcopy", "-o", "-i", f"{disk}@@{boot.start}", str(mumu_txt), "::/mumu.txt"],
                check=True,
            )
        cmdline = kernel_cmdline(disk)
        print(f"[qemu] booting {image.name}: {cmdline}", flush=True)
        print("[qemu] Ctrl-A X quits QEMU (a power cut)", flush=True)
        done = subprocess.run(command(kernel, disk, cmdline, memory), stdin=sys.stdin)
        return done.returncode
