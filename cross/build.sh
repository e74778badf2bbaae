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
# want debug assertions; the binaries are static too, so they go into the amd64 images), ARM with
# `ci` (optimised at level 1, no LTO, parallel codegen, panic=unwind for the test harness), so
# one build serves the qemu tests, the static-linking check, the images and the emulated board.
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
# qemu-user: proto, link and agent (armv7: the agent's library tests only, since libcontainer is
# left out of 32-bit builds and the agent's integration tests need containers).
test_args() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo "--workspace" ;;
    # `spillway` is built with the tests, in the same cargo run: a second run for the
    # binaries would resolve features without the tests' dev-dependencies and build half the
    # dependency tree again. Its integration tests (cli/tests) make cargo build the binary.
    *) echo "-p spillway-proto -p spillway-link -p spillway-agent -p spillway-cli --lib --tests" ;;
  esac
}

# Which of the built test executables run under qemu-user: crate folder, and `lib` (its library
# tests only) or `all`.
wanted_tests() {
  case "$1" in
    aarch64-unknown-linux-gnu) echo "proto:all link:all agent:all" ;;
    armv7-unknown-linux-gnueabihf) echo "proto:all link:all agent:lib" ;;
  esac
}

# Builds the tests of an ARM target once (binaries included) and runs the wanted ones.
arm_tests() {
  local target="$1" runner=qemu-aarch64-static
  [ "$target" = armv7-unknown-linux-gnueabihf ] && runner=qemu-arm-static
  local listing
  # shellcheck disable=SC2046 # word splitting of the argument list is wanted
  listing=$(cargo_for "$target" test --no-run --message-format=json-render-diagnostics $(test_args "$target"))
  local executables
  executables=$(WANTED="$(wanted_tests "$target")" python3 -c '
import json, os, sys
wanted = dict(w.split(":") for w in os.environ["WANTED"].split())
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    crate = os.path.basename(os.path.dirname(m["manifest_path"]))
    if crate in wanted and (wanted[crate] == "all" or "lib" in m["target"]["kind"]):
        print(os.path.dirname(m["manifest_path"]), m["executable"])
' <<<"$listing")
  [ -n "$executables" ] || { echo "no test executables found for $target" >&2; exit 1; }
  # As cargo runs them: from the crate's folder, which they may read relative paths from.
  while read -r dir exe; do
    echo "     Running $(basename "$exe") under $runner"
    (cd "$dir" && CARGO_MANIFEST_DIR="$dir" "$runner" "$exe" -q)
  done <<<"$executables"
}

bin="$CARGO_TARGET_DIR/bin"
for target in "${targets[@]}"; do
  started=$SECONDS
  if ((test)); then
    if [ "$target" = x86_64-unknown-linux-gnu ]; then
      # shellcheck disable=SC2046 # word splitting of the argument list is wanted
      cargo_for "$target" test $(test_args "$target")
    else
      arm_tests "$target"
    fi
    printf '%-28s tests (%s profile) in %ds\n' "$target" "$profile" $((SECONDS - started))
    started=$SECONDS
  fi
  # After the tests this finds everything built (cargo only checks).
  ((test)) && [ "$target" != x86_64-unknown-linux-gnu ] \
    || cargo_for "$target" build -p spillway-agent -p spillway-cli
  dir="$CARGO_TARGET_DIR/$target/$([ "$profile" = dev ] && echo debug || echo "$profile")"
  mkdir -p "$bin/$target"
  for b in spillway-agent spillway; do
    kind=$(file -b "$dir/$b")
    grep -Eq "statically linked|static-pie linked" <<<"$kind" \
      || { echo "$dir/$b is not statically linked: $kind" >&2; exit 1; }
    # Symbols and debug info stay in the build (tests and crashes name their functions and
    # lines); the copy that goes into images and onto cards does without them.
    strip_for "$target" --strip-all -o "$bin/$target/$b.tmp" "$dir/$b"
    mv "$bin/$target/$b.tmp" "$bin/$target/$b"
    size=$(stat -c %s "$bin/$target/$b")
    printf '%-28s %-16s %8.2f MiB  %s\n' "$target" "$b" "$(awk "BEGIN{print $size/1048576}")" "$(cut -d, -f1-2 <<<"$kind")"
  done
  # The binary itself starts (static: dynamic ARM binaries hang under qemu-user). Not armv7's
  # non-release builds: under qemu-arm 7.2 they fault before their first system call (the
  # release build starts, and their test executables run), a qemu-user limit noted in #20.
  case "$target" in
    aarch64-unknown-linux-gnu) qemu-aarch64-static "$bin/$target/spillway-agent" --version ;;
    armv7-unknown-linux-gnueabihf) [ "$profile" != release ] || qemu-arm-static "$bin/$target/spillway-agent" --version ;;
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
