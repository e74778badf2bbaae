#!/usr/bin/env bash
# Builds `localhost/checksum:1`, a busybox image for the checksum example, as an oci-archive —
# no Docker: umoci (Debian) writes the image layout, skopeo (Debian) packs it.
#
#   configs/examples/checksum/make-image.sh /tmp/checksum.tar
#   spillway-agent --config agent.toml load /tmp/checksum.tar
#
# Needs: umoci, skopeo, busybox-static (apt-get install umoci skopeo busybox-static).
set -euo pipefail
out="${1:?usage: make-image.sh OUT.tar}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/layout"
umoci new --image "$work/layout:1"
umoci unpack --image "$work/layout:1" "$work/bundle" >/dev/null
mkdir -p "$work/bundle/rootfs/bin"
cp /bin/busybox "$work/bundle/rootfs/bin/busybox"
for applet in sh sha256sum gzip cat ls wc; do
  ln -sf busybox "$work/bundle/rootfs/bin/$applet"
done
umoci repack --image "$work/layout:1" "$work/bundle"
umoci config --image "$work/layout:1" --config.env PATH=/bin --config.cmd /bin/sh
rm -f "$out"
skopeo copy --quiet "oci:$work/layout:1" "oci-archive:$out:localhost/checksum:1"
echo "wrote $out (localhost/checksum:1)"
