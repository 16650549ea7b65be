#!/usr/bin/env bash
# The packages, installed as a user would, checked end to end (part of scripts/test.sh):
#  1. scripts/package.sh builds lockerd_*_amd64.deb and lockerd-models_*_all.deb;
#  2. dpkg installs both into a throwaway root (maintainer scripts chrootless, with
#     DPKG_ROOT): the user, the state directory, the key, the marker, the enabled unit;
#  3. `lockerd doctor --root` on that root; a second install (upgrade) keeps the key;
#  4. the unit's ExecStart, run from the installed files in demo mode (the installed
#     config edited for a replayed clip; simulated lock) with the key handed over as the
#     `db-key` credential, on a private bus holding the installed policy: READY=1, an
#     enrolled face walking up is granted, the installed lockerctl sees it; SIGTERM stops it;
#  5. purge removes what the package made but keeps the database, its key and user;
#     with LOCKERD_PURGE_DATABASE=yes it removes those too.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$REPO/scripts/private-bus.sh"
cd "$REPO"
say() { printf '[test-package] %s\n' "$*" >&2; }
fail() { say "FAIL: $*"; exit 1; }
t0=$(date +%s)

mapfile -t DEBS < <(bash scripts/package.sh)
[[ ${#DEBS[@]} -eq 2 && -f ${DEBS[0]} && -f ${DEBS[1]} ]] || fail "package.sh did not print two packages"
W=$(mktemp -d /tmp/lockerd-pkg.XXXXXX)
chmod 755 "$W"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
R="$W/root"
mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates"
touch "$R/var/lib/dpkg/status"
# The libraries are this machine's (the root has no package database of them).
DPKG=(dpkg --root="$R" --force-script-chrootless --force-depends --log=/dev/null)
install_debs() { "${DPKG[@]}" -i "${DEBS[1]}" "${DEBS[0]}" >"$W/dpkg.log" 2>&1 || { cat "$W/dpkg.log"; fail "dpkg -i"; }; }

# --- 2. install ----------------------------------------------------------------------------
# The user and role groups exist before any file (the D-Bus policy names them) is unpacked.
dpkg-deb -e "${DEBS[0]}" "$W/control"
mkdir -p "$W/pre/etc"
DPKG_ROOT="$W/pre" sh "$W/control/preinst" install >/dev/null
grep -q '^lockerd:' "$W/pre/etc/passwd" && grep -q '^lockerd-admin:' "$W/pre/etc/group" ||
    fail "preinst did not make the lockerd user and groups"
install_debs
grep -q "made a database key" "$W/dpkg.log" || fail "postinst made no key"
uid=$(awk -F: '$1=="lockerd"{print $3}' "$R/etc/passwd")
[[ -n $uid ]] || fail "no lockerd user"
for g in lockerd-admin lockerd-operator; do grep -q "^$g:" "$R/etc/group" || fail "no group $g"; done
grep -Eq '^video:.*[:,]lockerd(,|$)' "$R/etc/group" || fail "lockerd is not in group video"
[[ $(stat -c '%a %u' "$R/var/lib/lockerd") == "700 $uid" ]] || fail "state directory: $(stat -c '%a %u' "$R/var/lib/lockerd")"
[[ $(stat -c '%a %u' "$R/etc/lockerd/db.key") == "400 0" ]] || fail "key: $(stat -c '%a %u' "$R/etc/lockerd/db.key")"
grep -Eq '^[0-9a-f]{64}$' "$R/etc/lockerd/db.key" || fail "the key is not 32 random bytes in hex"
[[ -L "$R/etc/systemd/system/multi-user.target.wants/lockerd.service" ]] || fail "the unit is not enabled"
[[ -e "$R/etc/lockerd/setup-pending" ]] || fail "no first-run marker"
grep -q '^AssertPathExists=!/etc/lockerd/setup-pending' "$R/usr/lib/systemd/system/lockerd.service" ||
    fail "the unit would start before configuration"
for f in usr/share/man/man1/lockerd.1.gz usr/share/man/man1/lockerctl.1.gz \
    usr/share/bash-completion/completions/lockerctl usr/share/dbus-1/system.d/org.lockerd.Locker1.conf \
    usr/share/dbus-1/interfaces/org.lockerd.Locker1.xml usr/lib/sysusers.d/lockerd.conf \
    usr/share/lockerd/models/shape_predictor_5_face_landmarks.dat usr/share/doc/lockerd-models/SHA256SUMS; do
    [[ -s "$R/$f" ]] || fail "missing /$f"
done
[[ $(dpkg-query --root="$R" -W -f='${Conffiles}' lockerd) == *"/etc/lockerd/lockerd.toml"* ]] || fail "the config is not a conffile"
# Video files are decoded by an ffmpeg child (crates/vision/src/video.rs), not linked in.
[[ $(dpkg-deb -f "${DEBS[0]}" Recommends) == *ffmpeg* ]] || fail "the package does not recommend ffmpeg"
! ldd "$R/usr/bin/lockerd" | grep -Eq 'libopencv_videoio|libavcodec|libgdal' || fail "lockerd links a video decoder"
# The lab (eval, replay, simulate, tools, bench, lock-sim) is for developers: not shipped.
[[ ! -e "$R/usr/bin/lockerd-lab" ]] || fail "the package ships lockerd-lab"
help=$("$R/usr/bin/lockerd" --help)
for c in eval replay simulate tools bench lock-sim; do
    ! grep -Eq "^  $c " <<<"$help" || fail "the packaged lockerd has the lab command $c"
done
say "installed: user $uid, key 0400 root, state 0700, unit enabled, first-run marker"

# --- 3. doctor on the installed root; upgrade keeps the key ---------------------------------
doc=$("$R/usr/bin/lockerd" doctor --root "$R" --json || true)
st() { jq -r --arg n "$1" '.checks[] | select(.name == $n) | .status' <<<"$doc"; }
[[ $(st models) == ok && $(st key) == ok && $(st "bus policy") == ok && $(st setup) == warn && $(st store) == warn ]] ||
    fail "doctor on the installed root: $doc"
key_sum=$(sha256sum <"$R/etc/lockerd/db.key")
install_debs
[[ $(sha256sum <"$R/etc/lockerd/db.key") == "$key_sum" ]] || fail "an upgrade replaced the key"
say "doctor: models, key and bus policy ok, store not made yet, setup pending; an upgrade kept the key"

# --- 4. the unit's ExecStart in demo mode -----------------------------------------------------
ZJU="$LOCKERD_DATA/blink/zju"
ENROLL="$ZJU/000001M_FNN.mp4"
WALKUP="$ZJU/000001M_FTN.mp4"
[[ -f $ENROLL && -f $WALKUP ]] || fail "no shared clips in $LOCKERD_DATA"
C="$R/etc/lockerd/lockerd.toml"
sed -i -e "s#^path = \"/var/lib/lockerd/lockerd.db\"#path = \"$R/var/lib/lockerd/lockerd.db\"#" \
    -e "s#^source = \"camera\"#source = \"$WALKUP\"#" \
    -e "s#^models = \"\"#models = \"$R/usr/share/lockerd/models\"#" "$C"
grep -q "^source = \"$WALKUP\"" "$C" || fail "could not edit the installed config"
rm "$R/etc/lockerd/setup-pending"
# LoadCredential=db-key:/etc/lockerd/db.key, as systemd does it.
exec_start=$(sed -n 's/^ExecStart=//p' "$R/usr/lib/systemd/system/lockerd.service")
cred_src=$(sed -n 's/^LoadCredential=db-key://p' "$R/usr/lib/systemd/system/lockerd.service")
[[ -n $exec_start && -n $cred_src ]] || fail "no ExecStart/LoadCredential in the unit"
mkdir -m 700 "$W/cred" && cp "$R$cred_src" "$W/cred/db-key" && chmod 400 "$W/cred/db-key"
read -ra CMD <<<"$exec_start"
for i in "${!CMD[@]}"; do [[ ${CMD[$i]} == /* ]] && CMD[$i]="$R${CMD[$i]}"; done
[[ ${CMD[0]} == "$R/usr/bin/lockerd" && ${CMD[-1]} == run ]] || fail "unexpected ExecStart: $exec_start"
export CREDENTIALS_DIRECTORY="$W/cred"
unset LOCKERD_MODELS
L=("$R/usr/bin/lockerd" --config "$C")
"${L[@]}" admin users add alice >/dev/null 2>"$W/admin.log" ||
    { "${L[@]}" store init >/dev/null 2>>"$W/admin.log" && "${L[@]}" admin users add alice >/dev/null 2>>"$W/admin.log"; } ||
    { cat "$W/admin.log"; fail "store init / user add with the credential"; }
"${L[@]}" admin enroll alice "$ENROLL" >/dev/null 2>>"$W/admin.log" || { cat "$W/admin.log"; fail "enroll"; }
start_private_bus "$W/bus" "$R/usr/share/dbus-1/system.d/org.lockerd.Locker1.conf"
pids+=("$BUS_PID")
python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.bind(sys.argv[1])
while True: print(s.recv(4096).decode().replace("\n", " "), flush=True)
' "$W/notify" >"$W/notify.txt" &
pids+=("$!")
for _ in $(seq 100); do [[ -S "$W/notify" ]] && break; sleep 0.05; done
NOTIFY_SOCKET="$W/notify" "${CMD[@]}" 2>"$W/daemon.log" &
dpid=$!
pids+=("$dpid")
for _ in $(seq 600); do grep -q "READY=1" "$W/notify.txt" && break; kill -0 "$dpid" 2>/dev/null || break; sleep 0.05; done
grep -q "READY=1" "$W/notify.txt" || { tail "$W/daemon.log"; fail "the daemon sent no READY=1"; }
CTL="$R/usr/bin/lockerctl"
granted=""
for _ in $(seq 600); do
    if "$CTL" audit list --json 2>>"$W/ctl.log" | jq -e '.rows | any(.outcome == "grant" and .method == "face" and .user == "alice")' >/dev/null; then
        granted=yes; break
    fi
    kill -0 "$dpid" 2>/dev/null || break
    sleep 0.1
done
[[ -n $granted ]] || { tail -3 "$W/ctl.log" >&2; "$CTL" audit list --json 2>&1 | head -c 900 >&2; tail "$W/daemon.log"; fail "alice's walk-up was not granted"; }
"$CTL" status >"$W/status.txt" || fail "lockerctl status"
doc=$("$R/usr/bin/lockerd" doctor --root "$R" --json || true)
[[ $(st bus) == ok && $(st store) == ok && $(st setup) == ok && $(st camera) == warn ]] ||
    fail "doctor beside the running daemon: $doc"
kill -TERM "$dpid"
rc=0; wait "$dpid" || rc=$?
[[ $rc -eq 0 ]] || { tail "$W/daemon.log"; fail "the daemon exited $rc on SIGTERM"; }
grep -q "STOPPING=1" "$W/notify.txt" || fail "no STOPPING=1"
kill "$BUS_PID" 2>/dev/null || true
say "ExecStart from the package: READY=1, doctor sees it on the bus, alice granted (installed lockerctl: $(head -c 60 "$W/status.txt" | tr '\n' ' ')...), clean stop"

# --- 5. purge ----------------------------------------------------------------------------------
"${DPKG[@]}" --purge lockerd >"$W/purge.log" 2>&1 || { cat "$W/purge.log"; fail "purge"; }
[[ ! -e "$R/usr/bin/lockerd" && ! -e "$R/etc/lockerd/lockerd.toml" ]] || fail "purge left the package's files"
[[ ! -L "$R/etc/systemd/system/multi-user.target.wants/lockerd.service" ]] || fail "purge left the unit enabled"
[[ -s "$R/var/lib/lockerd/lockerd.db" && -f "$R/etc/lockerd/db.key" ]] || fail "purge removed the database or its key unasked"
grep -q '^lockerd:' "$R/etc/passwd" || fail "purge removed the user owning the kept database"
grep -q "kept the database" "$W/purge.log" || fail "purge did not say what it kept"
# A store kept outside /var/lib/lockerd: purge, even with LOCKERD_PURGE_DATABASE=yes,
# keeps its only key (it used to delete it and keep the database).
install_debs
mkdir -p "$R/srv/kiosk"
mv "$R/var/lib/lockerd/lockerd.db" "$R/srv/kiosk/lockerd.db"
rm -f "$R/var/lib/lockerd/lockerd.db-"*
sed -i 's#^path = "/var/lib/lockerd/lockerd.db"#path = "/srv/kiosk/lockerd.db"#' "$R/etc/lockerd/lockerd.toml"
LOCKERD_PURGE_DATABASE=yes "${DPKG[@]}" --purge lockerd >"$W/purge.log" 2>&1 || { cat "$W/purge.log"; fail "purge (store elsewhere)"; }
[[ -s "$R/srv/kiosk/lockerd.db" && -f "$R/etc/lockerd/db.key" ]] || fail "purge removed the key of a database kept outside /var/lib/lockerd"
grep -q "kept the database at /srv/kiosk/lockerd.db" "$W/purge.log" || fail "purge did not say it kept /srv/kiosk/lockerd.db: $(cat "$W/purge.log")"
rm -rf "$R/srv/kiosk"
install_debs
LOCKERD_PURGE_DATABASE=yes "${DPKG[@]}" --purge lockerd lockerd-models >"$W/purge.log" 2>&1 || { cat "$W/purge.log"; fail "purge (database too)"; }
[[ ! -e "$R/var/lib/lockerd" && ! -e "$R/etc/lockerd" && ! -e "$R/usr/share/lockerd" ]] || fail "purge with LOCKERD_PURGE_DATABASE=yes left files: $(ls "$R/var/lib" "$R/etc")"
! grep -q '^lockerd:' "$R/etc/passwd" || fail "purge with LOCKERD_PURGE_DATABASE=yes left the user"
say "purge keeps the database, its key and user unless LOCKERD_PURGE_DATABASE=yes; then all is gone; a store kept elsewhere keeps its key"
say "ok in $(($(date +%s) - t0)) s ($(du -h "${DEBS[0]}" | cut -f1) + $(du -h "${DEBS[1]}" | cut -f1))"
