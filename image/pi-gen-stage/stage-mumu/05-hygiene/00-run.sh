#!/bin/bash -e
# Nothing of the build machine's or of a test run's identity leaves with the image: no device
# credentials, no agent config (mumu-firstboot writes it from mumu.txt), no first-boot record,
# no caches.  pi-gen's export-image then resets machine-id, SSH host keys and logs.
rm -rf "${ROOTFS_DIR}/var/lib/mumu" "${ROOTFS_DIR}/var/lib/mumu-firstboot"
rm -f "${ROOTFS_DIR}/etc/mumu/agent.yaml"
rm -rf "${ROOTFS_DIR}/root/.cache" "${ROOTFS_DIR}/var/cache/mumu-release"
# The updater starts from nothing: no state, no metadata cache, no download or install under way.
rm -rf "${ROOTFS_DIR}/var/lib/mumu-update" "${ROOTFS_DIR}/opt/mumu/downloads" "${ROOTFS_DIR}/opt/mumu/staging"
find "${ROOTFS_DIR}/etc/NetworkManager/system-connections" -name 'mumu-*' -delete 2> /dev/null || true
