#!/usr/bin/env bash
# The whole test suite: set-up, format and lint checks, release build, every test, and a
# short smoke run of every fuzz target.
# CI runs exactly this (.ci/run). Benchmarks are separate (scripts/bench*.sh), so is the
# long fuzz campaign (scripts/fuzz.sh 600).
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
smoke="${LOCKERD_FUZZ_SMOKE_S:-20}"
echo "== fuzz smoke: each target ${smoke} s from the committed corpus (scripts/fuzz.sh)"
bash scripts/fuzz.sh "$smoke"
echo "== all tests passed in $(( $(date +%s) - start )) s (after set-up)"
