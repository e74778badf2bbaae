#!/usr/bin/env bash
# Spillway's whole test suite, on a fresh Debian 12 machine (run as root):
#   1. installs what the tests need (Debian and PyPI packages, once per machine),
#   2. checks formatting and lints,
#   3. rebuilds the wasm example from C and checks it matches the committed module,
#   4. builds each target once, statically (see cross/build.sh), and from those builds:
#      - runs every x86_64 test (unit, property, runtime, end-to-end with real processes, mesh
#        tests across network namespaces, containers from a real registry),
#      - runs the proto, link and agent tests under qemu-aarch64-static and qemu-arm-static,
#      - assembles Spillway's own multi-platform images (checked with skopeo and umoci, pushed,
#        pulled back per platform),
#   5. packages those builds for Debian (cargo-deb), checks them with lintian and installs them
#      from a signed apt repository into clean Debian 12 roots, where their units' commands run,
#   6. boots an emulated Raspberry Pi (qemu-system-aarch64, Debian's arm64 kernel) from a card
#      prepared by `spillway flash`: it joins the mesh and runs a container function.
# The size-optimised release artifacts are not built here: `cross/build.sh --images` makes them.
# Builds are cached in $CARGO_TARGET_DIR (default /var/cache/spillway/target) between runs.
# Each step's time is printed as it ends, and all of them at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/spillway/target}"
# rustup's toolchain, also when CI starts us with a minimal PATH.
[ -d "${HOME:-/root}/.cargo/bin" ] && export PATH="${HOME:-/root}/.cargo/bin:$PATH"
export CARGO_TERM_COLOR=never
mkdir -p "$CARGO_TARGET_DIR"

steps=() current="" current_start=$SECONDS suite_start=$SECONDS
end_step() {
  [ -n "$current" ] || return 0
  local took=$((SECONDS - current_start))
  steps+=("$(printf '%4dm%02ds  %s' $((took / 60)) $((took % 60)) "$current")")
  printf '<== %s: %dm%02ds\n' "$current" $((took / 60)) $((took % 60))
  current=""
}
step() {
  end_step
  current="$*" current_start=$SECONDS
  printf '\n==> %s\n' "$*"
}
summary() {
  local rc=$? failed="$current"
  end_step
  local total=$((SECONDS - suite_start))
  printf '\n==> step times\n'
  printf '%s\n' "${steps[@]}"
  printf '%4dm%02ds  total\n' $((total / 60)) $((total % 60))
  if ((rc == 0)); then echo "all tests passed"; else printf 'FAILED in: %s (exit %d)\n' "${failed:-set-up}" "$rc"; fi
}
trap summary EXIT

# Installs a PyPI package once per machine; says what to run when the index cannot be reached.
pip_install() {
  local package="$1"
  echo "installing $package (PyPI)"
  python3 -m pip install -q "$package" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "$package" \
    || { echo "cannot install $package from PyPI: run \`python3 -m pip install '$package'\` where PyPI is reachable" >&2; exit 1; }
}

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
  containernetworking-plugins iptables                          # containers' own outbound network (CNI bridge, NAT)
  qemu-system-arm dosfstools mtools fdisk                       # emulated Pi booting a flashed card
  ca-certificates                                               # the CA bundle in Spillway's own images
  mosquitto mosquitto-clients curl openssl                      # MQTT against real brokers (TLS) and clients; HTTP invoke
  age                                                           # opens coordinator backups as an operator would
  mmdebstrap lintian apt-utils gnupg                            # Debian packages: clean root, checks, apt repository
  prometheus                                                    # scrapes agents and coordinator; runs the dashboard's queries
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
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    || { echo "cannot install Debian packages ${missing[*]}: run \`apt-get update && apt-get install ${missing[*]}\` where the Debian mirror is reachable" >&2; exit 1; }
fi
command -v cargo >/dev/null || { echo "cargo not found: install Rust 1.95+ (rustup)" >&2; exit 1; }
# moto's server is the S3 and Lambda API of the storage and replica tests (boto3 comes with it);
# kmock is the Kubernetes API emulator of the kubernetes replica tests; cargo-lambda (prebuilt)
# emulates the Lambda Runtime API for the runner.
if ! command -v moto_server >/dev/null || ! python3 -c 'import boto3, moto.server' 2>/dev/null; then
  pip_install 'moto[server]'
fi
python3 -c 'import kmock' 2>/dev/null || pip_install kmock
# Prometheus's own Python client parses the metrics test's expositions (OpenMetrics parser).
python3 -c 'import prometheus_client.openmetrics.parser' 2>/dev/null || pip_install prometheus-client
# OSCAR's own Python client drives a coordinator in the OSCAR-compatibility tests, and OSCAR's
# FaaS Supervisor (the code in every OSCAR container) is what `/run`'s answers are checked against.
python3 -c 'import oscar_python' 2>/dev/null || pip_install oscar-python
python3 -c 'import faassupervisor' 2>/dev/null || pip_install faas-supervisor
command -v cargo-lambda >/dev/null || pip_install cargo-lambda
# cargo-deb makes the Debian packages (cross/debian.sh); built once per machine, outside the clone.
if ! command -v cargo-deb >/dev/null; then
  echo "installing cargo-deb (crates.io)"
  CARGO_TARGET_DIR="$CARGO_TARGET_DIR/tools" cargo install -q --locked cargo-deb --version 3.8.0 \
    || { echo "cannot install cargo-deb: run \`cargo install --locked cargo-deb\` where crates.io is reachable" >&2; exit 1; }
fi
# A clean Debian 12 root (apt and systemd) where the packages are installed: made once.
debian_root=/var/cache/spillway/debian12-root.tar
if [ ! -s "$debian_root" ]; then
  echo "making a clean Debian 12 root for the package tests (mmdebstrap)"
  mmdebstrap --quiet --variant=apt --include=systemd bookworm "${debian_root%.tar}.tmp.tar" \
    || { echo "mmdebstrap could not make $debian_root: it needs the Debian mirror" >&2; exit 1; }
  mv "${debian_root%.tar}.tmp.tar" "$debian_root"
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

# The CLI stands apart from the agent: without `up` it links none of the agent's runtimes and
# nothing Linux-only (resolved for a macOS laptop), and without `serve` not the server either.
cli_tree() {
  cargo tree -q -p spillway-cli --no-default-features "$@" -e normal --target aarch64-apple-darwin \
    --prefix none | awk '{print $1}' | sort -u
}
for forbidden in spillway-agent libcontainer libseccomp pathrs procfs caps wasmtime cranelift-codegen oci-client inotify; do
  if cli_tree --features serve | grep -qx "$forbidden"; then
    echo "spillway without \`up\` depends on $forbidden (cargo tree -p spillway-cli --no-default-features --features serve -i $forbidden)" >&2
    exit 1
  fi
done
for forbidden in spillway-coordinator redb kube rumqttd axum object_store; do
  if cli_tree | grep -qx "$forbidden"; then
    echo "the client-only spillway depends on $forbidden (cargo tree -p spillway-cli --no-default-features -i $forbidden)" >&2
    exit 1
  fi
done
cargo check -q -p spillway-cli --no-default-features
cargo check -q -p spillway-cli --no-default-features --features serve

# The README's layout names every crate of the workspace, and only folders that exist.
members=$(python3 -c 'import tomllib; print("\n".join(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["members"]))')
for member in $members; do
  grep -q "^$member/ " README.md || { echo "README.md's layout does not describe $member/" >&2; exit 1; }
done
for folder in $(sed -n '/^## Layout/,/^## /p' README.md | grep -oE '^[a-z][a-z0-9-]*/'); do
  [ -d "$folder" ] || { echo "README.md's layout names $folder, which is not in the tree" >&2; exit 1; }
done

step "wasm example is reproducible from its C source"
rebuilt="$CARGO_TARGET_DIR/grayscale.wasm"
configs/examples/grayscale/build.sh "$rebuilt"
cmp "$rebuilt" configs/examples/grayscale/grayscale.wasm \
  || { echo "configs/examples/grayscale/grayscale.wasm is stale: run configs/examples/grayscale/build.sh" >&2; exit 1; }

X86=x86_64-unknown-linux-gnu ARM64=aarch64-unknown-linux-gnu ARMV7=armv7-unknown-linux-gnueabihf
step "x86_64: every test, from a static build whose binaries also go into the amd64 images"
cross/build.sh --profile dev --test "$X86"

step "fuzz: a short pass of mutated inputs over every parser (no input may panic)"
cross/build.sh --profile dev cargo "$X86" run -q -p spillway-fuzz -- --runs 3000

step "aarch64 and armv7: one static build each (ci profile), their tests under qemu-user"
cross/build.sh --profile ci --test "$ARM64" "$ARMV7"

step "multi-platform images from those builds: skopeo, umoci, pushed and pulled back per platform"
cross/build.sh --images --no-build
SPILLWAY_CROSS_TARGET="$CARGO_TARGET_DIR" \
  cross/build.sh --profile dev cargo "$X86" test -p spillway-tests --test images -- --ignored

step "Debian packages of those builds: lintian, apt install from a signed repository in clean roots, units run"
SPILLWAY_CROSS_TARGET="$CARGO_TARGET_DIR" SPILLWAY_DEBIAN_ROOT="$debian_root" \
  cross/build.sh --profile dev cargo "$X86" test -p spillway-tests --test debian_packages -- --ignored

step "emulated Raspberry Pi: a flashed card boots, joins the mesh and runs a container"
# Debian's arm64 kernel and busybox for the board (downloaded once into /var/cache/spillway/pi).
tests/pi/assets.sh
SPILLWAY_AARCH64_AGENT="$CARGO_TARGET_DIR/bin/$ARM64/spillway-agent" \
  cross/build.sh --profile dev cargo "$X86" test -p spillway-tests --test pi_boot -- --ignored
