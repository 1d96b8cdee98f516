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
	$(PY) benchmarks/decode_speed.py --json docs/benchmarks/decode.json
	$(PY) benchmarks/train_speed.py --json docs/benchmarks/train_speed.json

# The demo covers what is built: the text task end to end (data -> BPE -> ~10 min of training ->
# generation -> decoding benchmark on the trained model). Image, speech and robot tasks follow.
demo: setup data-deps
	$(PY) data/build_text.py --out runs/data/text --num 40000 --seed 0
	$(PY) tokenizers/train_text_bpe.py --data runs/data/text --out runs/text_recipe/tokenizer
	$(PY) train.py --config configs/text.yaml
	$(PY) infer.py text --model runs/text_recipe/model --tokenizer runs/text_recipe/tokenizer \
		--prompt "And God said" --answer-len 64 --strategy threshold --block-len 32 | tee runs/text_recipe/infer.json
	$(PY) benchmarks/decode_speed.py --quick --checkpoint runs/text_recipe/model \
		--tokenizer runs/text_recipe/tokenizer --data runs/data/text --json runs/text_recipe/decode.json
	@echo "demo results: runs/text_recipe/{summary.json,samples.jsonl,infer.json,decode.json}, docs/benchmarks/decode_trained.md"

lint: setup
	$(VENV)/bin/ruff check omnidiff tests benchmarks train.py infer.py

clean:
	rm -rf runs .pytest_cache
