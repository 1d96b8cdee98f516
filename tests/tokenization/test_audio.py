"""Audio tokenizer (tiny untrained codec) and the WER metric: shapes, id layout, persistence, errors, learning."""

import numpy as np
import pytest
import torch

from omnidiff.eval.speech import normalise_words, word_error_rate
from omnidiff.tokenization.audio import AudioCodecConfig, AudioTokenizer, codec_loss
from omnidiff.tokenization.base import Tokenizer, register
from omnidiff.tokenization.vocab import Vocab

TINY = dict(channels=16, blocks=1, latent_dim=8, levels=3, codebook_size=16, griffin_lim_iters=4, reseed_every=5)


def chirp(seconds: float = 0.5, rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return (0.5 * torch.sin(2 * torch.pi * (200 + 600 * t) * t)).float()


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return AudioTokenizer(AudioCodecConfig(**TINY))


def test_encode_shape_range_and_rate(tok):
    codes = tok.encode((chirp(0.5), 16000))
    # 0.5 s -> 8000 // 256 + 1 = 32 mel frames -> 16 code frames of 3 levels
    assert codes.shape == (16, 3) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 16
    assert tok.tokens_per_second == pytest.approx(16000 / 256 / 2 * 3)
    assert isinstance(tok, Tokenizer) and tok.vocab_ranges() == {"audio.0": 16, "audio.1": 16, "audio.2": 16}


def test_decode_gives_a_16k_wave_of_the_right_length(tok):
    codes = tok.encode((chirp(0.5), 16000))
    wave, rate = tok.decode(codes)
    assert rate == 16000 and wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 8000) <= 2 * 256 and np.abs(wave).max() <= 1.0


def test_to_global_interleaves_levels_frame_major_and_round_trips(tok):
    vocab = Vocab.build({"text": 10})
    register(vocab, tok)
    assert [r.name for r in vocab.ranges_of("audio")] == ["audio.0", "audio.1", "audio.2"]
    codes = torch.tensor([[1, 2, 3], [4, 5, 6]])
    flat = tok.to_global(vocab, codes)
    offsets = [vocab.range(f"audio.{level}").offset for level in range(3)]
    assert flat.tolist() == [1 + offsets[0], 2 + offsets[1], 3 + offsets[2], 4 + offsets[0], 5 + offsets[1],
                             6 + offsets[2]]
    assert torch.equal(tok.from_global(vocab, flat), codes)
    real = tok.encode((chirp(0.3), 16000))
    assert torch.equal(tok.from_global(vocab, tok.to_global(vocab, real)), real)
    with pytest.raises(ValueError, match="multiple of the 3"):
        tok.from_global(vocab, flat[:-1])
    with pytest.raises(ValueError, match="audio.1"):  # a level-0 id where level 1 belongs
        tok.from_global(vocab, flat[[0, 0, 2]])


def test_first_levels_round_trip_and_decode_coarser(tok):
    vocab = Vocab.build({"text": 10})
    register(vocab, tok)
    real = tok.encode((chirp(0.3), 16000))
    coarse = real[:, :2]
    flat = tok.to_global(vocab, coarse)
    assert flat.numel() == 2 * real.shape[0] == tok.num_tokens(int(0.3 * 16000), 16000, levels=2)
    assert torch.equal(tok.from_global(vocab, flat, levels=2), coarse)
    mel_full, mel_coarse = tok.decode_mel(real), tok.decode_mel(coarse)
    assert mel_coarse.shape == mel_full.shape and not torch.allclose(mel_coarse, mel_full)
    z = tok.codec.rvq.codebooks[0][coarse[:, 0]] + tok.codec.rvq.codebooks[1][coarse[:, 1]]
    expected = tok.codec.denormalise(tok.codec.decode_latent(z.T[None]))[0]
    assert torch.allclose(mel_coarse, expected, atol=1e-6)
    for bad in (0, 4, True):
        with pytest.raises(ValueError, match="audio levels must be an integer from 1 to the codec's 3"):
            tok.check_levels(bad)


def test_save_load_gives_identical_codes(tok, tmp_path):
    tok.save(tmp_path / "audio")
    loaded = AudioTokenizer.load(tmp_path / "audio")
    wave = (chirp(0.4), 16000)
    assert torch.equal(loaded.encode(wave), tok.encode(wave))
    assert loaded.config == tok.config
    with pytest.raises(FileNotFoundError, match="train_audio_codec"):
        AudioTokenizer.load(tmp_path / "nothing")


def test_other_sample_rates_are_resampled(tok):
    at16 = tok.encode((chirp(0.5, 16000), 16000))
    at22 = tok.encode((chirp(0.5, 22050).numpy(), 22050))
    assert at22.shape == at16.shape
    assert (at22 == at16).float().mean() > 0.5  # the same sound gives mostly the same codes


@pytest.mark.parametrize("raw, message", [
    ((torch.zeros(2, 1600), 16000), "mono"),
    ((torch.zeros(0), 16000), "empty"),
    ((torch.zeros(1600), 0), "sample_rate"),
    (torch.zeros(1600), "pair"),
    ((torch.full((1600,), float("nan")), 16000), "NaN"),
])
def test_bad_audio_is_rejected(tok, raw, message):
    with pytest.raises(ValueError, match=message):
        tok.encode(raw)


@pytest.mark.parametrize("ids, message", [
    (torch.zeros(4, 4, dtype=torch.long), "shape"),
    (torch.full((4, 3), 16), r"\[0, 16\)"),
    (torch.zeros(0, 3, dtype=torch.long), "zero audio frames"),
])
def test_bad_codes_are_rejected(tok, ids, message):
    with pytest.raises(ValueError, match=message):
        tok.decode(ids)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="downsample"):
        AudioCodecConfig(downsample=3)
    with pytest.raises(ValueError, match="unknown audio codec settings"):
        AudioCodecConfig.from_dict({"levles": 4})


def test_a_few_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    tok = AudioTokenizer(AudioCodecConfig(**TINY))
    mels = torch.stack([tok.log_mel(chirp(0.5) * (0.3 + 0.2 * i)) for i in range(4)])
    mels = (mels - mels.mean()) / mels.std()
    codec = tok.codec.train()
    codec.rvq.kmeans_init(codec.encode_latent(mels).detach().transpose(1, 2).reshape(-1, 8), iters=3)
    optim = torch.optim.Adam(codec.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss, stats = codec_loss(codec, mels, update=True)
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(stats["mel_l1"])
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_kmeans_init_needs_enough_vectors(tok):
    with pytest.raises(ValueError, match="at least codebook_size"):
        tok.codec.rvq.kmeans_init(torch.randn(5, 8))


# ------------------------------------------------------------------ word error rate
def test_wer_counts_edits_over_reference_words():
    assert word_error_rate("the cat sat", "the cat sat") == 0.0
    assert word_error_rate("the cat sat", "the bat sat") == pytest.approx(1 / 3)
    assert word_error_rate("the cat sat", "cat sat down now") == pytest.approx(3 / 3)
    assert word_error_rate(["a b", "c d e f"], ["a b", "c"]) == pytest.approx(3 / 6)


def test_wer_normalises_case_punctuation_and_numbers():
    assert word_error_rate("Turn on the lights.", "turn on the lights") == 0.0
    assert word_error_rate("four seven two", "472") == 0.0
    assert word_error_rate("four seven two", "4, 7, 2.") == 0.0
    assert word_error_rate("twenty one days", "21 days") == 0.0
    assert word_error_rate("one hundred and five", "105") > 0  # "and" is a word, never swallowed
    assert word_error_rate("two thousand three hundred", "2300") == 0.0
    assert word_error_rate("four seven two", "473") == pytest.approx(1 / 3)
    assert word_error_rate("don't stop", "Dont stop!") == 0.0
    assert normalise_words("Twenty-five men") == ["2", "5", "men"]


def test_wer_bad_input():
    with pytest.raises(ValueError, match="no words"):
        word_error_rate("...", "hello")
    with pytest.raises(ValueError, match="as many hypotheses"):
        word_error_rate(["a", "b"], ["a"])


# ------------------------------------------------------------------ the trainer script and the transcriber
def _trainer():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tokenizers" / "train_audio_codec.py"
    spec = importlib.util.spec_from_file_location("train_audio_codec", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_trainer_settings_are_checked(tmp_path):
    trainer = _trainer()
    codec_cfg, cfg = trainer.load_settings(None, ["codec.levels=4", "train.steps=7"])
    assert codec_cfg.levels == 4 and cfg.steps == 7
    with pytest.raises(ValueError, match="unknown keys"):
        trainer.load_settings(None, ["train.stpes=7"])
    with pytest.raises(ValueError, match="needs a section"):
        trainer.load_settings(None, ["steps=7"])
    with pytest.raises(FileNotFoundError):
        trainer.load_settings(tmp_path / "missing.yaml", [])


@pytest.mark.slow
def test_trainer_end_to_end_on_built_shards(tmp_path):
    """Build 12 real utterances, train a tiny codec a few steps, check the atomic output and its metrics."""
    import json
    import shutil

    from tests.data.test_builders import run_builder

    assert shutil.which("espeak-ng"), "speech synthesisers missing; run `make data-deps`"
    assert run_builder("speech", "--out", str(tmp_path / "speech"), "--num", "14", "--mix", "digits:1,command:1") == 0
    trainer = _trainer()
    codec_cfg, cfg = trainer.load_settings(None, [f"codec.{k}={v}" for k, v in TINY.items()] + [
        "train.utterances=12", "train.val_utterances=1", "train.warmup_steps=3", "train.steps=6", "train.batch_size=4",
        "train.crop_frames=32", "train.kmeans_frames=64", "train.log_every=3"])
    out = tmp_path / "codec"
    report = trainer.train(codec_cfg, cfg, out, tmp_path / "speech")
    assert report["steps"] == 9 and not (tmp_path / ".codec.tmp").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in rows] == ["autoencoder", "rvq", "rvq"] and len(rows[-1]["usage"]) == 3
    tok = AudioTokenizer.load(out)
    assert tok.encode((chirp(0.3), 16000)).shape == (10, 3)
    again = trainer.train(codec_cfg, cfg, out, tmp_path / "speech", init=out)  # continue, replacing atomically
    assert again["init"] == str(out) and again["steps"] == 6


@pytest.mark.slow
def test_transcriber_hears_synthetic_speech():
    import shutil

    from omnidiff.data.sources import speech
    from omnidiff.eval.speech import Transcriber

    assert shutil.which("flite"), "flite missing; run `make data-deps`"
    wave = speech.synthesize("turn on the kitchen lights", "flite-slt")
    text = Transcriber().transcribe(wave)
    assert word_error_rate("turn on the kitchen lights", text) <= 0.2
    with pytest.raises(ValueError, match="mono"):
        Transcriber().transcribe(np.zeros((2, 100), np.float32))
