#!/usr/bin/env bash
# Builds static binaries of spillway-agent and spillway for the given targets, prints their sizes
# and puts them in $CARGO_TARGET_DIR/bin/TRIPLE/; with --test also runs each target's tests from
# the same build (x86_64 natively: the whole suite; ARM under qemu-user: proto, link and agent),
# and with --images assembles Spillway's multi-platform images from what is in bin/.
#
#   cross/build.sh                         # release artifacts: x86_64, aarch64 and armv7
#   cross/build.sh armv7-unknown-linux-gnueabihf
#   cross/build.sh --images                # all three, then the images of the agent and the
#                                          # coordinator as oci-archives in $CARGO_TARGET_DIR/images
#   cross/build.sh --profile dev --test x86_64-unknown-linux-gnu          # what CI runs
#   cross/build.sh --profile ci --test aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf
#   cross/build.sh --images --no-build     # the images from what is in bin/ already
#   cross/build.sh --profile dev cargo x86_64-unknown-linux-gnu test -p spillway-tests --test images -- --ignored
#                                          # any cargo command with a target's toolchain and env
#
# Profiles (Cargo.toml): `release` is what ships and what BENCHMARKS.md sizes: size-optimised,
# fat LTO, one codegen unit, panic=abort. CI builds each target once: x86_64 with `dev` (its tests
# need debug assertions; the binaries are static too, so they go into the amd64 images), ARM with
# `ci`, which keeps the optimisation level but drops LTO and uses parallel codegen and
# panic=unwind (the test harness needs it), so one build serves the qemu tests, the
# static-linking check, the images and the emulated board.
#
# Toolchains (all static; libseccomp links statically for libcontainer):
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
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/spillway/target}"
all_targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
profile=release images=0 test=0 build=1 targets=()

# cargo with a target's toolchain and environment. Builds and tests of one target must go
# through here alike: cargo rebuilds whatever sees a different RUSTFLAGS or LIBSECCOMP_* value.
# `--profile` and `--target` go before a `--` (what follows it is the test harness's).
cargo_for() {
  local target="$1"; shift
  local args=() rest=() seen=0
  for a in "$@"; do
    if ((seen)); then rest+=("$a"); elif [ "$a" = -- ]; then seen=1; else args+=("$a"); fi
  done
  args+=(--profile "$profile" --target "$target")
  ((seen)) && args+=(-- "${rest[@]}")
  case "$target" in
    x86_64-unknown-linux-gnu)
      # Static like the ARM builds: one file to copy anywhere, and only the libc it uses in memory.
      LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
        RUSTFLAGS="-C target-feature=+crt-static" cargo "${args[@]}" ;;
    aarch64-unknown-linux-gnu)
      LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/aarch64-linux-gnu \
        RUSTC=/usr/bin/rustc /usr/bin/cargo "${args[@]}" ;;
    armv7-unknown-linux-gnueabihf)
      if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        rustup target add "$target" >/dev/null \
          || { echo "rustup's $target std is missing and could not be fetched: run \`rustup target add $target\` where rustup reaches its server" >&2; exit 1; }
      fi
      # No libseccomp here: it comes with libcontainer, which 32-bit builds leave out.
      cargo "${args[@]}" ;;
    *)
      echo "unsupported target $target (${all_targets[*]})" >&2
      exit 64 ;;
  esac
}

strip_for() {
  local target="$1"; shift
  case "$target" in
    aarch64-unknown-linux-gnu) aarch64-linux-gnu-strip "$@" ;;
    armv7-unknown-linux-gnueabihf) arm-linux-gnueabihf-strip "$@" ;;
    *) strip "$@" ;;
  esac
}

while (($#)); do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --images) images=1; shift ;;
    --test) test=1; shift ;;
    --no-build) build=0; shift ;;
    cargo) shift; cargo_for "$@"; exit ;;
    -*) echo "unknown option $1 (--profile P, --images, --test, or: cargo TARGET ARGS...)" >&2; exit 64 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=("${all_targets[@]}")
((build)) || targets=()

# The tests each target runs from its own build: x86_64 natively, all of them; the ARM ones under
# qemu-user. armv7 runs the agent's library tests only: libcontainer is left out of 32-bit
# builds, and the agent's integration tests need containers.
test_args() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo "--workspace" ;;
    aarch64-unknown-linux-gnu) echo "-p spillway-proto -p spillway-link -p spillway-agent --tests" ;;
    armv7-unknown-linux-gnueabihf) echo "-p spillway-proto -p spillway-link -p spillway-agent --lib" ;;
  esac
}

bin="$CARGO_TARGET_DIR/bin"
for target in "${targets[@]}"; do
  started=$SECONDS
  if ((test)); then
    # shellcheck disable=SC2046 # word splitting of the argument list is wanted
    cargo_for "$target" test $(test_args "$target")
    printf '%-28s tests (%s profile) in %ds\n' "$target" "$profile" $((SECONDS - started))
    started=$SECONDS
  fi
  cargo_for "$target" build -p spillway-agent -p spillway-coordinator
  dir="$CARGO_TARGET_DIR/$target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
  mkdir -p "$bin/$target"
  for b in spillway-agent spillway; do
    kind=$(file -b "$dir/$b")
    grep -Eq "statically linked|static-pie linked" <<<"$kind" \
      || { echo "$dir/$b is not statically linked: $kind" >&2; exit 1; }
    # Debug info stays in the build (tests and crashes name their lines); the copy that goes into
    # images and onto cards does without it.
    strip_for "$target" --strip-debug -o "$bin/$target/$b.tmp" "$dir/$b"
    mv "$bin/$target/$b.tmp" "$bin/$target/$b"
    size=$(stat -c %s "$bin/$target/$b")
    printf '%-28s %-16s %8.2f MiB  %s\n' "$target" "$b" "$(awk "BEGIN{print $size/1048576}")" "$(cut -d, -f1-2 <<<"$kind")"
  done
  case "$target" in
    aarch64-unknown-linux-gnu) qemu-aarch64-static "$bin/$target/spillway-agent" --version ;;
    armv7-unknown-linux-gnueabihf) qemu-arm-static "$bin/$target/spillway-agent" --version ;;
    *) "$bin/$target/spillway-agent" --version ;;
  esac
  printf '%-28s built (%s profile) in %ds\n' "$target" "$profile" $((SECONDS - started))
done
if ((images)); then
  out="$CARGO_TARGET_DIR/images"
  mkdir -p "$out"
  version=$(cargo pkgid -p spillway-agent | sed 's/.*[#@]//')
  # The image tool runs here: built with the x86_64 tests' toolchain and env when CI has it.
  profile=dev cargo_for x86_64-unknown-linux-gnu build -q -p spillway-cross
  for component in agent coordinator; do
    "$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/debug/spillway-image" "$component" --binaries "$bin" \
      --tag "$version" --out "$out/spillway-$component.oci.tar"
  done
  echo "push with: skopeo copy --all oci-archive:$out/spillway-agent.oci.tar:$version docker://REGISTRY/spillway-agent:$version"
fi
