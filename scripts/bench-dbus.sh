#!/usr/bin/env bash
# D-Bus figures (README "D-Bus interface"): request round trip through a private
# system-like bus, the daemon's extra memory for the service, and a walk-up decision
# with and without a flood of unprivileged calls. Needs ../shared/data and the models.
# Prints one JSON object per measurement. Not part of the test suite (timings are noisy).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
cargo build --release --locked 2>&1 | tail -n 1
W=$(mktemp -d); trap 'kill $(jobs -p) ${BUS_PID:-} 2>/dev/null || true; rm -rf "$W"' EXIT
source "$REPO/scripts/private-bus.sh"
start_private_bus "$W"
BUS="$DBUS_SYSTEM_BUS_ADDRESS"
CLIP="$LOCKERD_DATA/blink/zju/000001M_FTN.mp4"
L=("$LOCKERD_BIN" --models "$LOCKERD_MODELS" --db "$W/k.db" --key-file "$W/key")
printf 'bench dbus key 0123456789\n' > "$W/key"; chmod 600 "$W/key"
"${L[@]}" store init >/dev/null
"${L[@]}" admin users add alice >/dev/null
"${L[@]}" admin enroll alice "$LOCKERD_DATA/blink/zju/000001M_FNN.mp4" >/dev/null
sed "s#^source = .*#source = \"$CLIP\"#" config/lockerd.toml > "$W/lockerd.toml"

# start_daemon BUS_ADDRESS: runs the daemon on the replayed walk-up; sets PID, READY_MS.
start_daemon() {
    DBUS_SYSTEM_BUS_ADDRESS="$1" "${L[@]}" --config "$W/lockerd.toml" run 2> "$W/log" &
    PID=$!
    for _ in $(seq 600); do grep -q "ready:" "$W/log" && break; sleep 0.05; done
    READY_MS=$(date +%s%3N)
}
stop_daemon() { kill -TERM "$PID"; wait "$PID" || true; }
grant_after_ready() {
    for _ in $(seq 400); do grep -q '"event":"unlock"' "$W/log" && break; sleep 0.05; done
    local at; at=$(grep '"event":"unlock"' "$W/log" | head -1 | sed 's/.*"at_ms":\([0-9]*\).*/\1/')
    echo $(( at - READY_MS ))
}
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# 1. Round trips (root: ok replies; nobody: NotAuthorized replies), daemon idle.
start_daemon "$BUS"
sleep 7   # let the replay finish so only the bus is measured
for m in status users_list; do
    DBUS_SYSTEM_BUS_ADDRESS="$BUS" "$LOCKERD_BIN" bench dbus --method "$m" --calls 2000
done
DBUS_SYSTEM_BUS_ADDRESS="$BUS" setpriv --reuid=65534 --regid=65534 --clear-groups \
    "$LOCKERD_BIN" bench dbus --method users_list --calls 2000
DBUS_SYSTEM_BUS_ADDRESS="$BUS" "$LOCKERD_BIN" bench dbus --method status --calls 5000 --concurrency 16
with_bus=$(hwm_kib "$PID"); stop_daemon

# 2. The same daemon without the bus (D-Bus service off): peak RSS difference.
start_daemon "unix:path=$W/no-such-bus"
sleep 7; without_bus=$(hwm_kib "$PID"); stop_daemon
echo "{\"peak_rss_kib_with_dbus\": $with_bus, \"peak_rss_kib_without_dbus\": $without_bus, \"extra_kib\": $(( with_bus - without_bus ))}"

# 3. Walk-up decision time after READY (replay at 30 fps), idle and under a flood.
for run in 1 2 3; do
    start_daemon "$BUS"; idle=$(grant_after_ready); stop_daemon
    start_daemon "$BUS"
    DBUS_SYSTEM_BUS_ADDRESS="$BUS" setpriv --reuid=65534 --regid=65534 --clear-groups \
        "$LOCKERD_BIN" bench dbus --method users_list --calls 5000 --concurrency 16 > "$W/flood.json" &
    flood_pid=$!
    flooded=$(grant_after_ready); wait "$flood_pid"; stop_daemon
    echo "{\"run\": $run, \"grant_ms_after_ready_idle\": $idle, \"grant_ms_after_ready_flood\": $flooded, \"flood\": $(cat "$W/flood.json")}"
done
