"""Figures: one function per figure in ``sslkit.viz.plots``, one style (``stepwise.mplstyle``).

This package's top level imports no matplotlib: the workflow reads :data:`SOURCES` while it parses.
"""

from pathlib import Path

#: the project's matplotlib style
STYLE = Path(__file__).with_name("stepwise.mplstyle")
#: files whose change must rerun every figure rule (declared as inputs of the figure rules)
SOURCES = [str(Path(__file__).with_name("plots.py")), str(STYLE)]
