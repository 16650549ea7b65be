#!/usr/bin/env bash
# scripts/systemd-check.sh: the amd64 packages installed with apt-get into a Debian
# bookworm container booted with systemd as PID 1 (systemd-nspawn --boot), then used as
# an installer would: start before and after configuration, status, doctor as root and
# as an admin, roles over the real system bus, an enrollment from a file in a home, a
# crash, restarts in a row, stop, remove and purge. Root; needs Debian's mirror (the
# packages' dependencies). Not in CI (it boots a container and installs from the
# network); run before resolving anything about packaging or the unit.
# Exits 0 when every check held; prints FAIL and exits 1 at the first that did not.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BASE=${LOCKERD_SYSTEMD_ROOT:-/var/tmp/lockerd-systemd-root}
say() { echo "[systemd-check] $*"; }
fail() { say "FAIL: $*"; exit 1; }

bash "$REPO/scripts/systemd-root.sh"
mapfile -t DEBS < <(cd "$REPO" && bash scripts/package.sh)
[[ ${#DEBS[@]} -eq 2 ]] || fail "package.sh did not print two packages"

W=$(mktemp -d /var/tmp/lockerd-systemd-check.XXXXXX)
R=$W/root
NSPAWN=
cleanup() {
    if [ -n "$NSPAWN" ]; then
        kill "$NSPAWN" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$NSPAWN" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$NSPAWN" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = 1 ]; then say "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
say "a fresh copy of the bookworm root"
cp -a "$BASE" "$R"
mkdir -p "$R/root/pkgs"
cp "${DEBS[@]}" "$R/root/pkgs/"
cp /root/.cache/lockerd/demo-assets/obama.jpg "$R/root/pkgs/face.jpg" 2>/dev/null ||
    cp "$REPO/../shared/data/faces/"*/*.jpg "$R/root/pkgs/face.jpg" 2>/dev/null || true
cp /etc/resolv.conf "$R/etc/resolv.conf"

say "booting it (systemd-nspawn --boot)"
systemd-nspawn --boot --keep-unit --register=no --quiet -D "$R" \
    --machine=lockerd-check >"$W/console.log" 2>&1 &
NSPAWN=$!
# The container's PID 1: the systemd whose root is ours.
LEADER=
for _ in $(seq 100); do
    for p in $(pgrep -x systemd || true); do
        [ "$p" = 1 ] && continue
        if [ "$(stat -L -c %i /proc/"$p"/root 2>/dev/null)" = "$(stat -c %i "$R")" ]; then LEADER=$p; fi
    done
    [ -n "$LEADER" ] && break
    sleep 0.2
done
[ -n "$LEADER" ] || { cat "$W/console.log"; fail "the container did not boot"; }
in_c() { nsenter -t "$LEADER" -a -- /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
as_user() { local u=$1; shift; in_c runuser -u "$u" -- "$@"; }
state=$(in_c systemctl is-system-running --wait 2>/dev/null || true)
say "booted: systemd $(in_c systemctl --version | head -1 | awk '{print $2}') as PID 1, system $state"

# --- install with apt ----------------------------------------------------------------------
in_c apt-get update -qq >"$W/apt.log" 2>&1 || { tail "$W/apt.log"; fail "apt-get update"; }
if ! in_c env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "/root/pkgs/$(basename "${DEBS[1]}")" "/root/pkgs/$(basename "${DEBS[0]}")" >>"$W/apt.log" 2>&1; then
    tail -30 "$W/apt.log"; fail "apt-get install"
fi
grep -q "made a database key" "$W/apt.log" || fail "no key made: $(tail -5 "$W/apt.log")"
boot_journal=$(in_c journalctl -b --no-pager)
if grep 'Unknown username "lockerd"' <<<"$boot_journal"; then
    fail "dbus-daemon saw the policy before the user (above)"
fi
say "ok: installed with apt-get; no 'Unknown username' from dbus-daemon"

# --- a start before configuration fails and says why ------------------------------------
if out=$(in_c systemctl start lockerd 2>&1); then fail "start before configuration exited 0: $out"; fi
status=$(in_c systemctl status lockerd --no-pager 2>&1 || true)
[[ $status == *"setup-pending was not met"* ]] || fail "systemctl status does not name the marker: $status"
say "ok: start before configuration fails: ${out%%$'\n'*}"

# --- configure (the shipped config: simulated hardware; no camera here) and start ---------
in_c grep -q '^mode = "sim"' /etc/lockerd/lockerd.toml || fail "the shipped config is not hardware.mode sim"
in_c rm /etc/lockerd/setup-pending
in_c systemctl start lockerd || fail "start: $(in_c journalctl -u lockerd --no-pager | tail -20)"
st=$(in_c systemctl show -p StatusText --value lockerd)
[[ $st == *"camera UNAVAILABLE"* ]] || fail "STATUS= does not say the camera is missing: $st"
say "ok: started; STATUS=$st"

# --- roles over the real bus -------------------------------------------------------------
in_c useradd -m -G lockerd-admin ada
in_c useradd -m -G lockerd-operator otto
in_c useradd -m eve
status=$(as_user eve lockerctl status)
[[ $status == *"keypad only"* ]] || fail "status (any user) does not say keypad only: $status"
as_user eve lockerctl unlock --reason x >/dev/null 2>&1 && fail "an unprivileged user unlocked"
as_user otto lockerctl unlock --reason delivery >/dev/null || fail "an operator could not unlock"
as_user otto lockerctl users add bob >/dev/null 2>&1 && fail "an operator added a user"
as_user ada lockerctl users add bob >/dev/null || fail "an admin could not add a user"
audit=$(in_c lockerctl audit list)
[[ $audit == *"operator uid $(in_c id -u otto)"* ]] ||
    fail "the operator's unlock is not audited with their role: $(tail -3 <<<"$audit")"
say "ok: roles over the system bus (user looks, operator unlocks, admin manages; audited with the role)"

# --- doctor as an admin who is not root, and as root -------------------------------------
doc=$(as_user ada lockerd doctor 2>&1 || true)
[[ $doc == *"sudo lockerd doctor"* && $doc != *"no database key"* ]] || fail "doctor as an admin: $doc"
in_c lockerd doctor >"$W/doctor.txt" 2>&1 || true
grep -q "key" "$W/doctor.txt" && ! grep -q "FAIL key" "$W/doctor.txt" || fail "doctor as root: $(cat "$W/doctor.txt")"
say "ok: doctor as an admin says to use sudo; as root the key is ok"

# --- enroll from a file in the admin's home (ProtectHome, PrivateTmp) ---------------------
in_c install -o ada -m 0600 /root/pkgs/face.jpg /home/ada/bob.jpg
out=$(as_user ada lockerctl enroll bob /home/ada/bob.jpg --allow-poor-photos 2>&1) ||
    fail "enroll from ~/bob.jpg: $out"
say "ok: enrolled from a file in a home: ${out##*$'\n'}"

# --- a crash, restarts in a row, stop -----------------------------------------------------
pid=$(in_c systemctl show -p MainPID --value lockerd)
in_c kill -SEGV "$pid"
for _ in $(seq 50); do
    now=$(in_c systemctl show -p MainPID --value lockerd)
    [[ $now != "$pid" && $now != 0 ]] && break
    sleep 0.2
done
[[ $now != "$pid" ]] || fail "the first SIGSEGV did not end the daemon"
for _ in $(seq 100); do [[ $(in_c systemctl is-active lockerd) == active ]] && break; sleep 0.2; done
say "ok: the first SIGSEGV ended it (pid $pid), systemd restarted it (pid $now, $(in_c systemctl show -p NRestarts --value lockerd) restart)"
for i in $(seq 8); do
    in_c systemctl restart lockerd || fail "restart $i in a row: $(in_c systemctl status lockerd --no-pager | tail -3)"
done
say "ok: 8 restarts in a row"
in_c systemctl stop lockerd
journal=$(in_c journalctl -u lockerd --no-pager)
[[ $journal == *"stopped; lock locked"* ]] || fail "no clean stop in the journal"
! grep -Eq "[0-9]{6}#[0-9]{4}|code [0-9]{6,}" <<<"$journal" || fail "a code in the journal"
say "ok: stopped, lock locked"

# --- remove and purge ---------------------------------------------------------------------
in_c env DEBIAN_FRONTEND=noninteractive apt-get remove -y lockerd >>"$W/apt.log" 2>&1 || fail "remove"
in_c test -f /var/lib/lockerd/lockerd.db || fail "remove deleted the store"
in_c env DEBIAN_FRONTEND=noninteractive apt-get purge -y lockerd >>"$W/apt.log" 2>&1 || fail "purge"
in_c test -f /var/lib/lockerd/lockerd.db || fail "purge deleted the store"
in_c test -f /etc/lockerd/db.key || fail "purge deleted the only key of a kept store"
say "ok: remove and purge keep the store and its key"
say "all checks held (systemd $(in_c systemctl --version | head -1 | awk '{print $2}'), bookworm, $(basename "${DEBS[0]}"))"
