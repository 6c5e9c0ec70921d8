# The two commands of the README. Both create .venv and install the project (editable, with the
# test, cluster and lint extras) when the venv is missing or pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
BIN := $(VENV)/bin
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
STAMP := $(VENV)/.installed

.PHONY: run test cluster-test lint setup dag report clean-results gpu-check paper-cost

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

test: $(STAMP)
	$(BIN)/python -m pytest

# The paper configuration (config/paper.yaml + config/rehearsal.yaml) through a real single-node SLURM
# cluster and MLflow server (tests/workflow/test_cluster.py; installs slurm-wlm and munge when missing).
# .ci/run runs it as its own step after `make test`.
cluster-test: $(STAMP)
	$(BIN)/python -m pytest tests/workflow/test_cluster.py --run-cluster -v -s

setup: $(STAMP)

# Static checks CI runs: ruff (pyproject.toml), snakefmt, snakemake --lint, the README's rule graph.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile rules/
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --rulegraph mermaid-js 2>/dev/null | $(BIN)/python .ci/rulegraph.py README.md --check

# The README's rule graph: Snakemake's Mermaid output between the rulegraph markers of README.md
# (GitHub draws it); CI checks that it is current.
dag: $(STAMP)
	$(BIN)/snakemake --rulegraph mermaid-js 2>/dev/null | $(BIN)/python .ci/rulegraph.py README.md

# Self-contained HTML report of a finished run: every figure and table with its caption.
report: $(STAMP)
	$(BIN)/snakemake --report results/report.html

# One-shot GPU check (<= 8 min on one H100/H200): step throughput and MFU, the ResNet-50 eNTK, a
# small-init Barlow Twins run (bench/gpu_check.py; `--smoke` runs its code paths on the CPU).
gpu-check: $(STAMP)
	PYTHONPATH=. $(BIN)/python bench/gpu_check.py

# The README's "What paper scale costs" table (bench/paper_cost.py --markdown).
paper-cost: $(STAMP)
	PYTHONPATH=. $(BIN)/python bench/paper_cost.py --markdown --no-cpu

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,cluster,lint]' 2>&1 \
		| { grep -v "^WARNING: Location" || true; }
	$(BIN)/python -c "import sslkit, torch, snakemake, mlflow"
	touch $(STAMP)

clean-results:
	rm -rf results logs .snakemake
