"""Helpers for the thin scripts in ``workflow_scripts/`` (duck-typed on Snakemake's object).

A script body is::

    from sslkit.rule_script import script_run
    with script_run(snakemake) as (tracker, cfg):
        ...                        # compute with sslkit, write snakemake.output atomically
        tracker.log_artifacts(snakemake.output)

``script_run`` sends logging, stdout and stderr to the rule's ``log:`` file, sets the number of
torch/BLAS threads to the rule's ``threads``, and opens an MLflow run tagged with the rule name,
the wildcards and the config hash, with the rule's ``params`` logged as parameters.
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

__all__ = ["script_run", "setup_logging", "named"]


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
def script_run(snakemake: Any, log_params: Mapping[str, Any] | None = None) -> Iterator[tuple[Tracker, dict]]:
    """Set up logging/threads and yield ``(tracker, config)`` for one rule execution."""
    log_file = snakemake.log[0] if len(snakemake.log) else None
    setup_logging(log_file)
    set_threads(getattr(snakemake, "threads", 1))
    use_file_backend()
    wildcards = named(snakemake.wildcards)
    params = named(snakemake.params)
    logger = logging.getLogger(f"sslkit.rule.{snakemake.rule}")
    logger.info("rule %s wildcards=%s", snakemake.rule, wildcards)
    t0 = time.perf_counter()
    tracker = Tracker.for_rule(snakemake.config, snakemake.rule, wildcards)
    try:
        with tracker:
            tracker.log_params(dict(log_params if log_params is not None else params))
            tracker.log_params(wildcards, prefix="wildcards.")
            yield tracker, snakemake.config
            tracker.log_metrics({"wall_time_s": time.perf_counter() - t0})
    except Exception as exc:
        logger.exception("rule %s failed", snakemake.rule)
        # the log file has the traceback; the Snakemake console gets the one-line reason
        print(f"\nrule {snakemake.rule} {wildcards} failed: {type(exc).__name__}: {exc}\n"
              f"(full log: {log_file})", file=sys.__stderr__, flush=True)
        raise
    logger.info("rule %s done in %.1f s", snakemake.rule, time.perf_counter() - t0)
