#!/usr/bin/env bash
# Screenshot of the MLflow UI (the runs table of the experiment) of a workflow's results, in headless chromium.
# Usage: [PW_PYTHON=/tmp/pwvenv/bin/python] bench/mlflow_screenshot.sh [results/mlflow.db] [out.png] [port] [py args]
# Needs: chromium (Debian: apt-get install -y chromium) and the project's venv (mlflow). Filters the table to
# the model runs (tags.sslkit.kind = 'model'): one row per trained model, with params and final metrics.
# MLflow 3.x shows parameter/metric columns only once picked under "Columns": for that, PW_PYTHON names a Python
# with Playwright (not a project dependency; e.g. python3 -m venv /tmp/pwvenv && /tmp/pwvenv/bin/pip install
# playwright; no `playwright install`, the system chromium is driven) and bench/mlflow_screenshot.py picks
# informative columns present in the store (extra args after the port go to it, e.g. --column 'metrics.`x`').
# Without PW_PYTHON (or when it lacks playwright), a plain chromium screenshot: the rows, but no param/metric
# columns. FILTER overrides the runs filter (e.g. FILTER="tags.rule = 'train'" for stores of the older layout).
set -euo pipefail
DB=$(realpath "${1:-results/mlflow.db}")
OUT=$(realpath -m "${2:-mlflow_ui.png}")
PORT=${3:-5077}
shift $(($# < 3 ? $# : 3))
PY=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
[ -x "$PY" ] || PY=python
[ -f "$DB" ] || { echo "no MLflow store at $DB (run the workflow first)" >&2; exit 1; }
CHROME=$(command -v chromium || command -v chromium-browser || true)
[ -n "$CHROME" ] || { echo "chromium not found: apt-get install -y chromium" >&2; exit 1; }
TMP=$(mktemp -d)
"$PY" -m mlflow server --backend-store-uri "sqlite:///$DB" --host 127.0.0.1 --port "$PORT" --workers 1 \
    >"$TMP/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    kill -0 $SERVER 2>/dev/null || { cat "$TMP/server.log" >&2; exit 1; }
    sleep 1
done
EXP=$("$PY" - "$DB" <<'PYEOF'
import sys
from mlflow.tracking import MlflowClient
exp = MlflowClient(f"sqlite:///{sys.argv[1]}").get_experiment_by_name("stepwise-ssl")
print(exp.experiment_id if exp else 0)
PYEOF
)
RUNS_FILTER=${FILTER:-"tags.\`sslkit.kind\` = 'model'"}
if [ -n "${PW_PYTHON:-}" ] && "$PW_PYTHON" -c "import playwright.sync_api" 2>/dev/null; then
    "$PW_PYTHON" "$(dirname "$0")/mlflow_screenshot.py" --base "http://127.0.0.1:$PORT" --experiment "$EXP" \
        --filter "$RUNS_FILTER" --out "$OUT" --chromium "$CHROME" "$@"
    exit $?  # its last line is the headline
fi
echo "PW_PYTHON unset or without playwright: plain chromium screenshot (no param/metric columns)" >&2
FILTER=$(RUNS_FILTER="$RUNS_FILTER" "$PY" -c \
    "import os, urllib.parse; print(urllib.parse.quote(os.environ['RUNS_FILTER']))")
URL="http://127.0.0.1:$PORT/#/experiments/$EXP/runs?searchFilter=$FILTER&compareRunsMode=TABLE"
echo "$URL"
"$CHROME" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$TMP/profile" --virtual-time-budget=20000 \
    --window-size="${WIDTH:-3200},1000" --screenshot="$OUT" "$URL" 2>"$TMP/chrome.log" ||
    { cat "$TMP/chrome.log" >&2; exit 1; }
echo "mlflow_screenshot: 1 (screenshot written to $OUT; plain chromium: no param/metric columns)"
