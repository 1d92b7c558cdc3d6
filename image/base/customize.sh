#!/bin/bash -e
# mmdebstrap --customize-hook for the base rootfs ("$1"): what pi-gen's stage0-2 do that MuMu's
# stage and the boot harness rely on, for a plain Debian arm64 system standing in for Raspberry
# Pi OS Lite.  Nothing MuMu-specific happens here: that is all in stage-mumu.
ROOTFS_DIR=$1

echo raspberrypi > "${ROOTFS_DIR}/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\traspberrypi\n' \
	> "${ROOTFS_DIR}/etc/hosts"

# The boot partition, mounted where Raspberry Pi OS (bookworm) mounts it.  The PARTUUIDs are set
# when the image is assembled (pi-gen: export-image/04-set-partuuid).
install -d "${ROOTFS_DIR}/boot/firmware"
cat > "${ROOTFS_DIR}/boot/firmware/config.txt" << 'CONFIG'
# For more options and information see
# http://rptl.io/configtxt
# Some settings may impact device functionality. See link above for details

# Uncomment some or all of these to enable the optional hardware interfaces
#dtparam=i2c_arm=on
#dtparam=i2s=on
#dtparam=spi=on

# Automatically load overlays for detected cameras
camera_auto_detect=1

# Automatically load overlays for detected DSI displays
display_auto_detect=1

# Automatically load initramfs files, if found
auto_initramfs=1

# Enable DRM VC4 V3D driver
dtoverlay=vc4-kms-v3d
max_framebuffers=2

# Run in 64-bit mode
arm_64bit=1

[all]
CONFIG
echo "console=serial0,115200 console=tty1 root=PARTUUID=ROOTDEV rootfstype=ext4 fsck.repair=yes rootwait" \
	> "${ROOTFS_DIR}/boot/firmware/cmdline.txt"
cat > "${ROOTFS_DIR}/etc/fstab" << 'FSTAB'
proc            /proc           proc    defaults          0       0
BOOTDEV  /boot/firmware  vfat    defaults          0       2
ROOTDEV  /               ext4    defaults,noatime  0       1
FSTAB

# As stage2: logs in RAM (an SD card wears), root locked, SSH off with its host keys made at the
# first boot (raspberrypi-sys-mods' regenerate_ssh_host_keys.service; a stand-in here).
sed -i 's/^#\?Storage=.*/Storage=volatile/' "${ROOTFS_DIR}/etc/systemd/journald.conf"
chroot "${ROOTFS_DIR}" usermod --pass='*' root
cat > "${ROOTFS_DIR}/etc/systemd/system/regenerate_ssh_host_keys.service" << 'UNIT'
[Unit]
Description=Regenerate SSH host keys (stand-in for raspberrypi-sys-mods)
Before=ssh.service
ConditionFileIsExecutable=/usr/bin/ssh-keygen
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
chroot "${ROOTFS_DIR}" systemctl enable regenerate_ssh_host_keys.service
chroot "${ROOTFS_DIR}" systemctl disable ssh.service ssh.socket 2> /dev/null || true
rm -f "${ROOTFS_DIR}/etc/ssh/"ssh_host_*_key*
