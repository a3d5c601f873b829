#!/usr/bin/env bash
# Run first on a machine with an NVIDIA GPU, before training there. Every check prints PASS or FAIL with
# its reason and the script goes on; the exit status is the number of failures.
#   1. the driver sees the GPUs (nvidia-smi);
#   2. ONNX Runtime's CUDA provider converts a clip with the shipped model, and the result matches the
#      CPU provider's (onnxruntime-gpu lives in its own venv, .venv-gpu: it must never share one with
#      onnxruntime);
#   3. one DSAE training run of 20 steps on `cuda` (a synthetic feature cache made here);
#   4. DistributedDataParallel over NCCL: torchrun with one process per GPU, one epoch of the synthetic
#      cache (skipped, and said so, with a single GPU: NCCL wants a GPU per rank).
# Usage: bash tools/gpu_check.sh [WORKDIR]   (default: a fresh temporary directory)
# Needs the project set up (`make setup` or tools/setup.sh). Torch: the CUDA build that `pip install
# torch==2.13.0` takes from PyPI; the CPU wheel of this project's set-up fails check 3 with its reason.
set -uo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-$(mktemp -d)}
PY=${PY:-.venv/bin/python}
failures=0
report() { if [ "$1" -eq 0 ]; then echo "PASS  $2"; else echo "FAIL  $2"; failures=$((failures + 1)); fi; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
report $? "nvidia-smi sees the GPU(s)"
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l)

# --- 2. ONNX Runtime CUDA provider, in its own environment
if [ ! -x .venv-gpu/bin/python ]; then
  python3 -m venv .venv-gpu && .venv-gpu/bin/pip install -q --upgrade pip setuptools wheel pybind11 \
    && .venv-gpu/bin/pip install -q onnxruntime-gpu numpy soundfile soxr sounddevice tqdm \
    && .venv-gpu/bin/pip install -q --no-deps --no-build-isolation -e .
fi
.venv-gpu/bin/python - <<'EOF'
import sys
import numpy as np
import onnxruntime as ort
print("onnxruntime", ort.__version__, "providers:", ort.get_available_providers())
from vc.conversion import convert_at_model_rate
from vc.model import load_model
from vc.speakers import load_speaker
from vc.audio import read_audio
gpu, cpu = load_model(None, device="cuda"), load_model(None, device="cpu")
print("CUDA model:", gpu.describe())
audio, _ = read_audio("examples/audio/espeak_andy-u028.flac", sr=16000)
target = "examples/speakers/espeak_andrea.npy"
a = convert_at_model_rate(audio, load_speaker(target, gpu), gpu, n_iter=8)
b = convert_at_model_rate(audio, load_speaker(target, cpu), cpu, n_iter=8)
error = float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-9))
print(f"CUDA vs CPU conversion: largest difference {error:.2e} of the peak")
sys.exit(0 if error < 1e-2 else 1)
EOF
report $? "ONNX Runtime CUDA provider converts like the CPU provider"

# --- 3. one training run on cuda
$PY - "$WORK" <<'EOF'
import sys, time, torch
from training.dataset import write_synthetic_cache
from training.train import TrainConfig, train
work = sys.argv[1]
print("torch", torch.__version__, "cuda available:", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
write_synthetic_cache(f"{work}/cache", n_speakers=8, utterances_per_speaker=8, frames_per_utterance=200)
config = TrainConfig(features=f"{work}/cache", out=f"{work}/run-cuda", epochs=1, batch_size=64,
                     device="cuda", progress=False)
start = time.perf_counter()
train(config, stop_after_steps=20)
torch.cuda.synchronize()
print(f"20 steps on cuda in {time.perf_counter() - start:.1f} s")
EOF
report $? "a DSAE training run on cuda"

# --- 4. DDP over NCCL
if [ "$GPUS" -ge 2 ]; then
  [ -d "$WORK/cache" ] || $PY -c "from training.dataset import write_synthetic_cache as w; w('$WORK/cache', n_speakers=8, utterances_per_speaker=8, frames_per_utterance=200)"
  .venv/bin/torchrun --standalone --nproc_per_node "$GPUS" -m training.cli.train --features "$WORK/cache" \
    --out "$WORK/run-ddp" --epochs 1 --device cuda --no-progress
  report $? "DistributedDataParallel with NCCL, $GPUS processes"
elif [ "$GPUS" -eq 1 ]; then
  echo "SKIP  DistributedDataParallel with NCCL: one GPU (NCCL wants one GPU per rank)"
else
  report 1 "DistributedDataParallel with NCCL (no GPU listed)"
fi

echo "gpu_check: $failures failure(s); work directory $WORK"
exit "$failures"
