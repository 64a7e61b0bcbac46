#!/usr/bin/env bash
# Builds the reference plugins (plugins/*) to WebAssembly components in
# target/plugins/wasm32-unknown-unknown/plugin/*.wasm, installing the Rust
# targets first: wasm32-unknown-unknown to compile, and wasm32-wasip2 for its
# linker (wasm-component-ld). .cargo/config.toml links them without WASI.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-unknown-unknown wasm32-wasip2
packages=()
for dir in plugins/*/; do
  packages+=(-p "$(basename "$dir")")
done
cargo build --profile plugin --target wasm32-unknown-unknown --target-dir target/plugins "${packages[@]}"
ls -l target/plugins/wasm32-unknown-unknown/plugin/*.wasm
