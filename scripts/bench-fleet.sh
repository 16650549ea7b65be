#!/usr/bin/env bash
# Fleet figures (issue #28, docs/mqtt.md "Fleet"), with real daemons and real mosquittos:
#  1. a directory of USERS users with TEMPLATES templates each (synthetic vectors, sealed
#     to a new kiosk's card key, signed with an admin key: `lockerd-lab bench
#     fleet-records`) retained on the broker: the broker's memory before and after;
#  2. that new kiosk started: ms until its directory is in sync (every record verified,
#     opened and applied), and the users its card then counts;
#  3. BANS bans and unbans of one user (`lockerctl fleet publish --role banned|user
#     --no-faces`) with four kiosks online, three on the broker and one on a second
#     mosquitto bridged to it: ms from the record's version (the publisher's clock when
#     lockerctl started) to each kiosk's card saying it applied it, p50/p99/max.
# Usage: scripts/bench-fleet.sh [USERS] [TEMPLATES] [BANS]. Prints JSON lines. Noisy.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO"
USERS="${1:-1000}"; TEMPLATES="${2:-5}"; BANS="${3:-50}"
source "$REPO/scripts/bench-setup.sh"
bench_setup fleet
# KEEP_WORK=1: keep the work dir (logs of every kiosk) for a look afterwards.
[[ -n "${KEEP_WORK:-}" ]] && trap 'kill $(jobs -p) ${BUS_PID:-} 2>/dev/null || true; echo "kept $W" >&2' EXIT
CTL="$REPO/target/release/lockerctl"
start_broker "max_queued_messages 100000" "max_inflight_messages 100"
PORT2=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nuser %s\nconnection site1\naddress 127.0.0.1:%s\ntopic lockerd/fleet/# both 1\n' \
    "$PORT2" "$(id -un)" "$PORT" > "$W/mosquitto2.conf"
mosquitto -c "$W/mosquitto2.conf" 2>/dev/null &
broker_rss() { awk '/VmRSS/ {print $2}' "/proc/$(pgrep -f -- "-c $W/mosquitto.conf" | head -1)/status"; }

# kiosk ID PORT: its own store, key and config in $W/ID (no D-Bus, no camera).
kiosk() {
    local d="$W/$1"
    mkdir -p "$d"
    printf 'bench fleet %s key 0123456789\n' "$1" > "$d/key"; chmod 600 "$d/key"
    "$LOCKERD_BIN" --db "$d/k.db" --key-file "$d/key" store init >/dev/null 2>&1
    sed -e "s/^kiosk_id = .*/kiosk_id = \"$1\"/" -e "s#^url = .*#url = \"mqtt://127.0.0.1:$2\"#" \
        -e 's/^# \[fleet\]/[fleet]/' -e 's/^# id = "my-site"/id = "site"/' \
        "$W/lockerd.toml" > "$d/lockerd.toml"
}
# start_kiosk ID: run it; sets KPID_<ID> and START_MS_<ID>.
start_kiosk() {
    local d="$W/$1"
    : > "$d/log"
    printf -v "START_MS_$1" '%s' "$(date +%s%3N)"
    DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent "$LOCKERD_BIN" --models "$LOCKERD_MODELS" \
        --db "$d/k.db" --key-file "$d/key" --config "$d/lockerd.toml" run 2> "$d/log" &
    printf -v "KPID_$1" '%s' "$!"
}
# synced ID [SECONDS]: wait until its directory is in sync; the ms since it started.
synced() {
    local d="$W/$1" start="START_MS_$1"
    for _ in $(seq $(( ${2:-60} * 20 ))); do
        grep -q "directory in sync" "$d/log" && break; sleep 0.05
    done
    grep -q "directory in sync" "$d/log" || { echo "kiosk $1 never synced" >&2; tail "$d/log" >&2; exit 1; }
    echo $(( $(date +%s%3N) - ${!start} ))
}
stop_kiosk() { local p="KPID_$1"; kill -TERM "${!p}"; wait "${!p}" || true; }

# 1. The new kiosk exists (its key made, its card retained offline), then the directory.
kiosk new "$PORT"; start_kiosk new; synced new >/dev/null; stop_kiosk new
rss0=$(broker_rss)
"$LAB_BIN" bench fleet-records --url "mqtt://127.0.0.1:$PORT" --key "$W/ada.key" --fleet site \
    --users "$USERS" --templates "$TEMPLATES" --kiosks new
rss1=$(broker_rss)
echo "{\"bench\": \"fleet_broker_memory\", \"users\": $USERS, \"templates_each\": $TEMPLATES, \"rss_kb_before\": $rss0, \"rss_kb_after\": $rss1, \"bytes_per_user\": $(( (rss1 - rss0) * 1024 / USERS ))}"

# 2. The new kiosk starts with an empty directory (vision on: its gallery is rebuilt too).
start_kiosk new
ms=$(synced new 300)
card=$(mosquitto_sub -p "$PORT" -t lockerd/fleet/site/kiosk/new -C 1 -W 10)
echo "{\"bench\": \"fleet_new_kiosk_sync\", \"users\": $USERS, \"templates_each\": $TEMPLATES, \"ms_from_start\": $ms, \"includes\": \"store open, vision start, connect, every record verified, opened and applied\", \"card\": $card}"

# 3. Bans with four kiosks online, k4 behind the bridge.
kiosk k2 "$PORT"; kiosk k3 "$PORT"; kiosk k4 "$PORT2"
for k in k2 k3 k4; do start_kiosk "$k"; done
for k in k2 k3 k4; do synced "$k" 300 >/dev/null; done
mosquitto_sub -p "$PORT" -t 'lockerd/fleet/site/kiosk/+' -v > "$W/cards1.txt" &
sub1=$!
mosquitto_sub -p "$PORT2" -t 'lockerd/fleet/site/kiosk/k4' -v > "$W/cards2.txt" &
sub2=$!
sleep 0.5
: > "$W/versions.txt"
for i in $(seq "$BANS"); do
    role=$([[ $((i % 2)) == 1 ]] && echo banned || echo user)
    "$CTL" --json fleet publish u00000 --role "$role" --no-faces --key "$W/ada.key" --fleet site \
        --url "mqtt://127.0.0.1:$PORT" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])' >> "$W/versions.txt"
    sleep 0.2
done
sleep 1
kill "$sub1" "$sub2" 2>/dev/null || true
python3 - "$W/versions.txt" "$W/cards1.txt" "$W/cards2.txt" <<'PY'
import json, sys
versions = [int(l) for l in open(sys.argv[1])]
cards = {}
for path, only in ((sys.argv[2], None), (sys.argv[3], "k4")):
    for line in open(path):
        topic, _, payload = line.strip().partition(" ")
        c = json.loads(payload)
        if only and c["kiosk"] != only or (not only and c["kiosk"] == "k4"):
            continue
        cards.setdefault(c["kiosk"], []).append(c)
lat = {k: [] for k in ("new", "k2", "k3", "k4")}
worst = []
for v in versions:
    per = []
    for k in lat:
        at = [c["at_ms"] for c in cards.get(k, []) if c["directory_version"] >= v]
        if at:
            lat[k].append(min(at) - v)
            per.append(min(at) - v)
    worst.append(max(per) if len(per) == len(lat) else None)
def q(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * len(v)))] if v else None
same = lat["new"] + lat["k2"] + lat["k3"]
applied_everywhere = [w for w in worst if w is not None]
print(json.dumps({"bench": "fleet_revocation_ms", "records": len(versions),
    "same_broker": {"n": len(same), "p50": q(same, .5), "p99": q(same, .99), "max": max(same, default=None)},
    "bridged": {"n": len(lat["k4"]), "p50": q(lat["k4"], .5), "p99": q(lat["k4"], .99), "max": max(lat["k4"], default=None)},
    "all_four": {"n": len(applied_everywhere), "p50": q(applied_everywhere, .5), "p99": q(applied_everywhere, .99)},
    "per_kiosk_n": {k: len(v) for k, v in lat.items()},
    "includes": "lockerctl start and connect, broker, verify, store transaction, card publish"}))
PY
for k in new k2 k3 k4; do stop_kiosk "$k"; done
