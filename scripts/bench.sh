#!/usr/bin/env bash
# Side-by-side benchmark: lockerd vs the Python peer (../shared/peer), same clips, same
# gallery photos, one run, interleaved. Prints a table of CPU per frame, per-stage times,
# model load, peak RSS and decision latency, with ratios (peer / lockerd).
#
#   BENCH_ROUNDS   rounds per program and clip (default 3; medians are reported)
#   BENCH_OUT      where the raw JSON goes (default target/bench)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
bash scripts/setup.sh >&2
cargo build --release --locked >&2
PEER_DIR="$REPO/../shared/peer"
[[ -d "$PEER_DIR" ]] || { echo "peer not found at $PEER_DIR" >&2; exit 1; }
bash "$PEER_DIR/install.sh" >&2
PY="${PEER_VENV:-$HOME/.cache/lockerd-peer-venv}/bin/python"
ROUNDS="${BENCH_ROUNDS:-3}"
OUT="${BENCH_OUT:-$REPO/target/bench}"
rm -rf "$OUT"; mkdir -p "$OUT/gallery" "$OUT/raw"
ZJU="$LOCKERD_DATA/blink/zju"

# Gallery: one photo per person (a frame of their FNN clip), the same for both programs.
PEOPLE=(000001M 000004M 000010M 000013F 000017F)
for p in "${PEOPLE[@]}"; do
    mkdir -p "$OUT/gallery/$p"
    ffmpeg -v error -y -ss 1.0 -i "$ZJU/${p}_FNN.mp4" -frames:v 1 "$OUT/gallery/$p/enroll.jpg"
done
# Clips: a 320x240 kiosk clip as recorded, the same clip at the product's 640x480, and the
# other sizes in the data as recorded: a 368x656 phone selfie and a 960x540 webcam (people
# not in the gallery: strangers to both programs).
cp "$ZJU/000001M_FTN.mp4" "$OUT/clip_320x240.mp4"
ffmpeg -v error -y -i "$ZJU/000001M_FTN.mp4" -vf scale=640:480:flags=lanczos -c:v libx264 -crf 18 "$OUT/clip_640x480.mp4"
cp "$LOCKERD_DATA/blink/replay_and_live/tranvanluyt_live_selfie.mp4" "$OUT/clip_368x656.mp4"
cp "$LOCKERD_DATA/blink/replay_and_live/zubair_live_webcam.mp4" "$OUT/clip_960x540.mp4"
CLIPS=(clip_320x240 clip_640x480 clip_368x656 clip_960x540)

# Peer gallery, and lockerd's store with the same photos.
"$PY" "$PEER_DIR/peer.py" enroll --gallery "$OUT/gallery" --out "$OUT/gallery.npz" > "$OUT/raw/peer_enroll.json"
KEY="$OUT/bench.key"; DB="$OUT/bench.db"
L=("$LOCKERD_BIN" --models "$LOCKERD_MODELS" --db "$DB" --key-file "$KEY")
"${L[@]}" store init --generate-key "$KEY" >/dev/null 2>&1
for p in "${PEOPLE[@]}"; do
    "${L[@]}" admin users add "$p" >/dev/null 2>&1
    "${L[@]}" admin enroll "$p" "$OUT/gallery/$p/enroll.jpg" --allow-poor-photos >/dev/null 2>&1
done

for r in $(seq "$ROUNDS"); do
    for clip in "${CLIPS[@]}"; do
        "$PY" "$PEER_DIR/peer.py" run --gallery "$OUT/gallery.npz" --clip "$OUT/$clip.mp4" > "$OUT/raw/peer_${clip}_$r.json"
        "$LAB_BIN" --models "$LOCKERD_MODELS" --db "$DB" --key-file "$KEY" replay "$OUT/$clip.mp4" --json 2>/dev/null > "$OUT/raw/lockerd_${clip}_$r.json"
    done
done

python3 - "$OUT" "$ROUNDS" "${CLIPS[@]}" <<'PYEOF'
import json, statistics, sys, os
out, rounds, clips = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(prog, clip):
    return [json.load(open(os.path.join(out, "raw", f"{prog}_{clip}_{r}.json"))) for r in range(1, rounds + 1)]
med = lambda xs: statistics.median(xs)
rows = []
summary = {}
for clip in clips:
    P, L = load("peer", clip), load("lockerd", clip)
    peer = {
        "frame CPU ms p50": med([p["cpu_ms"]["frame"]["p50"] for p in P]),
        "frame CPU ms mean": med([p["cpu_ms"]["frame"]["mean"] for p in P]),
        "detect ms p50": med([p["cpu_ms"]["detect"]["p50"] for p in P]),
        "landmarks ms p50": med([p["cpu_ms"]["landmarks"]["p50"] for p in P]),
        "encode ms p50": med([p["cpu_ms"]["encode"]["p50"] for p in P if p["cpu_ms"]["encode"]["n"]] or [0]),
        "model load s": med([p["model_load_s"] for p in P]),
        "peak RSS MiB": med([p["peak_rss_mib"] for p in P]),
    }
    ours = {
        "frame CPU ms p50": med([l["frame_cpu_ms"]["p50"] for l in L]),
        "frame CPU ms mean": med([l["frame_cpu_ms"]["mean"] for l in L]),
        "detect ms p50": med([l["ms"]["detect"]["p50"] for l in L]),
        "landmarks ms p50": med([l["ms"]["landmarks"]["p50"] for l in L]),
        "encode ms p50": med([l["ms"]["encode"]["p50"] for l in L]),
        "model load s": med([l["model_load_s"] for l in L]),
        "peak RSS MiB": med([l["peak_rss_mib"] for l in L]),
        # lockerd decodes files in an ffmpeg child (crates/vision/src/video.rs); the peer in-process.
        "peak RSS MiB, plus the decoder child": med([l["peak_rss_mib"] + (l["decoder_peak_rss_mib"] or 0) for l in L]),
    }
    print(f"\n### {clip} ({rounds} rounds, medians)")
    print(f"| metric | peer | lockerd | peer / lockerd |")
    print(f"|---|---|---|---|")
    for k in peer:
        ratio = peer[k] / ours[k] if ours[k] else float("nan")
        print(f"| {k} | {peer[k]:.2f} | {ours[k]:.2f} | {ratio:.1f}x |")
    both = ours["peak RSS MiB, plus the decoder child"]
    print(f"| peak RSS MiB, plus the decoder child | {peer['peak RSS MiB']:.2f} (decodes in-process) | {both:.2f} | {peer['peak RSS MiB'] / both:.1f}x |")
    print(f"| decision | {P[0]['decision']} {P[0].get('name')} | {L[0]['decision']} {L[0].get('user')} | |")
    print(f"| frames after the blink | (decides on the blink frame) | {L[0].get('frames_after_blink')} | |")
    summary[clip] = {"peer": peer, "lockerd": ours}
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
print(f"\nraw JSON: {out}/raw, summary: {out}/summary.json")
print("Stage times are CPU ms for the peer (its cpu_ms) and wall ms for lockerd (single-threaded, so")
print("about equal on a quiet machine); frame CPU is process CPU per frame for both.")
PYEOF
