#!/usr/bin/env bash
# Debian packages of the static binaries cross/build.sh put in $CARGO_TARGET_DIR/bin/TRIPLE/,
# made by cargo-deb from the `[package.metadata.deb]` of agent/Cargo.toml and cli/Cargo.toml,
# and an apt repository of them:
# - OUT/spillway-agent_VERSION-1_ARCH.deb: the agent, its hardened unit (enabled by the user
#   after `join`), the conffile /etc/spillway/agent.toml;
# - OUT/spillway-coordinator_VERSION-1_ARCH.deb: `spillway` (CLI and `spillway serve`), its unit
#   (enabled and started), the conffile /etc/spillway/coordinator.toml that fits the unit;
#   ARCH: amd64, arm64, armhf, for whichever of the three builds are there;
# - OUT/apt/: an apt repository (apt-ftparchive) for `apt install spillway-agent` from a folder
#   or any HTTP server: pool/main/, dists/stable/main/binary-ARCH/Packages{,.gz},
#   dists/stable/{Release,InRelease,Release.gpg}, signed with the OpenPGP key of --gnupg-home
#   (apt verifies OpenPGP only), and spillway-archive-keyring.gpg, its public key. On a board:
#     curl -fsSLo /usr/share/keyrings/spillway.gpg https://HOST/apt/spillway-archive-keyring.gpg
#     echo 'deb [signed-by=/usr/share/keyrings/spillway.gpg] https://HOST/apt stable main' \
#       > /etc/apt/sources.list.d/spillway.list
#     apt update && apt install spillway-agent
#
#   cross/debian.sh --gnupg-home /secure/spillway-apt            # after cross/build.sh
#   cross/debian.sh --new-key /secure/spillway-apt               # once: make the archive key
#
# Options: --bin DIR ($CARGO_TARGET_DIR/bin), --out DIR ($CARGO_TARGET_DIR/debian),
# --gnupg-home DIR (required to sign the repository), --new-key DIR, --fast (quicker, larger
# packages: for tests; releases compress with xz).
# Needs cargo-deb (`cargo install cargo-deb --locked`), apt-ftparchive (apt-utils) and gpg.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/spillway/target}"
bin="$CARGO_TARGET_DIR/bin" out="$CARGO_TARGET_DIR/debian" gnupg_home="" fast=()
while (($#)); do
  case "$1" in
    --fast) fast=(--fast); shift ;;
    --bin) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --gnupg-home) gnupg_home="$2"; shift 2 ;;
    --new-key)
      [ -e "$2" ] && { echo "$2 exists already: keep it, or remove it first" >&2; exit 1; }
      (umask 077 && mkdir -p "$2")
      GNUPGHOME="$2" gpg --batch --quiet --passphrase '' \
        --quick-generate-key "Spillway archive <spillway@spillway.invalid>" ed25519 sign never
      echo "archive signing key: $2 (a GnuPG home; keep it off the build machine)"
      exit 0 ;;
    *) echo "unknown option $1 (--bin DIR, --out DIR, --gnupg-home DIR, --fast, or --new-key DIR)" >&2; exit 64 ;;
  esac
done
[ -n "$gnupg_home" ] || { echo "the apt repository is signed: --gnupg-home DIR (make one with --new-key DIR)" >&2; exit 64; }
command -v cargo-deb >/dev/null \
  || { echo "cargo-deb not found: cargo install cargo-deb --locked" >&2; exit 1; }
command -v apt-ftparchive >/dev/null \
  || { echo "apt-ftparchive not found: apt-get install apt-utils" >&2; exit 1; }
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"

# The changelog's newest entry is this version: a stale one would name the wrong release.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
head -1 configs/debian/changelog | grep -q "^spillway ($version-" \
  || { echo "configs/debian/changelog does not start with version $version-N: add an entry" >&2; exit 1; }

rm -rf "$out" && mkdir -p "$out/apt/pool/main"
stage="$out/.stage"
made=0 arches=()
for pair in x86_64-unknown-linux-gnu:amd64 aarch64-unknown-linux-gnu:arm64 armv7-unknown-linux-gnueabihf:armhf; do
  triple="${pair%%:*}" arch="${pair##*:}"
  [ -x "$bin/$triple/spillway-agent" ] && [ -x "$bin/$triple/spillway" ] || continue
  # cargo-deb takes `target/release/X` from CARGO_TARGET_DIR/TRIPLE/release/: the stripped
  # static binaries go there, so the packages hold exactly what the tarballs and images hold.
  mkdir -p "$stage/$triple/release"
  cp "$bin/$triple/spillway-agent" "$bin/$triple/spillway" "$stage/$triple/release/"
  for package in spillway-agent spillway-cli; do
    CARGO_TARGET_DIR="$stage" cargo deb --quiet --offline --locked --no-build --no-strip \
      --no-dbgsym ${fast[@]+"${fast[@]}"} -p "$package" --target "$triple" --output "$out/" >/dev/null
  done
  arches+=("$arch")
  made=$((made + 1))
done
rm -rf "$stage"
((made)) || { echo "no static builds in $bin: run cross/build.sh first" >&2; exit 1; }

# The repository: flat pool, one suite, one component.
cp "$out"/*.deb "$out/apt/pool/main/"
(
  cd "$out/apt"
  for arch in "${arches[@]}"; do
    dir="dists/stable/main/binary-$arch"
    mkdir -p "$dir"
    apt-ftparchive --arch "$arch" packages pool/main > "$dir/Packages"
    gzip -9n < "$dir/Packages" > "$dir/Packages.gz"
  done
  apt-ftparchive \
    -o APT::FTPArchive::Release::Origin=Spillway -o APT::FTPArchive::Release::Label=Spillway \
    -o APT::FTPArchive::Release::Suite=stable -o APT::FTPArchive::Release::Codename=stable \
    -o APT::FTPArchive::Release::Components=main \
    -o "APT::FTPArchive::Release::Architectures=${arches[*]}" \
    release dists/stable > dists/stable/Release.tmp
  mv dists/stable/Release.tmp dists/stable/Release
  export GNUPGHOME="$gnupg_home"
  gpg --batch --quiet --yes --clearsign -o dists/stable/InRelease dists/stable/Release
  gpg --batch --quiet --yes --detach-sign --armor -o dists/stable/Release.gpg dists/stable/Release
  gpg --batch --quiet --yes --export -o spillway-archive-keyring.gpg
)
ls -1 "$out"/*.deb
echo "apt repository: $out/apt (deb [signed-by=…/spillway-archive-keyring.gpg] URL stable main)"
