# The two commands of the README. Both create .venv and install the project (editable, with the
# test and cluster extras) when the venv is missing or pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
BIN := $(VENV)/bin
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
STAMP := $(VENV)/.installed

.PHONY: run test setup dag report clean-results

run: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

test: $(STAMP)
	$(BIN)/python -m pytest

setup: $(STAMP)

# The README's DAG picture (Graphviz's dot when installed, else sslkit.dag's matplotlib drawing).
dag: $(STAMP)
	mkdir -p docs
	$(BIN)/snakemake --rulegraph 2>/dev/null > docs/rulegraph.dot
	if command -v dot >/dev/null; then dot -Tsvg docs/rulegraph.dot > docs/dag.svg; \
	else $(BIN)/python -m sslkit.dag docs/dag.svg < docs/rulegraph.dot; fi

# Self-contained HTML report of a finished run: every figure and table with its caption.
report: $(STAMP)
	$(BIN)/snakemake --report results/report.html

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,cluster]' 2>&1 \
		| { grep -v "^WARNING: Location" || true; }
	$(BIN)/python -c "import sslkit, torch, snakemake, mlflow"
	touch $(STAMP)

clean-results:
	rm -rf results logs .snakemake
