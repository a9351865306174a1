#!/usr/bin/env bash
# One prepared device call (about 2 minutes on an H100): AE, DAE and VAE
# trained vectorised vs one by one (10 seeds, d=50, 15,000 x 978 -> PCA 100, 3 epochs) with
# the batched-matmul reference and profiler tables, the float64 group-vs-alone check on the
# GPU, and 10 of the 100 epochs of the DeepProfile grid (AE+VAE x 6 dims x 100 runs).
# Usage on the device: bash bench/gpu_training.sh   (writes under $OUT, else /tmp/gpu_training)
set -euo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_training}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia_smi.txt"
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
"$PY" bench/bench_training.py --device cuda --models AE,DAE,VAE --runs 10 --dim 50 --epochs 3 \
    --profile --grid --grid-epochs "${GRID_EPOCHS:-10}" ${EXTRA_ARGS:-} \
    --out "$OUT/training_cuda.json" 2>&1 | tee "$OUT/log.txt"
