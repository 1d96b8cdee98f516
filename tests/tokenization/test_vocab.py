import pytest
import torch

from omnidiff.tokenization.vocab import Vocab


def make_vocab():
    v = Vocab()
    v.add_range("text", 100)
    v.add_range("image", 64)
    v.add_range("audio.0", 16)
    v.add_range("audio.1", 16)
    v.add_range("action", 256)
    return v


def test_ranges_are_contiguous_and_maps_round_trip():
    v = make_vocab()
    assert v.range("text").offset == len(v.specials)
    assert v.size == len(v.specials) + 100 + 64 + 32 + 256
    local = torch.tensor([0, 5, 63])
    glob = v.to_global("image", local)
    assert torch.equal(v.to_local("image", glob), local)
    assert v.modality_of(int(glob[1])) == "image"
    assert v.modality_of(v.range("audio.1").offset) == "audio"
    assert v.modality_of(v.mask_id) == "special"


def test_modality_mask_covers_exactly_the_range():
    v = make_vocab()
    m = v.modality_mask("audio", specials=("<eos>",))
    a0, a1 = v.range("audio.0"), v.range("audio.1")
    assert m.sum() == 33 and m[a0.offset:a1.end].all() and m[v.eos_id]
    assert not m[a0.offset - 1] and not m[a1.end]


def test_json_round_trip(tmp_path):
    v = make_vocab()
    assert Vocab.from_json(v.to_json()) == v
    v.save(tmp_path)
    assert Vocab.load(tmp_path) == v


def test_errors():
    v = make_vocab()
    with pytest.raises(ValueError, match="already registered"):
        v.add_range("text", 5)
    with pytest.raises(ValueError, match="overlaps"):
        v.add_range("extra", 5, modality="text", offset=v.range("image").offset + 2)
    with pytest.raises(ValueError, match=r"must be in \[0, 64\)"):
        v.to_global("image", torch.tensor([64]))
    with pytest.raises(ValueError, match="must be in"):
        v.to_local("text", torch.tensor([v.range("image").offset]))
    with pytest.raises(ValueError, match="token ids must be in"):
        v.modality_of(v.size)
    with pytest.raises(ValueError, match="unknown special token"):
        v.special("<nope>")
    with pytest.raises(ValueError, match="registered ranges"):
        v.range("video")
    with pytest.raises(ValueError, match="differs"):
        v.check_compatible(Vocab.build({"text": 100}))
