"""Prompt audio heard as a waveform (model.audio_encoder): features reach exactly the prompt's audio codes,
caches stay exact, batches equal singles, the loss trains the encoder, and bad input is refused."""

import pytest
import torch

from omnidiff.data.formatting import audio_wave, collate, prompt_inputs
from omnidiff.diffusion.objectives import DiffusionLossConfig, diffusion_loss
from omnidiff.models.audio_encoder import AudioEncoderConfig, audio_code_span, audio_inputs
from omnidiff.models.presets import preset_config
from omnidiff.models.speech_backbone import SpeechBackbone, SpeechBackboneConfig
from omnidiff.models.transformer import Transformer
from omnidiff.sampling import SamplerConfig, generate
from omnidiff.tasks import get_task
from tests.fixtures import tiny_tokenizers

TOKS = tiny_tokenizers()
VOCAB = TOKS.build_vocab()
SMALL = {"backbone": {"channels": 32, "layers": 1, "heads": 2}}


def model(seed=0, **options):
    torch.manual_seed(seed)
    return Transformer(preset_config("debug", len(VOCAB), audio_encoder={**SMALL, **options})).eval()


def clip(seed, seconds=0.5):
    gen = torch.Generator().manual_seed(seed)
    return {"array": (0.1 * torch.randn(int(16000 * seconds), generator=gen)).numpy(), "sample_rate": 16000}


def asr_prompt(c):
    return get_task("asr").prompt(TOKS, VOCAB, c)


def test_the_span_is_the_prompts_audio_codes():
    prompt = asr_prompt(clip(0))
    start, count = audio_code_span(prompt, VOCAB)
    assert start == 3 and count == prompt.numel() - 4  # after <bos> <asr> <audio>, before </audio>
    assert audio_code_span(get_task("tts").prompt(TOKS, VOCAB, "six"), VOCAB) == (-1, 0)


def test_features_replace_only_the_audio_codes_of_rows_with_a_clip():
    net = model()
    clips = [clip(0), clip(1)]
    prompts = [asr_prompt(c) for c in clips]
    tts = get_task("tts").prompt(TOKS, VOCAB, "six five")
    answer = torch.full((6,), VOCAB.mask_id)
    batch = collate([(prompts[0], answer), (tts, answer)], VOCAB, waves=[audio_wave(TOKS, clips[0]), None])
    inputs = batch["audio"]
    assert inputs.row_audio.tolist() == [0, -1] and inputs.start.tolist() == [3, 0]
    other_codes = batch["tokens"].clone()
    first = batch["tokens"].shape[1] - 6 - prompts[0].numel() + 3  # the row's first audio code column
    other_codes[0, first:first + 4] = VOCAB.to_global("audio.0", torch.tensor([1, 2, 3, 4]))
    with torch.no_grad():
        plain = net(batch["tokens"])
        heard = net(batch["tokens"], audio=inputs)
        recoded = net(other_codes, audio=inputs)
        swapped = net(batch["tokens"], audio=audio_inputs([prompts[0], tts], [audio_wave(TOKS, clips[1]), None], VOCAB))
    assert not torch.allclose(plain[0], heard[0]) and not torch.allclose(heard[0], swapped[0])
    assert torch.allclose(heard[0], recoded[0], atol=1e-6)  # replace: the codes' ids no longer matter
    # The TTS row hears nothing. Not bit-equal: row 0's routing changes the MoE's per-expert group sizes, and with
    # them the blocking of the grouped matmul that row 1's tokens share (seen on an AVX2 machine).
    assert torch.allclose(plain[1], heard[1], rtol=0, atol=1e-5) and torch.allclose(heard[1], swapped[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("cache", ["prefix", "none"])
def test_cached_decoding_is_exact_and_batches_equal_singles(cache):
    net = model(1)
    clips = [clip(2), clip(3, 0.8), clip(4, 0.3)]
    prompts = [asr_prompt(c) for c in clips]
    waves = [audio_wave(TOKS, c) for c in clips]
    cfg = SamplerConfig(attention="prefix", cache=cache, steps=8)
    reference = SamplerConfig(attention="prefix", cache="none", steps=8)
    batched = generate(net, prompts, answer_len=8, vocab=VOCAB, config=cfg, audio=audio_inputs(prompts, waves, VOCAB))
    uncached = generate(net, prompts, answer_len=8, vocab=VOCAB, config=reference,
                        audio=audio_inputs(prompts, waves, VOCAB))
    assert torch.equal(batched.tokens, uncached.tokens)
    for i in range(3):
        single = generate(net, [prompts[i]], answer_len=8, vocab=VOCAB, config=cfg,
                          audio=audio_inputs([prompts[i]], [waves[i]], VOCAB)).tokens
        assert torch.equal(single[0], batched.tokens[i])
    deaf = generate(net, prompts, answer_len=8, vocab=VOCAB, config=cfg).tokens
    assert not torch.equal(deaf, batched.tokens)  # the waveform is heard


def test_the_encoder_frames_follow_the_codec_frames():
    backbone = SpeechBackbone(SpeechBackboneConfig(channels=32, layers=1, heads=2)).eval()
    for seconds in (0.3, 0.5, 1.7):
        c = clip(5, seconds)
        wave = audio_wave(TOKS, c)
        _, frames = backbone(wave[None], torch.tensor([wave.numel()]))
        codes = audio_code_span(asr_prompt(c), VOCAB)[1]
        assert int(frames) * TOKS.audio.config.levels == codes


@pytest.mark.parametrize("share_prefix", [True, False])
def test_the_loss_trains_an_unfrozen_backbone_and_leaves_a_frozen_one(share_prefix):
    clips = [clip(6), clip(7, 0.4)]
    answers = [torch.tensor([VOCAB.to_global("text", torch.tensor([i + 3]))[0].item()] * 4) for i in range(2)]
    batch = collate([(asr_prompt(c), a) for c, a in zip(clips, answers, strict=True)], VOCAB,
                    waves=[audio_wave(TOKS, c) for c in clips])
    assert set(prompt_inputs(batch)) == {"audio"} and prompt_inputs(batch, times=2)["audio"].rows == 4
    cfg = DiffusionLossConfig(attention="prefix", complementary=True, share_prefix=share_prefix, mask_id=VOCAB.mask_id)
    for frozen in (False, True):
        net = model(2, freeze_backbone=frozen).train()
        diffusion_loss(net, batch, cfg, generator=torch.Generator().manual_seed(0)).loss.backward()
        grads = [p.grad for p in net.audio_encoder.backbone.parameters() if p.grad is not None]
        assert bool(grads) != frozen
        assert net.audio_encoder.proj.weight.grad.abs().sum() > 0
        assert net.audio_encoder.backbone.training is not frozen


def test_bad_inputs_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="valid keys"):
        AudioEncoderConfig.from_dict({"size": 3})
    with pytest.raises(ValueError, match="multiple of heads"):
        SpeechBackboneConfig(channels=30, heads=4)
    prompt = asr_prompt(clip(0))
    with pytest.raises(ValueError, match="needs its waveform"):
        audio_inputs([prompt], [None], VOCAB)
    inputs = audio_inputs([prompt], [audio_wave(TOKS, clip(0))], VOCAB)
    plain = Transformer(preset_config("debug", len(VOCAB)))
    with pytest.raises(ValueError, match="no audio encoder"):
        plain(prompt[None], audio=inputs)


@pytest.mark.skipif(not all(__import__("shutil").which(b) for b in ("espeak-ng", "flite", "text2wave")),
                    reason="speech synthesisers missing; run `make data-deps`")
def test_train_py_trains_from_a_pretrained_encoder_exports_and_the_pipeline_hears_the_wave(tmp_path):
    """An ASR run with ``model.audio_encoder`` started from a CTC-pretrained backbone: batches carry waveforms,
    the frozen backbone stays as loaded, the export keeps the encoder, and the ASR pipeline hears the clip."""
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    from omnidiff.config import load_config
    from omnidiff.models.hf import OmniDiffModel
    from omnidiff.pipelines import ASRPipeline
    from omnidiff.training.ctc_pretrain import pretrain
    from omnidiff.training.trainer import train

    root = Path(__file__).resolve().parents[2]
    data = tmp_path / "speech"
    subprocess.run([sys.executable, "data/build_speech.py", "--out", str(data), "--num", "24", "--mix", "digits:1",
                    "--max-seconds", "2.0"], cwd=root, check=True, capture_output=True)
    pretrain(str(data), str(tmp_path / "enc"), channels=32, layers=1, heads=2, epochs=1, batch=8)
    TOKS.text.save(tmp_path / "text")
    TOKS.audio.save(tmp_path / "audio")
    cfg = load_config(None, [
        "model.preset=debug", f"tokenizers.text={tmp_path / 'text'}", f"tokenizers.audio={tmp_path / 'audio'}",
        f"train.out={tmp_path / 'run'}", "train.tensorboard=false", "train.steps=3", "train.eval_every=3",
        "train.eval_batches=1", "train.log_every=1", "data.batch_size=4",
        f"data.tasks=[{{task: asr, path: {data}, answer_len: 12}}]",
        "model.audio_encoder={freeze_backbone: true, backbone: {channels: 32, layers: 1, heads: 2}}",
        f"model.audio_encoder_init={tmp_path / 'enc'}"])
    summary = train(cfg)
    assert all(torch.isfinite(torch.tensor(summary["loss_history"])))
    loaded = OmniDiffModel.from_pretrained(summary["model"]).model
    assert loaded.cfg.audio_encoder.freeze_backbone and loaded.cfg.audio_encoder.backbone.channels == 32
    saved = load_file(str(tmp_path / "enc" / "backbone.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in loaded.audio_encoder.backbone.state_dict().items())
    pipe = ASRPipeline.from_pretrained(summary["model"], tmp_path / "run" / "model" / "tokenizers")
    c = clip(9)
    prompt = pipe.task_impl.prompt(pipe.tokenizers, pipe.vocab, c)
    inputs = pipe.audio_inputs([prompt], [c])
    assert inputs is not None and inputs.start.tolist() == [3]
    assert isinstance(pipe([c], answer_len=8)[0], str)


def test_a_bf16_model_hears_a_float32_wave():
    net = model(3).to(torch.bfloat16)
    prompt = asr_prompt(clip(0))
    inputs = audio_inputs([prompt], [audio_wave(TOKS, clip(0))], VOCAB)
    with torch.no_grad():
        logits = net(prompt[None], audio=inputs)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
