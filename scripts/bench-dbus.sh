#!/usr/bin/env bash
# D-Bus figures (README "D-Bus interface"): request round trip through a private
# system-like bus, the daemon's extra memory for the service, and a walk-up decision
# with and without a flood of unprivileged calls. Needs ../shared/data and the models.
# Prints one JSON object per measurement. Not part of the test suite (timings are noisy).
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
source "$REPO/scripts/bench-setup.sh"
bench_setup dbus
CLIP="$LOCKERD_DATA/blink/zju/000001M_FTN.mp4"
bench_alice "$CLIP"

hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

# 1. Round trips (root: ok replies; nobody: NotAuthorized replies), daemon idle.
start_daemon DBUS_SYSTEM_BUS_ADDRESS="$BUS"
sleep 7   # let the replay finish so only the bus is measured
for m in status users_list; do
    DBUS_SYSTEM_BUS_ADDRESS="$BUS" "$LAB_BIN" bench dbus --method "$m" --calls 2000
done
DBUS_SYSTEM_BUS_ADDRESS="$BUS" setpriv --reuid=65534 --regid=65534 --clear-groups \
    "$LAB_BIN" bench dbus --method users_list --calls 2000
DBUS_SYSTEM_BUS_ADDRESS="$BUS" "$LAB_BIN" bench dbus --method status --calls 5000 --concurrency 16
with_bus=$(hwm_kib "$PID"); stop_daemon

# 2. The same daemon without the bus (D-Bus service off): peak RSS difference.
start_daemon DBUS_SYSTEM_BUS_ADDRESS="unix:path=$W/no-such-bus"
sleep 7; without_bus=$(hwm_kib "$PID"); stop_daemon
echo "{\"peak_rss_kib_with_dbus\": $with_bus, \"peak_rss_kib_without_dbus\": $without_bus, \"extra_kib\": $(( with_bus - without_bus ))}"

# 3. Walk-up decision time after READY (replay at 30 fps), idle and under a flood.
for run in 1 2 3; do
    start_daemon DBUS_SYSTEM_BUS_ADDRESS="$BUS"; idle=$(grant_after_ready); stop_daemon
    start_daemon DBUS_SYSTEM_BUS_ADDRESS="$BUS"
    DBUS_SYSTEM_BUS_ADDRESS="$BUS" setpriv --reuid=65534 --regid=65534 --clear-groups \
        "$LAB_BIN" bench dbus --method users_list --calls 5000 --concurrency 16 > "$W/flood.json" &
    flood_pid=$!
    flooded=$(grant_after_ready); wait "$flood_pid"; stop_daemon
    echo "{\"run\": $run, \"grant_ms_after_ready_idle\": $idle, \"grant_ms_after_ready_flood\": $flooded, \"flood\": $(cat "$W/flood.json")}"
done
