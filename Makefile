# vtagml-kit: every target creates the virtual environment first when it is missing.
#   make reproduce   headless reproducibility run (quick preset, CPU; SEEDS=0,1,2 for spreads)
#   make test        the test suite (what CI runs)
#   make lab         JupyterLab at the project root: notebooks/ and the student copies (runs/student)
#   make student     student copies of the notebooks in runs/student (existing copies are kept)
#   make clean       caches and rebuildable run outputs only (never runs/student or trained runs)
#   make demo | bench | setup | clean-runs
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PRESET ?= quick
OUT    ?= runs/reproduce
SEEDS  ?= 0
STUDENT ?= runs/student

.PHONY: setup reproduce test browser lab student demo bench clean clean-runs

# pip install -e ".[dev]" installs everything: torch/torchvision (the registry's regular
# builds; they run on CPU), timm, notebooks, demo and test tools. Re-runs when pyproject changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/python -m vtagml_core notebooks run --preset $(PRESET) --seeds $(SEEDS) --out $(OUT)

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

# Rooted at the project, so the file browser shows notebooks/ (the lessons, with solutions)
# and $(STUDENT) (the student copies, made on first use). Kernels start in each notebook's folder.
lab: $(STAMP) student
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)"

# Writes only the copies that are missing: a student's answers are never overwritten.
student: $(STAMP)
	$(BIN)/python -m vtagml_core notebooks student --out $(STUDENT)

demo: $(STAMP)
	@test -f demo_app/app.py || { echo "The Gradio demo is not built yet (see demo_app/README.md)."; exit 1; }
	$(BIN)/python -m vtagml_core demo

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Only what is cheap to rebuild: test caches, __pycache__, the headless runs' outputs.
# Student copies ($(STUDENT)), trained runs and the run store (~/.cache/vtagml/runs) stay.
clean:
	rm -rf .pytest_cache runs/reproduce runs/notebooks
	find . -name __pycache__ -type d -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

# Everything under runs/, student work included: asks for CONFIRM=yes. The run store is managed
# with `python -m vtagml_core runs list|remove`.
clean-runs:
	@test "$(CONFIRM)" = yes || { echo "clean-runs deletes runs/ with the student copies in $(STUDENT) and every trained run there; run 'make clean-runs CONFIRM=yes' to do it"; exit 1; }
	rm -rf runs
