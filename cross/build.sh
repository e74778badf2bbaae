#!/usr/bin/env bash
# Builds release binaries of spillway-agent and spillway for the given targets and prints their
# sizes. ARM binaries are static (see .cargo/config.toml) and built with Debian's rustc-web, the
# only compiler here with an aarch64 standard library (scripts/test.sh installs it).
#
#   cross/build.sh                      # x86_64 and aarch64
#   cross/build.sh aarch64-unknown-linux-gnu
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/spillway/target}"
targets=("$@")
((${#targets[@]})) || targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)
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
    *)
      echo "unsupported target $target (armv7 arrives with the edge-delivery issue)" >&2; exit 64 ;;
  esac
  for bin in spillway-agent spillway; do
    size=$(stat -c %s "$dir/$bin")
    printf '%-28s %-16s %8.2f MiB  %s\n' "$target" "$bin" "$(awk "BEGIN{print $size/1048576}")" "$(file -b "$dir/$bin" | cut -d, -f1-2)"
  done
done
