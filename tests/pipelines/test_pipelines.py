"""Task pipelines on a randomly initialised model with real (untrained, tiny) tokenizers.

What is checked is the plumbing a user relies on: a folder exported like train.py's loads with
``from_pretrained`` alone, every pipeline returns the right kind of output, fixed-size answers are
well-formed, the policy replays its chunk, and bad input fails with a clear message.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from omnidiff.pipelines import (
    ASRPipeline,
    CaptioningPipeline,
    TextPipeline,
    TextToImagePipeline,
    TTSPipeline,
    VLAPolicy,
    VQAPipeline,
)
from omnidiff.sampling import SamplerConfig
from omnidiff.tokenization.registry import TokenizerSet
from omnidiff.tokenization.text import TextTokenizer
from tests.fixtures import build_multimodal_model, text_docs


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_multimodal_model(tmp_path_factory.mktemp("pipe"))


def picture(seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8))


def speech(seconds=0.5):
    t = np.arange(int(16000 * seconds)) / 16000
    return {"array": (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), "sample_rate": 16000}


def test_text_captioning_and_vqa_return_text(model_dir):
    assert all(isinstance(s, str) for s in TextPipeline.from_pretrained(model_dir)(["in the beginning", "and"]))
    fast = SamplerConfig(steps=4, strategy="low_confidence", attention="prefix", cache="prefix")
    captions = CaptioningPipeline.from_pretrained(model_dir, sampler=fast)([picture(0), picture(1)])
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    vqa = VQAPipeline.from_pretrained(model_dir)
    assert len(vqa([picture(0)], ["what colour is it?"])) == 1
    assert vqa.last_stats["nfe"] >= 1
    with pytest.raises(ValueError, match="one question per image"):
        vqa([picture(0), picture(1)], ["what?"])
    with pytest.raises(ValueError, match="expected PIL images"):
        vqa(["not an image"], ["what?"])


def test_text_to_image_gives_full_images_with_and_without_guidance(model_dir):
    fast = SamplerConfig(steps=6, strategy="low_confidence", attention="prefix", cache="prefix")
    pipe = TextToImagePipeline.from_pretrained(model_dir, sampler=fast)
    images = pipe(["a red circle", "two blue squares"], temperature=1.0)
    assert [im.size for im in images] == [(32, 32), (32, 32)]
    guided = pipe(["a red circle"], guidance_scale=2.0)
    assert guided[0].size == (32, 32) and pipe.last_stats["nfe"] % 2 == 0  # conditional + unconditional passes
    with pytest.raises(ValueError, match="caption is empty"):
        pipe([" "])


def test_text_to_image_decodes_in_random_order_by_default(model_dir):
    pipe = TextToImagePipeline.from_pretrained(model_dir)
    cfg = pipe.sampler
    assert (cfg.strategy, cfg.steps, cfg.temperature, cfg.block_len, cfg.cache) == ("random", 16, 1.0, None, "prefix")
    one, again, other = (pipe(["a red circle"], seed=s)[0] for s in (3, 3, 4))
    assert list(one.getdata()) == list(again.getdata())  # sampled, yet reproducible from the seed
    assert pipe.last_stats["nfe"] <= 16


def test_speech_round_trip_types(model_dir):
    texts = ASRPipeline.from_pretrained(model_dir)([speech(), (speech(0.3)["array"], 16000)])
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    with pytest.raises(ValueError, match="audio must be"):
        ASRPipeline.from_pretrained(model_dir)([np.zeros(100)])
    waves = TTSPipeline.from_pretrained(model_dir)(["turn on the lights"])
    assert waves[0]["sample_rate"] == 16000 and waves[0]["array"].dtype == np.float32


def test_tts_generates_only_the_levels_it_was_trained_on(model_dir):
    base = TTSPipeline.from_pretrained(model_dir)
    settings = {**base.settings, "tasks": {**base.settings.get("tasks", {}), "tts": {"answer_len": 12, "audio_levels": 1}}}
    pipe = TTSPipeline(base.model, base.tokenizers, base.vocab, settings=settings)
    assert pipe.task_impl.audio_levels == 1
    seen, decode = {}, pipe.decode

    def spy(prompts, length, **kwargs):
        seen["layout"] = kwargs["answer_layout"]
        return decode(prompts, length, **kwargs)

    pipe.decode = spy
    wave = pipe(["turn on the lights"])[0]
    level0 = base.vocab.range("audio.0")
    audio_columns = seen["layout"][:, level0.offset + level0.size:level0.offset + 2 * level0.size]
    assert seen["layout"].shape[0] == 12 and not audio_columns.any()  # no column may hold a level-1 code
    assert seen["layout"][:, level0.offset:level0.offset + level0.size].all()
    assert wave["array"].dtype == np.float32


def test_vla_policy_replays_its_chunk(model_dir, monkeypatch):
    policy = VLAPolicy.from_pretrained(model_dir, execute_steps=3)
    obs, state = picture(3), np.zeros(3, np.float32)
    chunk = policy.predict_action(obs, "push the puck", state)
    assert chunk.shape == (4, 4) and chunk.dtype == np.float32
    assert (chunk >= -1.0001).all() and (chunk <= 1.0001).all()  # bin centres inside the fitted range
    calls = []
    real = policy.predict_action
    monkeypatch.setattr(policy, "predict_action", lambda *a, **k: calls.append(1) or real(*a, **k))
    actions = [policy.act(obs, "push the puck", state) for _ in range(7)]
    assert len(calls) == 3 and all(a.shape == (4,) for a in actions)  # steps 0, 3 and 6 decode a chunk
    np.testing.assert_array_equal(actions[0], chunk[0])  # same seed, same observation: the same chunk
    # the default decodes the whole chunk in one step: one forward over the prompt and the masked chunk
    assert policy.sampler.steps == 1 and policy.sampler.block_len is None and policy.last_stats["nfe"] == 1
    with pytest.raises(ValueError, match="robot state"):
        policy.predict_action(obs, "push the puck", None)
    with pytest.raises(ValueError, match="execute_steps"):
        VLAPolicy.from_pretrained(model_dir, execute_steps=9)


def test_vla_policy_with_a_temporal_ensemble_decodes_every_step(model_dir, monkeypatch):
    policy = VLAPolicy.from_pretrained(model_dir, ensemble_decay=0.1)
    obs, state = picture(3), np.zeros(3, np.float32)
    chunk = policy.predict_action(obs, "push the puck", state)
    calls = []
    real = policy.predict_action
    monkeypatch.setattr(policy, "predict_action", lambda *a, **k: calls.append(1) or real(*a, **k))
    actions = [policy.act(obs, "push the puck", state, seed=0) for _ in range(3)]
    assert len(calls) == 3 and policy.execute_steps == 1
    np.testing.assert_allclose(actions[0], chunk[0])  # the first step has one chunk to ask
    w = np.exp(-0.1 * np.arange(2))  # step 1: chunk 0's second action, the new chunk's first (same observation)
    np.testing.assert_allclose(actions[1], (w[0] * chunk[1] + w[1] * chunk[0]) / w.sum(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="not both"):
        VLAPolicy.from_pretrained(model_dir, execute_steps=2, ensemble_decay=0.1)


def test_loading_refuses_a_foreign_tokenizer_and_a_non_model_folder(model_dir, tmp_path):
    other = TokenizerSet(text=TextTokenizer.train(text_docs(200), vocab_size=280, show_progress=False))
    other.save(tmp_path / "toks")
    with pytest.raises(ValueError, match="does not match the model's vocabulary"):
        TextPipeline.from_pretrained(model_dir, tmp_path / "toks")
    with pytest.raises(ValueError, match="needs tokenizers for"):
        CaptioningPipeline.from_pretrained(model_dir, tmp_path / "toks")
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        TextPipeline.from_pretrained(tmp_path)


def test_infer_cli_writes_images_and_actions(model_dir, tmp_path, capsys):
    import infer

    def run(*args):
        code = infer.main([*args, "--model", str(model_dir), "--steps", "4", "--strategy", "low_confidence"])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("t2i", "--prompt", "a red circle", "--out", str(tmp_path / "img.png"))
    assert code == 0, err
    assert Image.open(tmp_path / "img.png").size == (32, 32) and json.loads(out)["nfe"] >= 1
    picture(5).save(tmp_path / "obs.png")
    code, out, err = run("vla", "--image", str(tmp_path / "obs.png"), "--instruction", "push the puck",
                         "--proprio", "0,0,0")
    assert code == 0, err
    assert np.asarray(json.loads(out)["actions"]).shape == (4, 4)
    code, _, err = run("caption", "--image", str(tmp_path / "missing.png"))
    assert code == 2 and "does not exist" in err
    code, _, err = run("vla", "--image", str(tmp_path / "obs.png"), "--instruction", "go", "--proprio", "a,b")
    assert code == 2 and "comma-separated numbers" in err
    (tmp_path / "bad.wav").write_bytes(b"not audio")
    code, _, err = run("asr", "--audio", str(tmp_path / "bad.wav"))
    assert code == 2 and "is not audio" in err


def test_tts_speaks_for_the_seconds_asked(model_dir):
    pipe = TTSPipeline.from_pretrained(model_dir)
    tok = pipe.tokenizers.audio
    frame = 1 / tok.config.frames_per_second
    waves = pipe(["turn on the lights", "stop"], seconds=[0.2, 0.1], answer_len=64)
    got = [len(w["array"]) / w["sample_rate"] for w in waves]
    assert got[0] == pytest.approx(0.2, abs=2 * frame) and got[1] == pytest.approx(0.1, abs=2 * frame)
    assert got[0] > got[1]


def test_tts_duration_comes_from_the_speaking_rate(model_dir):
    base = TTSPipeline.from_pretrained(model_dir)
    tasks = {**base.settings.get("tasks", {}), "tts": {"answer_len": 64, "speaking_rate": [0.05, 0.01]}}
    pipe = TTSPipeline(base.model, base.tokenizers, base.vocab, settings={**base.settings, "tasks": tasks})
    seen, decode = {}, pipe.decode

    def spy(prompts, length, **kwargs):
        seen["init"] = kwargs["answer_init"]
        return decode(prompts, length, **kwargs)

    pipe.decode = spy
    pipe(["a short one", "a much longer sentence to speak"])
    masked = (seen["init"] == base.vocab.mask_id).sum(1)
    assert 0 < masked[0] < masked[1]  # a longer text gets more audio columns, never all of them
    ends = seen["init"][torch.arange(2), masked]
    assert (ends == base.vocab.special("</audio>")).all()


@pytest.mark.parametrize("seconds,message", [(0.0, "positive"), ([0.2], "one per text"), (float("inf"), "positive"),
                                             (60.0, "larger answer_len")])
def test_tts_bad_seconds(model_dir, seconds, message):
    with pytest.raises(ValueError, match=message):
        TTSPipeline.from_pretrained(model_dir)(["turn on", "off"], seconds=seconds, answer_len=64)
