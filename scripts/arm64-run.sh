# Sourced by scripts/arm64.sh (`run`, `all`): the arm64 packages installed with apt-get into
# a clean arm64 bookworm rootfs (standing in for Raspberry Pi OS), run there under
# qemu-user, and every decision and distance compared with the same run on amd64.
#   store init; eval faces on 16 shared photos (4 people); replay of a live walk-up (grant)
#   and of a photo attack made from a frame of the same person (deny).
# Writes $ARM64_DIR/compare.txt. Emulated speed means nothing and is not reported.

run_arm64() {
    local debs=(target/debian/lockerd_*_arm64.deb target/debian/lockerd-models_*_all.deb)
    [[ -f ${debs[0]} && -f ${debs[1]} ]] || { log "no arm64 packages: bash scripts/arm64.sh build"; exit 1; }
    local ZJU="$LOCKERD_DATA/blink/zju" FACES="$LOCKERD_DATA/faces"
    [[ -f "$ZJU/000001M_FNN.mp4" ]] || { log "no shared data at $LOCKERD_DATA"; exit 1; }
    local RF="$ARM64_DIR/rootfs" t0
    base
    t0=$(date +%s)
    new_root "$RF"
    mkdir -p "$RF/tmp/debs" "$RF/tmp/run"
    cp "${debs[@]}" "$RF/tmp/debs/"
    log "rootfs: apt-get install ./lockerd_*_arm64.deb ./lockerd-models_*_all.deb (under qemu)"
    in_root "$RF" sh -c 'apt-get update -q && apt-get install -y -q /tmp/debs/*.deb' >"$ARM64_DIR/install.log" 2>&1 ||
        { tail -20 "$ARM64_DIR/install.log"; exit 1; }
    log "installed in $(($(date +%s) - t0)) s"
    # The lab is not packaged: its arm64 binary (built beside the packages' by
    # `scripts/arm64.sh build`) goes beside the installed lockerd for the comparison runs.
    local lab=target/aarch64-unknown-linux-gnu/release/lockerd-lab
    [[ -x $lab ]] || { log "no arm64 lockerd-lab: bash scripts/arm64.sh build"; exit 1; }
    install -m 0755 "$lab" "$RF/usr/local/bin/lockerd-lab"

    # The inputs, the same for both runs.
    local IN="$ARM64_DIR/inputs"
    rm -rf "$IN"; mkdir -p "$IN/gallery" "$IN/enroll/alice"
    local p
    for p in Serena_Williams Jackie_Chan Hugo_Chavez Halle_Berry; do
        mkdir -p "$IN/gallery/$p"
        cp $(find "$FACES/$p" -maxdepth 1 -name '*.jpg' | sort | head -4) "$IN/gallery/$p/"
    done
    cp "$ZJU/000001M_FNN.mp4" "$IN/enroll/alice/"
    cp "$ZJU/000001M_FTN.mp4" "$IN/walkup.mp4"
    ffmpeg -v error -y -ss 2.0 -i "$ZJU/000001M_UNN.mp4" -frames:v 1 "$IN/alice_photo.png"
    target/release/lockerd-lab tools photo-attack "$IN/alice_photo.png" "$IN/photo_attack.avi" --frames 120 --width 640 >/dev/null
    cp -a "$IN/." "$RF/tmp/run/"

    log "arm64 run (in the rootfs, emulated)"
    rm -f "$RF/var/lib/lockerd/lockerd.db"
    # In the rootfs: the installed binary, the installed models and key.
    cat >"$RF/tmp/run/run.sh" <<'SH'
set -e
out=/tmp/run/out; mkdir -p $out
lockerd --db /var/lib/lockerd/lockerd.db --key-file /etc/lockerd/db.key store init >$out/store_init.txt 2>&1
lockerd-lab eval faces --gallery /tmp/run/gallery --json >$out/faces.json 2>/dev/null
lockerd-lab replay /tmp/run/walkup.mp4 --gallery /tmp/run/enroll --json >$out/walkup.json 2>/dev/null
lockerd-lab replay /tmp/run/photo_attack.avi --gallery /tmp/run/enroll --json >$out/photo_attack.json 2>/dev/null
lockerd doctor >$out/doctor.txt 2>&1 || true
lockerd-lab tools inspect /tmp/run/gallery/Serena_Williams/4.jpg >$out/inspect_photo.json 2>/dev/null
lockerd-lab tools inspect /tmp/run/walkup.mp4 --frame 40 >$out/inspect_frame.json 2>/dev/null
SH
    # README "Install on a Raspberry Pi", as far as a chroot allows: no systemd runs here, so
    # the unit's ExecStart is started by hand with the key as its credential, on the
    # rootfs's own system bus (dbus-daemon --system, with the installed policy); the camera
    # is a replayed clip and the devices simulated.
    cat >"$RF/tmp/run/install.sh" <<'SH'
set -e
out=/tmp/run/out; mkdir -p $out /run/dbus
dbus-daemon --system --fork
sed -i 's#^source = "camera"#source = "/tmp/run/walkup.mp4"#' /etc/lockerd/lockerd.toml
rm /etc/lockerd/setup-pending
mkdir -p -m 700 /run/credentials/lockerd.service
cp /etc/lockerd/db.key /run/credentials/lockerd.service/db-key
CREDENTIALS_DIRECTORY=/run/credentials/lockerd.service /usr/bin/lockerd --config /etc/lockerd/lockerd.toml run 2>$out/daemon.log &
pid=$!
i=0; until grep -q "ready:" $out/daemon.log; do i=$((i+1)); [ $i -lt 600 ] || exit 1; kill -0 $pid; sleep 0.5; done
{
  echo '$ lockerd doctor'; lockerd doctor || true
  echo '$ lockerctl users add alice'; lockerctl users add alice
  echo '$ lockerctl enroll alice 000001M_FNN.mp4'; lockerctl enroll alice /tmp/run/enroll/alice/000001M_FNN.mp4
  echo '$ lockerctl users list'; lockerctl users list
  echo '$ lockerctl status'; lockerctl status
} >$out/install.txt 2>&1
kill -TERM $pid; wait $pid
SH
    t0=$(date +%s)
    in_root "$RF" sh /tmp/run/run.sh || { log "the arm64 run failed"; exit 1; }
    log "arm64 run: $(($(date +%s) - t0)) s under emulation"
    in_root "$RF" sh /tmp/run/install.sh || log "the README's install steps failed in the rootfs: $RF/tmp/run/out"
    rm -rf "$ARM64_DIR/arm64-out"; cp -a "$RF/tmp/run/out" "$ARM64_DIR/arm64-out"

    log "amd64 run (this machine, same inputs)"
    local A="$ARM64_DIR/amd64-out" W
    rm -rf "$A"; mkdir -p "$A"; W=$(mktemp -d)
    (umask 077; od -An -vtx1 -N32 /dev/urandom | tr -d ' \n' >"$W/key")
    target/release/lockerd --db "$W/db" --key-file "$W/key" store init >"$A/store_init.txt" 2>&1
    target/release/lockerd-lab eval faces --gallery "$IN/gallery" --json >"$A/faces.json" 2>/dev/null
    target/release/lockerd-lab replay "$IN/walkup.mp4" --gallery "$IN/enroll" --json >"$A/walkup.json" 2>/dev/null
    target/release/lockerd-lab replay "$IN/photo_attack.avi" --gallery "$IN/enroll" --json >"$A/photo_attack.json" 2>/dev/null
    target/release/lockerd-lab tools inspect "$IN/gallery/Serena_Williams/4.jpg" >"$A/inspect_photo.json" 2>/dev/null
    target/release/lockerd-lab tools inspect "$IN/walkup.mp4" --frame 40 >"$A/inspect_frame.json" 2>/dev/null
    rm -rf "$W"

    python3 - "$ARM64_DIR/amd64-out" "$ARM64_DIR/arm64-out" "$ARM64_DIR/compare.txt" <<'PY'
import json, sys
a_dir, b_dir, out = sys.argv[1:4]
load = lambda d, f: json.load(open(f"{d}/{f}"))
rows, bad, worst = [], [], 0.0
def cmp(what, x, y, tol=1e-4):
    global worst
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
        d = abs(x - y); worst = max(worst, d) if isinstance(x, float) or isinstance(y, float) else worst
        ok = d <= tol
    else:
        ok = x == y
    rows.append(f"{'same' if ok else 'DIFF'}  {what:<44} amd64 {x!s:<14} arm64 {y!s}")
    if not ok: bad.append(what)
fa, fb = load(a_dir, "faces.json"), load(b_dir, "faces.json")
for k in ["true_accepts", "false_rejects", "misidentified", "templates", "no_face_genuine"]:
    cmp(f"eval faces: {k}", fa[k], fb[k], 0)
pb = {p["file"]: p for p in fb["probes"]}
for p in fa["probes"]:
    q = pb.get(p["file"], {})
    cmp(f"eval faces {p['file']}: distance", p["distance"], q.get("distance"))
    cmp(f"eval faces {p['file']}: granted as", p["granted_as"], q.get("granted_as"), 0)
if len(fa["probes"]) != len(fb["probes"]): bad.append("probe count")
for clip in ["walkup", "photo_attack"]:
    ra, rb = load(a_dir, f"{clip}.json"), load(b_dir, f"{clip}.json")
    for k in ["decision", "user", "reason", "distance", "blinks", "frames", "frames_with_face", "decision_frame"]:
        cmp(f"replay {clip}: {k}", ra.get(k), rb.get(k), 1e-4 if k == "distance" else 0)
    for i, (x, y) in enumerate(zip(ra["attempts"], rb["attempts"])):
        for k in ["verdict", "distance", "blinks", "frame", "decision"]:
            cmp(f"replay {clip} attempt {i}: {k}", x.get(k), y.get(k), 1e-4 if k == "distance" else 0)
    if len(ra["attempts"]) != len(rb["attempts"]): bad.append(f"{clip} attempt count")
# Where the two builds part, stage by stage (README "arm64"): pixels, face box, landmarks,
# embedding, for a JPEG photo and for a frame of an H.264 clip. Reported, not judged.
import math
stages = []
for what, f in [("photo", "inspect_photo.json"), ("clip frame 40", "inspect_frame.json")]:
    x, y = load(a_dir, f), load(b_dir, f)
    lm = max(math.hypot(p[0] - q[0], p[1] - q[1]) for p, q in zip(x["landmarks"], y["landmarks"]))
    em = max(abs(p - q) for p, q in zip(x["embedding"], y["embedding"]))
    stages.append(f"stages {what:<14} pixels {'same' if x['pixels_sha256'] == y['pixels_sha256'] else 'DIFFER'}, "
                  f"box {'same' if x['bbox'] == y['bbox'] else 'DIFFERS'}, landmarks max {lm:.4f} px, embedding max {em:.2e}")
rows += [""] + stages
summary = (f"{len(rows) - len(stages) - 1} values compared, {len(bad)} differ; largest distance difference {worst:.2e}"
           + (f"; differing: {', '.join(bad)}" if bad else ""))
open(out, "w").write("\n".join(rows + ["", summary, ""]))
print(summary)
sys.exit(1 if bad else 0)
PY
}
run_arm64
