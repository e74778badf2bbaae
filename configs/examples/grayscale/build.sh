#!/bin/sh
# Builds grayscale.wasm (WASI preview 1) from grayscale.c with Debian's clang, wasi-libc and
# libstb-dev. The output is deterministic: CI rebuilds it and checks it matches the committed one.
set -eu
cd "$(dirname "$0")"
out="${1:-grayscale.wasm}"
clang --target=wasm32-wasi -O2 -I/usr/include/stb \
  -Wl,--strip-all -Wl,-z,stack-size=1048576 \
  -o "$out" grayscale.c -lm
