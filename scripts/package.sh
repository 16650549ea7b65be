#!/usr/bin/env bash
# Build the Debian packages (idempotent, like setup.sh):
#   lockerd_<version>_<arch>.deb     both binaries, the unit, sysusers/tmpfiles snippets,
#                                    the D-Bus policy and interface, the config (conffile),
#                                    man pages, completions; Depends from the shared libraries
#   lockerd-models_<version>_all.deb the dlib, SFace, MiniFASNet and iris models with their sha256 and licences
#
#   bash scripts/package.sh                  amd64 (this machine), into target/debian/
#   bash scripts/package.sh --arch arm64     cross-built against the arm64 sysroot that
#                                            scripts/arm64.sh makes (README "arm64")
#
# The models package is rebuilt only when missing (its content is pinned); the lockerd
# package every time (a few seconds once the binaries are built).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[package] %s\n' "$*" >&2; }

ARCH=$(dpkg --print-architecture)
OUT=target/debian
while (($#)); do
    case "$1" in
    --arch) ARCH="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    *) echo "usage: $0 [--arch amd64|arm64] [--out DIR]" >&2; exit 2 ;;
    esac
done
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)-1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# Models (and apt packages) as setup.sh installs them; it is quick when all is there.
bash scripts/setup.sh >/dev/null
MODELS="${LOCKERD_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/lockerd/models}"
# The 68-point predictor (100 MB) is not shipped: only the comparison mode
# `[vision.blink] eyes = "landmarks"` loads it (scripts/setup.sh fetches it for that).
# dlib's ResNet only for templates enrolled before SFace (loaded when one is in the store).
MODEL_FILES=(shape_predictor_5_face_landmarks.dat face_recognition_sface_2021dec_int8bq_fp32.onnx
             MiniFASNetV2.onnx MiniFASNetV1SE.onnx iris_landmark.onnx
             dlib_face_recognition_resnet_model_v1.dat)

# --- binaries ------------------------------------------------------------------------
# Host binaries always: they also print the man pages and completions (arch-independent).
cargo build --release --locked --bins -q
if [[ $ARCH == "$(dpkg --print-architecture)" ]]; then
    BIN=target/release
    STRIP=strip
else
    [[ $ARCH == arm64 ]] || { log "only amd64 (native) and arm64 (cross) are built"; exit 2; }
    # shellcheck source=scripts/arm64.sh
    source scripts/arm64.sh env
    cargo build --release --locked --bins -q --target aarch64-unknown-linux-gnu
    BIN=target/aarch64-unknown-linux-gnu/release
    STRIP=aarch64-linux-gnu-strip
fi

# --- shared-library dependencies -------------------------------------------------------
# dpkg-shlibdeps on the target's own package database: the host's for amd64, the
# sysroot's (run under qemu-user) for arm64.
shlibs() {
    local dir run=()
    if [[ $ARCH == "$(dpkg --print-architecture)" ]]; then
        dir=$(mktemp -d)
    else
        dir="$ARM64_SYSROOT/tmp/shlibs"
        rm -rf "$dir"
        run=(chroot "$ARM64_SYSROOT")
    fi
    mkdir -p "$dir/debian"
    cp "$BIN/lockerd" "$BIN/lockerctl" "$dir/"
    printf 'Source: lockerd\n\nPackage: lockerd\nArchitecture: any\n' >"$dir/debian/control"
    "${run[@]}" sh -c "cd ${dir#"${ARM64_SYSROOT:-}"} && dpkg-shlibdeps -O -e lockerd -e lockerctl 2>/dev/null" |
        sed -n 's/^shlibs:Depends=//p'
    rm -rf "$dir"
}

# --- lockerd_<version>_<arch>.deb ---------------------------------------------------------
S="$OUT/stage-lockerd-$ARCH"
rm -rf "$S"
inst() { install -D -m "$1" "$2" "$S/$3"; }
inst 0755 "$BIN/lockerd" usr/bin/lockerd
inst 0755 "$BIN/lockerctl" usr/bin/lockerctl
"$STRIP" --strip-unneeded "$S/usr/bin/lockerd" "$S/usr/bin/lockerctl"
inst 0644 systemd/lockerd.service usr/lib/systemd/system/lockerd.service
inst 0644 systemd/lockerd.sysusers usr/lib/sysusers.d/lockerd.conf
inst 0644 systemd/lockerd.tmpfiles usr/lib/tmpfiles.d/lockerd.conf
inst 0644 systemd/org.lockerd.Locker1.conf usr/share/dbus-1/system.d/org.lockerd.Locker1.conf
inst 0644 systemd/org.lockerd.Locker1.xml usr/share/dbus-1/interfaces/org.lockerd.Locker1.xml
inst 0644 config/lockerd.toml etc/lockerd/lockerd.toml
D=usr/share/doc/lockerd
inst 0644 scripts/debian/copyright "$D/copyright"
inst 0644 README.md "$D/README.md"
# The documents an installer and an admin read (the rest is for developers).
inst 0644 docs/operations.md "$D/INSTALL.md"
inst 0644 docs/control.md "$D/CONTROL.md"
inst 0644 docs/mqtt.md "$D/MQTT.md"
inst 0644 docs/access.md "$D/ACCESS.md"
inst 0644 hardware/WIRING.md "$D/WIRING.md"
inst 0644 systemd/drop-ins/mqtt.conf "$D/examples/mqtt.conf"
inst 0644 config/mosquitto-lockerd.acl "$D/examples/mosquitto-lockerd.acl"
gzip -9n "$S/$D/README.md" "$S/$D/INSTALL.md" "$S/$D/CONTROL.md" "$S/$D/MQTT.md" "$S/$D/ACCESS.md"
for b in lockerd lockerctl; do
    mkdir -p "$S/usr/share/man/man1" "$S/usr/share/bash-completion/completions" \
        "$S/usr/share/zsh/vendor-completions" "$S/usr/share/fish/vendor_completions.d"
    target/release/$b man | gzip -9n >"$S/usr/share/man/man1/$b.1.gz"
    target/release/$b completions bash >"$S/usr/share/bash-completion/completions/$b"
    target/release/$b completions zsh >"$S/usr/share/zsh/vendor-completions/_$b"
    target/release/$b completions fish >"$S/usr/share/fish/vendor_completions.d/$b.fish"
done
mkdir -p "$S/DEBIAN"
install -m 0755 scripts/debian/postinst scripts/debian/prerm scripts/debian/postrm "$S/DEBIAN/"
# preinst carries the sysusers lines itself (the package's files are not there yet).
cat scripts/debian/preinst systemd/lockerd.sysusers >"$S/DEBIAN/preinst"
chmod 0755 "$S/DEBIAN/preinst"
echo /etc/lockerd/lockerd.toml >"$S/DEBIAN/conffiles"
DEPENDS=$(shlibs)
[[ -n $DEPENDS ]] || { log "dpkg-shlibdeps found no dependencies"; exit 1; }
cat >"$S/DEBIAN/control" <<EOF
Package: lockerd
Version: $VERSION
Architecture: $ARCH
Maintainer: lockerd developers <lockerd@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$S" | cut -f1)
Depends: $DEPENDS, systemd (>= 247), dbus, lockerd-models (= $VERSION)
Recommends: ffmpeg
Suggests: mosquitto-clients
Section: misc
Priority: optional
Description: walk-up face-unlock daemon for a Raspberry Pi locker or door
 lockerd owns the camera, a 4x4 keypad and the lock relay: a face that blinks
 and matches an enrolled user opens the lock; one-time and TOTP codes on the
 keypad are the fallback. Users, face templates and the audit log are kept in
 an SQLCipher-encrypted store. Local control over D-Bus (lockerctl), remote
 administration over MQTT with signed commands.
 .
 The service is enabled but does not start until /etc/lockerd/setup-pending is
 removed after configuration; "lockerd doctor" checks the device.
EOF
(cd "$S" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
DEB="$OUT/lockerd_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$S" "$DEB" >/dev/null
log "built $DEB ($(du -h "$DEB" | cut -f1))"

# --- lockerd-models_<version>_all.deb -----------------------------------------------------
MDEB="$OUT/lockerd-models_${VERSION}_all.deb"
models_deb_complete() {
    local listing f
    listing=$(dpkg-deb -c "$1" 2>/dev/null) || return 1
    for f in "${MODEL_FILES[@]}"; do grep -q "/usr/share/lockerd/models/$f\$" <<<"$listing" || return 1; done
    # ...and nothing else (an older package carried the 68-point model).
    [[ $(grep -c '/usr/share/lockerd/models/.' <<<"$listing") -eq ${#MODEL_FILES[@]} ]]
}
if [[ -f $MDEB ]] && models_deb_complete "$MDEB"; then
    log "kept $MDEB (its content is pinned)"
else
    M="$OUT/stage-lockerd-models"
    rm -rf "$M"
    mkdir -p "$M/usr/share/lockerd/models" "$M/usr/share/doc/lockerd-models" "$M/DEBIAN"
    for f in "${MODEL_FILES[@]}"; do install -m 0644 "$MODELS/$f" "$M/usr/share/lockerd/models/$f"; done
    (cd "$M/usr/share/lockerd/models" && sha256sum "${MODEL_FILES[@]}") >"$M/usr/share/doc/lockerd-models/SHA256SUMS"
    # The sums must be the pinned ones (setup.sh checked them; this checks the copy).
    for f in "${MODEL_FILES[@]}"; do
        grep -q "$(grep -o "\[$f\]=[0-9a-f]*" scripts/setup.sh | cut -d= -f2)  $f" \
            "$M/usr/share/doc/lockerd-models/SHA256SUMS" || { log "$f: not the pinned sha256"; exit 1; }
    done
    install -m 0644 scripts/debian/models-copyright "$M/usr/share/doc/lockerd-models/copyright"
    # SFace is redistributed in a modified form (dequantized): its licence text goes with it.
    install -m 0644 /usr/share/common-licenses/Apache-2.0 \
        "$M/usr/share/doc/lockerd-models/LICENSE-SFace-Apache-2.0.txt"
    cat >"$M/DEBIAN/control" <<EOF
Package: lockerd-models
Version: $VERSION
Architecture: all
Maintainer: lockerd developers <lockerd@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$M" | cut -f1)
Section: misc
Priority: optional
Description: face models for lockerd (dlib, SFace, MiniFASNet, MediaPipe iris)
 dlib's 5-point landmark predictor and ResNet face encoder (for templates enrolled
 before SFace), from face_recognition_models 0.3.0, OpenCV Zoo's SFace face
 embedding (dequantized to float32, a modified form; Apache-2.0), the MiniFASNet V2
 and V1SE presentation-attack CNNs (ONNX) and MediaPipe's iris landmark model
 (converted to ONNX), with their sha256 sums in
 /usr/share/doc/lockerd-models/SHA256SUMS. Nothing is downloaded at install.
EOF
    (cd "$M" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
    dpkg-deb --root-owner-group -Zxz --build "$M" "$MDEB.partial" >/dev/null
    mv -f "$MDEB.partial" "$MDEB"
    rm -rf "$M"
    log "built $MDEB ($(du -h "$MDEB" | cut -f1))"
fi
echo "$DEB"
echo "$MDEB"
