# OmniDiff: every target runs inside $(VENV) with the hub disabled (no network at run time).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.omnidiff-setup
DATA_STAMP := $(VENV)/.omnidiff-data-deps
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DS_ACCELERATOR ?= cpu
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions
export MUJOCO_GL ?= egl
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup data-deps test test-slow bench demo lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.txt requirements-data.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -r requirements.txt -r requirements-data.txt
	$(PIP) install -q --no-deps -e .
	@# DeepSpeed JIT-compiles its CPU shared-memory comm op on first init_distributed (~50 s): do it once here.
	$(PY) -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load()"
	touch $(STAMP)

data-deps: $(DATA_STAMP)

$(DATA_STAMP): data/apt-packages.txt
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$(grep -v '^#' data/apt-packages.txt) >/dev/null
	@mkdir -p $(VENV) && touch $(DATA_STAMP)

test: setup data-deps
	$(PY) -m pytest -q

test-slow: setup data-deps
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) benchmarks/model_speed.py --json docs/benchmarks/model_speed.json

demo: setup data-deps
	@echo "make demo: the end-to-end demo (data -> tokenizers -> train -> every task) is not built yet; see README"

lint: setup
	$(VENV)/bin/ruff check omnidiff tests benchmarks train.py infer.py

clean:
	rm -rf runs .pytest_cache
