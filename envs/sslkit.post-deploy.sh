#!/usr/bin/env bash
# Snakemake runs this inside the new conda environment of envs/sslkit.yaml (--use-conda):
# install this checkout's sslkit package without touching the pinned dependencies.
set -euo pipefail
python -m pip install --no-deps -e .
