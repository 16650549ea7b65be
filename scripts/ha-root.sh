#!/usr/bin/env bash
# scripts/ha-root.sh: the Home Assistant that scripts/ha-check.sh runs, made once and kept:
# Debian trixie (Python 3.13, which current Home Assistant needs) debootstrapped into
# $LOCKERD_HA_ROOT (default /var/tmp/lockerd-ha-root), a venv in it at /opt/ha with
# homeassistant==$LOCKERD_HA_VERSION from PyPI. Idempotent; root; needs the network
# (Debian's mirror and PyPI). Not run by CI: it downloads about 1 GB.
set -euo pipefail
ROOT=${LOCKERD_HA_ROOT:-/var/tmp/lockerd-ha-root}
VERSION=${LOCKERD_HA_VERSION:-2026.2.3}
MIRROR=${LOCKERD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
say() { echo "[ha-root] $*"; }

if ! command -v debootstrap >/dev/null; then
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap >/dev/null
fi
if [ ! -e "$ROOT/.debootstrap-done" ]; then
    say "debootstrap trixie into $ROOT (a few minutes)"
    rm -rf "$ROOT"
    mkdir -p "$ROOT"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-dev,ca-certificates,build-essential,libffi-dev,libssl-dev,libjpeg-dev,zlib1g-dev \
        trixie "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
        || { tail -20 "$ROOT.debootstrap.log"; exit 1; }
    touch "$ROOT/.debootstrap-done"
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host's CA bundle (it may trust a local proxy's CA that the new root does not).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/host-ca.crt"
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
mountpoint -q "$ROOT/sys" || mount --bind /sys "$ROOT/sys"
in_root() {
    chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/opt/ha/bin:/usr/bin:/bin LANG=C.UTF-8 \
        SSL_CERT_FILE=/etc/host-ca.crt PIP_CERT=/etc/host-ca.crt REQUESTS_CA_BUNDLE=/etc/host-ca.crt \
        PIP_DEFAULT_TIMEOUT=180 "$@"
}
if [ "$(cat "$ROOT/opt/ha/.version" 2>/dev/null)" != "$VERSION" ]; then
    say "homeassistant==$VERSION into a venv (a few minutes)"
    in_root python3 -m venv /opt/ha
    in_root /opt/ha/bin/pip install -q --upgrade pip wheel
    in_root /opt/ha/bin/pip install -q "homeassistant==$VERSION"
    echo "$VERSION" > "$ROOT/opt/ha/.version"
fi
say "ready: $(in_root /opt/ha/bin/hass --version) in $ROOT"
