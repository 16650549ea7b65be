#!/usr/bin/env bash
# scripts/systemd-root.sh: the Debian bookworm root that scripts/systemd-check.sh boots
# with systemd as PID 1, made once with debootstrap and kept in $LOCKERD_SYSTEMD_ROOT
# (default /var/tmp/lockerd-systemd-root). Root; needs Debian's mirror the first time.
# Every check copies it afresh, so the packages are always installed on a clean system.
set -euo pipefail
BASE=${LOCKERD_SYSTEMD_ROOT:-/var/tmp/lockerd-systemd-root}
MIRROR=${LOCKERD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
say() { echo "[systemd-root] $*"; }
for tool in debootstrap:debootstrap systemd-nspawn:systemd-container; do
    command -v "${tool%%:*}" >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${tool##*:}" >/dev/null
done
if [ ! -e "$BASE/.lockerd-ready" ]; then
    say "debootstrap bookworm into $BASE (a few minutes)"
    rm -rf "$BASE"
    debootstrap --include=systemd,systemd-sysv,dbus,ca-certificates,procps,jq \
        bookworm "$BASE" "$MIRROR" >"$BASE.log" 2>&1 || { tail -20 "$BASE.log"; exit 1; }
    echo "lockerd-check" >"$BASE/etc/hostname"
    # No getty on a console nobody reads; no network setup beyond the host's.
    rm -f "$BASE/etc/systemd/system/getty.target.wants/"*
    touch "$BASE/.lockerd-ready"
fi
say "ready: $BASE"
