"""The code cache (data.code_cache) returns exactly what the tokenizer computes, for exactly the input it saw."""

import numpy as np
import pytest
import torch
from PIL import Image

from omnidiff.data.builder import write_split
from omnidiff.data.mixing import MixtureConfig, TaskDataConfig, build_mixture_loader
from omnidiff.tokenization.code_cache import CodeCache, enable_code_caches
from tests.fixtures import tiny_tokenizers
from tests.tasks.stubs import encode_for_shards, shapes_sample

TOKS = tiny_tokenizers()


def picture(seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8))


def test_cached_image_and_audio_codes_equal_fresh_ones_and_distinct_inputs_stay_distinct():
    image, audio = TOKS.image, TOKS.audio
    pictures = [picture(i) for i in range(3)]
    waves = [(np.random.default_rng(i).normal(size=8000).astype(np.float32) * 0.1, 16000) for i in range(3)]
    fresh = [image.encode(p) for p in pictures], [audio.encode(w) for w in waves]
    enable_code_caches(TOKS, 8)
    try:
        for _ in range(2):
            assert all(torch.equal(image.encode(p), f) for p, f in zip(pictures, fresh[0], strict=True))
            assert all(torch.equal(audio.encode(w), f) for w, f in zip(waves, fresh[1], strict=True))
        assert (image.code_cache.misses, image.code_cache.hits) == (3, 3)
        assert (audio.code_cache.misses, audio.code_cache.hits) == (3, 3)
        assert image.encode(pictures[0]).dtype == torch.long  # a 4th hit
        nudged = np.asarray(pictures[0]).copy()
        nudged[0, 0, 0] ^= 1  # one bit of one pixel: a different input, never a hit
        image.encode(Image.fromarray(nudged))
        assert image.code_cache.misses == 4
        enable_code_caches(TOKS, 8)  # a second loader of the same size shares the cache
        assert image.code_cache.hits == 4
    finally:
        enable_code_caches(TOKS, 0)
    assert image.code_cache is None and audio.code_cache is None


def test_least_recently_used_entries_go_first_and_wide_codes_survive_narrow_storage():
    cache = CodeCache(2)
    a, b, c = torch.zeros(3), torch.ones(3), torch.full((3,), 2.0)
    assert cache.lookup(a, lambda: torch.tensor([70000, -5])).tolist() == [70000, -5]  # needs int32
    cache.lookup(b, lambda: torch.tensor([1]))
    cache.lookup(a, lambda: pytest.fail("a is cached"))
    cache.lookup(c, lambda: torch.tensor([2]))  # evicts b, the least recently used
    assert cache.lookup(a, lambda: pytest.fail("a is cached")).tolist() == [70000, -5]
    assert cache.lookup(b, lambda: torch.tensor([9])).tolist() == [9]
    with pytest.raises(ValueError, match="at least one entry"):
        CodeCache(0)


def test_a_loader_with_the_cache_gives_the_batches_of_one_without(tmp_path):
    write_split(tmp_path / "shapes", "train", (encode_for_shards(shapes_sample(i)) for i in range(12)), shard_size=4)
    vocab = TOKS.build_vocab()

    def batches(code_cache):
        cfg = MixtureConfig(tasks=[TaskDataConfig("caption", str(tmp_path / "shapes"), answer_len=24)], batch_size=4,
                            code_cache=code_cache)
        loader = build_mixture_loader(cfg, TOKS, vocab)
        return [next(loader)["tokens"] for _ in range(7)]  # more than two epochs of the 12 scenes

    try:
        with_cache = batches(1000)
        assert TOKS.image.code_cache.hits > 0
        without = batches(0)
    finally:
        enable_code_caches(TOKS, 0)
    assert all(torch.equal(x, y) for x, y in zip(with_cache, without, strict=True))
    with pytest.raises(ValueError, match="code_cache must be >= 0"):
        batches(-1)
