#!/bin/bash -e
# The agent, from a wheelhouse of aarch64 wheels (no network in the chroot), into a venv at
# /opt/mumu/releases/<version> with /opt/mumu/current pointing at it: the layout that the
# over-the-air updates switch.  Then its systemd units, which come with the release.
#
# The wheelhouse: $MUMU_WHEELHOUSE (image/build sets it) or files/wheelhouse beside this script
# (`image/build --wheelhouse-only` fills it before a pi-gen build).
WHEELHOUSE="${MUMU_WHEELHOUSE:-files/wheelhouse}"
if ! compgen -G "${WHEELHOUSE}/mumu_camera-*.whl" > /dev/null; then
	echo "stage-mumu: no mumu_camera wheel in ${WHEELHOUSE}: run image/build --wheelhouse-only" >&2
	exit 1
fi
# Not under /tmp: on_chroot mounts a fresh tmpfs there.
STAGING=/var/cache/mumu-wheelhouse
rm -rf "${ROOTFS_DIR}${STAGING}"
install -d -m 755 "${ROOTFS_DIR}${STAGING}"
cp "${WHEELHOUSE}"/*.whl "${ROOTFS_DIR}${STAGING}/"

on_chroot << CHROOT
set -e
# on_chroot passes the host's environment through: none of its pip or Python settings apply here.
for name in \$(env | grep -oE '^(PIP|PYTHON)[A-Z0-9_]*'); do unset "\$name"; done
wheel=\$(ls ${STAGING}/mumu_camera-*.whl)
# The installer is stdlib-only and runs straight out of the agent's own wheel.
PYTHONPATH="\$wheel" python3 -m device.releases install --wheelhouse ${STAGING} --activate
units=\$(/opt/mumu/current/bin/python -c 'import device, pathlib; print(pathlib.Path(device.__file__).parent / "systemd")')
install -m 644 "\$units"/mumu-agent.service "\$units"/mumu-firstboot.service /etc/systemd/system/
systemctl enable mumu-firstboot.service mumu-agent.service
CHROOT

rm -rf "${ROOTFS_DIR}${STAGING}"
