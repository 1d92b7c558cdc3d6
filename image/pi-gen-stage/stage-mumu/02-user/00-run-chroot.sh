#!/bin/bash -e
# The agent runs as an unprivileged system user that may use the camera (video), the button and
# LED (gpio) and the OLED (i2c).  Raspberry Pi OS has these groups; create any that is missing.
for group in video gpio i2c; do
	groupadd -f -r "${group}"
done
if ! id mumu >/dev/null 2>&1; then
	useradd --system --user-group --home-dir /var/lib/mumu --no-create-home \
		--shell /usr/sbin/nologin --comment "MuMu Camera agent" mumu
fi
usermod -a -G video,gpio,i2c mumu
