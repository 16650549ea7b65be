#!/usr/bin/env bash
# ESP32 lock figures (README "The ESP32 lock"): the unlock round trip through a loopback
# mosquitto, from the daemon publishing the signed command frame to the lock's
# authenticated report acknowledging it (both counters persisted on the way: the lock's
# before it acts, the daemon's before it believes), as the daemon logs it. The lock is the
# host simulator (`lockerd-lab lock-sim`), which runs the firmware's state machine.
# Usage: [BROKER_NODELAY=false] scripts/bench-esp32.sh [UNLOCKS]. Prints one JSON line.
# The broker runs with `set_tcp_nodelay true` unless BROKER_NODELAY=false (mosquitto's
# default, where Nagle's algorithm on the broker's side adds about 40 ms). Timings are noisy.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
N="${1:-100}"; NODELAY="${BROKER_NODELAY:-true}"
source "$REPO/scripts/bench-setup.sh"
bench_setup esp32
CTL="$REPO/target/release/lockerctl"
start_broker "set_tcp_nodelay $NODELAY"
head -c 32 /dev/urandom > "$W/lock.key"; chmod 600 "$W/lock.key"
sed -i -e 's/^kind = "relay"/kind = "esp32"/' -e "s#^key_file = \"/etc/lockerd/lock.key\"#key_file = \"$W/lock.key\"#" \
    -e 's/^unlock_pulse_s = .*/unlock_pulse_s = 0.5/' "$W/lockerd.toml"
"$LAB_BIN" --config "$W/lockerd.toml" lock-sim --state "$W/lock.state" > "$W/sim.log" 2>&1 < /dev/null &
start_daemon DBUS_SYSTEM_BUS_ADDRESS="$BUS"
for _ in $(seq 200); do grep -q "lock door1: available" "$W/log" && break; sleep 0.05; done
for _ in $(seq "$N"); do
    DBUS_SYSTEM_BUS_ADDRESS="$BUS" "$CTL" unlock >/dev/null
done
stop_daemon
python3 - "$W/log" "$W/sim.log" "$N" "$NODELAY" <<'PY'
import json, re, sys
ms = sorted(float(m) for m in re.findall(r"acknowledged \(try 1\) in ([0-9.]+) ms", open(sys.argv[1]).read()))
retried = len(re.findall(r"acknowledged \(try [2-9]\)", open(sys.argv[1]).read()))
accepted = sum(1 for l in open(sys.argv[2]) if '"event":"accepted"' in l and '"kind":"unlock"' in l)
q = lambda p: ms[min(len(ms) - 1, int(p * len(ms)))] if ms else None
print(json.dumps({"bench": "esp32_unlock_round_trip", "broker_tcp_nodelay": sys.argv[4], "unlocks": int(sys.argv[3]),
                  "acknowledged_first_try": len(ms), "retried": retried,
                  "unlocks_accepted_by_lock": accepted,
                  "p50_ms": q(0.50), "p99_ms": q(0.99), "max_ms": ms[-1] if ms else None}))
PY
