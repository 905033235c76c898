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

.PHONY: setup reproduce test lab demo bench clean

# pip install -e ".[dev]" installs everything: torch/torchvision (the registry's regular
# builds; they run on CPU), timm, notebooks, demo and test tools. Re-runs when pyproject changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/python -m vtagml_core reproduce --preset $(PRESET) --out $(OUT)

test: $(STAMP)
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
