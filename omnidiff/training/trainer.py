"""The training loop shared by every task and modality: `train(cfg)`.

One step: a batch from the task mixture -> `training_loss` (the diffusion ELBO with complementary
masking, prefix/block attention and MoE auxiliary losses, or the AR twin's next-token loss, as the
recipe's ``objective`` says) -> DeepSpeed backward/step
(ZeRO stage, precision, accumulation, clipping from ``distributed``). Around it: a tqdm bar,
metrics as JSONL and TensorBoard (loss, ELBO per task, tokens/s, expert load balance, gradient
norm, LR), periodic validation ELBO on fixed masks, sample generation, atomic checkpoints with
exact resume, a time box (``train.max_minutes``), and export to a `from_pretrained` folder.
The model is a preset, or (``model.init_from``) a pretrained causal LM to adapt into a diffusion model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch
import yaml

from omnidiff.config import RunConfig, to_dict
from omnidiff.data.mixing import MixtureConfig, build_mixture_loader, check_starts, check_task
from omnidiff.data.shards import split_shards
from omnidiff.diffusion.losses import loss_inputs, training_loss
from omnidiff.models.audio_encoder import AudioEncoderConfig, AudioInputs
from omnidiff.models.image_encoder import ImageEncoderConfig, ImageInputs
from omnidiff.models.presets import preset_config
from omnidiff.models.transformer import Transformer
from omnidiff.tokenization.registry import TokenizerSet
from omnidiff.training import checkpoint, distributed
from omnidiff.training.output_prior import mixture_log_prior, set_output_prior
from omnidiff.training.task_eval import task_evaluator

log = logging.getLogger(__name__)


class MetricsLogger:
    """JSONL (always) and TensorBoard (optional) on rank 0."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.file = open(run_dir / "metrics.jsonl", "a") if enabled else None  # noqa: SIM115
        self.tb = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, step: int, metrics: dict, prefix: str = "train") -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, "split": prefix, **metrics}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()


def expert_balance(load_EL: torch.Tensor | None) -> float | None:
    """max/mean expert load over MoE layers (1.0 = perfectly balanced)."""
    if load_EL is None:
        return None
    load = load_EL.float()
    return float((load.max(-1).values / load.mean(-1).clamp_min(1e-9)).mean())


@torch.no_grad()
def evaluate(model, cfg: RunConfig, toks, vocab, loss_cfg) -> dict:
    """Validation ELBO (nats per answer token) per task, on fixed masks so runs are comparable."""
    tasks = cfg.val_data or [dataclasses.replace(t, split="val") for t in cfg.data.tasks]
    loader = build_mixture_loader(MixtureConfig(tasks=tasks, batch_size=cfg.data.batch_size, seed=12345,
                                                prefix_multiple=cfg.data.prefix_multiple,
                                                image_inputs=cfg.data.image_inputs,
                                                audio_inputs=cfg.data.audio_inputs), toks, vocab)
    gen = torch.Generator().manual_seed(4242)
    was_training = model.training
    model.eval()
    total, count, per_task = 0.0, 0, {}
    for _ in range(cfg.train.eval_batches):
        batch = loader_to(next(loader), cfg.train.device)
        out = training_loss(model, batch, as_evaluated(loss_cfg), generator=gen)
        total, count = total + out.metrics["elbo"], count + 1
        for k, v in out.metrics.items():
            if k.startswith("elbo/"):
                per_task.setdefault(k, []).append(v)
    model.train(was_training)
    return {"elbo": total / count, **{k: sum(v) / len(v) for k, v in per_task.items()}}


def as_evaluated(loss_cfg):
    """The objective validation scores: one copy per sample, in the attention the model is trained towards
    (an annealed run is measured as the bidirectional model it becomes, not at its current reveal rate)."""
    kind = "diffusion" if loss_cfg.kind == "certainty_forcing" else loss_cfg.kind  # scored on the data's answers
    return dataclasses.replace(loss_cfg, kind=kind, complementary=False, share_prefix=False,
                               attention=loss_cfg.target_attention, anneal_steps=0)


def loader_to(batch: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor | ImageInputs | AudioInputs) else v for k, v in batch.items()}


def sample_text(model, cfg: RunConfig, toks, vocab, num: int) -> list[dict]:
    """Continuations of validation prompts (text tasks only), for a look at what the model writes."""
    from omnidiff.sampling import SamplerConfig, generate
    from omnidiff.tasks import get_task

    text_tasks = [t for t in cfg.data.tasks if t.task == "text"]
    if not text_tasks or toks.text is None:
        return []
    spec = dataclasses.replace(text_tasks[0], split="val")
    loader = build_mixture_loader(MixtureConfig(tasks=[spec], batch_size=1, seed=999), toks, vocab)
    task = get_task("text")
    from omnidiff.pipelines.base import generation_settings

    attention = generation_settings(cfg.objective, [])["attention"]
    cache = {"prefix": "prefix", "causal": "causal"}.get(attention, "none")
    block_len = {"block": cfg.objective.block_size, "causal": 1}.get(attention)
    sampler = SamplerConfig(attention=attention, cache=cache, block_len=block_len, shift=cfg.objective.shift)
    out = []
    was_training = model.training
    model.eval()
    samples = iter(loader.streams[0])  # one pass: a different validation prompt each time
    for _ in range(num):
        sample = next(samples)
        prefix, answer = task.format(sample, toks, vocab, spec.answer_len)
        result = generate(model, [prefix.to(cfg.train.device)], answer_len=spec.answer_len, vocab=vocab, config=sampler)
        out.append({"prompt": toks.text.decode_global(vocab, prefix),
                    "reference": toks.text.decode_global(vocab, answer),
                    "sample": toks.text.decode_global(vocab, result.tokens[0].cpu())})
    model.train(was_training)
    return out


def _grad_norm(module) -> float:
    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


def _rng_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"torch": torch.get_rng_state(), "loss_generator": gen.get_state()}


def image_encoder_config(options: dict, toks) -> ImageEncoderConfig:
    """``model.image_encoder`` completed with the image tokenizer's picture side and code grid."""
    if getattr(toks, "image", None) is None:
        raise ValueError("model.image_encoder reads prompt images, but the config has no image tokenizer; "
                         "set tokenizers.image or remove model.image_encoder")
    h, w = toks.image.codes_shape
    if h != w:
        raise ValueError(f"model.image_encoder needs a square code grid, the image tokenizer has {h}x{w}")
    return ImageEncoderConfig.from_dict({**options, "grid": h, "image_size": toks.image.image_size})


def audio_encoder_config(options: dict, toks) -> AudioEncoderConfig:
    """``model.audio_encoder`` with the audio tokenizer's sample rate and mel frame hop, so the encoder's frames
    line up with the codec's."""
    if getattr(toks, "audio", None) is None:
        raise ValueError("model.audio_encoder hears prompt audio, but the config has no audio tokenizer; "
                         "set tokenizers.audio or remove model.audio_encoder")
    codec = toks.audio.config
    backbone = {**options.get("backbone", {}), "sample_rate": codec.sample_rate, "hop_length": codec.hop_length}
    return AudioEncoderConfig.from_dict({**options, "backbone": backbone})


def new_model(cfg: RunConfig, model_cfg, initial, vocab, toks, log_prior=None) -> Transformer:
    """The model a run starts from: ``initial`` (a pretrained one) or a fresh preset, with code embeddings
    from the tokenizers' codebooks when ``model.init_embeddings`` is ``codebook``, the image
    encoder's backbone from ``model.image_encoder_init``, the audio encoder's from ``model.audio_encoder_init``
    and the LM head's bias from ``log_prior``."""
    model = initial if initial is not None else Transformer(model_cfg)
    if log_prior is not None:
        with distributed.gathered_for_update([model.lm_head.bias]):
            set_output_prior(model.lm_head, log_prior)
    if cfg.model.init_embeddings == "codebook":
        from omnidiff.models.code_embeddings import init_code_embeddings

        with distributed.gathered_for_update([model.embed.weight]):
            init_code_embeddings(model.embed.weight, vocab, toks, std=model_cfg.init_std, seed=cfg.train.seed)
    if cfg.model.image_encoder_init:  # a CLIP-pretrained backbone (omnidiff.training.clip)
        from omnidiff.training.clip import load_backbone

        backbone = model.image_encoder.backbone
        with distributed.gathered_for_update([*backbone.parameters(), *backbone.buffers()]):
            load_backbone(model.image_encoder, cfg.model.image_encoder_init)
    if cfg.model.audio_encoder_init:  # a CTC-pretrained speech encoder (omnidiff.training.ctc_pretrain)
        from omnidiff.training.ctc_pretrain import load_speech_backbone

        backbone = model.audio_encoder.backbone
        with distributed.gathered_for_update([*backbone.parameters(), *backbone.buffers()]):
            load_speech_backbone(model.audio_encoder, cfg.model.audio_encoder_init)
    return model


def train(cfg: RunConfig, *, resume: bool = False) -> dict:
    """Train as ``cfg`` says; returns a summary (final metrics, paths)."""
    if not cfg.tokenizers:
        raise ValueError("the config names no tokenizers; set tokenizers.text (and the other modalities) to folders")
    toks = TokenizerSet.load(cfg.tokenizers)  # fail on bad paths before any process group forms
    for spec in [*cfg.data.tasks, *cfg.val_data]:  # and on answers that cannot fit their answer_len
        check_task(spec, toks)
    check_starts(cfg.data.tasks, cfg.train.steps)  # and on a curriculum with nothing to draw at first
    val_specs = cfg.val_data or [dataclasses.replace(t, split="val") for t in cfg.data.tasks]
    for spec in [*cfg.data.tasks, *(val_specs if cfg.train.eval_every else [])]:
        split_shards(spec.path, spec.split)  # a missing dataset or split stops the run here, before it starts
    vocab = toks.build_vocab()
    initial = None
    if cfg.model.init_from:  # AR-to-diffusion adaptation: the pretrained architecture and weights, not a preset
        from omnidiff.models.from_causal_lm import init_model

        initial = init_model(cfg.model.init_from, vocab, cfg.model.overrides)
        model_cfg = initial.cfg
        if cfg.model.init_weights == "random":  # the same architecture trained from scratch
            torch.manual_seed(cfg.train.seed)
            initial = Transformer(model_cfg)
    elif cfg.model.init_run:  # fine-tuning or distilling a model train.py exported, image encoder included
        from omnidiff.models.hf import OmniDiffModel

        initial = OmniDiffModel.from_pretrained(cfg.model.init_run, expected_vocab=vocab).model
        model_cfg = initial.cfg
    else:
        model_cfg = preset_config(cfg.model.preset, vocab_size=len(vocab), **cfg.model.overrides)
    if cfg.model.image_encoder:
        model_cfg = dataclasses.replace(model_cfg, image_encoder=image_encoder_config(cfg.model.image_encoder, toks))
    if cfg.model.audio_encoder:
        model_cfg = dataclasses.replace(model_cfg, audio_encoder=audio_encoder_config(cfg.model.audio_encoder, toks))
    if model_cfg.image_encoder is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, image_inputs=True))
    if model_cfg.audio_encoder is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, audio_inputs=True))
    if cfg.model.output_prior:
        model_cfg = dataclasses.replace(model_cfg, head_bias=True)
    rank, world = distributed.init_distributed(cfg.distributed, cfg.train.device)
    config_text = yaml.safe_dump(to_dict(cfg), sort_keys=False)  # as given: "cuda", not this rank's "cuda:N"
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, device=distributed.local_device(cfg.train.device)))
    if cfg.data.batch_size % world:
        raise ValueError(f"data.batch_size {cfg.data.batch_size} does not divide across {world} ranks; "
                         f"use a multiple of {world}")
    run_dir = Path(cfg.train.out)
    torch.manual_seed(cfg.train.seed + rank)

    micro = cfg.data.batch_size // world
    if cfg.objective.attention == "block":  # the block pattern needs answers to start on a block boundary
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, prefix_multiple=cfg.objective.block_size))
    loader = build_mixture_loader(dataclasses.replace(cfg.data, batch_size=micro,
                                                      batches_per_step=cfg.distributed.grad_accum,
                                                      steps=cfg.train.steps),
                                  toks, vocab, rank=rank, world_size=world)
    loss_cfg = dataclasses.replace(cfg.objective, mask_id=vocab.mask_id, eos_id=vocab.eos_id)
    if cfg.objective.attention == "block" and any(t.answer_len % (cfg.objective.block_size or 1)
                                                  for t in cfg.data.tasks):
        raise ValueError("with block attention every task's answer_len must be a multiple of objective.block_size")
    extra = loss_inputs(loss_cfg, vocab, cfg.model.init_run, cfg.train.device)  # e.g. a distillation teacher
    run_dir.mkdir(parents=True, exist_ok=True)  # only now: a run refused for its config or data writes nothing

    log_prior = None if resume or not cfg.model.output_prior else mixture_log_prior(
        dataclasses.replace(cfg.data, batch_size=micro), cfg.model.output_prior, toks, vocab, rank=rank, world=world,
        device=cfg.train.device)
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    engine = distributed.build_engine(lambda: new_model(cfg, model_cfg, initial, vocab, toks, log_prior),
                                      cfg.distributed, cfg.optim, micro, cfg.train.steps, cfg.train.device)
    gen = torch.Generator().manual_seed(cfg.train.seed * 1000 + rank)
    model_config = dataclasses.asdict(model_cfg)
    start_step, history, clock = 0, [], {"train_seconds": 0.0}  # seconds inside training steps, across resumes
    if resume:
        path = checkpoint.latest_checkpoint(run_dir)
        if path is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {checkpoint.checkpoint_dir(run_dir)}")
        state = checkpoint.check_resumable(path, vocab, model_config)
        data_state, rng = checkpoint.load_checkpoint(engine, path, rank=rank)
        loader.load_state_dict(data_state)
        torch.set_rng_state(rng["torch"])
        gen.set_state(rng["loss_generator"])
        start_step, history = state["step"], state.get("history", [])
        clock["train_seconds"] = float(state.get("train_seconds", 0.0))
    if rank == 0:
        (run_dir / "config.yaml").write_text(config_text)
        vocab.save(run_dir)
    logger = MetricsLogger(run_dir, rank == 0, cfg.train.tensorboard)
    task_eval = task_evaluator(cfg, toks, vocab, run_dir)

    def save(step: int) -> Path:
        state = {"step": step, "history": history, "model_config": model_config, **clock}
        return checkpoint.save_checkpoint(engine, run_dir, step, rank=rank, train_state=state,
                                          data_state=loader.state_dict(), rng_state=_rng_state(gen),
                                          config_text=config_text, vocab=vocab,
                                          keep=cfg.train.keep_checkpoints)

    from tqdm import tqdm

    end_step = min(cfg.train.stop_at or cfg.train.steps, cfg.train.steps)
    bar = tqdm(range(start_step, end_step), initial=start_step, total=cfg.train.steps, disable=rank != 0,
               desc="train", unit="step")
    engine.train()
    last_eval: dict = {}
    started, out_of_time = time.perf_counter(), False
    for step in bar:
        t0 = time.perf_counter()
        tokens, metrics_acc, lr, own_norm = 0, {}, engine.get_lr()[0], None
        for _ in range(cfg.distributed.grad_accum):
            batch = loader_to(next(loader), cfg.train.device)
            out = training_loss(engine, batch, loss_cfg, generator=gen, step=step, **extra)
            engine.backward(out.loss)
            if engine.is_gradient_accumulation_boundary() and engine.zero_optimization_stage() == 0:
                own_norm = _grad_norm(engine.module)  # DeepSpeed reports none without ZeRO
            engine.step()
            tokens += int(batch["padding_mask"].sum()) * world
            for k, v in out.metrics.items():
                metrics_acc[k] = metrics_acc.get(k, 0.0) + v / cfg.distributed.grad_accum
        clock["train_seconds"] += time.perf_counter() - t0
        loss_avg = float(distributed.all_reduce_mean(torch.tensor([metrics_acc["loss"]]))[0])
        history.append(round(loss_avg, 6))
        grad_norm = engine.get_global_grad_norm() if own_norm is None else own_norm
        metrics = {**metrics_acc, "loss": loss_avg, "lr": lr,
                   "grad_norm": float(grad_norm) if grad_norm is not None else None,
                   "tokens_per_s": tokens / (time.perf_counter() - t0),
                   "expert_balance": expert_balance(out.expert_load), "train_minutes": clock["train_seconds"] / 60}
        bar.set_postfix(loss=f"{loss_avg:.3f}", elbo=f"{metrics_acc.get('elbo', 0):.3f}")
        done = step + 1
        if done % cfg.train.log_every == 0 or done == cfg.train.steps:
            logger.log(done, {k: v for k, v in metrics.items() if v is not None})
        if cfg.train.eval_every and (done % cfg.train.eval_every == 0 or done == cfg.train.steps):
            last_eval = evaluate(engine.module, cfg, toks, vocab, loss_cfg)
            logger.log(done, last_eval, prefix="val")
            if rank == 0:
                bar.write(f"step {done}: val elbo {last_eval['elbo']:.4f} nats/token")
        if task_eval is not None and (done % cfg.train.task_eval_every == 0 or done == cfg.train.steps):
            logger.log(done, {"train_minutes": clock["train_seconds"] / 60, **task_eval(engine.module)},
                       prefix="task_eval")
        if cfg.train.sample_every and done % cfg.train.sample_every == 0 and rank == 0:
            samples = sample_text(engine.module, cfg, toks, vocab, cfg.train.sample_prompts)
            with open(run_dir / "samples.jsonl", "a") as f:
                for s in samples:
                    f.write(json.dumps({"step": done, **s}) + "\n")
                    bar.write(f"[sample @ {done}] {s['prompt']!r} -> {s['sample']!r}")
        if cfg.train.max_minutes and done < end_step:
            spent = float((time.perf_counter() - started) / 60 >= cfg.train.max_minutes)
            out_of_time = float(distributed.all_reduce_mean(torch.tensor([spent]))[0]) > 0  # every rank stops together
            if out_of_time:
                bar.write(f"step {done}: train.max_minutes={cfg.train.max_minutes} spent; checkpointing (--resume "
                          "continues the schedule)")
                end_step = done
                break
        if cfg.train.save_every and done % cfg.train.save_every == 0 and done != end_step:
            save(done)
    ckpt = save(end_step) if start_step < end_step else checkpoint.latest_checkpoint(run_dir)
    exported = None
    if cfg.train.export and (end_step == cfg.train.steps or out_of_time):
        from omnidiff.pipelines.base import generation_settings

        exported = checkpoint.export_pretrained(engine, model_cfg, vocab, run_dir / "model", rank=rank, tokenizers=toks,
                                                generation=generation_settings(cfg.objective, cfg.data.tasks))
        if rank == 0:
            toks.save(run_dir / "tokenizers")
    logger.close()
    summary = {"steps": end_step, "loss_history": history, "val": last_eval, "checkpoint": str(ckpt),
               "model": str(exported) if exported else None, "rank": rank, "world_size": world}
    if rank == 0:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
