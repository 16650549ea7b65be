#!/usr/bin/env bash
# MQTT figures (README "MQTT remote admin"): the round trip of a signed command through a
# loopback mosquitto (`lockerctl remote send status`, one process and one connection per
# call, as an admin uses it), and how fast the outbox drains N events queued while the
# daemon was away (made offline with `lockerd admin`, which queues them too).
# Usage: scripts/bench-mqtt.sh [CALLS] [EVENTS]. Prints JSON lines. Timings are noisy.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
CALLS="${1:-100}"; EVENTS="${2:-300}"
source "$REPO/scripts/bench-setup.sh"
bench_setup mqtt
CTL="$REPO/target/release/lockerctl"
start_broker "max_queued_messages 100000"
L+=(--config "$W/lockerd.toml")
# Events made while no daemon runs wait in the outbox.
for i in $(seq "$EVENTS"); do "${L[@]}" admin users add "u$i" >/dev/null; done
timeout 300 mosquitto_sub -p "$PORT" -t lockerd/bench/event -C "$EVENTS" -F '%U %p' > "$W/events.txt" &
sub=$!
sleep 0.3
t0=$(date +%s%N)
"${L[@]}" run 2>"$W/daemon.log" &
wait "$sub"
t1=$(date +%s%N)
python3 - "$W/events.txt" "$EVENTS" "$t0" "$t1" <<'PY'
import json, sys
lines = [l.split(" ", 1) for l in open(sys.argv[1])]
at = [float(t) for t, _ in lines]
ev = [json.loads(p) for _, p in lines]
seqs = [e["seq"] for e in ev]
ms = (int(sys.argv[4]) - int(sys.argv[3])) / 1e6
drain = (at[-1] - at[0]) * 1000
print(json.dumps({"bench": "mqtt_outbox_drain", "events": len(ev), "in_order": seqs == sorted(seqs),
    "distinct": len(set(seqs)), "ms_from_daemon_start": round(ms), "ms_first_to_last": round(drain),
    "events_per_s": round((len(ev) - 1) / max(drain, 1e-3) * 1000)}))
PY
R=(--key "$W/ada.key" --url "mqtt://127.0.0.1:$PORT" --kiosk bench)
"$CTL" remote send "${R[@]}" status >/dev/null
: > "$W/rt.txt"
for _ in $(seq "$CALLS"); do
    a=$(date +%s%N); "$CTL" remote send "${R[@]}" status >/dev/null; b=$(date +%s%N)
    echo $(( (b - a) / 1000 )) >> "$W/rt.txt"
done
python3 - "$W/rt.txt" <<'PY'
import json, sys
v = sorted(int(l) / 1000 for l in open(sys.argv[1]))
q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
print(json.dumps({"bench": "mqtt_signed_status_round_trip_ms", "calls": len(v), "p50": round(q(0.5), 1),
    "p99": round(q(0.99), 1), "max": round(v[-1], 1), "includes": "lockerctl start, connect, subscribe, sign, reply"}))
PY
# A flood: 10,000 forged commands (bad signatures) in a burst, then a signed status.
dpid=$(pgrep -f -- "--db $W/k.db" | head -1)
rss() { awk '/VmRSS/ {print $2}' "/proc/$dpid/status"; }
before=$(rss)
python3 -c '
import base64, json
for i in range(10000):
    body = base64.b64encode(json.dumps({"kiosk": "bench", "id": f"f{i}", "ts": 0, "nonce": "AAAAAAAAAAAAAAAAAAAAAA==", "cmd": "unlock"}).encode()).decode()
    print(json.dumps({"key": "ada", "body": body, "sig": base64.b64encode(bytes(64)).decode()}))
' > "$W/flood.txt"
a=$(date +%s%N)
mosquitto_pub -p "$PORT" -t lockerd/bench/cmd -q 1 -l < "$W/flood.txt"
b=$(date +%s%N)
"$CTL" remote send "${R[@]}" --wait 60 status >/dev/null
c=$(date +%s%N)
after=$(rss)
refused=$(grep -c "command refused" "$W/daemon.log" || true)
unlocks=$(grep -c '"event":"unlock"' "$W/daemon.log" || true)
echo "{\"bench\": \"mqtt_forged_flood\", \"messages\": 10000, \"send_ms\": $(( (b - a) / 1000000 )), \"status_after_flood_ms\": $(( (c - b) / 1000000 )), \"rss_kb_before\": $before, \"rss_kb_after\": $after, \"refusals_logged\": $refused, \"unlocks\": $unlocks}"
