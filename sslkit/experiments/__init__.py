"""Drivers of the experiments that are more than one training run.

- ``mlp``: the wide MLP against the kernel theory (Fig. 2A-B);
- ``speedups``: the App. G speed-up measurements (variants, time-to-rank-k, lr sweep).
"""
