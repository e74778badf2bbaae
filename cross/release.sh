#!/usr/bin/env bash
# Release artifacts from the static binaries cross/build.sh put in $CARGO_TARGET_DIR/bin/:
# - per architecture, spillway-VERSION-linux-ARCH.tar.gz: `spillway`, `spillway-agent`, the
#   systemd units, the example coordinator.toml and install.sh (ARCH: x86_64, aarch64, armv7);
# - per architecture, spillway-VERSION-linux-ARCH.cdx.json: a CycloneDX SBOM of every crate the
#   two binaries are built from for that target (name, version, purl, licence), from the lockfile
#   through `cargo tree`;
# - install.sh beside them, for `curl … | sh`-style installs that verify what they fetch;
# - SHA256SUMS over all of them, and SHA256SUMS.sig: its Ed25519 signature, which OpenSSL 3 (on
#   every Debian 12 / Raspberry Pi OS bookworm board) verifies:
#     openssl pkeyutl -verify -pubin -inkey spillway-release.pub -rawin -in SHA256SUMS -sigfile SHA256SUMS.sig
# - spillway-release.pub: the public key, for publishing apart from the artifacts.
# - with --gnupg-home: the Debian packages (cross/debian.sh: spillway-agent and
#   spillway-coordinator for amd64, arm64, armhf) in SHA256SUMS too, and their signed apt
#   repository in apt/;
# - the multi-platform images (spillway-agent.oci.tar, spillway-coordinator.oci.tar) when
#   cross/build.sh --images made them, in SHA256SUMS too.
# The tarballs are reproducible: sorted names, owner 0, mtime SOURCE_DATE_EPOCH (default: the
# last commit's time).
#
# Everything, from the sources, in one command:
#   cross/release.sh --build --key /secure/spillway-release.key --gnupg-home /secure/spillway-apt
# Once, to make the keys:
#   cross/release.sh --new-key /secure/spillway-release.key && cross/debian.sh --new-key /secure/spillway-apt
#
# Options: --key FILE (required to sign), --gnupg-home DIR (the apt repository's OpenPGP key;
# without it no packages), --build (cross/build.sh --images first), --bin DIR
# ($CARGO_TARGET_DIR/bin), --out DIR ($CARGO_TARGET_DIR/release), --version V (the workspace's),
# --fast (quicker, larger packages: for tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/spillway/target}"
key="" bin="$CARGO_TARGET_DIR/bin" out="$CARGO_TARGET_DIR/release" version="" gnupg_home="" build=0 fast=()
while (($#)); do
  case "$1" in
    --fast) fast=(--fast); shift ;;
    --key) key="$2"; shift 2 ;;
    --gnupg-home) gnupg_home="$2"; shift 2 ;;
    --build) build=1; shift ;;
    --bin) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --new-key)
      [ -e "$2" ] && { echo "$2 exists already: keep it, or remove it first" >&2; exit 1; }
      (umask 077 && openssl genpkey -algorithm ed25519 -out "$2")
      openssl pkey -in "$2" -pubout -out "$2.pub"
      echo "signing key: $2 (keep it secret, off the build machine); public key: $2.pub (publish it)"
      exit 0 ;;
    *) echo "unknown option $1 (--key FILE, --gnupg-home DIR, --build, --fast, --bin DIR, --out DIR, --version V, or --new-key FILE)" >&2; exit 64 ;;
  esac
done
[ -n "$key" ] || { echo "a release is signed: --key FILE (make one with --new-key FILE)" >&2; exit 64; }
if ((build)); then
  cross/build.sh --images
fi
[ -n "$version" ] || version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

# The crates in the binaries for target $1, as a CycloneDX 1.5 SBOM on stdout.
sbom() {
  cargo tree --offline --locked -e normal --target "$1" -p spillway-agent -p spillway-cli \
    --prefix none --format '{p}|{l}' | python3 -c '
import json, re, sys
version, arch = sys.argv[1:3]
components = {}
for line in sys.stdin:
    pkg, _, licence = line.strip().removesuffix(" (*)").partition("|")
    m = re.match(r"^(\S+) v(\S+)", pkg)
    if not m:
        continue
    name, ver = m.groups()
    c = {"type": "library", "name": name, "version": ver, "purl": f"pkg:cargo/{name}@{ver}"}
    if licence:
        c["licenses"] = [{"expression": licence.replace("/", " OR ")}]
    components[(name, ver)] = c
print(json.dumps({
    "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
    "metadata": {"component": {"type": "application", "name": "spillway", "version": version,
                               "properties": [{"name": "target", "value": arch}]}},
    "components": [components[k] for k in sorted(components)],
}, indent=1))
' "$version" "$2"
}

rm -rf "$out" && mkdir -p "$out"
made=0
for pair in x86_64-unknown-linux-gnu:x86_64 aarch64-unknown-linux-gnu:aarch64 armv7-unknown-linux-gnueabihf:armv7; do
  triple="${pair%%:*}" arch="${pair##*:}"
  [ -x "$bin/$triple/spillway-agent" ] && [ -x "$bin/$triple/spillway" ] || continue
  name="spillway-$version-linux-$arch"
  stage="$out/.stage/$name"
  mkdir -p "$stage"
  install -m 0755 "$bin/$triple/spillway" "$bin/$triple/spillway-agent" scripts/install.sh "$stage/"
  install -m 0644 configs/systemd/spillway-agent.service configs/systemd/spillway-coordinator.service \
    configs/coordinator.toml "$stage/"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -C "$out/.stage" -cf - "$name" | gzip -n > "$out/$name.tar.gz"
  sbom "$triple" "$arch" > "$out/$name.cdx.json"
  made=$((made + 1))
done
rm -rf "$out/.stage"
((made)) || { echo "no binaries in $bin/TRIPLE/: run cross/build.sh first" >&2; exit 1; }
install -m 0755 scripts/install.sh "$out/install.sh"
if [ -n "$gnupg_home" ]; then
  cross/debian.sh --bin "$bin" --out "$out/.debian" --gnupg-home "$gnupg_home" ${fast[@]+"${fast[@]}"} >/dev/null
  mv "$out"/.debian/*.deb "$out/" && mv "$out/.debian/apt" "$out/apt" && rm -rf "$out/.debian"
fi
for image in "$CARGO_TARGET_DIR"/images/spillway-{agent,coordinator}.oci.tar; do
  [ -f "$image" ] || continue
  # Images made before the binaries would ship other code than the tarballs.
  if [ -n "$(find "$bin" -type f -newer "$image" -print -quit)" ]; then
    echo "$image is older than the binaries in $bin: not released (cross/build.sh --images --no-build)" >&2
    continue
  fi
  cp "$image" "$out/"
done
(cd "$out" && shopt -s nullglob && sha256sum -- *.tar.gz *.cdx.json install.sh *.deb *.oci.tar > SHA256SUMS)
openssl pkeyutl -sign -inkey "$key" -rawin -in "$out/SHA256SUMS" -out "$out/SHA256SUMS.sig"
openssl pkey -in "$key" -pubout -out "$out/spillway-release.pub"
openssl pkeyutl -verify -pubin -inkey "$out/spillway-release.pub" -rawin \
  -in "$out/SHA256SUMS" -sigfile "$out/SHA256SUMS.sig" >/dev/null
echo "release $version in $out:"
(cd "$out" && ls -l)
