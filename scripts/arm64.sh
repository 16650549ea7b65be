#!/usr/bin/env bash
# lockerd for arm64 (Raspberry Pi OS / Debian bookworm, 64-bit), on this x86 machine:
#
#   bash scripts/arm64.sh sysroot  an arm64 bookworm sysroot (debootstrap + qemu-user-static)
#                                  with the -dev packages; once, about 12 min
#   bash scripts/arm64.sh build    cross-compile for aarch64-unknown-linux-gnu against it and
#                                  build the arm64 packages (scripts/package.sh --arch arm64)
#   bash scripts/arm64.sh run      a clean arm64 bookworm rootfs, `apt-get install ./*.deb`
#                                  under qemu-user, then store init, eval faces and two replays
#                                  there, compared with the same run on amd64
#   bash scripts/arm64.sh all      the three in turn
#   source scripts/arm64.sh env    only the cross-compilation environment (package.sh)
#
# Everything lives in $ARM64_DIR (default target/arm64). Needs root (debootstrap, chroot).
# Speeds under emulation mean nothing: see README "arm64" for the frame-time estimate.

_arm64_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ARM64_DIR="${ARM64_DIR:-$_arm64_repo/target/arm64}"
ARM64_SYSROOT="$ARM64_DIR/sysroot"
ARM64_MIRROR="${ARM64_MIRROR:-http://deb.debian.org/debian}"
# What the cross build links against (the arm64 twins of setup.sh's -dev packages).
ARM64_DEV_PACKAGES=(libopencv-dev libdlib-dev libopenblas-dev liblapack-dev libssl-dev
                    libc6-dev libstdc++-12-dev dpkg-dev)

arm64_env() {
    local s="$ARM64_SYSROOT" t=aarch64_unknown_linux_gnu
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    # Debian points libopenblas.so and liblapack.so at the chosen BLAS through absolute
    # /etc/alternatives links, which a sysroot cannot follow: name the directory.
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=--sysroot=$s -L native=$s/usr/lib/aarch64-linux-gnu/openblas-pthread"
    export "CC_$t=aarch64-linux-gnu-gcc" "CXX_$t=aarch64-linux-gnu-g++" "AR_$t=aarch64-linux-gnu-ar"
    export "CFLAGS_$t=--sysroot=$s" "CXXFLAGS_$t=--sysroot=$s"
    # bindgen (v4l2) parses the target's kernel headers.
    export "BINDGEN_EXTRA_CLANG_ARGS_$t=--target=aarch64-linux-gnu --sysroot=$s"
    export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_SYSROOT_DIR="$s"
    export PKG_CONFIG_LIBDIR="$s/usr/lib/aarch64-linux-gnu/pkgconfig:$s/usr/share/pkgconfig"
    # SQLCipher's libcrypto.
    export AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_LIB_DIR="$s/usr/lib/aarch64-linux-gnu"
    export AARCH64_UNKNOWN_LINUX_GNU_OPENSSL_INCLUDE_DIR="$s/usr/include"
    export OPENSSL_LIB_DIR="$s/usr/lib/aarch64-linux-gnu" OPENSSL_INCLUDE_DIR="$s/usr/include"
    # dlib's headers (its build script adds no include path of its own).
    export DEP_DLIB_INCLUDE="$s/usr/include"
}

if [[ "${1:-}" == env ]]; then
    arm64_env
    return 0 2>/dev/null || exit 0
fi

set -euo pipefail
source "$_arm64_repo/scripts/env.sh"
cd "$REPO"
log() { printf '[arm64] %s\n' "$*" >&2; }
[[ $(id -u) -eq 0 ]] || { log "needs root (debootstrap, chroot)"; exit 1; }

host_tools() {
    local need=() p
    for p in debootstrap qemu-user-static binfmt-support gcc-aarch64-linux-gnu g++-aarch64-linux-gnu; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    if ((${#need[@]})); then
        log "installing ${need[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q "${need[@]}" >/dev/null
    fi
    [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || update-binfmts --enable qemu-aarch64 ||
        { log "cannot register qemu-aarch64 with binfmt_misc"; exit 1; }
    rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
}

# base: a minimal arm64 bookworm, made once and copied for the sysroot and each rootfs.
base() {
    if [[ -f "$ARM64_DIR/base/.done" ]]; then return; fi
    rm -rf "$ARM64_DIR/base"; mkdir -p "$ARM64_DIR"
    log "debootstrap --arch=arm64 --variant=minbase bookworm (under qemu-user-static)"
    debootstrap --arch=arm64 --variant=minbase bookworm "$ARM64_DIR/base" "$ARM64_MIRROR" >"$ARM64_DIR/debootstrap.log" 2>&1 ||
        { tail "$ARM64_DIR/debootstrap.log"; exit 1; }
    touch "$ARM64_DIR/base/.done"
}

# in_root DIR CMD...: CMD in the arm64 root under qemu-user, with /proc as on a real system.
in_root() {
    local r="$1" rc=0; shift
    mountpoint -q "$r/proc" || mount -t proc proc "$r/proc"
    chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root DEBIAN_FRONTEND=noninteractive "$@" || rc=$?
    umount "$r/proc" 2>/dev/null || umount -l "$r/proc" 2>/dev/null || true
    return "$rc"
}

new_root() { # new_root DIR: a fresh copy of base that can reach the mirror
    umount "$1/proc" 2>/dev/null || true
    rm -rf "$1"
    cp -a "$ARM64_DIR/base" "$1"
    cp /etc/resolv.conf "$1/etc/resolv.conf"
}

sysroot() {
    host_tools
    base
    if [[ -f "$ARM64_SYSROOT/.done" ]]; then log "sysroot: present ($ARM64_SYSROOT)"; return; fi
    new_root "$ARM64_SYSROOT"
    log "sysroot: apt-get install ${ARM64_DEV_PACKAGES[*]} (arm64, under qemu)"
    in_root "$ARM64_SYSROOT" sh -c "apt-get update -q && apt-get install -y -q --no-install-recommends ${ARM64_DEV_PACKAGES[*]}" \
        >"$ARM64_DIR/sysroot.log" 2>&1 || { tail "$ARM64_DIR/sysroot.log"; exit 1; }
    touch "$ARM64_SYSROOT/.done"
}

build() {
    sysroot
    local t0; t0=$(date +%s)
    bash scripts/package.sh --arch arm64
    log "cross build and packages: $(($(date +%s) - t0)) s"
}

case "${1:-}" in
sysroot) sysroot ;;
build) build ;;
run) source scripts/arm64-run.sh ;;
all) build; source scripts/arm64-run.sh ;;
*) sed -n '2,15p' "$0"; exit 2 ;;
esac
