#!/usr/bin/env bash
# The full accuracy evaluations on ../shared/data (tests/accuracy.rs): LFW faces with
# impostors, every ZJU kiosk walk-up with strangers, no-blink clips, photo and video-replay
# attacks, presentation-attack detection and blink counts. About 6 minutes on 2 cores; CI runs
# only the decisive clip cases (tests/vision.rs). Run it before a change to vision,
# matching or their configuration lands. The figures behind each assertion are printed;
# the commands in docs/vision.md give the whole reports.
#
#   bash scripts/accuracy.sh [TEST_NAME_FILTER]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
bash scripts/setup.sh
start=$(date +%s)
cargo test --release --locked --test accuracy -- --ignored --nocapture \
    --test-threads="${LOCKERD_TEST_THREADS:-2}" "$@"
echo "== accuracy evaluations passed in $(( $(date +%s) - start )) s"
