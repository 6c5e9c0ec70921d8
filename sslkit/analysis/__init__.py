"""What trained checkpoints show: spectra, steps, probes, non-contrastive predictors, tables.

- ``checkpoints``: checkpoints -> evaluation pairs -> spectra and probes (with precise BN);
- ``spectra``: eigenvalues of C and of the covariance, RankMe, tidy tables;
- ``steps``: step detection on eigenvalue trajectories;
- ``probes``: linear probe and k-NN accuracy;
- ``noncontrastive``: BYOL/DirectPred/DirectCopy predictor analysis;
- ``tables``: Tables 1-2 writers.
"""
