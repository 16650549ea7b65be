#!/usr/bin/env bash
# The whole test suite: set-up, format and lint checks, release build, every test.
# CI runs exactly this (.ci/run). Benchmarks are separate (scripts/bench.sh).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
bash scripts/setup.sh
start=$(date +%s)
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (release profile, all targets, -D warnings)"
cargo clippy --release --locked --all-targets -- -D warnings
echo "== cargo build --release"
cargo build --release --locked
echo "== cargo test --release"
cargo test --release --locked -- --test-threads="${LOCKERD_TEST_THREADS:-2}"
echo "== all tests passed in $(( $(date +%s) - start )) s (after set-up)"
