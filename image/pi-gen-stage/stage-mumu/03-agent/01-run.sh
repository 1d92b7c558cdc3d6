#!/bin/bash -e
# The agent's first release, installed exactly as an over-the-air update installs one: the same
# release bundle (mumu-release build: the agent and every dependency as aarch64 wheels, with its
# manifest) and the same installer (device/update/install.py, run straight out of the agent's
# own wheel, standard library only, no network in the chroot).  It builds the venv at
# /opt/mumu/releases/<version> and points /opt/mumu/current and /opt/mumu/committed at it.
# Then the agent's and the updater's systemd units, which come with the release.
#
# The bundle: $MUMU_BUNDLE (image/build sets it) or the newest files/mumu-agent-*-aarch64.tar
# beside this script (`image/build --bundle-only` puts it there before a pi-gen build).
BUNDLE="${MUMU_BUNDLE:-}"
if [ -z "${BUNDLE}" ]; then
	BUNDLE=$(find files -maxdepth 1 -name 'mumu-agent-*-aarch64.tar' 2> /dev/null | sort -V | tail -n 1)
fi
if [ -z "${BUNDLE}" ] || [ ! -f "${BUNDLE}" ]; then
	echo "stage-mumu: no mumu-agent-<version>-aarch64.tar in files/: run image/build --bundle-only" >&2
	exit 1
fi
# Not under /tmp: on_chroot mounts a fresh tmpfs there.
STAGING=/var/cache/mumu-release
rm -rf "${ROOTFS_DIR}${STAGING}"
install -d -m 755 "${ROOTFS_DIR}${STAGING}"
cp "${BUNDLE}" "${ROOTFS_DIR}${STAGING}/bundle.tar"
tar -x -C "${ROOTFS_DIR}${STAGING}" -f "${BUNDLE}" --wildcards 'wheels/mumu_camera-*.whl'

on_chroot << CHROOT
set -e
# on_chroot passes the host's environment through: none of its pip or Python settings apply here.
for name in \$(env | grep -oE '^(PIP|PYTHON)[A-Z0-9_]*'); do unset "\$name"; done
wheel=\$(ls ${STAGING}/wheels/mumu_camera-*.whl)
PYTHONPATH="\$wheel" python3 -m device.update.install ${STAGING}/bundle.tar --root /opt/mumu --activate
units=\$(/opt/mumu/current/bin/python -c 'import device, pathlib; print(pathlib.Path(device.__file__).parent / "systemd")')
install -m 644 "\$units"/mumu-agent.service "\$units"/mumu-firstboot.service \
	"\$units"/mumu-update.service "\$units"/mumu-update-boot.service \
	"\$units"/mumu-update.path "\$units"/mumu-update.timer /etc/systemd/system/
# mumu-update.service itself is started by the path unit (an offer) and the timer.
systemctl enable mumu-firstboot.service mumu-agent.service \
	mumu-update-boot.service mumu-update.path mumu-update.timer
CHROOT

rm -rf "${ROOTFS_DIR}${STAGING}"
