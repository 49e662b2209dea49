#!/usr/bin/env bash
# Runs the framing fuzz target for a bounded time (default 60 s) with the seed corpus.
# Works on stable Rust: libFuzzer comes from the libfuzzer-sys crate and coverage
# instrumentation from stable -C flags (no sanitizer; the code is #![forbid(unsafe_code)]).
set -euo pipefail
cd "$(dirname "$0")"
SECS="${1:-60}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$(pwd)/../target/fuzz}"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (they cannot link
# the coverage hooks).
TARGET="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --bin framing --target "$TARGET"
mkdir -p corpus/framing artifacts
cp -n seeds/framing/* corpus/framing/ 2>/dev/null || true
"$CARGO_TARGET_DIR/$TARGET/release/framing" -max_total_time="$SECS" -max_len=8192 -timeout=10 \
    -artifact_prefix=artifacts/ corpus/framing seeds/framing
echo "fuzz: ran ${SECS}s without a crash"
