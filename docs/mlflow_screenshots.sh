#!/usr/bin/env bash
# Screenshots of the MLflow UI for the docs (docs/images/), taken with headless Chromium.
# Run it in a project after `make demo` (and, for the sweep, a small multirun), e.g.:
#   python pipelines/train.py -m data.clips.num_frames=4,8 train.steps=40 train.eval_interval=20 train.name=sweep
#   bash docs/mlflow_screenshots.sh
# The test tests/test_pipeline.py::test_mlflow_ui_shows_the_sweep_runs_and_metrics checks the same
# pages in CI (the runs are there, with their metrics).
set -euo pipefail
cd "${1:-.}"
PY=.venv/bin/python
BROWSER=$(command -v chromium || command -v chromium-browser || command -v google-chrome)
OUT=${OUT:-docs/images}
PORT=${PORT:-5057}
mkdir -p "$OUT"

.venv/bin/mlflow server --backend-store-uri "sqlite:///$PWD/mlflow.db" --host 127.0.0.1 --port "$PORT" \
    --workers 1 >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 1; done

# The experiment's id and the newest ensemble parent run (if any), from the store itself.
read -r EXPERIMENT ENSEMBLE < <($PY - <<'EOF'
import mlflow
from mlflow import MlflowClient
client = MlflowClient(f"sqlite:///{__import__('os').getcwd()}/mlflow.db")
exp = client.get_experiment_by_name("movinet")
runs = client.search_runs([exp.experiment_id], "tags.`movinet.ensemble` != ''", order_by=["start_time DESC"])
print(exp.experiment_id, runs[0].info.run_id if runs else "")
EOF
)

shoot() {  # url, file, window height
    "$BROWSER" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --hide-scrollbars \
        --no-first-run --window-size=1600,"${3:-900}" --virtual-time-budget=30000 --screenshot="$2" "$1" 2>/dev/null
    echo "$2"
}
BASE="http://127.0.0.1:$PORT/#/experiments/$EXPERIMENT"
shoot "$BASE/runs" "$OUT/mlflow-runs.png"
if [ -n "$ENSEMBLE" ]; then
    shoot "$BASE/runs/$ENSEMBLE" "$OUT/mlflow-ensemble-run.png" 1500  # down to its metrics
fi
