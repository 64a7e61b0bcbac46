#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz) of everything that
# parses untrusted input: request heads and paths, the config file, the admin
# API's JSON bodies, flag definitions, and the request packed for router plugins.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   # default 120 s, every target
#
# Runs on the stable toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the
# sanitizer flags). New inputs that reach new code are merged into
# fuzz/corpus/TARGET (minimised); a crash stops the run and leaves its input in
# fuzz/artifacts/TARGET. Once fixed, copy the input to fuzz/regressions/TARGET:
# `cargo test` replays corpus and regressions through the same target code.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request_head config admin_bodies flags plugin_request)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
# The workspace's release profile links with LTO, which makes each fuzzer
# binary a ten-minute link; fuzzing needs coverage, not the last few percent.
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/regressions/$t"
  work=$(mktemp -d)
  echo "fuzz: $t for ${secs}s"
  cargo fuzz run --features libfuzzer "$t" "$work" "fuzz/corpus/$t" "fuzz/regressions/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=1024 -timeout=10 -print_final_stats=1 2>&1 |
    grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss|==[0-9]+==|SUMMARY|Done)|panicked|artifact" || true
  # Keep only what adds coverage: a set-cover merge of the old corpus and the
  # new finds, so the corpus kept in git stays small.
  merged=$(mktemp -d)
  cargo fuzz run --features libfuzzer "$t" "$merged" "fuzz/corpus/$t" "$work" -- \
    -set_cover_merge=1 -max_len=1024 >/dev/null 2>&1 || true
  if [ -n "$(ls -A "$merged")" ]; then
    rm -rf "fuzz/corpus/$t" && mv "$merged" "fuzz/corpus/$t"
  fi
  echo "fuzz: $t corpus: $(ls "fuzz/corpus/$t" | wc -l) inputs, $(du -sk "fuzz/corpus/$t" | cut -f1) KiB"
  rm -rf "$work"
  if [ -n "$(ls -A "fuzz/artifacts/$t" 2>/dev/null)" ]; then
    echo "fuzz: $t found crashes: fuzz/artifacts/$t" >&2
    exit 1
  fi
done
