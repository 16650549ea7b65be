#!/usr/bin/env bash
# scripts/ha-check.sh: a real Home Assistant against the real lockerd and a real mosquitto
# on loopback, tried the way a new user would. Root; needs the network the first time
# (scripts/ha-root.sh installs Debian trixie and Home Assistant from PyPI into
# /var/tmp/lockerd-ha-root, about 1 GB, kept for later runs). Not run by CI.
#
# HA gets a fresh config, is onboarded through its REST API, and gets the MQTT integration
# through its config-entry flow; then every check below is read from HA itself (its
# states, registries through templates, services, logbook and log) and from mosquitto's
# log. Exits 0 when all held; prints FAIL and exits 1 at the first that did not.
#
#   relay lock, allow_unlock off: the device and its 9 entities (the fleet directory synced), lock locked, door unknown
#     (no door sensor), camera unavailable (no camera here), every lockerd topic
#     subscribed at QoS 1, a refused unlock shown in HA (last access, logbook)
#   allow_unlock on: lock without a code, a malformed code refused by HA, a one-time code
#     opens once (unlocked, then locked again)
#   ESP32 lock (lockerd-lab lock-sim): the lock entity is accepted (no availability clash);
#     killed: unavailable; silent (SIGSTOP): unavailable, not jammed; back: locked
#   discovery off: the device is removed; lockerd stopped: entities unavailable
#   HA's log: no error or warning from the MQTT integration about lockerd
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${LOCKERD_HA_ROOT:-/var/tmp/lockerd-ha-root}
say() { echo "[ha-check] $*"; }

bash "$REPO/scripts/ha-root.sh"
(cd "$REPO" && cargo build --release --locked --bins -q)
LOCKERD=$REPO/target/release/lockerd
LAB=$REPO/target/release/lockerd-lab
LOCKERCTL=$REPO/target/release/lockerctl

W=$(mktemp -d /tmp/lockerd-ha-check.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
    [ -n "${BUS_PID:-}" ] && kill "$BUS_PID" 2>/dev/null || true
    sleep 1
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ]; then say "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
MQ=$(free_port)
HA_PORT=$(free_port)

# mosquitto, logging every subscription (QoS checked below).
cat > "$W/mosquitto.conf" <<EOF
listener $MQ 127.0.0.1
allow_anonymous true
persistence false
user root
log_dest file $W/mosquitto.log
log_type all
EOF
mosquitto -c "$W/mosquitto.conf" & PIDS+=($!)

# A private bus like the system bus, for lockerctl.
REPO=$REPO source "$REPO/scripts/private-bus.sh"
start_private_bus "$W/bus"

# lockerd: simulated hardware, no camera here, MQTT on loopback.
head -c 32 /dev/urandom > "$W/lock.key"; chmod 600 "$W/lock.key"
daemon_config() { # KIND ALLOW_UNLOCK DISCOVERY
    python3 - "$REPO/config/lockerd.toml" "$W/lockerd.toml" "$MQ" "$W/lock.key" "$@" <<'PY'
import sys
src, dst, port, key, kind, allow, disc = sys.argv[1:]
lines, section = [], ""
for line in open(src):
    s = line.strip()
    if s.startswith("["):
        section = s
    k = s.split("=")[0].strip() if "=" in s and not s.startswith("#") else None
    want = {
        ("[mqtt]", "enabled"): "true",
        ("[mqtt]", "url"): '"mqtt://127.0.0.1:%s"' % port,
        ("[mqtt]", "kiosk_id"): '"k1"',
        ("[mqtt.home_assistant]", "allow_unlock"): allow,
        ("[mqtt.home_assistant]", "discovery"): disc,
        ("[lock]", "kind"): '"%s"' % kind,
        ("[lock]", "key_file"): '"%s"' % key,
        ("[lock]", "report_timeout_s"): "4",
    }.get((section, k))
    # In a fleet (alone in it): HA shows the fleet directory's state.
    if s == "# [fleet]":
        line, section = "[fleet]\n", "[fleet]"
    elif section == "[fleet]" and s.startswith('# id = '):
        line = 'id = "site"\n'
    lines.append("%s = %s\n" % (k, want) if want is not None else line)
open(dst, "w").writelines(lines)
PY
}
start_daemon() { # KIND ALLOW_UNLOCK DISCOVERY
    daemon_config "$@"
    "$LOCKERD" --config "$W/lockerd.toml" --demo --db "$W/store.db" run \
        >>"$W/lockerd.log" 2>&1 & DAEMON=$!
    PIDS+=("$DAEMON")
    for _ in $(seq 100); do grep -q "mqtt: connected" "$W/lockerd.log" 2>/dev/null && break; sleep 0.2; done
    grep -q "mqtt: connected" "$W/lockerd.log" || { tail "$W/lockerd.log"; say "FAIL lockerd did not connect"; exit 1; }
    say "lockerd up: lock $1, allow_unlock $2, discovery $3"
}
stop_daemon() {
    kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true
    : > "$W/lockerd.log"
}

# Home Assistant in its root, on loopback, fresh config.
HA_CONFIG=/srv/lockerd-ha-check
rm -rf "${ROOT:?}$HA_CONFIG"; mkdir -p "$ROOT$HA_CONFIG"
cp "$REPO/scripts/ha_check.py" "$ROOT$HA_CONFIG/check.py"
cat > "$ROOT$HA_CONFIG/configuration.yaml" <<EOF
homeassistant:
  name: lockerd check
  latitude: 52.5
  longitude: 13.4
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: DE
http:
  server_host: 127.0.0.1
  server_port: $HA_PORT
api:
config:
onboarding:
logbook:
logger:
  default: warning
EOF
in_root() {
    chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/opt/ha/bin:/usr/bin:/bin LANG=C.UTF-8 \
        SSL_CERT_FILE=/etc/host-ca.crt PIP_CERT=/etc/host-ca.crt REQUESTS_CA_BUNDLE=/etc/host-ca.crt \
        HA_PORT="$HA_PORT" HA_CONFIG="$HA_CONFIG" "$@"
}
ha() { in_root /opt/ha/bin/python3 "$HA_CONFIG/check.py" "$@"; }
HA_LOG=$ROOT$HA_CONFIG/home-assistant.log

start_daemon relay false true
say "starting Home Assistant $(cat "$ROOT/opt/ha/.version") (the first start installs its frontend and paho-mqtt)"
in_root /opt/ha/bin/hass -c "$HA_CONFIG" >"$W/hass.out" 2>&1 & PIDS+=($!)
ha setup "$MQ"

LOCK=lock.lockerd_k1_lock
ha device 9 120
ha state "$LOCK" locked 30
ha state sensor.lockerd_k1_fleet_directory synced 30
ha state binary_sensor.lockerd_k1_door unknown 30
ha state sensor.lockerd_k1_camera unavailable 30
ha state binary_sensor.lockerd_k1_keypad_lockout off 30
# Every lockerd topic HA subscribed to, at QoS 1.
SUBS=$(grep -E "^\S+: \s*lockerd/k1/(state|availability|last_access|ha/access|ha/alert)" "$W/mosquitto.log" || true)
[ -n "$SUBS" ] || { say "FAIL no subscriptions to lockerd topics in mosquitto's log"; exit 1; }
if grep -q "(QoS 0)" <<<"$SUBS"; then say "FAIL HA subscribed at QoS 0:"; grep "(QoS 0)" <<<"$SUBS"; exit 1; fi
say "ok: $(wc -l <<<"$SUBS") subscriptions to lockerd topics, all QoS 1"

# allow_unlock off: HA's unlock is refused, and HA says so.
ha call lock.unlock "$LOCK" 200
ha state sensor.lockerd_k1_last_access "~allow_unlock" 15
ha attr event.lockerd_k1_access event_type denied 15
ha logbook sensor.lockerd_k1_last_access "allow_unlock" 30
ha state "$LOCK" locked 5

# allow_unlock on: locking needs no code; unlocking needs a keypad credential.
stop_daemon
start_daemon relay true true
ha attr "$LOCK" code_format "#" 30
ha call lock.lock "$LOCK" 200
ha call lock.unlock "$LOCK" refused "1234"
grep -q "lockerd_k1_lock doesn't match pattern" "$HA_LOG" \
    || { say "FAIL HA did not refuse the malformed code itself"; exit 1; }
CODE=$("$LOCKERCTL" --json code issue)
KEYS=$(python3 -c 'import json,sys;c=json.loads(sys.argv[1]);print("*%s#%s"%(c["slot"],c["code"]))' "$CODE")
ha call lock.unlock "$LOCK" 200 "$KEYS"
ha state "$LOCK" unlocked 10
ha state sensor.lockerd_k1_last_access "~granted" 10
ha state "$LOCK" locked 20
ha call lock.unlock "$LOCK" 200 "$KEYS"
ha state sensor.lockerd_k1_last_access "~denied" 10
ha state "$LOCK" locked 3

# The ESP32 lock, simulated on the host.
stop_daemon
"$LAB" --config "$W/lockerd.toml" lock-sim --heartbeat-s 1 --state "$W/lock-sim.state" \
    </dev/null >"$W/lock-sim.log" 2>&1 & SIM=$!; PIDS+=("$SIM")
start_daemon esp32 false true
ha device 9 60
ha state "$LOCK" locked 30
kill -STOP "$SIM"
say "lock simulator silent (SIGSTOP)"
ha state "$LOCK" unavailable 20
kill -CONT "$SIM"
ha state "$LOCK" locked 20
kill -9 "$SIM"
say "lock simulator killed"
ha state "$LOCK" unavailable 20
"$LAB" --config "$W/lockerd.toml" lock-sim --heartbeat-s 1 --state "$W/lock-sim.state" \
    </dev/null >>"$W/lock-sim.log" 2>&1 & SIM=$!; PIDS+=("$SIM")
ha state "$LOCK" locked 30

# lockerd stopped: unavailable (its LWT); discovery off: the device goes.
stop_daemon
ha state "$LOCK" unavailable 20
ha state binary_sensor.lockerd_k1_door unavailable 5
start_daemon relay false false
ha gone 30

# HA's own log: nothing from the MQTT integration about lockerd's messages.
if grep -E "(ERROR|WARNING).*(mqtt|lockerd)" "$HA_LOG" | grep -v "doesn't match pattern" ; then
    say "FAIL Home Assistant logged the above"
    exit 1
fi
say "ok: Home Assistant's log has no MQTT error or warning"
say "all checks held (Home Assistant $(cat "$ROOT/opt/ha/.version"), mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}'))"
