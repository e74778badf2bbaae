#!/usr/bin/env bash
# Spillway's whole test suite, on a fresh Debian 12 machine (run as root):
#   1. installs what the tests need (Debian packages; nothing else is downloaded but crates),
#   2. checks formatting and lints,
#   3. rebuilds the wasm example from C and checks it matches the committed module,
#   4. runs every x86_64 test (unit, property, runtime, end-to-end with real processes, mesh tests
#      across network namespaces, containers from a real registry),
#   5. cross-builds a static aarch64 agent and runs the proto, link and agent tests under qemu,
#   6. cross-builds static release binaries for x86_64, aarch64 and armv7 and Spillway's own
#      multi-platform images (checked with skopeo and umoci, pushed, pulled back per platform),
#   7. boots an emulated Raspberry Pi (qemu-system-aarch64, Debian's arm64 kernel) from a card
#      prepared by `spillway flash`: it joins the mesh and runs a container function,
#   8. runs the proto, link and agent library tests for armv7 under qemu (wasm through Pulley).
# Builds are cached in $CARGO_TARGET_DIR (default /var/cache/spillway/target) between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/spillway/target}"
# rustup's toolchain, also when CI starts us with a minimal PATH.
[ -d "${HOME:-/root}/.cargo/bin" ] && export PATH="${HOME:-/root}/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n==> %s\n' "$*"; }

packages=(
  clang lld wasi-libc libclang-rt-14-dev-wasm32 libstb-dev      # C -> wasm32-wasi examples
  rustc-web cargo-web libstd-rust-web-dev:arm64                 # Debian's rustc 1.96 for cross builds
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static  # static aarch64 link + emulation
  gcc-arm-linux-gnueabihf libc6-dev-armhf-cross                 # static armv7 link
  file                                                          # checks that ARM binaries are static
  iproute2                                                      # hosts as network namespaces (mesh tests)
  systemd                                                       # systemd-analyze verify (service tests)
  libseccomp-dev libseccomp-dev:arm64                           # libcontainer's seccomp (static in ARM builds)
  docker-registry skopeo umoci busybox-static                   # OCI tests: registry, pusher, image contents
  python3 python3-cryptography                                  # htpasswd hashes, the registry's token issuer
  crun runc                                                     # baselines of the OCI benchmark
  qemu-system-arm dosfstools mtools fdisk                       # emulated Pi booting a flashed card
  ca-certificates                                               # the CA bundle in Spillway's own images
  mosquitto mosquitto-clients curl openssl                      # MQTT against real brokers (TLS) and clients; HTTP invoke
)
step "checking build and test dependencies"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust 1.95+ (rustup)" >&2; exit 1; }
# moto's server is the S3 and Lambda API of the storage and replica tests (PyPI; boto3 comes
# with it); cargo-lambda (PyPI, prebuilt) emulates the Lambda Runtime API for the runner.
if ! command -v moto_server >/dev/null || ! python3 -c 'import boto3, moto.server' 2>/dev/null; then
  echo "installing moto[server] (PyPI)"
  python3 -m pip install -q 'moto[server]' || python3 -m pip install -q --break-system-packages 'moto[server]'
fi
# kmock (PyPI) is the Kubernetes API emulator of the kubernetes replica tests.
if ! python3 -c 'import kmock' 2>/dev/null; then
  echo "installing kmock (PyPI)"
  python3 -m pip install -q kmock || python3 -m pip install -q --break-system-packages kmock
fi
if ! command -v cargo-lambda >/dev/null; then
  echo "installing cargo-lambda (PyPI)"
  python3 -m pip install -q cargo-lambda || python3 -m pip install -q --break-system-packages cargo-lambda
fi

step "format"
cargo fmt --all --check

step "lints"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# Dependencies stay ARM-clean: aws-lc-rs and OpenSSL do not cross-build statically here (use ring).
for crate in aws-lc-rs openssl-sys; do
  if cargo tree --workspace -i "$crate" >/dev/null 2>&1; then
    echo "$crate is in the dependency tree (cargo tree -i $crate); pick ring-based features instead" >&2
    exit 1
  fi
done

step "wasm example is reproducible from its C source"
rebuilt="$CARGO_TARGET_DIR/grayscale.wasm"
configs/examples/grayscale/build.sh "$rebuilt"
cmp "$rebuilt" configs/examples/grayscale/grayscale.wasm \
  || { echo "configs/examples/grayscale/grayscale.wasm is stale: run configs/examples/grayscale/build.sh" >&2; exit 1; }

step "x86_64 tests"
cargo test --workspace

step "aarch64: static agent, proto, link and agent tests under qemu-aarch64-static"
# libseccomp links statically into ARM builds (the boards need no libseccomp package).
export LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/aarch64-linux-gnu
RUSTC=/usr/bin/rustc /usr/bin/cargo build --profile ci --target aarch64-unknown-linux-gnu -p spillway-agent
arm_agent="$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/ci/spillway-agent"
file "$arm_agent" | grep -q "statically linked" || { echo "$arm_agent is not static" >&2; exit 1; }
qemu-aarch64-static "$arm_agent" --version
RUSTC=/usr/bin/rustc /usr/bin/cargo test --profile ci --target aarch64-unknown-linux-gnu -p spillway-proto -p spillway-link -p spillway-agent --tests

# From here on x86_64 test binaries link libseccomp as usual; cross/build.sh sets its own.
unset LIBSECCOMP_LINK_TYPE LIBSECCOMP_LIB_PATH

step "cross: static release binaries for x86_64, aarch64 and armv7, and multi-platform images"
cross/build.sh --images
SPILLWAY_CROSS_TARGET="$CARGO_TARGET_DIR" cargo test -p spillway-tests --test images -- --ignored

step "emulated Raspberry Pi: a flashed card boots, joins the mesh and runs a container"
# Debian's arm64 kernel and busybox for the board (downloaded once into /var/cache/spillway/pi).
tests/pi/assets.sh
SPILLWAY_AARCH64_AGENT="$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/spillway-agent" \
  cargo test -p spillway-tests --test pi_boot -- --ignored

step "armv7: proto, link and agent library tests under qemu-arm-static"
# rustup's armv7 std (Debian's armhf one is rustc 1.85; see cross/build.sh). The library tests
# only: the unoptimised 64 MB armv7 agent binary crashes at start under qemu-arm (the release
# binary of cross/build.sh runs), and libcontainer is left out of 32-bit builds.
rustup target add armv7-unknown-linux-gnueabihf >/dev/null   # a download on a fresh machine
cargo test --profile ci --target armv7-unknown-linux-gnueabihf -p spillway-proto -p spillway-link --tests
cargo test --profile ci --target armv7-unknown-linux-gnueabihf -p spillway-agent --lib

step "all tests passed"
