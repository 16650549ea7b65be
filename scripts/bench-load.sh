#!/usr/bin/env bash
# Load figures (README "Faults, fuzzing and load", issue #11):
#  1. a walk-up decision with the daemon idle, and with a flood of keypad input (a named
#     pipe typed into as fast as the keypad scan reads it) plus 5,000 unprivileged D-Bus
#     calls 16 at a time: the grant's time after READY over RUNS runs each (the replayed
#     clip reaches its blink about 1.5 s in, so the difference is what the flood costs);
#  2. an hour-long soak in simulated time (`lockerd-lab simulate`, keypad entries every 5 s,
#     door cycles, codes, lockouts, resets, a walk-up clip every 10 minutes) against a
#     quarter of an hour of the same: peak RSS must not grow with the length.
# Needs ../shared/data and the models. Prints one JSON object per measurement. Not part
# of the test suite (timings are noisy on a shared machine).
#
#   scripts/bench-load.sh [RUNS]      (default 5)
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
RUNS="${1:-5}"
source "$REPO/scripts/bench-setup.sh"
bench_setup load
WALK="$LOCKERD_DATA/blink/zju/000001M_FTN.mp4"
ENROLL="$LOCKERD_DATA/blink/zju/000001M_FNN.mp4"
bench_alice "$WALK"
mkfifo "$W/keypad"

# Random keypad input until killed (digits, * and #: entries, wrong codes, lockouts).
key_flood() {
    python3 - "$W/keypad" 2>/dev/null <<'PY'
import os, random, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
keys = b"0123456789*#"
while True:
    os.write(fd, bytes(random.choice(keys) for _ in range(64)))
PY
}
stats() { sort -n | awk '{a[NR]=$1} END {printf "{\"p50\": %d, \"max\": %d, \"n\": %d}", a[int((NR+1)/2)], a[NR], NR}'; }

# 1. Walk-up under load.
idle=(); flood=()
for run in $(seq "$RUNS"); do
    start_daemon LOCKERD_SIM_KEYPAD="$W/keypad" DBUS_SYSTEM_BUS_ADDRESS="$BUS"; idle+=("$(grant_after_ready)"); stop_daemon
    # Each flood starts on an open keypad (the last one's lockout is kept in the store).
    "${L[@]}" admin lockout reset >/dev/null
    start_daemon LOCKERD_SIM_KEYPAD="$W/keypad" DBUS_SYSTEM_BUS_ADDRESS="$BUS"
    key_flood & kf=$!
    DBUS_SYSTEM_BUS_ADDRESS="$BUS" setpriv --reuid=65534 --regid=65534 --clear-groups \
        "$LAB_BIN" bench dbus --method users_list --calls 5000 --concurrency 16 > "$W/flood.json" &
    df=$!
    flood+=("$(grant_after_ready)")
    wait "$df"; kill "$kf" 2>/dev/null; wait "$kf" 2>/dev/null || true
    keys=$(grep -c '"event":"deny"' "$W/log" || true)
    lockouts=$(grep -c '"event":"lockout"' "$W/log" || true)
    hwm=$(awk '/VmHWM/ {print $2}' "/proc/$PID/status")
    stop_daemon
    echo "{\"run\": $run, \"grant_ms_after_ready_idle\": ${idle[-1]}, \"grant_ms_after_ready_flood\": ${flood[-1]}, \"keypad_denies\": $keys, \"lockouts\": $lockouts, \"daemon_peak_rss_kib\": $hwm, \"dbus\": $(cat "$W/flood.json")}"
done
echo "{\"walk_up_idle_ms\": $(printf '%s\n' "${idle[@]}" | stats), \"walk_up_flood_ms\": $(printf '%s\n' "${flood[@]}" | stats)}"

# 2. Soak in simulated time: the same story for 15 and for 60 minutes.
scenario() {  # SECONDS
    python3 - "$1" "$WALK" "$ENROLL" <<'PY'
import json, random, sys
end, walk, enroll = int(sys.argv[1]), sys.argv[2], sys.argv[3]
random.seed(11)
out = [{"at_s": 0.0, "admin": "user_add", "user": "alice"},
       {"at_s": 0.5, "admin": "enroll", "user": "alice", "from": [enroll]}]
for t in range(5, end, 5):
    out.append({"at_s": float(t), "keys": "".join(random.choice("0123456789*#") for _ in range(10))})
    if t % 60 == 0:
        out += [{"at_s": t + 1.0, "door": "open"}, {"at_s": t + 3.0, "door": "closed"}]
    if t % 300 == 0:
        out += [{"at_s": t + 0.5, "admin": "lockout_reset"}, {"at_s": t + 1.5, "admin": "otp_issue"},
                {"at_s": t + 2.5, "keys": "{otp}"}]
    if t % 600 == 0:
        out.append({"at_s": t + 3.5, "clip": walk})
for o in out:
    print(json.dumps(o))
PY
}
for secs in 900 3600; do
    scenario "$secs" > "$W/soak-$secs.jsonl"
    /usr/bin/time -f '%M %e' -o "$W/time" \
        "$LAB_BIN" --models "$LOCKERD_MODELS" simulate "$W/soak-$secs.jsonl" --json > "$W/soak.out" 2>/dev/null
    read -r rss wall < "$W/time"
    echo "{\"soak_simulated_s\": $secs, \"steps\": $(wc -l < "$W/soak-$secs.jsonl"), \"events\": $(wc -l < "$W/soak.out"), \"unlocks\": $(grep -c '"event":"unlock"' "$W/soak.out"), \"lockouts\": $(grep -c '"event":"lockout"' "$W/soak.out"), \"peak_rss_kib\": $rss, \"wall_s\": $wall}"
done
