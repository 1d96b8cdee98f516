"""Fill-in-the-middle: a masked span between a given prefix and suffix, decoded in place (no reordering)."""

import pytest
import torch
from torch import nn

from omnidiff.pipelines import TextPipeline
from omnidiff.sampling import SamplerConfig, generate
from tests.fixtures import build_multimodal_model


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return TextPipeline.from_pretrained(build_multimodal_model(tmp_path_factory.mktemp("fim")))


class CopiesAhead(nn.Module):
    """Wraps a model so that column j strongly predicts the token ``ahead`` columns to its right, when given.

    A span decoded with it equals the tokens that follow it only if the decoder let the span see them.
    """

    def __init__(self, inner, ahead: int, mask_id: int):
        super().__init__()
        self.inner, self.ahead, self.mask_id = inner, ahead, mask_id
        self.cfg = inner.cfg

    def forward(self, tokens, *, logits_columns=None, **kwargs):
        logits = self.inner(tokens, logits_columns=logits_columns, **kwargs).clone()
        columns = torch.arange(tokens.shape[1])[logits_columns if logits_columns is not None else slice(None)]
        for i, col in enumerate(columns.tolist()):
            if col + self.ahead < tokens.shape[1]:
                ids = tokens[:, col + self.ahead]
                given = ids != self.mask_id
                logits[given, i, ids[given]] += 100.0
        return logits

    def new_cache(self):
        return self.inner.new_cache()


def test_the_middle_sees_the_suffix(pipe):
    suffix = " created the heaven and the earth"
    tok, vocab = pipe.tokenizers.text, pipe.vocab
    n = tok.encode(suffix).numel()
    copier = TextPipeline(CopiesAhead(pipe.model, n, vocab.mask_id), pipe.tokenizers, vocab, settings=pipe.settings)
    assert copier.fill_middle(["in the beginning god"], [suffix], middle_len=n) == [suffix]
    uncached = SamplerConfig(strategy="low_confidence", attention="prefix", cache="none", block_len=None)
    assert copier.fill_middle(["in the beginning god"], [suffix], middle_len=n, config=uncached) == [suffix]


def test_given_columns_are_kept_and_only_the_span_is_decoded(pipe):
    vocab = pipe.vocab
    prompt = [torch.tensor([vocab.bos_id, vocab.range("text").offset + 5])]
    init = torch.full((1, 8), vocab.range("text").offset + 7)
    init[0, 2:5] = vocab.mask_id
    out = generate(pipe.model, prompt, answer_len=8, vocab=vocab, answer_init=init,
                   config=SamplerConfig(strategy="low_confidence", attention="prefix", cache="prefix", block_len=4))
    assert (out.tokens[0, [0, 1, 5, 6, 7]] == init[0, [0, 1, 5, 6, 7]]).all()
    assert (out.tokens[0, 2:5] != vocab.mask_id).all()
    assert out.stats["tokens_per_forward"] == pytest.approx(3 / out.stats["nfe"])
    with pytest.raises(ValueError, match="answer_init"):
        generate(pipe.model, prompt, answer_len=8, vocab=vocab, answer_init=init[:, :4])


def test_fill_middle_batches_suffixes_of_any_length(pipe):
    middles = pipe.fill_middle(["the red circle", "a small green"], [" of the blue square", ""], middle_len=5)
    assert len(middles) == 2 and all(isinstance(m, str) for m in middles)
    with pytest.raises(ValueError, match="one suffix text per prefix"):
        pipe.fill_middle(["the red", "a small"], [" square"], middle_len=3)
    with pytest.raises(ValueError, match="middle_len"):
        pipe.fill_middle(["the red"], [" square"], middle_len=0)
    with pytest.raises(ValueError, match="non-empty"):
        pipe.fill_middle([" "], [" square"], middle_len=2)
