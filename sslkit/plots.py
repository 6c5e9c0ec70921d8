"""All figures of the workflow: one function per figure, one shared style.

Figure functions take small, already-computed tables/arrays (never checkpoints) and return a
matplotlib Figure; ``save_figure`` writes it as PNG and PDF atomically. The style lives in
``stepwise.mplstyle`` beside this file. Figure rules declare this module and the style file as
inputs, so editing either reruns exactly the figure jobs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_path  # noqa: E402

STYLE = Path(__file__).with_name("stepwise.mplstyle")
#: files whose change must rerun every figure rule (declared as rule inputs)
SOURCES = [str(Path(__file__)), str(STYLE)]

__all__ = ["STYLE", "SOURCES", "style", "save_figure", "mode_colors"]


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Context in which figures are drawn with the project style."""
    with plt.style.context(str(STYLE)):
        yield


def mode_colors(n: int, cmap: str = "viridis") -> np.ndarray:
    """``n`` distinct colours, one per eigenmode, ordered from the top mode down."""
    return plt.get_cmap(cmap)(np.linspace(0.0, 0.9, max(n, 1)))


def save_figure(fig, paths: Sequence[str | os.PathLike]) -> None:
    """Save ``fig`` to every path (format from the suffix, e.g. .png and .pdf), atomically; close it."""
    try:
        for p in paths:
            p = Path(p)
            with atomic_path(p) as tmp:
                fig.savefig(tmp, format=p.suffix.lstrip("."))
    finally:
        plt.close(fig)
