"""Shared fixtures. Tests run offline on the CPU; real-data tests need $SSLKIT_DATASETS."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser):
    parser.addoption("--run-cluster", action="store_true", default=False,
                     help="run the tests marked cluster (a real SLURM cluster and MLflow server; `make cluster-test`)")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cluster`` install SLURM and run the paper rehearsal through it (~25 min on 2 cores):
    only with --run-cluster (`make cluster-test`, which .ci/run runs as its own step after `make test`)."""
    if config.getoption("--run-cluster"):
        return
    skip = pytest.mark.skip(reason="SLURM cluster test: run with --run-cluster (make cluster-test)")
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)


def shared_datasets() -> Path | None:
    """Directory holding cifar10-jpeg.tar.gz: $SSLKIT_DATASETS (set by .ci/run), else ../shared/datasets."""
    env = os.environ.get("SSLKIT_DATASETS")
    candidates = [Path(env)] if env else [REPO.parent / "shared" / "datasets"]
    for c in candidates:
        if (c / "cifar10-jpeg.tar.gz").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    d = shared_datasets()
    if d is None:
        pytest.skip("CIFAR-10 tarball not available (set SSLKIT_DATASETS to the folder holding it)")
    return d


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    # keep BLAS/torch from oversubscribing the 2-core CI machine
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))


@pytest.fixture
def one_torch_thread():
    """Tiny tensor ops: a second thread only adds contention on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
