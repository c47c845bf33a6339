#!/bin/sh
# mmdebstrap's customize hook for the maskwatch SD-card image (packaging/image/build_image.py):
# turns the installed Debian bookworm arm64 root in "$1" into the appliance's root. Runs on the
# build machine; chroot commands run the arm64 binaries through qemu-user-static (binfmt_misc).
# MASKWATCH_IMAGE_MOSQUITTO=1 when mosquitto was installed (it is then enabled, on loopback).
set -eu

ROOT=$1
HERE=$(cd "$(dirname "$0")" && pwd)

install -D -m 0755 "$HERE/firstboot.py" "$ROOT/usr/lib/maskwatch-image/firstboot.py"
install -m 0644 "$HERE/maskwatch-firstboot.service" "$ROOT/etc/systemd/system/"
install -D -m 0644 "$HERE/maskwatch-image.conf" \
    "$ROOT/etc/systemd/system/maskwatch.service.d/image.conf"
install -D -m 0644 "$HERE/journald.conf" "$ROOT/etc/systemd/journald.conf.d/maskwatch-image.conf"
install -m 0644 "$HERE/fstab" "$ROOT/etc/fstab"
install -m 0644 "$HERE/10-wired.network" "$HERE/20-wireless.network" "$ROOT/etc/systemd/network/"
install -D -m 0644 "$HERE/wait-online.conf" \
    "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf"

echo maskwatch >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tmaskwatch\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
    >"$ROOT/etc/hosts"

# The boot partition's files: the firmware, kernel and initrd put there by raspi-firmware, plus
# the config the user edits and a note on the set-up files. The config is the package's, with
# its paths pointing at where it now lives.
sed -e 's#/etc/maskwatch/maskwatch.yaml#/boot/firmware/maskwatch.yaml#g' \
    "$ROOT/etc/maskwatch/maskwatch.yaml" >"$ROOT/boot/firmware/maskwatch.yaml"
install -m 0644 "$HERE/maskwatch-setup.txt" "$ROOT/boot/firmware/maskwatch-setup.txt"

# raspi-firmware writes cmdline.txt and config.txt from /etc/default/raspi-firmware at every
# kernel upgrade: root by file-system label (so the card, a USB disk and the test VM's disk all
# work); consoles fixed, as "auto" would probe the build machine; no cma= (Debian's default
# cma=64M leaves a Pi 4 unbootable; its device tree reserves what it needs).
sed -i -e 's/^#\?ROOTPART=.*/ROOTPART=LABEL=RASPIROOT/' \
    -e 's/^#\?CONSOLES=.*/CONSOLES="ttyS1,115200 tty0"/' \
    -e 's/^#\?CMA=.*/CMA=0/' "$ROOT/etc/default/raspi-firmware"
rm "$ROOT/usr/sbin/update-initramfs"  # build_image.py's stub
chroot "$ROOT" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.real \
    --remove /usr/sbin/update-initramfs
# The initramfs checks the root file system before mounting it (fsck.repair=yes in cmdline.txt
# answers yes after a power cut): its fsck hook cannot find the root's type in a chroot.
printf 'FSTYPE=ext4\n' >"$ROOT/etc/initramfs-tools/conf.d/maskwatch-image-fsck"
# One initramfs (MODULES=most: it must find an SD card, a USB disk or a virtio disk); its
# post-update hook has raspi-firmware copy kernel, initrd and device trees to /boot/firmware
# and write config.txt and cmdline.txt.
for kernel in "$ROOT"/boot/vmlinuz-*; do
    chroot "$ROOT" update-initramfs -c -k "${kernel#"$ROOT"/boot/vmlinuz-}"
done

units="maskwatch.service maskwatch-firstboot.service systemd-networkd.service"
units="$units systemd-resolved.service systemd-timesyncd.service ssh.service"
if [ "${MASKWATCH_IMAGE_MOSQUITTO:-0}" = 1 ]; then
    units="$units mosquitto.service"
fi
# shellcheck disable=SC2086
systemctl --root="$ROOT" enable $units

# Nothing that must differ per card: SSH host keys are made at first boot (firstboot.py),
# the machine id by systemd ("uninitialized" also marks the first boot for ConditionFirstBoot).
rm -f "$ROOT"/etc/ssh/ssh_host_*_key "$ROOT"/etc/ssh/ssh_host_*_key.pub
echo uninitialized >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
# Package lists are stale by the time the card is used; `apt update` fetches them.
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb
rm -f "$ROOT"/var/log/*.log "$ROOT"/var/log/apt/*
mkdir -p "$ROOT/var/log/journal"
