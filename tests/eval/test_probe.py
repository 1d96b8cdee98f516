"""The attribute probe masks exactly the attribute's words and cannot read them from its input."""

import numpy as np
import torch
from PIL import Image

from omnidiff.eval.probe import attribute_probe, probe_columns
from omnidiff.eval.tasks import COLOUR_WORDS
from omnidiff.models.presets import preset_config
from omnidiff.models.transformer import Transformer
from omnidiff.pipelines.captioning import CaptioningPipeline
from tests.fixtures import tiny_tokenizers

TOKS = tiny_tokenizers()
VOCAB = TOKS.build_vocab()


class Echo(torch.nn.Module):
    """Logits that put all mass on each column's own input token: a model that copies what it is shown."""

    def __init__(self, vocab_size):
        super().__init__()
        self.vocab_size, self.weight = vocab_size, torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens, logits_columns=None, **kwargs):
        out = torch.nn.functional.one_hot(tokens, self.vocab_size).float()
        return out if logits_columns is None else out[:, logits_columns]


def samples():
    rng = np.random.default_rng(0)
    caps = ["a red circle", "a blue square and a white circle", "a green square"]
    return [{"png": Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)), "txt": c} for c in caps]


def test_probe_masks_every_single_token_word_of_the_attribute_and_an_echo_scores_zero():
    torch.manual_seed(0)
    pipe = CaptioningPipeline(Transformer(preset_config("debug", len(VOCAB))).eval(), TOKS, VOCAB)
    words = tuple(w for w in {*COLOUR_WORDS, "a", "and", "circle"} if TOKS.text.encode(" " + w).numel() == 1)
    assert "a" in words  # the fixture's tokenizer has at least this one word as a single token
    ids = TOKS.text.encode(" ".join(COLOUR_WORDS + ("a", "and", "circle")))
    assert len(probe_columns(TOKS.text, ids, words)) == len(words)
    expected = sum(s["txt"].split().count(w) for s in samples() for w in words)
    result = attribute_probe(pipe, samples(), words, answer_len=64)
    assert result["columns"] == expected > 0 and 0 <= result["accuracy"] <= 1
    echo = CaptioningPipeline(Echo(len(VOCAB)), TOKS, VOCAB)
    assert attribute_probe(echo, samples(), words, answer_len=64)["accuracy"] == 0.0  # the words are masked
    assert attribute_probe(pipe, samples(), ("zebra",), answer_len=64) == {"accuracy": None, "columns": 0}


class Oracle(torch.nn.Module):
    """Fills the answer columns with the caption of the picture whose codes are in the prompt: a perfect reader."""

    def __init__(self, vocab_size, answers: dict, answer_len: int):
        super().__init__()
        self.vocab_size, self.answers, self.answer_len = vocab_size, answers, answer_len
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens, logits_columns=None, **kwargs):
        out = torch.zeros(*tokens.shape, self.vocab_size)
        image = VOCAB.range("image")
        for b, row in enumerate(tokens):
            key = tuple(t for t in row.tolist() if image.offset <= t < image.end)
            out[b, -self.answer_len:] = torch.nn.functional.one_hot(self.answers[key], self.vocab_size).float()
        return out if logits_columns is None else out[:, logits_columns]


def test_other_picture_takes_a_perfect_reader_off_the_truth():
    from omnidiff.data.formatting import fit_answer, image_ids, text_ids

    words = tuple(w for w in {*COLOUR_WORDS, "circle", "square", "and"} if TOKS.text.encode(" " + w).numel() == 1)
    assert words  # the fixture's tokenizer keeps some of these whole
    answers = {tuple(image_ids(TOKS, VOCAB, s["png"]).tolist()):
               fit_answer(text_ids(TOKS, VOCAB, s["txt"]), 64, VOCAB.eos_id, "caption") for s in samples()}
    pipe = CaptioningPipeline(Oracle(len(VOCAB), answers, 64), TOKS, VOCAB)
    assert attribute_probe(pipe, samples(), words, answer_len=64)["accuracy"] == 1.0
    # each caption shown the next one's picture: the oracle writes the other caption's words
    assert attribute_probe(pipe, samples(), words, answer_len=64, other_picture=True)["accuracy"] < 0.75


def test_one_object_colour_probe_reads_only_the_one_object_scenes(monkeypatch):
    import omnidiff.eval.probe as probe
    from omnidiff.eval.tasks import caption_probes

    seen = []

    def fake_probe(pipe, group, words, answer_len, other_picture=False):
        seen.append((words, other_picture, [s["txt"] for s in group]))
        return {"accuracy": len(group), "columns": len(group)}

    monkeypatch.setattr(probe, "attribute_probe", fake_probe)
    scenes = [{"objects": [{}]}, {"objects": [{}, {}]}, {"objects": [{}]}]
    group = [s | {"json": {"scene": scene}} for s, scene in zip(samples(), scenes, strict=True)]
    pipe = CaptioningPipeline(Echo(len(VOCAB)), TOKS, VOCAB)
    out = caption_probes(pipe, group, answer_len=64)
    assert out["colour_probe"] == 3 and out["colour_probe_one_object"] == 2
    assert (COLOUR_WORDS, False, ["a red circle", "a green square"]) in seen
    assert "colour_probe_one_object" not in caption_probes(pipe, group[1:2], answer_len=64)
