#!/usr/bin/env bash
# The whole test suite: set-up, format and lint checks, release build, every test (the
# fuzz corpora replayed among them, tests/fuzz_corpus.rs), the package install test and
# the firmware. CI runs exactly this (.ci/run). Separate scripts (scripts/README.md):
# benchmarks, the full accuracy evaluations (scripts/accuracy.sh), fuzzing itself
# (scripts/fuzz.sh), the real Home Assistant and systemd checks.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
bash scripts/setup.sh
start=$(date +%s)
echo "== cargo fmt --check (daemon, lock protocol, firmware)"
cargo fmt --all -- --check
(cd hardware/esp32-lock && cargo fmt -- --check)
echo "== module graph of the daemon crate: no cycle (scripts/module-graph.py)"
python3 scripts/module-graph.py --check
echo "== cargo clippy (release profile, all targets, -D warnings)"
cargo clippy --release --locked --workspace --all-targets -- -D warnings
echo "== daemon-only build (no measurement tools): clippy-clean, without tempfile or tokio's test clock"
cargo clippy --release --locked --no-default-features --lib --bins -- -D warnings
if cargo tree --locked --no-default-features -e normal,features -p lockerd | grep -E "tempfile|test-util"; then
    echo "a daemon-only build still depends on a measurement-only crate or feature (above)"; exit 1
fi
echo "== cargo build --release"
cargo build --release --locked
echo "== cargo test --release (daemon and lock protocol)"
cargo test --release --locked --workspace -- --test-threads="${LOCKERD_TEST_THREADS:-2}"
echo "== Debian packages: built, installed with dpkg into a throwaway root, the unit's ExecStart run, purged (scripts/test-package.sh)"
bash scripts/test-package.sh
echo "== ESP32-C3 lock firmware: clippy and a check build (scripts/firmware.sh)"
(cd hardware/esp32-lock && rustup target list --installed | grep -qx riscv32imc-unknown-none-elf \
    || rustup target add riscv32imc-unknown-none-elf
 cargo clippy --release --locked -- -D warnings)
bash scripts/firmware.sh
echo "== all tests passed in $(( $(date +%s) - start )) s (after set-up)"
