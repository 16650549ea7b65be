#!/usr/bin/env bash
# The main job: the whole face-unlock appliance on a machine with no camera and no GPIO.
# Builds lockerd, prepares real faces, writes a scenario and runs it with
# `lockerd-lab simulate` (virtual time, simulated lock/door/display, a temporary encrypted
# store, the real vision pipeline on replayed clips), then shows the daemon starting.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
bash scripts/setup.sh
echo "== building lockerd (release)"
cargo build --release --locked 2>&1 | tail -n 1
DEMO="${LOCKERD_DEMO_DIR:-$REPO/target/demo}"
rm -rf "$DEMO"; mkdir -p "$DEMO"
L=("$LAB_BIN" --models "$LOCKERD_MODELS")   # the lab: test clips and the simulator
A="$LOCKERD_DEMO_ASSETS"

ZJU="$LOCKERD_DATA/blink/zju"
if [[ -f "$ZJU/000001M_FNN.mp4" ]]; then
    echo "== faces: real blink clips from $LOCKERD_DATA (ZJU Eyeblink) and the face_recognition test photos"
    ALICE_ENROLL="$ZJU/000001M_FNN.mp4"        # alice enrolls from a clip of herself blinking
    ALICE_WALKUP="$ZJU/000001M_FTN.mp4"        # later she walks up (another session) and blinks
    ffmpeg -v error -y -ss 2.0 -i "$ZJU/000001M_UNN.mp4" -frames:v 1 "$DEMO/alice_photo.png"
    STRANGER="$ZJU/000010M_FNN.mp4"            # a live person nobody enrolled
else
    echo "== faces: no $LOCKERD_DATA here, so the demo MAKES its walk-up clips itself:"
    echo "   a photo of each person with two synthetic blinks (the eyes warped shut)."
    "${L[@]}" tools blink-clip "$A/obama3.jpg" "$DEMO/alice_walkup.avi" >/dev/null
    "${L[@]}" tools blink-clip "$A/biden.jpg" "$DEMO/stranger.avi" >/dev/null
    ALICE_ENROLL="$A/obama.jpg\", \"$A/obama2.jpg"
    ALICE_WALKUP="$DEMO/alice_walkup.avi"
    cp "$A/obama3.jpg" "$DEMO/alice_photo.jpg"
    STRANGER="$DEMO/stranger.avi"
fi
PHOTO_SRC=$(ls "$DEMO"/alice_photo.* | head -1)
"${L[@]}" tools photo-attack "$PHOTO_SRC" "$DEMO/photo_attack.avi" --frames 120 --width 640 >/dev/null

cat > "$DEMO/story.jsonl" <<JSON
{"at_s": 0.0, "admin": "user_add", "user": "alice"}
{"at_s": 0.5, "admin": "enroll", "user": "alice", "from": ["$ALICE_ENROLL"]}
{"at_s": 1.0, "admin": "user_add", "user": "bob"}
{"at_s": 1.5, "admin": "enroll", "user": "bob", "from": ["$A/biden.jpg"]}
{"at_s": 5.0, "clip": "$ALICE_WALKUP"}
{"at_s": 8.0, "door": "open"}
{"at_s": 12.0, "door": "closed"}
{"at_s": 20.0, "clip": "$DEMO/photo_attack.avi"}
{"at_s": 35.0, "clip": "$STRANGER"}
{"at_s": 50.0, "admin": "otp_issue"}
{"at_s": 52.0, "keys": "{otp}"}
{"at_s": 60.0, "keys": "{bad_otp}"}
{"at_s": 64.0, "keys": "{bad_otp}"}
{"at_s": 68.0, "keys": "{bad_otp}"}
{"at_s": 72.0, "admin": "otp_issue"}
{"at_s": 73.0, "keys": "{otp}"}
JSON
# In the no-data case bob is the stranger's photo: do not enroll him then.
[[ -f "$ZJU/000001M_FNN.mp4" ]] || sed -i '/"user": "bob"/d' "$DEMO/story.jsonl"

cat <<'TXT'

== the story (virtual time; every line below is what the controller did)
   0 s   alice is added and enrolled; bob too
   5 s   alice walks up and blinks            -> should unlock, then re-lock after 5 s
   8 s   the door opens and closes            -> fine, it was unlocked
  20 s   a photo of alice is held up          -> denied: no blink
  35 s   a stranger walks up and blinks       -> denied: no match
  50 s   the admin issues a one-time code; it is typed   -> unlock
  60 s   three wrong codes                    -> keypad lockout and an alert
  73 s   a fresh code during the lockout      -> ignored (keypad locked; faces still work)
TXT
echo
"${L[@]}" simulate "$DEMO/story.jsonl" --tail 8 2>/dev/null | grep -v "  keys  " | sed 's/^/   /'
echo
echo "   (the scenario is $DEMO/story.jsonl; add --json to \`lockerd-lab simulate\` for JSON lines)"

echo
echo "== the daemon itself, driven by lockerctl over D-Bus (a private bus set up like the"
echo "   system bus with the shipped policy; demo key, replayed camera, simulated lock,"
echo "   keypad typed through a pipe)"
source "$REPO/scripts/private-bus.sh"
start_private_bus "$DEMO/bus"
CTL="$REPO/target/release/lockerctl"
D=("$LOCKERD_BIN" --demo --db "$DEMO/lockerd.db" --models "$LOCKERD_MODELS")
echo "   \$ lockerd store init; lockerd admin users add alice; lockerd admin enroll alice ...   (no daemon yet: in process)"
"${D[@]}" store init 2>/dev/null | sed 's/^/   /'
"${D[@]}" admin users add alice 2>/dev/null | sed 's/^/   /'
if [[ -f "$ZJU/000001M_FNN.mp4" ]]; then ENROLL=("$ZJU/000001M_FNN.mp4"); else ENROLL=("$A/obama.jpg" "$A/obama2.jpg"); fi
"${D[@]}" admin enroll alice "${ENROLL[@]}" 2>/dev/null | sed 's/^/   /'
sed "s#^source = .*#source = \"$ALICE_WALKUP\"#" config/lockerd.toml > "$DEMO/lockerd.toml"
LOG="$DEMO/daemon.log"
LOCKERD_SIM_KEYPAD="$DEMO/keypad" "${D[@]}" --config "$DEMO/lockerd.toml" run 2>"$LOG" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; kill "$BUS_PID" 2>/dev/null || true' EXIT
for _ in $(seq 300); do grep -q "ready:" "$LOG" && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
"$CTL" watch > "$DEMO/watch.txt" &
watch_pid=$!
echo "   \$ lockerctl status"
"$CTL" status | sed 's/^/   /'
echo "   (alice's walk-up clip is playing to the camera; lockerctl watch is listening)"
for _ in $(seq 200); do grep -q '"event":"unlock"' "$LOG" && break; sleep 0.05; done
sleep 0.3
echo "   \$ lockerctl code issue --ttl 10m"
"$CTL" code issue --ttl 10m | tee "$DEMO/code.txt" | sed 's/^/   /'
KEYS=$(grep -o '\*[0-9]*#[0-9]*#' "$DEMO/code.txt" | head -1)
echo "   (the code is typed on the keypad: $KEYS)"
sleep 6   # the face pulse re-locks first
printf '%s' "$KEYS" > "$DEMO/keypad"
for _ in $(seq 100); do [[ $(grep -c '"event":"unlock"' "$LOG") -ge 2 ]] && break; sleep 0.05; done
sleep 0.5
kill "$watch_pid" 2>/dev/null || true; wait "$watch_pid" 2>/dev/null || true
echo "   \$ lockerctl watch   (what it printed meanwhile)"
sed 's/^/   /' "$DEMO/watch.txt"
echo "   \$ lockerctl audit list --limit 6"
"$CTL" audit list --limit 6 | sed 's/^/   /'
kill -TERM "$pid"; wait "$pid" || true
kill "$BUS_PID" 2>/dev/null || true; trap - EXIT
tail -n 1 "$LOG" | sed 's/^/   daemon | /'
"$LOCKERD_BIN" --demo --db "$DEMO/lockerd.db" audit verify | sed 's/^/   /'

echo
echo "== remote admin over MQTT: mosquitto on loopback, a signed command from lockerctl remote,"
echo "   the events (from the outbox, numbered by seq) and the Home Assistant discovery message"
# demo_broker NAME: mosquitto on a fresh loopback port ($PORT, pid $mq_pid), anonymous, with
# TCP_NODELAY; waits until it accepts connections.
demo_broker() {
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nuser %s\nset_tcp_nodelay true\n' \
        "$PORT" "$(id -un)" > "$DEMO/$1.conf"
    mosquitto -c "$DEMO/$1.conf" 2>/dev/null &
    mq_pid=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
}
demo_broker mosquitto
start_private_bus "$DEMO/bus2"
trap 'kill "$pid" "$mq_pid" "$sub_pid" 2>/dev/null || true; kill "$BUS_PID" 2>/dev/null || true' EXIT
rm -f "$DEMO/ada.key"
echo "   \$ lockerctl remote keygen --id ada --out ada.key"
"$CTL" remote keygen --id ada --out "$DEMO/ada.key" > "$DEMO/ada.toml"
sed 's/^/   /' "$DEMO/ada.toml"
python3 - "$DEMO/lockerd.toml" "$PORT" "$DEMO/ada.toml" > "$DEMO/lockerd-mqtt.toml" <<'PY'
import sys
conf, port, admin = open(sys.argv[1]).read(), sys.argv[2], open(sys.argv[3]).read()
head, mqtt = conf.split("[mqtt]\n", 1)
mqtt = mqtt.replace("enabled = false", "enabled = true", 1)
mqtt = mqtt.replace('url = "mqtts://localhost:8883"', f'url = "mqtt://127.0.0.1:{port}"', 1)
mqtt = mqtt.replace('kiosk_id = "kiosk"', 'kiosk_id = "demo"', 1)
mqtt = mqtt.replace("# [[mqtt.admins]]", admin, 1)
print(head + "[mqtt]\n" + mqtt)
PY
mosquitto_sub -p "$PORT" -v -t 'lockerd/demo/#' -t 'homeassistant/#' > "$DEMO/mqtt.txt" 2>/dev/null &
sub_pid=$!
LOG="$DEMO/daemon-mqtt.log"
"${D[@]}" --config "$DEMO/lockerd-mqtt.toml" run 2>"$LOG" &
pid=$!
for _ in $(seq 300); do grep -q "mqtt: connected" "$LOG" && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
R=(--key "$DEMO/ada.key" --url "mqtt://127.0.0.1:$PORT" --kiosk demo)
echo "   \$ lockerctl remote send --key ada.key --url mqtt://127.0.0.1:$PORT --kiosk demo status"
"$CTL" remote send "${R[@]}" status | head -n 12 | sed 's/^/   /'
echo "   \$ lockerctl remote send ... otp_issue '{\"ttl_s\": 600}'   (the code travels sealed to ada's key)"
"$CTL" remote send "${R[@]}" otp_issue '{"ttl_s": 600}' | tee "$DEMO/remote-code.json" | sed 's/^/   /'
echo "   \$ lockerctl remote send ... unlock '{\"reason\": \"parcel\"}'"
"$CTL" remote send "${R[@]}" unlock '{"reason": "parcel"}' | sed 's/^/   /'
sleep 1
echo "   (on the broker: events and alerts, retained state and audit head; first 160 characters each)"
grep -E '^lockerd/demo/(event|alert|state|audit_head|availability) ' "$DEMO/mqtt.txt" | cut -c1-160 | sed 's/^/   mqtt | /'
echo "   (the Home Assistant discovery message, retained: its components)"
grep '^homeassistant/device/' "$DEMO/mqtt.txt" | head -1 | cut -d' ' -f2- \
  | python3 -c 'import json,sys; d=json.load(sys.stdin); [print("   ha | %s: %s" % (k, v["p"])) for k,v in d["cmps"].items()]'
CODE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["result"]["secret"]["code"])' "$DEMO/remote-code.json")
echo "   (messages on the broker holding the code $CODE in clear: $(grep -c -- "$CODE" "$DEMO/mqtt.txt" || true))"
kill -TERM "$pid"; wait "$pid" || true
kill "$sub_pid" "$mq_pid" 2>/dev/null || true
kill "$BUS_PID" 2>/dev/null || true; trap - EXIT

echo
echo "== the ESP32 lock across the room: the daemon drives it through the broker (every frame"
echo "   HMAC-signed, single-use counters); here the lock is \`lockerd-lab lock-sim\`, which runs the"
echo "   firmware's own state machine. alice walks up again; then a captured unlock is replayed."
# A broker of its own on a fresh port (the previous one may still be closing its socket).
wait "$mq_pid" 2>/dev/null || true
demo_broker mosquitto-lock
start_private_bus "$DEMO/bus3"
trap 'kill "$pid" "$mq_pid" "$sub_pid" "$sim_pid" 2>/dev/null || true; kill "$BUS_PID" 2>/dev/null || true' EXIT
head -c 32 /dev/urandom > "$DEMO/lock.key"; chmod 600 "$DEMO/lock.key"
sed -e 's/^kind = "relay"/kind = "esp32"/' -e "s#^url = .*#url = \"mqtt://127.0.0.1:$PORT\"#" \
    -e "s#^key_file = \"/etc/lockerd/lock.key\"#key_file = \"$DEMO/lock.key\"#" \
    "$DEMO/lockerd-mqtt.toml" > "$DEMO/lockerd-esp32.toml"
mosquitto_sub -p "$PORT" -v -F '%t %x' -t 'lockerd/demo/lock/#' > "$DEMO/lock-frames.txt" 2>/dev/null &
sub_pid=$!
echo "   \$ lockerd-lab lock-sim --state lock.state   (the lock; its JSON lines, abridged)"
"$LAB_BIN" --config "$DEMO/lockerd-esp32.toml" lock-sim --state "$DEMO/lock.state" \
    > "$DEMO/lock-sim.txt" 2>/dev/null < /dev/null &
sim_pid=$!
LOG="$DEMO/daemon-esp32.log"
"${D[@]}" --config "$DEMO/lockerd-esp32.toml" run 2>"$LOG" &
pid=$!
for _ in $(seq 1200); do grep -q 'lock door1: unlock #' "$LOG" && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
sleep 1
grep -E 'lock door1: (available|unlock)' "$LOG" | sed 's/^/   daemon | /' || true
UNLOCK_HEX=$(awk '$1 ~ /\/cmd$/ && substr($2, 3, 2) == "01" { print $2; exit }' "$DEMO/lock-frames.txt")
python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' "$UNLOCK_HEX" > "$DEMO/unlock.bin"
echo "   \$ mosquitto_pub -t lockerd/demo/lock/door1/cmd -f unlock.bin   (the captured unlock, sent again)"
mosquitto_pub -p "$PORT" -t lockerd/demo/lock/door1/cmd -f "$DEMO/unlock.bin"
sleep 0.5
grep -E '"event":"(boot|accepted|relay|refused)"' "$DEMO/lock-sim.txt" | sed 's/^/   lock | /'
kill -TERM "$pid"; wait "$pid" || true
kill "$sub_pid" "$mq_pid" "$sim_pid" 2>/dev/null || true
kill "$BUS_PID" 2>/dev/null || true; trap - EXIT
