#!/usr/bin/env bash
# False blinks on hand-held photo attacks: for each ZJU person, the 15th frame of their FBN
# clip is made into three photo-attack clips (`lockerd-lab tools photo-attack`, seeds 1000+i,
# 3000+i, 4000+i, 120 frames) and the real pipeline looks for blinks in all of them
# (`lockerd-lab eval blinks`). Prints every dip it found and how many were of liveness grade;
# the README's "Liveness" figures come from here. Extra arguments go to `lockerd`, e.g.
# `--config FILE` to compare settings.
#
#   PHOTO_ATTACKS_OUT   where the clips and the JSON go (default target/photo-attacks)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
cargo build --release --locked >&2
BIN="$LAB_BIN"
OUT="${PHOTO_ATTACKS_OUT:-$REPO/target/photo-attacks}"
rm -rf "$OUT"; mkdir -p "$OUT"
ZJU="$LOCKERD_DATA/blink/zju"
i=0
for clip in "$ZJU"/*_FBN.mp4; do
    p=$(basename "$clip" _FBN.mp4)
    ffmpeg -loglevel error -y -i "$clip" -vf "select=eq(n\,14)" -vframes 1 "$OUT/$p.png"
    for s in $((1000 + i)) $((3000 + i)) $((4000 + i)); do
        "$BIN" "$@" tools photo-attack "$OUT/$p.png" "$OUT/${p}_$s.avi" --seed "$s" --frames 120 >/dev/null
    done
    i=$((i + 1))
done
# Every clip is an attack with no blink in it; eval blinks reads "attack": false clips only.
jq -n --arg d "$OUT" '{clips: [$ARGS.positional[] | {file: ($d + "/" + .), blinks: 0, attack: false}]}' \
    --args $(cd "$OUT" && ls -1 *.avi) >"$OUT/manifest.json"
"$BIN" "$@" eval blinks --manifest "$OUT/manifest.json" --json >"$OUT/blinks.json"
jq -r '"clips \(.per_clip | length); with a dip taken for a blink: \([.per_clip[] | select(.found > 0)] | length); with a liveness-grade blink: \([.per_clip[] | select(.live > 0)] | length); strongest SNR: \([.per_clip[].max_snr // 0] | max)"' "$OUT/blinks.json"
jq -r '.per_clip[] | select(.found > 0) | "  \(.file | split("/") | last): SNRs \(.snrs)"' "$OUT/blinks.json"
