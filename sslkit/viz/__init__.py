"""Figures: one function per figure in ``plots``, one style (``stepwise.mplstyle``)."""
