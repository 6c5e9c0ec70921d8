"""Screenshot of the MLflow UI's runs table with chosen parameter and metric columns, in headless chromium.

Called by bench/mlflow_screenshot.sh with a Python that has Playwright (not a project dependency: install it in a
throwaway venv, `python3 -m venv /tmp/pwvenv && /tmp/pwvenv/bin/pip install playwright`, and never run
`playwright install`: this drives the system's chromium). Talks to a running `mlflow server` over HTTP only.

MLflow 3.x hides every parameter and metric column until it is picked under "Columns"; the pick is kept in the
browser's localStorage (key `MLflowLocalStorage-<v>-ExperimentPage-["<id>"]-ReactComponentState`, field
`selectedColumns`, entries like params.`run.lr` / metrics.`train/loss`). The script loads the page once, writes
its columns, sort and filter into that state, closes the assistant side panel, reloads and screenshots.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.parse
import urllib.request

# Most informative first; only keys present in the filtered runs are shown (the rest of the list is skipped).
PARAMS = ["run.method", "run.init", "run.init_scale", "run.steps", "run.lr", "run.batch_size", "run.optimizer.name",
          "run.encoder.arch", "run.encoder.width"]
METRICS = ["train/loss", "train/rank", "steps/n_steps", "probe/linear_acc_final", "ntk/a_exp_th", "ntk/a_exp_ntk",
           *(f"eig_C/{i:02d}" for i in range(4)), "probe/knn_acc_final", "analysis/rankme_embedding_final",
           "predictor/alignment", "train/wall_time_s",
           # the older flat layout (no namespaces)
           "loss", "rank", *(f"eig_C_{i}" for i in range(6))]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DATASET = "attributes.`Dataset`"  # the model run's dataset input (digits[train] (digest)); kept
METRIC_WIDTH = 165  # px; metric values are shown with all their digits
ORDER_BY = "tags.`mlflow.runName`"  # what the UI's Sort > Run Name writes
STATE_KEY = re.compile(r'^MLflowLocalStorage-[\d.]+-ExperimentPage-\["(?P<id>[^"]+)"\]-ReactComponentState$')


def api(base: str, endpoint: str, body: dict) -> dict:
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{endpoint}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


def search_runs(base: str, exp: str, filt: str) -> list[dict]:
    runs, token = [], None
    while True:
        body = {"experiment_ids": [exp], "filter": filt, "max_results": 1000}
        if token:
            body["page_token"] = token
        page = api(base, "runs/search", body)
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            return runs


def choose_columns(runs: list[dict], n_params: int, n_metrics: int, extra: list[str]) -> list[str]:
    params = {p["key"] for r in runs for p in r["data"].get("params", [])}
    metrics = {m["key"] for r in runs for m in r["data"].get("metrics", [])}
    cols = [f"params.`{k}`" for k in PARAMS if k in params][:n_params]
    cols += [f"metrics.`{k}`" for k in METRICS if k in metrics][:n_metrics]
    known = {f"params.`{k}`" for k in params} | {f"metrics.`{k}`" for k in metrics}
    unknown = [c for c in extra if c not in known]
    if unknown:
        raise SystemExit(f"--column {', '.join(unknown)}: no such param/metric in the filtered runs; "
                         "write params.`key` or metrics.`key` with a key the runs have")
    return cols + [c for c in extra if c not in cols]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="server URL, e.g. http://127.0.0.1:5077")
    ap.add_argument("--experiment", required=True, help="experiment id")
    ap.add_argument("--filter", required=True, help="runs filter, e.g. tags.`sslkit.kind` = 'model'")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--width", type=int, default=0, help="viewport width in pixels (default: fit the columns)")
    ap.add_argument("--params", type=int, default=5, help="at most this many parameter columns")
    ap.add_argument("--metrics", type=int, default=10, help="at most this many metric columns")
    ap.add_argument("--column", action="append", default=[],
                    help="extra column, as the UI names it: params.`key` or metrics.`key` (repeatable)")
    a = ap.parse_args()

    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    runs = search_runs(a.base, a.experiment, a.filter)
    if not runs:
        print(f"no runs match {a.filter!r} in experiment {a.experiment}: nothing to show", file=sys.stderr)
        print("mlflow_screenshot: 0 (runs shown; no runs match the filter, nothing written)")
        return 1
    cols = choose_columns(runs, a.params, a.metrics, a.column)
    print(f"{len(runs)} runs; columns: {', '.join(cols)}")
    query = urllib.parse.urlencode({"searchFilter": a.filter, "orderByKey": ORDER_BY,
                                    "orderByAsc": "true", "compareRunsMode": "TABLE"}, quote_via=urllib.parse.quote)
    url = f"{a.base}/#/experiments/{a.experiment}/runs?{query}"
    n_metrics = sum(c.startswith("metrics.") for c in cols)
    width = a.width or 1300 + 110 * (len(cols) - n_metrics) + (METRIC_WIDTH + 5) * n_metrics
    height = min(max(420 + 36 * len(runs), 700), 8000)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=a.chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        page.get_by_text("Run Name", exact=True).first.wait_for(timeout=60_000)
        store = page.evaluate("() => Object.fromEntries(Object.keys(localStorage).map(k => [k, localStorage[k]]))")
        key = next((k for k in store if (m := STATE_KEY.match(k)) and m["id"] == a.experiment),
                   f'MLflowLocalStorage-1.1-ExperimentPage-["{a.experiment}"]-ReactComponentState')
        state = json.loads(store.get(key) or "{}")
        widths = {c: METRIC_WIDTH for c in cols if c.startswith("metrics.")}
        state.update(selectedColumns=[DATASET, *cols], columnOrder=[DATASET, *cols], columnWidths=widths,
                     searchFilter=a.filter, orderByKey=ORDER_BY, orderByAsc=True, runListHidden=False,
                     viewMaximized=False, autoRefreshEnabled=False)
        page.evaluate("([k, v]) => { localStorage.setItem(k, v);"
                      " localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
                      " localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true'); }",
                      [key, json.dumps(state)])
        page.reload()
        page.get_by_text("Run Name", exact=True).first.wait_for(timeout=60_000)
        first = cols[0].split("`")[1] if cols else "Run Name"
        try:
            page.get_by_text(first, exact=True).first.wait_for(timeout=30_000)
        except PlaywrightTimeout:
            pass  # reported below, with the screenshot taken as it is
        page.wait_for_timeout(2000)  # cells fill in after the headers
        shown = [c for c in cols if page.get_by_text(c.split("`")[1], exact=True).count()]
        page.screenshot(path=a.out)
        browser.close()
    missing = [c for c in cols if c not in shown]
    if missing:
        print(f"columns not visible in the table (MLflow UI state layout changed?): {', '.join(missing)}",
              file=sys.stderr)
    print(f"mlflow_screenshot: {len(runs)} (runs shown in {a.out}; {len(cols) - len(missing)} of {len(cols)} "
          f"columns visible)")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
