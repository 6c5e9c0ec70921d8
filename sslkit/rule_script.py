"""Helpers for the thin scripts in ``workflow_scripts/`` (duck-typed on Snakemake's object).

A script body is::

    from sslkit.rule_script import script_run
    with script_run(snakemake) as (tracker, cfg):
        ...                        # compute with sslkit, write snakemake.output atomically
        tracker.log_artifacts(snakemake.output)

``script_run`` sends logging, stdout and stderr to the rule's ``log:`` file, sets the number of
torch/BLAS threads to the rule's ``threads``, and opens an MLflow ``Tracker`` (sslkit.tracking) tagged
with the rule name, the wildcards and the config hash, with the rule's ``params`` logged as parameters:

- default: a run of the job, nested under the run of the workflow invocation;
- ``model=key``: the run of a trained model (``train``, ``speedups_run``), opened by the training
  engine so that a resumed session continues it;
- ``parent_model=key``: a job reading a trained model (analysis, probe, eNTK): its run is nested
  under the model's run, and ``tracker.log_summary`` puts its summaries into the model's row;
- ``attach=True``: figures and tables, attached to the invocation run (no run of their own).

Long jobs report progress on the console (Snakemake's terminal) with :class:`Progress`: a line
about every 10 % (k/N, throughput, ETA); the log file keeps the full log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

from sslkit.tracking import Tracker

__all__ = ["script_run", "setup_logging", "named", "Progress", "console"]

log = logging.getLogger(__name__)

#: the terminal of the Snakemake job (its original stderr) while ``script_run`` is active, else None
_CONSOLE: Any = None


def console(message: str) -> None:
    """Log ``message`` and, inside a rule (``script_run``), print it on the console."""
    log.info("%s", message)
    if _CONSOLE is not None:
        print(message, file=_CONSOLE, flush=True)


def _duration(seconds: float) -> str:
    if not seconds == seconds or seconds == float("inf"):  # nan/inf: no rate yet
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Progress of a long job on the console: a line about every ``every`` of ``total`` (and at the end),
    e.g. ``train digits/barlow_twins-small: step 120/1200 (10%), 25.3 step/s, ETA 43 s``.

    ``start``: units already done before this session (a resumed run); the rate counts this session's
    units only. ``stream``: where the lines go (default: the console of the current rule, none outside
    one; every line is also logged). ``update(done)`` sets the count, ``advance(n)`` adds to it and
    ``wrap(items)`` counts the items of an iterable as they are finished.
    """

    def __init__(self, label: str, total: int, unit: str = "step", *, every: float = 0.1, start: int = 0,
                 stream: Any = None, clock=time.perf_counter):
        if not 0 < every <= 1:
            raise ValueError(f"Progress every must be in (0, 1], got {every}")
        self.label, self.total, self.unit = label, max(int(total), 0), unit
        self.buckets = max(int(round(1 / every)), 1)
        self.start = self.done = int(start)
        self.stream = stream
        self.clock = clock
        self.t0 = clock()
        self.lines: list[str] = []
        self._bucket = self._bucket_of(self.done)

    def _bucket_of(self, done: int) -> int:
        return self.buckets if self.total == 0 else (done * self.buckets) // self.total

    def line(self) -> str:
        elapsed = self.clock() - self.t0
        rate = (self.done - self.start) / elapsed if elapsed > 0 else float("nan")
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (f"{self.label}: {self.unit} {self.done}/{self.total} ({pct:.0f}%), "
                f"{rate:.3g} {self.unit}/s, ETA {_duration(eta)}")

    def update(self, done: int) -> None:
        self.done = int(done)
        bucket = self._bucket_of(self.done)
        if bucket > self._bucket:
            self._bucket = bucket
            text = self.line()
            self.lines.append(text)
            log.info("%s", text)
            stream = self.stream if self.stream is not None else _CONSOLE
            if stream is not None:
                print(text, file=stream, flush=True)

    def advance(self, n: int = 1) -> None:
        self.update(self.done + n)

    def wrap(self, items):
        """Yield the items; each counts as done when the next one is asked for (or the loop ends)."""
        for item in items:
            yield item
            self.advance()


def named(namedlist: Any) -> dict[str, Any]:
    """Snakemake ``Namedlist`` (params, wildcards, input, output) -> plain dict of its named items."""
    if namedlist is None:
        return {}
    if isinstance(namedlist, Mapping):
        return dict(namedlist)
    if hasattr(namedlist, "items"):
        return {k: v for k, v in namedlist.items()}
    return {}


def setup_logging(log_path: str | None, level: int = logging.INFO) -> None:
    """Log to ``log_path`` (and redirect stdout/stderr there) or to stderr when None."""
    handlers: list[logging.Handler]
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        stream = open(log_path, "a", buffering=1)
        sys.stdout = stream
        sys.stderr = stream
        handlers = [logging.StreamHandler(stream)]
    else:
        handlers = [logging.StreamHandler(sys.stderr)]
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib", "PIL", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_threads(n: int) -> None:
    """Use ``n`` threads: BLAS libraries already loaded (threadpoolctl), torch, and (through the
    environment) libraries loaded later."""
    n = max(int(n), 1)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(n)


def use_file_backend() -> None:
    """Draw figures with matplotlib's Agg backend (jobs have no display); a no-op for jobs that
    never imported matplotlib."""
    if "matplotlib" in sys.modules:
        import matplotlib

        matplotlib.use("Agg")


@contextlib.contextmanager
def script_run(snakemake: Any, log_params: Mapping[str, Any] | None = None, *, model: str | None = None,
               parent_model: str | None = None, run_config: Mapping[str, Any] | None = None,
               attach: bool = False) -> Iterator[tuple[Tracker, dict]]:
    """Set up logging/threads and yield ``(tracker, config)`` for one rule execution.

    ``model``: the key (``{dataset}/{method}-{init}``) of the model this job trains; ``parent_model``
    (with its ``run_config`` if known): of the model this job reads; ``attach``: a figure/table job
    (see the module docstring).
    """
    global _CONSOLE
    log_file = snakemake.log[0] if len(snakemake.log) else None
    setup_logging(log_file)
    _CONSOLE = sys.__stderr__
    set_threads(getattr(snakemake, "threads", 1))
    use_file_backend()
    wildcards = named(snakemake.wildcards)
    params = named(snakemake.params)
    logger = logging.getLogger(f"sslkit.rule.{snakemake.rule}")
    logger.info("rule %s wildcards=%s", snakemake.rule, wildcards)
    t0 = time.perf_counter()
    if model is not None:
        tracker = Tracker.for_rule(snakemake.config, snakemake.rule, wildcards, kind="model", model=model)
    elif attach:
        tracker = Tracker.for_rule(snakemake.config, snakemake.rule, wildcards, kind="attach")
    else:
        tracker = Tracker.for_rule(snakemake.config, snakemake.rule, wildcards)
        if parent_model is not None:
            from sslkit.tracking import run_config_hash

            tracker.parent_run_id = tracker.find_model_run(
                parent_model, run_config_hash(run_config) if run_config is not None else None)
            if tracker.enabled and tracker.parent_run_id is None:
                logger.warning("no MLflow run of model %s found; this job's run is not nested under it",
                               parent_model)
    try:
        with tracker:
            tracker.log_params(dict(log_params if log_params is not None else params))
            tracker.log_params(wildcards, prefix="wildcards.")
            yield tracker, snakemake.config
            if model is None:
                tracker.log_metrics({"wall_time_s": time.perf_counter() - t0})
    except Exception as exc:
        logger.exception("rule %s failed", snakemake.rule)
        # the log file has the traceback; the Snakemake console gets the one-line reason
        print(f"\nrule {snakemake.rule} {wildcards} failed: {type(exc).__name__}: {exc}\n"
              f"(full log: {log_file})", file=sys.__stderr__, flush=True)
        raise
    finally:
        _CONSOLE = None
    logger.info("rule %s done in %.1f s", snakemake.rule, time.perf_counter() - t0)
