"""MLflow tracking that is safe when many Snakemake jobs log at once: the lab notebook of the workflow.

The runs of the experiment (``tracking.experiment``), by ``sslkit.kind`` tag:

- ``model``: one run per trained model (``train``, ``speedups_run``), tag ``sslkit.model`` =
  ``{dataset}/{method}-{init}`` and ``sslkit.run_hash`` = :func:`run_config_hash` of its run config.
  Its id is stored in every checkpoint; a resumed session reopens it (status back to RUNNING) and
  continues its metric history, a rerun of a finished model (same hash) finds it by its tags, and a
  model trained afresh from step 0 replaces it (the old run goes to MLflow's trash, restorable).
  Params: the resolved run config; metrics grouped by name (``train/loss``, ``eig_C/00``); the
  dataset as an MLflow input (digest from the data manifest); summaries of the jobs that read the
  model (``analysis/...``, ``probe/...``, ``ntk/...``), whose own runs are its nested children.
- ``invocation``: one run per workflow invocation (tag ``sslkit.invocation``, the id the Snakefile
  puts into ``$SSLKIT_INVOCATION``): figures and tables are attached to it under ``<rule>/``, and the
  other jobs of the invocation (data, linear and MLP experiments, ...) are its nested children.
- ``job``: such a child run (rule name, wildcards, params, metric histories, output files).

Every run is tagged with the git commit of the sslkit sources and whether the tree was dirty
(``git.commit``, ``git.dirty``, also ``mlflow.source.git.commit``), the sslkit and Snakemake versions,
the rule, its wildcards and the config hash.

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
import copy
import fcntl
import functools
import hashlib
import json
import logging
import os
import random
import subprocess
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

INVOCATION_ENV = "SSLKIT_INVOCATION"
#: the tags that identify runs (searched with ``tags.`<key>` = '...'``)
KIND, MODEL, RUN_HASH, INVOCATION = "sslkit.kind", "sslkit.model", "sslkit.run_hash", "sslkit.invocation"
PARENT = "mlflow.parentRunId"

__all__ = ["Tracker", "config_hash", "run_config_hash", "resolve_uri", "flatten", "DEFAULT_URI",
           "ensure_invocation_id", "provenance_tags", "dataset_digest"]


def config_hash(config: Mapping[str, Any], length: int = 12) -> str:
    """Stable short hash of a (nested) config mapping: sha256 of its canonical JSON."""
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_config_hash(run_config: Mapping[str, Any]) -> str:
    """Hash of what identifies a trained model: its run config without ``runtime`` and the data path
    (the fields a checkpoint may differ in and still be resumed; ``engine._fingerprint``)."""
    fp = copy.deepcopy(dict(run_config))
    fp.pop("runtime", None)
    if isinstance(fp.get("data"), dict):
        fp["data"].pop("dir", None)
    return config_hash(fp)


def ensure_invocation_id() -> str:
    """The id of this workflow invocation: ``$SSLKIT_INVOCATION``, set here (UTC start time and
    process id) when absent. The Snakefile calls it, so every job of one ``snakemake`` call (they
    inherit its environment, also through cluster submission) shares it."""
    value = os.environ.get(INVOCATION_ENV)
    if not value:
        value = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f"/{os.getpid()}"
        os.environ[INVOCATION_ENV] = value
    return value


@functools.lru_cache(maxsize=1)
def provenance_tags() -> dict[str, str]:
    """Git commit and dirty flag of the sslkit sources, sslkit and Snakemake versions (absent parts omitted)."""
    from importlib import metadata

    tags: dict[str, str] = {}
    src = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(src), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit:
        tags["git.commit"] = tags["mlflow.source.git.commit"] = commit.strip()
        status = git("status", "--porcelain", "--untracked-files=no")
        if status is not None:
            tags["git.dirty"] = str(bool(status.strip())).lower()
    for dist in ("sslkit", "snakemake"):
        try:
            tags[f"version.{dist}"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return tags


def dataset_digest(manifest: Mapping[str, Any], splits: Iterable[str] | None = None) -> str:
    """Digest of a prepared dataset from its manifest: its ``digest`` if it has one, else a sha256
    over the splits' array hashes (``splits``: those used; default all), 16 hex digits."""
    if manifest.get("digest"):
        return str(manifest["digest"])[:36]
    names = sorted(splits) if splits is not None else sorted(manifest.get("splits", {}))
    parts = []
    for name in names:
        info = manifest.get("splits", {}).get(name)
        if info is None:
            raise KeyError(f"dataset manifest has no split {name!r} (has {sorted(manifest.get('splits', {}))})")
        parts.append(f"{name}:{info.get('sha256')}:{info.get('labels_sha256')}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


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
        kind: ``"job"`` (default: a run of its own, the nested child of ``parent_run_id`` if given),
            ``"model"`` (the run of a trained model, opened by :meth:`open_model`, not by ``start``) or
            ``"attach"`` (no run of its own: metrics go to the invocation run prefixed ``<prefix>/``,
            artifacts under ``<artifact_dir>/``).
        model: the ``sslkit.model`` key of a model run.
        parent_run_id: the parent of a job run; its summaries (:meth:`log_summary`) go there.
    """

    def __init__(self, run_name: str, tags: Mapping[str, str] | None = None, *, uri: str | None = None,
                 experiment: str = DEFAULT_EXPERIMENT, artifact_root: str | None = DEFAULT_ARTIFACT_ROOT,
                 enabled: bool = True, retries: int = 30, kind: str = "job", model: str | None = None,
                 parent_run_id: str | None = None, prefix: str = "", artifact_dir: str | None = None):
        if kind not in ("job", "model", "attach"):
            raise ValueError(f"Tracker kind must be 'job', 'model' or 'attach', got {kind!r}")
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.uri = resolve_uri(uri)
        self.experiment = experiment
        self.artifact_root = artifact_root
        self.enabled = enabled
        self.retries = retries
        self.kind = kind
        self.model = model
        self.parent_run_id = parent_run_id
        self.prefix = prefix
        self.artifact_dir = artifact_dir
        self.run_id: str | None = None
        self._client = None
        self._exp_id: str | None = None
        self._lock_depth = 0
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
        if kwargs.get("kind") == "model" and kwargs.get("model"):
            name = kwargs["model"]
        if kwargs.get("kind") == "attach":
            kwargs.setdefault("prefix", rule)
            kwargs.setdefault("artifact_dir", name)
        return cls(name, tags, uri=config.get("tracking_uri"),
                   experiment=tcfg.get("experiment", DEFAULT_EXPERIMENT),
                   artifact_root=tcfg.get("artifact_root", DEFAULT_ARTIFACT_ROOT),
                   enabled=tcfg.get("enabled", True), **kwargs)

    # -- plumbing -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # re-entrant: a compound operation (search, then create) holds the lock across its calls
        if self._lock_path is None or self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with open(self._lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
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

            # under the lock: creating the client may create the sqlite schema, not safe concurrently
            with self._locked():
                self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def _experiment_id(self) -> str:
        if self._exp_id is not None:
            return self._exp_id

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
                # a model-training experiment: the MLflow UI opens on its runs table, not the GenAI overview
                return self.client.create_experiment(self.experiment, artifact_location=location,
                                                     tags={"mlflow.experimentKind": "custom_model_development"})
            except Exception as exc:  # another process created it in between
                if "already exists" in str(exc).lower() or "resource_already_exists" in str(exc).lower():
                    exp = self.client.get_experiment_by_name(self.experiment)
                    if exp is not None:
                        return exp.experiment_id
                raise

        self._exp_id = self._call(get_or_create)
        return self._exp_id

    def _search(self, tags: Mapping[str, str]) -> list:
        """Active runs of the experiment with all of ``tags``, oldest first."""
        filt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self._experiment_id()], filt, max_results=1000,
                                       order_by=["attributes.start_time ASC"])
        return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))

    def _common_tags(self) -> dict[str, str]:
        inv = os.environ.get(INVOCATION_ENV)
        return {**provenance_tags(), **({INVOCATION: inv} if inv else {}), KIND: self.kind,
                **{k: str(v) for k, v in self.tags.items()}}

    def invocation_run_id(self) -> str:
        """The run of this workflow invocation (``$SSLKIT_INVOCATION``), created by the first job asking."""
        inv = ensure_invocation_id()
        key = {KIND: "invocation", INVOCATION: inv}

        def get_or_create() -> str:
            found = self._search(key)
            if found:
                return found[0].info.run_id
            tags = {**provenance_tags(), **key}
            run = self.client.create_run(self._experiment_id(), run_name=f"workflow {inv}", tags=tags)
            # without the sqlite lock (a server) two jobs may create it at once: keep the oldest
            found = self._search(key)
            if found and found[0].info.run_id != run.info.run_id:
                # ended first: a deleted run left RUNNING would look live to anything reading the store
                self.client.set_terminated(run.info.run_id, status="KILLED")
                self.client.delete_run(run.info.run_id)
                return found[0].info.run_id
            return run.info.run_id

        return self._call(get_or_create)

    def find_model_run(self, model: str, run_hash: str | None = None) -> str | None:
        """Id of the (newest) active model run with ``sslkit.model`` = ``model`` (and that run hash)."""
        if not self.enabled:
            return None
        tags = {KIND: "model", MODEL: model, **({RUN_HASH: run_hash} if run_hash else {})}
        found = self._call(self._search, tags)
        return found[-1].info.run_id if found else None

    # -- run lifecycle ------------------------------------------------------------------------
    def start(self) -> Tracker:
        """Open the run: a job run (a child of ``parent_run_id`` or of the invocation run), or the
        invocation run for ``attach``; a ``model`` run is opened later by :meth:`open_model`."""
        if not self.enabled or self.run_id is not None or self.kind == "model":
            return self
        if self.kind == "attach":
            self.run_id = self.invocation_run_id()
            return self
        # outside a workflow invocation ($SSLKIT_INVOCATION unset) a job without a parent is a top-level run
        parent = self.parent_run_id or (self.invocation_run_id() if os.environ.get(INVOCATION_ENV) else None)
        self.parent_run_id = parent
        run = self._call(self.client.create_run, self._experiment_id(), run_name=self.run_name,
                         tags={**self._common_tags(), **({PARENT: parent} if parent else {})})
        self.run_id = run.info.run_id
        log.info("MLflow run %s (%s, parent %s) in experiment '%s' at %s", self.run_id, self.run_name,
                 parent, self.experiment, self.uri)
        return self

    def open_model(self, run_hash: str, run_id: str | None = None, *, fresh: bool = False) -> str | None:
        """Open the run of this tracker's model (``kind="model"``) and return its id.

        ``run_id``: the run stored in the checkpoint being resumed; it is reopened (status RUNNING)
        when it still exists. Otherwise, unless ``fresh`` (a run trained from step 0), the newest run
        of the model with the same ``run_hash`` is reopened; else a new run is created. Other runs of
        the model with that hash (superseded: their checkpoints are gone) are moved to the trash.
        """
        if not self.enabled:
            return None
        if self.kind != "model" or not self.model:
            raise ValueError("open_model needs a Tracker with kind='model' and a model key")
        ident = {KIND: "model", MODEL: self.model, RUN_HASH: run_hash}

        def op() -> tuple[str, bool]:
            run = None
            if run_id:
                try:
                    got = self.client.get_run(run_id)
                except Exception as exc:  # a wiped or different store
                    if "not found" not in str(exc).lower() and "does not exist" not in str(exc).lower():
                        raise
                    got = None
                if got is not None and got.info.lifecycle_stage == "active" and got.data.tags.get(MODEL) == self.model:
                    run = got
            same = self._search(ident)
            if run is None and same and not fresh:
                run = same[-1]
            for other in same:
                if run is None or other.info.run_id != run.info.run_id:
                    log.info("MLflow run %s of %s superseded: moved to the trash", other.info.run_id, self.model)
                    self.client.delete_run(other.info.run_id)
            if run is None:
                new = self.client.create_run(self._experiment_id(), run_name=self.model,
                                             tags={**self._common_tags(), **ident})
                return new.info.run_id, False
            self.client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id, True

        self.run_id, reopened = self._call(op)
        self.set_tags({**self._common_tags(), **ident})
        log.info("MLflow model run %s (%s, %s) in experiment '%s' at %s", self.run_id, self.model,
                 "reopened" if reopened else "new", self.experiment, self.uri)
        return self.run_id

    def end(self, status: str = "FINISHED") -> None:
        if self.enabled and self.run_id is not None:
            self._call(self.client.set_terminated, self.run_id, status)

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        # an attached job leaves the invocation run FINISHED, also when it failed (its own log has why)
        self.end("FAILED" if exc_type is not None and self.kind != "attach" else "FINISHED")

    # -- logging ------------------------------------------------------------------------------
    def _pre(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        """Log (nested) parameters; nested keys are joined with '.'; values truncated to 6000 chars.

        Idempotent: a key the run has with the same value is skipped; one with another value (MLflow
        params cannot change) is recorded as tag ``param_changed.<key>`` with a warning. An attached
        job's params go into a JSON artifact instead (many jobs share the invocation run).
        """
        if not self.enabled or self.run_id is None:
            return
        from mlflow.entities import Param

        flat = {k[:250]: (json.dumps(v, default=str) if isinstance(v, (list, tuple, dict)) else str(v))[:6000]
                for k, v in flatten(params, prefix).items()}
        if not flat:
            return
        if self.kind == "attach":
            self._log_json(flat, f"params_{abs(hash(tuple(flat))) % 10**8}.json")
            return
        existing = self._call(self.client.get_run, self.run_id).data.params
        changed = {k: v for k, v in flat.items() if k in existing and existing[k] != v}
        if changed:
            log.warning("MLflow run %s already has other values of params %s; recorded as tags "
                        "param_changed.*", self.run_id, sorted(changed)[:5])
            self.set_tags({f"param_changed.{k}"[:250]: f"{existing[k]} -> {v}"[:5000] for k, v in changed.items()})
        items = [Param(k, v) for k, v in flat.items() if k not in existing]
        for i in range(0, len(items), 100):
            self._call(self.client.log_batch, self.run_id, params=items[i:i + 100])

    def _log_json(self, obj: Any, name: str) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / name
            path.write_text(json.dumps(obj, indent=1, default=str))
            self.log_artifact(path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if not self.enabled or self.run_id is None or not tags:
            return
        from mlflow.entities import RunTag

        if self.kind == "attach":
            tags = {self._pre(k): v for k, v in tags.items()}
        self._call(self.client.log_batch, self.run_id,
                   tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log scalar metrics at one step (non-finite values are logged as they are)."""
        self.log_series({k: [float(v)] for k, v in metrics.items()}, steps=[int(step or 0)])

    def log_series(self, series: Mapping[str, Iterable[float]], steps: Iterable[int] | None = None,
                   run_id: str | None = None) -> None:
        """Log whole metric histories in batches: ``{name: values}`` at ``steps`` (default 0..n-1)."""
        run_id = run_id or self.run_id
        if not self.enabled or run_id is None:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        metrics = []
        for name, values in series.items():
            values = [float(v) for v in values]
            st = list(steps) if steps is not None else range(len(values))
            if len(st) != len(values):
                raise ValueError(f"metric {name}: {len(values)} values but {len(st)} steps")
            name = self._pre(name) if run_id == self.run_id else name
            metrics.extend(Metric(name, v, ts, int(s)) for v, s in zip(values, st))
        for i in range(0, len(metrics), 1000):
            self._call(self.client.log_batch, run_id, metrics=metrics[i:i + 1000])

    def log_summary(self, metrics: Mapping[str, float], prefix: str, step: int | None = None) -> None:
        """Summary metrics of a job: into its own run and, as ``<prefix>/<name>``, into its parent
        (the model run), so that the model's row in the MLflow UI shows them."""
        finite = {k: float(v) for k, v in metrics.items() if v is not None}
        self.log_metrics(finite, step)
        if self.parent_run_id and self.kind == "job":
            self.log_series({f"{prefix}/{k}": [v] for k, v in finite.items()}, [int(step or 0)],
                            run_id=self.parent_run_id)

    def last_step(self, metric: str) -> int | None:
        """The largest step of ``metric`` in this run (None: never logged)."""
        if not self.enabled or self.run_id is None:
            return None
        hist = self._call(self.client.get_metric_history, self.run_id, metric)
        return max((m.step for m in hist), default=None)

    def log_dataset(self, manifest_path: str | os.PathLike, splits: Iterable[str] | None = None,
                    context: str = "training") -> None:
        """Log a prepared dataset as an MLflow input: name, source = its manifest, digest from it."""
        if not self.enabled or self.run_id is None:
            return
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag

        manifest = json.loads(Path(manifest_path).read_text())
        digest = dataset_digest(manifest, splits)
        name = str(manifest.get("dataset", Path(manifest_path).parent.name))
        if splits is not None:
            name = f"{name}[{'+'.join(splits)}]"
        ds = MetaDataset(resolve_dataset_source(str(Path(manifest_path).resolve())), name=name, digest=digest)
        inp = DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
        self._call(self.client.log_inputs, self.run_id, datasets=[inp])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if not self.enabled or self.run_id is None:
            return
        if self.artifact_dir:
            artifact_path = "/".join(p for p in (self.artifact_dir, artifact_path) if p)
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
