# vtagml-kit: every target creates the virtual environment first when it is missing.
#   make reproduce   headless reproducibility run (quick preset, CPU)
#   make test        the test suite (what CI runs)
#   make lab | demo | bench | setup | clean
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= quick
OUT    ?= runs/reproduce

.PHONY: setup reproduce test browser lab demo bench clean

# pip install -e ".[dev]" installs everything: torch/torchvision (the registry's regular
# builds; they run on CPU), timm, notebooks, demo and test tools. Re-runs when pyproject changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/python -m vtagml_core notebooks run --preset $(PRESET) --out $(OUT)

# The demo's browser test drives Debian's chromium headless (tests/test_demo_browser.py).
# Installed here when missing: as root with apt-get, else through sudo; quiet when present.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if ! command -v apt-get >/dev/null; then \
	    echo "chromium missing and no apt-get: install Chromium at $(CHROMIUM) for the browser test"; \
	  elif [ "$$(id -u)" = 0 ]; then \
	    echo "installing chromium for the browser test (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  elif command -v sudo >/dev/null; then \
	    echo "installing chromium for the browser test (sudo apt-get)"; \
	    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium missing: run 'apt-get install chromium' as root for the browser test"; \
	  fi; }

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

demo: $(STAMP)
	@test -f demo_app/app.py || { echo "The Gradio demo is not built yet (see demo_app/README.md)."; exit 1; }
	$(BIN)/python -m vtagml_core demo

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache
