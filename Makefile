# Setup and everyday commands. Every path installs the CPU build of torch first: a plain
# `torch` requirement on a machine without torch pulls several GB of CUDA packages.
# On a GPU machine: make setup TORCH_SPEC="torch>=2.3" (or install your CUDA build first).
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup chat test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

chat: setup  ## talk to the bot in the terminal on the sample FAQ (builds the index if needed)
	HF_HUB_OFFLINE=1 $(BIN)/supportbot chat

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: setup lint  ## lint, type-check and run the whole test suite (slow tests included)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

bench: setup  ## cold start and FAQ-answer latency; figures go to bench/README.md
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_ask.py

clean:
	rm -rf .supportbot .pytest_cache .mypy_cache .ruff_cache
