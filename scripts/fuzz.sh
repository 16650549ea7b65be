#!/usr/bin/env bash
# Fuzz everything that parses input from outside with cargo fuzz (libFuzzer, nightly):
# config files, scenario lines, keypad entries, the request envelope (the MQTT command
# body), photo headers, the ESP32 lock's frames, the video stream from the ffmpeg child. Seeds are committed in fuzz/corpus/<target>; new inputs found
# in a run are added there (commit them).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 600 s, all targets)
#
# Prints one line per target: executions, seconds, corpus size; a crash fails the script
# and leaves its input in fuzz/artifacts/<target>/. CI replays the corpora through the
# same checks (fuzz/checks/) as ordinary tests (tests/fuzz_corpus.rs). Installs cargo-fuzz and the nightly
# toolchain when missing (idempotent, non-interactive).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO/fuzz"

secs="${1:-600}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(config scenario keypad request image envelope lock_frame y4m)

log() { printf '[fuzz] %s\n' "$*" >&2; }

if ! cargo +nightly --version >/dev/null 2>&1; then
    log "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi

log "building the targets (release, ASan)"
cargo +nightly fuzz build -O >&2

for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    out=$(mktemp)
    # -rss_limit_mb: a hostile image must not make the decoder allocate without bound.
    if ! cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=1024 -max_len=65536 -timeout=10 \
        -print_final_stats=1 >"$out" 2>&1; then
        tail -40 "$out" >&2
        log "$t: CRASH (input in fuzz/artifacts/$t/)"
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out" | tail -1)
    peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$out" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$out" | tail -1 | cut -d' ' -f2)
    printf '%-9s %4s s  %11s execs  %7s/s  cov %5s  peak %4s MB  corpus %s files\n' \
        "$t" "$secs" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${peak:-?}" \
        "$(find "corpus/$t" -type f | wc -l)"
    rm -f "$out"
done
