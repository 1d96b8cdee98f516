"""Image VQ tokenizer on the tiny ``debug`` config: shapes, ranges, batching, persistence, re-seeding, training."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from omnidiff.tokenization.base import Tokenizer, register
from omnidiff.tokenization.image import (
    PRESETS,
    ImageTokenizer,
    ImageVQConfig,
    code_statistics,
    reseed_dead_codes,
    update_unused_steps,
    vq_loss,
)
from omnidiff.tokenization.vocab import Vocab

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/tokenization/conftest.py


@pytest.fixture(scope="module")
def tok(one_thread) -> ImageTokenizer:
    torch.manual_seed(0)
    return ImageTokenizer(PRESETS["debug"])


def random_image(seed: int, size: int = 16) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_protocol_and_shapes(tok):
    assert isinstance(tok, Tokenizer) and tok.modality == "image"
    assert tok.vocab_ranges() == {"image": 32} and tok.image_size == 16
    assert tok.codes_shape == (4, 4) and tok.tokens_per_image == 16
    ids = tok.encode(random_image(0))
    assert ids.dtype == torch.long and tuple(ids.shape) == (4, 4)
    assert 0 <= int(ids.min()) and int(ids.max()) < 32
    out = tok.decode(ids)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (16, 16)
    assert tok.decode(ids.reshape(-1)).tobytes() == out.tobytes()  # row-major flat ids decode the same


def test_tensor_input_matches_pil_input(tok):
    image = random_image(1)
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    assert torch.equal(tok.encode(image), tok.encode(pixels))


def test_batch_equals_single(tok):
    images = [random_image(i) for i in range(5)]
    batch = tok.encode_batch(images)
    singles = [tok.encode(im) for im in images]
    assert all(torch.equal(a, b) for a, b in zip(batch, singles, strict=True))
    decoded = tok.decode_batch(batch)
    for ids, image in zip(singles, decoded, strict=True):
        a, b = np.asarray(tok.decode(ids), np.int16), np.asarray(image, np.int16)
        assert np.abs(a - b).max() <= 1  # batched convolutions may round differently by one level
    assert tok.encode_batch([]) == [] and tok.decode_batch([]) == []


def test_other_sizes_and_modes_are_resized_or_rejected(tok):
    big_grey = Image.fromarray(np.random.default_rng(2).integers(0, 256, (40, 24), dtype=np.uint8), mode="L")
    assert tuple(tok.encode(big_grey).shape) == (4, 4)  # converted to RGB and resized
    with pytest.raises(ValueError, match="must be 16x16"):
        tok.encode(torch.rand(3, 20, 20))
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        tok.encode(torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match="float"):
        tok.encode(torch.zeros(3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="PIL image or a float tensor"):
        tok.encode("cat.png")
    with pytest.raises(ValueError, match=r"in \[0, 32\)"):
        tok.decode(torch.full((4, 4), 32))
    with pytest.raises(ValueError, match="codes"):
        tok.decode_tensor(torch.zeros(1, 3, 3, dtype=torch.long))


def test_global_round_trip(tok):
    vocab = Vocab()
    vocab.add_range("text", 100)
    register(vocab, tok)
    ids = tok.encode(random_image(3))
    flat = tok.to_global(vocab, ids)
    r = vocab.range("image")
    assert flat.shape == (16,) and bool(((flat >= r.offset) & (flat < r.end)).all())
    assert torch.equal(flat - r.offset, ids.reshape(-1))  # row-major
    assert torch.equal(tok.from_global(vocab, flat), ids)
    with pytest.raises(ValueError, match="image"):
        tok.from_global(vocab, torch.tensor([0, 1]))  # special ids are not image ids


def test_save_load_gives_identical_codes(tok, tmp_path):
    tok.save(tmp_path / "t")
    settings = json.loads((tmp_path / "t" / "image_tokenizer.json").read_text())
    assert settings["modality"] == "image" and settings["config"]["codebook_size"] == 32
    loaded = ImageTokenizer.load(tmp_path / "t")
    assert loaded.config == tok.config
    images = [random_image(i) for i in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(tok.encode_batch(images), loaded.encode_batch(images), strict=True))


def test_load_refuses_mismatched_files(tok, tmp_path):
    tok.save(tmp_path / "t")
    other = ImageTokenizer(ImageVQConfig(**{**PRESETS["debug"].__dict__, "codebook_size": 64}))
    other.save(tmp_path / "o")
    (tmp_path / "o" / "image_tokenizer.json").replace(tmp_path / "t" / "image_tokenizer.json")
    with pytest.raises(ValueError, match="does not match the architecture"):
        ImageTokenizer.load(tmp_path / "t")
    with pytest.raises(FileNotFoundError, match="train_image_vq"):
        ImageTokenizer.load(tmp_path / "missing")


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="not divisible"):
        ImageVQConfig(image_size=20, unshuffle=4, block_out_channels=(16, 16), norm_num_groups=8)
    with pytest.raises(ValueError, match="norm_num_groups"):
        ImageVQConfig(block_out_channels=(24, 48), norm_num_groups=32)


def test_reseed_moves_dead_codes_onto_encoder_outputs():
    codebook = torch.zeros(6, 3)
    unused = torch.tensor([0, 5, 0, 9, 1, 5])
    latents = torch.arange(30, dtype=torch.float32).view(10, 3) + 100
    n = reseed_dead_codes(codebook, unused, latents, max_unused=5, generator=torch.Generator().manual_seed(0), noise=0.0)
    assert n == 3 and unused.tolist() == [0, 0, 0, 0, 1, 0]
    for k in (1, 3, 5):
        assert any(torch.equal(codebook[k], row) for row in latents)
    assert codebook[[0, 2, 4]].abs().sum() == 0
    update_unused_steps(unused, torch.tensor([[2, 2]]))
    assert unused.tolist() == [1, 1, 0, 1, 2, 1]
    with pytest.raises(ValueError, match="max_unused"):
        reseed_dead_codes(codebook, unused, latents, max_unused=0)


def test_code_statistics():
    stats = code_statistics(torch.tensor([0, 1, 2, 3]), 8)
    assert stats["usage"] == 0.5 and abs(stats["perplexity"] - 4.0) < 1e-5
    assert code_statistics(torch.zeros(10, dtype=torch.long), 8)["perplexity"] == pytest.approx(1.0)


def test_a_few_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    tok = ImageTokenizer(PRESETS["debug"])
    tok.model.train()
    opt = torch.optim.Adam(tok.model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    unused = torch.zeros(tok.vocab_size, dtype=torch.long)
    pixels = torch.rand(8, 3, 16, 16).round()  # fixed batch: the loss must fall on it
    losses = []
    for step in range(30):
        loss, out, stats = vq_loss(tok, pixels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        update_unused_steps(unused, out.codes)
        if step % 5 == 0:
            reseed_dead_codes(tok.codebook.data, unused, out.latents.detach(), 5, gen)
        losses.append(stats["loss"])
        assert np.isfinite(stats["psnr"])
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
