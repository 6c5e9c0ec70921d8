"""The engine's MLflow run: one run per model across interrupted sessions, full metric history, no gap
and no duplicate step; the same against a real `mlflow server` process."""
from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import torch

from sslkit.tracking import KIND, MODEL, Tracker
from sslkit.training import engine as T
from tests.training.test_engine import resolve, tiny_config

MODEL_KEY = "digits/barlow_twins-small"


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.rint(d.images * 255 / 16).astype(np.uint8)[:400, :, :, None]


def model_tracker(uri, tmp_path):
    return Tracker(MODEL_KEY, {"rule": "train"}, uri=uri, artifact_root=str(tmp_path / "art"), kind="model",
                   model=MODEL_KEY, retries=5)


def session(rc, digits, run_dir, uri, tmp_path, **kw):
    tr = model_tracker(uri, tmp_path)
    with tr:
        res = T.train(copy.deepcopy(rc), digits, run_dir, tr, **kw)
    return tr, res


def model_runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("stepwise-ssl")
    return client, client.search_runs([exp.experiment_id], f"tags.`{KIND}` = 'model'")


def check_one_run_with_full_history(uri, run_dir, steps):
    client, runs = model_runs(uri)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags[MODEL] == MODEL_KEY
    hist = T.read_history(run_dir / "history.csv")
    expected = hist["step"].tolist()
    assert expected[0] == 0 and expected[-1] == steps
    got = client.get_metric_history(run.info.run_id, "train/loss_eval")
    # every row of the history exactly once, with its value
    assert sorted(m.step for m in got) == expected
    np.testing.assert_allclose([m.value for m in sorted(got, key=lambda m: m.step)], hist["loss_eval"], rtol=1e-6)
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "eig_C/00")) == expected
    assert float(run.data.params["run.lr"]) > 0 and "run.runtime.device" not in run.data.params
    return client, run


def test_interrupted_and_resumed_sessions_share_one_run(tmp_path, digits, one_torch_thread):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rc = resolve(tiny_config(steps=20), "barlow_twins", digits)
    run_dir = tmp_path / "run"
    # session 1 stops at 13 (checkpoint at 10; rows 11..12 were sent to MLflow by finish) as if killed
    tr1, part = session(rc, digits, run_dir, uri, tmp_path, stop_at=13)
    assert not part.complete
    ck = torch.load(T.checkpoint_path(run_dir, 10), weights_only=True)
    assert ck["log_state"]["mlflow_run_id"] == tr1.run_id
    # session 2 resumes from step 10 and reopens that run; session 3 reruns the finished model
    tr2, full = session(rc, digits, run_dir, uri, tmp_path)
    assert full.complete and full.start_step == 10 and tr2.run_id == tr1.run_id
    tr3, again = session(rc, digits, run_dir, uri, tmp_path)
    assert again.start_step == 20 and tr3.run_id == tr1.run_id
    check_one_run_with_full_history(uri, run_dir, 20)


def test_wiped_store_is_refilled_and_fresh_training_replaces_the_run(tmp_path, digits, one_torch_thread):
    rc = resolve(tiny_config(steps=10), "barlow_twins", digits)
    run_dir = tmp_path / "run"
    session(rc, digits, run_dir, f"sqlite:///{tmp_path}/lost.db", tmp_path, stop_at=6)
    # the store is lost (another, empty one): the checkpoint's run id is unknown there, so the resumed
    # session makes a new run and sends the rows it lacks (0..6) as well
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    session(rc, digits, run_dir, uri, tmp_path)
    _, run = check_one_run_with_full_history(uri, run_dir, 10)
    # trained afresh (resume=False): a new run; the old one goes to the trash, not left as a second row
    tr, _ = session(rc, digits, run_dir, uri, tmp_path, resume=False)
    assert tr.run_id != run.info.run_id
    client, runs = model_runs(uri)
    assert [r.info.run_id for r in runs] == [tr.run_id]
    assert client.get_run(run.info.run_id).info.lifecycle_stage == "deleted"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with its own backend store; stopped by its PID."""
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--default-artifact-root", str(tmp_path / "server-art"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.mark.slow
def test_resumed_run_against_a_real_mlflow_server(tmp_path, digits, mlflow_server, one_torch_thread):
    rc = resolve(tiny_config(steps=12), "barlow_twins", digits)
    run_dir = tmp_path / "run"
    tr1, _ = session(rc, digits, run_dir, mlflow_server, tmp_path, stop_at=7)
    tr2, full = session(rc, digits, run_dir, mlflow_server, tmp_path)
    assert full.complete and tr2.run_id == tr1.run_id
    check_one_run_with_full_history(mlflow_server, run_dir, 12)
