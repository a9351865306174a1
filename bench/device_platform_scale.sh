#!/usr/bin/env bash
# The DeepProfile grid through the platform on a lent GPU machine, in two device calls:
#   bash bench/device_platform_scale.sh check   # about 3 min: the stack on a 12-point grid,
#                                               # then 32 concurrent trials (bench_concurrency)
#   bash bench/device_platform_scale.sh full    # the 1,200-point grid, cut off at DEADLINE s,
#       then the ensemble step's speed-up over 1, 2 and 16 CPUs (bench_ensemble_distributed)
#       in what is left of CALL_S (the device call's own limit)
# The machine has torch but neither Ray nor MLflow: the first call carries them as
# .devsite/devsite.tar.xz (a --target install of Ray, MLflow and their missing dependencies for
# CPython 3.12, made by bench/device_site.sh) and unpacks it to /tmp/devsite, where the second
# call (same warm machine) finds it. Tracking server on SQLite (no PostgreSQL there), Ray head
# with 16 CPUs and the GPU, 12 trials sharing the GPU (gpus_per_trial 0.08).
# Rehearse on a CPU box with DEVSITE=<empty folder> CPUS=2 GPUS_PER_TRIAL=0 (the venv's python3
# first on PATH). Results under $OUT (else /tmp/device_scale): platform_scale_gpu_<mode>.{json,md},
# the GPU's utilisation every 2 s, the jobs' driver logs.
set -uo pipefail
MODE=${1:?usage: device_platform_scale.sh check|full}
OUT=${OUT:-/tmp/device_scale}
mkdir -p "$OUT"
SITE=${DEVSITE:-/tmp/devsite} CPUS=${CPUS:-16} GPUS_PER_TRIAL=${GPUS_PER_TRIAL:-0.08}
START=$(date +%s)
if [ -f .devsite/devsite.tar.xz ]; then
    tar -xJf .devsite/devsite.tar.xz -C "$(dirname "$SITE")" || exit 1
fi
rm -rf .devsite  # not part of what `ray job submit` uploads as the working dir
if [ ! -d "$SITE/bin" ]; then
    echo "no $SITE: the first call must carry .devsite (bench/device_site.sh)" >&2
    exit 2
fi
echo "unpacked in $(( $(date +%s) - START )) s"
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1 PATH="$SITE/bin:$PATH" RAY_AUTH_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
nproc
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 2 \
    > "$OUT/gpu_utilisation_$MODE.csv" 2>&1 &
SMI=$!
if [ "$MODE" = check ]; then
    GRID=(--runs 1 --samples 2000 --epochs 2 --ig-steps 4)
else
    GRID=(--runs "${RUNS:-100}" --samples "${SAMPLES:-15000}" --epochs "${EPOCHS:-10}"
        --ig-steps "${IG_STEPS:-16}")
fi
python3 bench/bench_platform_scale.py "${GRID[@]}" --paths platform --backend sqlite \
    --cpus "$CPUS" --cpus-per-trial 1 --gpus-per-trial "$GPUS_PER_TRIAL" --server-workers 4 \
    --deadline "${DEADLINE:-480}" --label "gpu_h200_$MODE" --keep \
    --out "$OUT/platform_scale_gpu_$MODE" 2>&1 | tee "$OUT/bench_$MODE.log"
code=${PIPESTATUS[0]}
if [ "$MODE" = check ]; then
    python3 bench/bench_concurrency.py --trials 32 --epochs 5 --backend sqlite --cpus "$CPUS" \
        --server-workers 4 --out "$OUT/concurrency_sqlite_32_h200host.json" 2>&1 \
        | tail -n 30 | tee "$OUT/concurrency.log"
else
    left=$(( ${CALL_S:-590} - ($(date +%s) - START) - 15 ))
    if [ "$left" -gt 60 ]; then
        timeout "$left" python3 bench/bench_ensemble_distributed.py --samples 15000 \
            --speedup-runs "${SPEEDUP_RUNS:-10}" --cpus 1 2 "$CPUS" --memory-runs \
            --out "$OUT/ensemble_distributed_h200.json" 2>&1 | tee "$OUT/speedup.log"
    else
        echo "no time left for the ensemble speed-up ($left s)"
    fi
fi
kill "$SMI" 2>/dev/null
for log in /tmp/deeppert-scale-*/r*/platform_*.log; do
    [ -f "$log" ] && { echo "== $log"; tail -n 40 "$log"; }
done > "$OUT/driver_logs_$MODE.txt"
echo "done in $(( $(date +%s) - START )) s, exit $code"
exit "$code"
