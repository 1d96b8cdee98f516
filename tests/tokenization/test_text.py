"""Text BPE: exact round trip, save/load, global ids, transformers folders, clear errors."""

import pytest
import torch

from omnidiff.tokenization.base import Tokenizer
from omnidiff.tokenization.registry import TokenizerSet
from omnidiff.tokenization.text import TextTokenizer
from tests.fixtures import text_docs


@pytest.fixture(scope="module")
def bpe():
    return TextTokenizer.train(text_docs(200), vocab_size=300, show_progress=False)


def test_round_trip_is_exact_even_for_unseen_characters(bpe):
    for text in ["the red circle", "Ünïcødé — ✓ 42!", "  spaces  and\ttabs\n"]:
        assert bpe.decode(bpe.encode(text)) == text


def test_bpe_merges_frequent_words(bpe):
    assert len(bpe.encode("the red circle is left of the blue square")) < len("the red circle is left of the blue square")


def test_save_load_and_protocol(bpe, tmp_path):
    bpe.save(tmp_path / "tok")
    loaded = TextTokenizer.load(tmp_path / "tok")
    assert isinstance(loaded, Tokenizer)
    assert torch.equal(loaded.encode("a small green triangle"), bpe.encode("a small green triangle"))
    assert loaded.vocab_size == bpe.vocab_size == 300


def test_global_ids_and_decode_global(bpe, tmp_path):
    bpe.save(tmp_path / "tok")
    toks = TokenizerSet.load({"text": tmp_path / "tok"})
    vocab = toks.build_vocab()
    ids = toks.text.to_global(vocab, toks.text.encode("seven digits"))
    assert all(vocab.modality_of(int(i)) == "text" for i in ids)
    with_eos = torch.cat([ids, torch.tensor([vocab.eos_id, vocab.eos_id])])
    assert toks.text.decode_global(vocab, with_eos) == "seven digits"


def test_loads_a_local_transformers_tokenizer_folder(bpe, tmp_path):
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=bpe.backend).save_pretrained(tmp_path / "hf")
    tok = TextTokenizer.load(tmp_path / "hf")
    assert tok.kind == "transformers"
    assert tok.decode(tok.encode("the blue square")) == "the blue square"


def test_errors(bpe, tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no text tokenizer"):
        TextTokenizer.load(tmp_path)
    with pytest.raises(ValueError, match=r"text ids must be in \[0, 300\)"):
        bpe.decode(torch.tensor([5, 300]))
    with pytest.raises(ValueError, match="vocab_size >= 257"):
        TextTokenizer.train(["abc"], vocab_size=100)
