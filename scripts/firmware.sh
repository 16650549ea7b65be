#!/usr/bin/env bash
# Build the ESP32-C3 lock firmware (hardware/esp32-lock, target riscv32imc-unknown-none-elf,
# stable Rust) and print its size. Settings come from the environment (see
# hardware/esp32-lock/README.md). Without LOCK_KEY_HEX this is a check build (CI): a random
# frame key and a throwaway TLS CA and certificate (openssl), all discarded, so the whole
# firmware, Wi-Fi and TLS included, is compiled and linked, and the image opens for nobody
# and trusts no broker. Idempotent; installs the target when missing.
#
#   scripts/firmware.sh            -> JSON line {"firmware": ..., "flash_bytes": N, "ram_bytes": N}
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$REPO/hardware/esp32-lock"
rustup target list --installed | grep -qx riscv32imc-unknown-none-elf \
    || rustup target add riscv32imc-unknown-none-elf >&2
kind=release
if [ -z "${LOCK_KEY_HEX:-}" ]; then
    kind=check
    LOCK_KEY_HEX=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    export LOCK_WIFI_SSID="${LOCK_WIFI_SSID:-check}" LOCK_WIFI_PASSWORD="${LOCK_WIFI_PASSWORD:-check-build}"
    pki=$(mktemp -d); trap 'rm -rf "$pki"' EXIT
    (cd "$pki"
     openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
         -out ca.pem -days 1 -subj /CN=check-ca 2>/dev/null
     openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout lock.key \
         -out lock.csr -subj /CN=check-lock 2>/dev/null
     openssl x509 -req -in lock.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out lock.pem -days 1 2>/dev/null
     openssl x509 -in ca.pem -outform der -out ca.der
     openssl x509 -in lock.pem -outform der -out lock.der
     openssl ec -in lock.key -outform der -out lock.key.der 2>/dev/null)
    export LOCK_CA_DER="$pki/ca.der" LOCK_CERT_DER="$pki/lock.der" LOCK_KEY_DER="$pki/lock.key.der"
fi
export LOCK_KEY_HEX
cargo build --release --locked >&2
elf=target/riscv32imc-unknown-none-elf/release/esp32-lock
# Flash: everything loaded from flash (code, read-only data, initial RAM contents).
size -A "$elf" | awk -v kind="$kind" '
    /^\.(text|rodata|rodata\.wifi|rwtext|rwtext\.wifi|data|data\.wifi|trap|flash\.appdesc) / { flash += $2 }
    /^\.(data|data\.wifi|bss) / { ram += $2 }
    END { printf "{\"firmware\": \"%s\", \"target\": \"riscv32imc-unknown-none-elf\", \"flash_bytes\": %d, \"ram_bytes\": %d}\n", kind, flash, ram }'
