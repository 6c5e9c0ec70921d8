"""MLflow tracking that is safe when many Snakemake jobs log at once.

Every compute rule opens one MLflow run (``Tracker``), tagged with the rule name, its wildcards and
a hash of the config; it logs parameters, metrics (with a step) and its output files as artifacts.

Concurrency: with the default sqlite store, all MLflow calls of all processes on this machine are
serialised by an ``fcntl`` lock on ``<db>.lock`` (sqlite itself allows one writer at a time, and
MLflow's first-time schema creation is not safe against concurrent processes). Every call is also
retried with jittered exponential back-off on the transient errors seen with sqlite and servers
("database is locked", an experiment created by another process in between, dropped connections),
so a busy store slows a job down but never loses its run or metrics.

For a cluster, point ``tracking_uri`` (config) or ``MLFLOW_TRACKING_URI`` (environment) at an MLflow
server: sqlite on a network file system is not safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///results/mlflow.db"
DEFAULT_EXPERIMENT = "stepwise-ssl"
DEFAULT_ARTIFACT_ROOT = "results/mlartifacts"

_TRANSIENT = ("database is locked", "database table is locked", "resource_already_exists",
              "already exists", "unique constraint failed", "disk i/o error", "connection",
              "temporarily unavailable", "timed out", "timeout", "503", "502", "429")

__all__ = ["Tracker", "config_hash", "resolve_uri", "flatten", "DEFAULT_URI"]


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """Stable short hash of a (nested) config mapping: sha256 of its canonical JSON."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def resolve_uri(uri: str | None) -> str:
    """Config value, else ``$MLFLOW_TRACKING_URI``, else the sqlite store under ``results/``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists are kept as values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


class Tracker:
    """One MLflow run; a context manager. ``enabled=False`` makes every method a no-op.

    Args:
        run_name: shown in the MLflow UI (default: rule plus wildcards).
        tags: extra tags; ``rule``, ``wildcards.*`` and ``config_hash`` are added by ``for_rule``.
        uri: tracking URI (see ``resolve_uri``).
        experiment: experiment name (created on first use, race-safe).
        artifact_root: where a new experiment stores artifacts (for file/sqlite stores).
        retries: attempts per call before the error is raised.
    """

    def __init__(self, run_name: str, tags: Mapping[str, str] | None = None, *, uri: str | None = None,
                 experiment: str = DEFAULT_EXPERIMENT, artifact_root: str | None = DEFAULT_ARTIFACT_ROOT,
                 enabled: bool = True, retries: int = 30):
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.uri = resolve_uri(uri)
        self.experiment = experiment
        self.artifact_root = artifact_root
        self.enabled = enabled
        self.retries = retries
        self.run_id: str | None = None
        self._client = None
        db = _sqlite_path(self.uri)
        self._lock_path = Path(str(db) + ".lock") if db is not None else None
        if db is not None and enabled:
            db.parent.mkdir(parents=True, exist_ok=True)

    # -- construction from a workflow config -------------------------------------------------
    @classmethod
    def for_rule(cls, config: Mapping[str, Any], rule: str, wildcards: Mapping[str, str] | None = None,
                 **kwargs) -> Tracker:
        wildcards = dict(wildcards or {})
        tcfg = dict(config.get("tracking") or {})
        tags = {"rule": rule, "config_hash": config_hash(config),
                **{f"wildcards.{k}": str(v) for k, v in wildcards.items()}}
        name = "/".join([rule, *map(str, wildcards.values())])
        return cls(name, tags, uri=config.get("tracking_uri"),
                   experiment=tcfg.get("experiment", DEFAULT_EXPERIMENT),
                   artifact_root=tcfg.get("artifact_root", DEFAULT_ARTIFACT_ROOT),
                   enabled=tcfg.get("enabled", True), **kwargs)

    # -- plumbing -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._lock_path is None:
            yield
            return
        with open(self._lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _call(self, fn, *args, **kwargs):
        delay = 0.05
        for attempt in range(1, self.retries + 1):
            try:
                with self._locked():
                    return fn(*args, **kwargs)
            except Exception as exc:  # MLflow wraps sqlite/http errors in several exception types
                msg = str(exc).lower()
                if attempt == self.retries or not any(t in msg for t in _TRANSIENT):
                    raise
                log.warning("MLflow call %s failed (%s); retry %d/%d", getattr(fn, "__name__", fn),
                            str(exc).splitlines()[0][:200], attempt, self.retries)
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 5.0)

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _experiment_id(self) -> str:
        def get_or_create() -> str:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is not None:
                return exp.experiment_id
            location = None
            if self.artifact_root and "://" not in self.artifact_root:
                root = Path(self.artifact_root).resolve()
                root.mkdir(parents=True, exist_ok=True)
                location = root.as_uri()
            elif self.artifact_root:
                location = self.artifact_root
            try:
                return self.client.create_experiment(self.experiment, artifact_location=location)
            except Exception as exc:  # another process created it in between
                if "already exists" in str(exc).lower() or "resource_already_exists" in str(exc).lower():
                    exp = self.client.get_experiment_by_name(self.experiment)
                    if exp is not None:
                        return exp.experiment_id
                raise

        return self._call(get_or_create)

    # -- run lifecycle ------------------------------------------------------------------------
    def start(self) -> Tracker:
        if not self.enabled or self.run_id is not None:
            return self
        exp_id = self._experiment_id()
        run = self._call(self.client.create_run, exp_id, run_name=self.run_name,
                         tags={k: str(v) for k, v in self.tags.items()})
        self.run_id = run.info.run_id
        log.info("MLflow run %s (%s) in experiment '%s' at %s", self.run_id, self.run_name,
                 self.experiment, self.uri)
        return self

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id is not None:
            self._call(self.client.set_terminated, self.run_id, status)

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end("FAILED" if exc_type is not None else "FINISHED")

    # -- logging ------------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        """Log (nested) parameters; nested keys are joined with '.'; values truncated to 6000 chars."""
        if not self.enabled:
            return
        from mlflow.entities import Param

        flat = flatten(params, prefix)
        items = [Param(k[:250], (json.dumps(v, default=str) if isinstance(v, (list, tuple, dict))
                                 else str(v))[:6000]) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self._call(self.client.log_batch, self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        from mlflow.entities import RunTag

        self._call(self.client.log_batch, self.run_id,
                   tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log scalar metrics at one step (non-finite values are logged as they are)."""
        self.log_series({k: [float(v)] for k, v in metrics.items()}, steps=[int(step or 0)])

    def log_series(self, series: Mapping[str, Iterable[float]], steps: Iterable[int] | None = None) -> None:
        """Log whole metric histories in batches: ``{name: values}`` at ``steps`` (default 0..n-1)."""
        if not self.enabled:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        metrics = []
        for name, values in series.items():
            values = [float(v) for v in values]
            st = list(steps) if steps is not None else range(len(values))
            if len(st) != len(values):
                raise ValueError(f"metric {name}: {len(values)} values but {len(st)} steps")
            metrics.extend(Metric(name, v, ts, int(s)) for v, s in zip(values, st))
        for i in range(0, len(metrics), 1000):
            self._call(self.client.log_batch, self.run_id, metrics=metrics[i:i + 1000])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if not self.enabled:
            return
        path = Path(path)
        if path.is_dir():
            self._call(self.client.log_artifacts, self.run_id, str(path), artifact_path)
        elif path.exists():
            self._call(self.client.log_artifact, self.run_id, str(path), artifact_path)
        else:
            log.warning("artifact %s does not exist; not logged", path)

    def log_artifacts(self, paths: Iterable[str | os.PathLike], artifact_path: str | None = None) -> None:
        for p in paths:
            self.log_artifact(p, artifact_path)
