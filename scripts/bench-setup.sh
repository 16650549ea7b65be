# Sourced by the bench scripts (bench-dbus, bench-load, bench-mqtt).
# bench_setup NAME: build lockerd; make a work dir $W (removed on exit, with every
# background job and the private bus); start a private system-like bus ($BUS); create an
# encrypted store there, reached with L=(lockerd --models --db --key-file).
bench_setup() {
    cargo build --release --locked 2>&1 | tail -n 1
    W=$(mktemp -d)
    trap 'kill $(jobs -p) ${BUS_PID:-} 2>/dev/null || true; rm -rf "$W"' EXIT
    source "$REPO/scripts/private-bus.sh"
    start_private_bus "$W"
    BUS="$DBUS_SYSTEM_BUS_ADDRESS"
    L=("$LOCKERD_BIN" --models "$LOCKERD_MODELS" --db "$W/k.db" --key-file "$W/key")
    printf 'bench %s key 0123456789\n' "$1" > "$W/key"; chmod 600 "$W/key"
    "${L[@]}" store init >/dev/null
}

# bench_alice WALKUP: alice enrolled from her ZJU clip, and $W/lockerd.toml replaying
# WALKUP to the camera.
bench_alice() {
    "${L[@]}" admin users add alice >/dev/null
    "${L[@]}" admin enroll alice "$LOCKERD_DATA/blink/zju/000001M_FNN.mp4" >/dev/null
    sed "s#^source = .*#source = \"$1\"#" config/lockerd.toml > "$W/lockerd.toml"
}

# start_daemon [VAR=VALUE ...]: lockerd run on $W/lockerd.toml with that environment
# (e.g. DBUS_SYSTEM_BUS_ADDRESS, LOCKERD_SIM_KEYPAD), log in $W/log; waits for READY and
# sets PID and READY_MS.
start_daemon() {
    : > "$W/log"
    env "$@" "${L[@]}" --config "$W/lockerd.toml" run 2> "$W/log" &
    PID=$!
    for _ in $(seq 600); do grep -q "ready:" "$W/log" && break; sleep 0.05; done
    READY_MS=$(date +%s%3N)
}
# start_broker [LINE ...]: mosquitto on a free loopback port ($PORT), anonymous, with these
# extra mosquitto.conf lines; $W/lockerd.toml then has MQTT on for kiosk "bench" with admin
# ada ($W/ada.key).
start_broker() {
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    { printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nuser %s\n' "$PORT" "$(id -un)"
      printf '%s\n' "$@"; } > "$W/mosquitto.conf"
    mosquitto -c "$W/mosquitto.conf" 2>/dev/null &
    "$REPO/target/release/lockerctl" remote keygen --id ada --out "$W/ada.key" > "$W/ada.toml"
    sed -e 's/^enabled = false/enabled = true/' -e "s#^url = .*#url = \"mqtt://127.0.0.1:$PORT\"#" \
        -e 's/^kiosk_id = .*/kiosk_id = "bench"/' -e "/^# \[\[mqtt.admins\]\]/r $W/ada.toml" \
        config/lockerd.toml > "$W/lockerd.toml"
}
stop_daemon() { kill -TERM "$PID"; wait "$PID" || true; }
# grant_after_ready: ms from READY to the first unlock event (waits up to 30 s).
grant_after_ready() {
    for _ in $(seq 600); do grep -q '"event":"unlock"' "$W/log" && break; sleep 0.05; done
    local at; at=$(grep '"event":"unlock"' "$W/log" | head -1 | sed 's/.*"at_ms":\([0-9]*\).*/\1/')
    echo $(( at - READY_MS ))
}
