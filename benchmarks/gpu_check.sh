#!/usr/bin/env bash
# The GPU checks of issues #13 and #15 in one call, on a machine whose python3 has torch, lightning
# and torchmetrics (omegaconf may come in PYTHONPATH). Results: $OUT/*.txt (default /tmp/gpu_check).
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:${EXTRA_SITE:-}:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c "import sys, torch, lightning, torchmetrics; print(sys.version.split()[0], torch.__version__, lightning.__version__, torchmetrics.__version__, torch.version.cuda, torch.backends.cudnn.version())"
    nproc
} 2>&1 | tee "$OUT/env.txt"
timeout "${TRAIN_TIMEOUT:-170}" python3 benchmarks/gpu_train_speed.py 2>&1 | tee "$OUT/train.txt"
timeout "${MODEL_TIMEOUT:-230}" python3 benchmarks/gpu_model_speed.py ${MODEL_ARGS:-} 2>&1 | tee "$OUT/model.txt"
echo "== train"; grep '^|' "$OUT/train.txt"
echo "== model"; grep '^|\|^#' "$OUT/model.txt"
