#!/bin/bash -e
# The boot partition's settings file, I2C for the OLED, the agent's config directory and, when
# the release ships one, the over-the-air update trust root.
BOOT="${ROOTFS_DIR}/boot/firmware"
install -d "${BOOT}"

# mumu.txt: first-boot settings a person edits on the SD card (mumu-firstboot.service applies it).
install -m 644 files/mumu.txt "${BOOT}/mumu.txt"

# I2C on (what `raspi-config nonint do_i2c 0` does): the ARM I2C bus and the i2c-dev module.
CONFIG="${BOOT}/config.txt"
touch "${CONFIG}"
if grep -qE '^[#[:space:]]*dtparam=i2c_arm=' "${CONFIG}"; then
	sed -i -E 's/^[#[:space:]]*dtparam=i2c_arm=.*/dtparam=i2c_arm=on/' "${CONFIG}"
else
	printf '\n# MuMu: the OLED display is on I2C\ndtparam=i2c_arm=on\n' >> "${CONFIG}"
fi
install -m 644 files/mumu-i2c.conf "${ROOTFS_DIR}/etc/modules-load.d/mumu-i2c.conf"

install -d -m 755 "${ROOTFS_DIR}/etc/mumu"

# The update trust root (TUF root.json) of whoever signs this image's agent updates, where the
# updater reads it (device/update/settings.py: trust_root): $MUMU_UPDATE_ROOT or
# files/update-root.json.  An image without one never accepts an update: say so.
TRUST_ROOT="${MUMU_UPDATE_ROOT:-files/update-root.json}"
if [ -f "${TRUST_ROOT}" ]; then
	install -m 644 "${TRUST_ROOT}" "${ROOTFS_DIR}/etc/mumu/update-root.json"
else
	echo "stage-mumu: no update trust root (${TRUST_ROOT}): this image will never accept an update" >&2
fi

# What this image is.
version=$(readlink "${ROOTFS_DIR}/opt/mumu/current")
cat > "${ROOTFS_DIR}/etc/mumu/image-release" << INFO
MUMU_AGENT_VERSION=${version##*/}
MUMU_IMAGE_DATE=${IMG_DATE:-unknown}
MUMU_IMAGE_GIT=${MUMU_GIT_HASH:-${GIT_HASH:-unknown}}
INFO
