#!/bin/sh
# Installs the Spillway agent on this machine from a release (cross/release.sh makes one): takes
# the tarball for this machine's architecture from a URL or a folder, checks the signature of
# SHA256SUMS with the release key you trust and the tarball's SHA-256, then installs the binary,
# the hardened systemd unit and a config (`spillway-agent install`), joins a coordinator if
# asked, and starts the service under systemd. Nothing is installed unless every check passes.
#
#   sh install.sh --from https://example.org/spillway/0.1.0 --pubkey spillway-release.pub \
#       [--coordinator HOST:7443 --token spw1.…] [--config agent.toml] [--root DIR] [--no-start]
#
# The public key must come from somewhere you trust other than --from (a signature checked with
# a key fetched from the same place proves nothing). Needs: sh, tar, gzip, sha256sum, openssl 3,
# and curl for URLs.
set -eu

say() { printf 'install.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

from="${SPILLWAY_RELEASE:-}" pubkey="${SPILLWAY_RELEASE_PUBKEY:-}" root=/ config="" coordinator="" token=""
start=1 arch=""
while [ $# -gt 0 ]; do
  case "$1" in
    --from) from="$2"; shift 2 ;;
    --pubkey) pubkey="$2"; shift 2 ;;
    --root) root="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --coordinator) coordinator="$2"; shift 2 ;;
    --token) token="$2"; shift 2 ;;
    --arch) arch="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -n "$from" ] || die "where is the release? --from URL or --from DIR (or \$SPILLWAY_RELEASE)"
[ -n "$pubkey" ] || die "which release key do you trust? --pubkey FILE (spillway-release.pub, from a channel you trust)"
[ -r "$pubkey" ] || die "cannot read the release key $pubkey"
if { [ -n "$coordinator" ] && [ -z "$token" ]; } || { [ -z "$coordinator" ] && [ -n "$token" ]; }; then
  die "joining needs both --coordinator HOST:PORT and --token T (create one with \`spillway token create\`)"
fi
for tool in tar gzip sha256sum openssl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: install it (Debian: apt install $tool)"
done

if [ -z "$arch" ]; then
  case "$(uname -m)" in
    x86_64|amd64) arch=x86_64 ;;
    aarch64|arm64) arch=aarch64 ;;
    armv7l|armv8l) arch=armv7 ;;
    *) die "no Spillway build for this machine ($(uname -m)): releases have x86_64, aarch64 and armv7 (a Pi Zero W or Pi 1 is armv6: not supported)" ;;
  esac
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
fetch() {
  case "$from" in
    http://*|https://*)
      command -v curl >/dev/null 2>&1 || die "curl is missing: install it, or download the release and use --from DIR"
      curl -fsSL --proto '=http,https' --max-filesize 268435456 -o "$work/$1" "${from%/}/$1" \
        || die "cannot fetch ${from%/}/$1" ;;
    *) cp -- "$from/$1" "$work/$1" 2>/dev/null || die "cannot read $from/$1" ;;
  esac
}

fetch SHA256SUMS
fetch SHA256SUMS.sig
openssl pkeyutl -verify -pubin -inkey "$pubkey" -rawin -in "$work/SHA256SUMS" \
  -sigfile "$work/SHA256SUMS.sig" >/dev/null 2>&1 \
  || die "the signature of SHA256SUMS does not verify with $pubkey: this release was not signed with that key, or was changed; nothing was installed"

# Only a name of the expected shape, listed once, for this architecture.
tarball=$(awk -v arch="$arch" '
  NF == 2 && $1 ~ /^[0-9a-f]+$/ && length($1) == 64 && $2 ~ ("^spillway-[0-9A-Za-z.+~-]+-linux-" arch "\\.tar\\.gz$") { print $2; n++ }
  END { if (n != 1) exit 1 }' "$work/SHA256SUMS") \
  || die "the release has no single tarball for $arch (SHA256SUMS lists: $(awk '{print $2}' "$work/SHA256SUMS" | tr '\n' ' '))"
fetch "$tarball"
(cd "$work" && grep -E "^[0-9a-f]{64}  $tarball\$" SHA256SUMS | sha256sum -c --status) \
  || die "$tarball does not match its SHA-256 in the signed SHA256SUMS (a changed or cut download); nothing was installed"

mkdir "$work/x"
tar -xzf "$work/$tarball" -C "$work/x" --no-same-owner
agent="$work/x/${tarball%.tar.gz}/spillway-agent"
[ -x "$agent" ] || die "$tarball holds no spillway-agent"

set -- --root "$root"
if [ -n "$config" ]; then
  "$agent" --config "$config" install "$@" >&2 || die "spillway-agent install failed"
else
  "$agent" install "$@" >&2 || die "spillway-agent install failed"
fi
installed="${root%/}/usr/local/bin/spillway-agent"
conf="${root%/}/etc/spillway/agent.toml"
say "installed $("$installed" --version) for $arch under $root"

if [ -n "$coordinator" ]; then
  "$installed" --config "$conf" join --coordinator "$coordinator" --token "$token" >&2 \
    || die "joining $coordinator failed (the agent said why above); the agent is installed: join again with $installed --config $conf join --coordinator $coordinator --token T"
  say "joined the mesh of $coordinator"
fi

if [ "$start" = 1 ] && [ "$root" = / ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload && systemctl enable --now spillway-agent \
    || die "systemd could not start spillway-agent: see journalctl -u spillway-agent"
  say "started: systemctl status spillway-agent"
else
  say "not started here; start it with: systemctl enable --now spillway-agent (or: $installed --config $conf run)"
fi
