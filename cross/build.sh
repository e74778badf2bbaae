#!/usr/bin/env bash
# Builds static release binaries of spillway-agent and spillway for the given targets and prints
# their sizes. ARM binaries are static (see .cargo/config.toml); libseccomp links statically.
#
#   x86_64   rustup's rustc, +crt-static
#   aarch64  Debian's rustc-web 1.96 with libstd-rust-web-dev:arm64 (scripts/test.sh installs it)
#   armv7    rustup's rustc with rustup's armv7 std: Debian bookworm's armhf std is rustc 1.85
#            (too old for this lockfile) and the 1.96 armhf index of the security mirror does not
#            download here ("File has unexpected size"). Needs gcc-arm-linux-gnueabihf and
#            libc6-dev-armhf-cross.
#
# What each board gets: x86_64 and aarch64 run `oci`, `wasm` (Cranelift, native code) and
# `process` functions; armv7 (Pi 2/3/Zero 2 on a 32-bit OS) runs `wasm` through wasmtime's
# Pulley interpreter (chosen by wasmtime itself on hosts without a Cranelift backend; modules
# are compiled to Pulley bytecode on the board and cached like native code) and `process`, but
# not `oci`: libcontainer 0.7 does not build for 32-bit targets, so image functions are refused
# there with the reason (use `node_selector` to keep them on 64-bit nodes).
#
#   cross/build.sh                      # x86_64, aarch64 and armv7
#   cross/build.sh armv7-unknown-linux-gnueabihf
#   cross/build.sh --images             # all three, then the multi-platform images of the agent
#                                       # and the coordinator as oci-archives in $CARGO_TARGET_DIR/images
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/spillway/target}"
images=0
if [ "${1:-}" = --images ]; then images=1; shift; fi
targets=("$@")
((${#targets[@]})) || targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
for target in "${targets[@]}"; do
  case "$target" in
    x86_64-unknown-linux-gnu)
      # Static like the ARM builds: one file to copy anywhere, and only the libc it uses in memory.
      LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
        RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target "$target" -p spillway-agent -p spillway-coordinator
      dir="$CARGO_TARGET_DIR/$target/release" ;;
    aarch64-unknown-linux-gnu)
      LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/aarch64-linux-gnu \
        RUSTC=/usr/bin/rustc /usr/bin/cargo build --release --target "$target" -p spillway-agent -p spillway-coordinator
      dir="$CARGO_TARGET_DIR/$target/release" ;;
    armv7-unknown-linux-gnueabihf)
      rustup target add "$target" >/dev/null
      # No libseccomp here: it comes with libcontainer, which 32-bit builds leave out.
      cargo build --release --target "$target" -p spillway-agent -p spillway-coordinator
      dir="$CARGO_TARGET_DIR/$target/release" ;;
    *)
      echo "unsupported target $target (x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf)" >&2; exit 64 ;;
  esac
  for bin in spillway-agent spillway; do
    size=$(stat -c %s "$dir/$bin")
    printf '%-28s %-16s %8.2f MiB  %s\n' "$target" "$bin" "$(awk "BEGIN{print $size/1048576}")" "$(file -b "$dir/$bin" | cut -d, -f1-2)"
  done
done
if ((images)); then
  out="$CARGO_TARGET_DIR/images"
  mkdir -p "$out"
  version=$(cargo pkgid -p spillway-agent | sed 's/.*[#@]//')
  cargo build -q -p spillway-cross
  for component in agent coordinator; do
    "$CARGO_TARGET_DIR/debug/spillway-image" "$component" --binaries "$CARGO_TARGET_DIR" \
      --tag "$version" --out "$out/spillway-$component.oci.tar"
  done
  echo "push with: skopeo copy --all oci-archive:$out/spillway-agent.oci.tar:$version docker://REGISTRY/spillway-agent:$version"
fi
