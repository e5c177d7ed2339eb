#!/usr/bin/env bash
# GPU training benchmark: images/s at 256×256 with mixed precision (mixed_float16).
#
# On a fresh Linux machine with an NVIDIA GPU and internet, from the repository root:
#     bash benchmarks/gpu_train.sh
# It installs the requirements with tensorflow[and-cuda] into .venv-gpu (about 2-3 minutes),
# prints the GPU (nvidia-smi), then runs benchmarks/bench_training.py with a batch of 32 and
# 20 steps per epoch (under a minute on an H100). Total: well under 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv-gpu/bin/python ]; then
  "$PYTHON" -m venv .venv-gpu
  .venv-gpu/bin/python -m pip install -q -r requirements.txt "tensorflow[and-cuda]==2.21.0"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
.venv-gpu/bin/python -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))"
.venv-gpu/bin/python benchmarks/bench_training.py --image-size 256 --batch-size "${BATCH:-32}" --steps "${STEPS:-20}"
