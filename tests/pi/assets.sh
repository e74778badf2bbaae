#!/usr/bin/env bash
# Fetches what the emulated Raspberry Pi of tests/tests/pi_boot.rs boots, from Debian's arm64
# archive: the kernel (its Image and the few modules a virtio board needs) and busybox-static.
#   tests/pi/assets.sh [DIR]     (default /var/cache/spillway/pi; nothing is fetched twice)
set -euo pipefail
dir="${1:-/var/cache/spillway/pi}"
[ -f "$dir/ready" ] && exit 0
dpkg --print-foreign-architectures | grep -qx arm64 || { echo "run: dpkg --add-architecture arm64 && apt-get update" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
kernel=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
kernel=${kernel%:arm64}
[ -n "$kernel" ] || { echo "no arm64 kernel package in the apt index: apt-get update" >&2; exit 1; }
apt-get download -q "$kernel:arm64" busybox-static:arm64 2>&1 | grep -v "^W: Download is performed unsandboxed" || true
for deb in "${kernel}_*_arm64.deb" "busybox-static_*_arm64.deb"; do
  # shellcheck disable=SC2086 # the glob is wanted
  compgen -G "$deb" >/dev/null || { echo "cannot download ${deb%%_*}:arm64 from Debian's archive: run \`apt-get update && apt-get download ${deb%%_*}:arm64\` where the mirror is reachable, then tests/pi/assets.sh again" >&2; exit 1; }
done
dpkg-deb -x "$kernel"_*_arm64.deb kernel
dpkg-deb -x busybox-static_*_arm64.deb busybox
rm -rf "$dir.partial" && mkdir -p "$dir.partial/modules"
cp kernel/boot/vmlinuz-* "$dir.partial/vmlinuz"
# Load order: dependencies first. virtio-pci for the disk, network and entropy devices; vfat for
# the card's boot partition; overlay for containers' root file systems.
modules=(virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk failover net_failover
  virtio_net virtio-rng fat vfat nls_cp437 nls_ascii overlay)
for m in "${modules[@]}"; do
  found=$(find kernel/lib/modules -name "$m.ko" -print -quit)
  [ -n "$found" ] || { echo "module $m not in $kernel" >&2; exit 1; }
  cp "$found" "$dir.partial/modules/"
  echo "$m.ko" >> "$dir.partial/modules/order"
done
cp busybox/bin/busybox "$dir.partial/busybox"
echo "$kernel" > "$dir.partial/kernel-package"
touch "$dir.partial/ready"
rm -rf "$dir" && mv "$dir.partial" "$dir"
echo "emulated board assets in $dir ($kernel)"
