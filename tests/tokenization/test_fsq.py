"""Finite scalar quantisation: ids <-> vectors round trip, the grid agrees with rounding, the image
tokenizer built on it saves, loads and trains, and small wobbles of a latent keep their code."""

import numpy as np
import pytest
import torch
from PIL import Image

from omnidiff.tokenization.fsq import FiniteScalarQuantizer
from omnidiff.tokenization.image import ImageTokenizer, ImageVQConfig, vq_loss

DEBUG_FSQ = dict(image_size=16, unshuffle=2, block_out_channels=(16, 16), latent_channels=8, norm_num_groups=8,
                 quantizer="fsq", fsq_levels=(5, 3, 4), codebook_size=60, vq_embed_dim=3)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/tokenization/conftest.py


def test_every_id_round_trips_and_the_grid_is_the_nearest_code():
    fsq = FiniteScalarQuantizer((5, 3, 4))
    ids = torch.arange(fsq.codebook_size)
    vectors = fsq.vectors(ids)
    assert fsq.codebook_size == 60 and vectors.shape == (60, 3)
    assert vectors.abs().max() <= 1 and len({tuple(v.tolist()) for v in vectors}) == 60
    z = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 3
    z_q, loss, (_, _, flat) = fsq(z)
    assert float(loss) == 0 and torch.equal(fsq.ids(z).reshape(-1), flat)
    assert torch.equal(fsq.get_codebook_entry(flat, (4, 5, 5, 3)), z_q)  # id -> vector is the quantised latent
    nearest = torch.cdist(z_q.permute(0, 2, 3, 1).reshape(-1, 3), fsq.embedding.weight).argmin(1)
    assert torch.equal(nearest, flat)


def test_rounding_passes_gradients_straight_through():
    fsq = FiniteScalarQuantizer((8, 5))
    z = torch.randn(2, 2, 3, 3, requires_grad=True)
    fsq(z)[0].sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_small_wobbles_keep_their_code():
    fsq = FiniteScalarQuantizer((8, 5, 5, 5))
    z = torch.zeros(1, 4, 1, 1) + 0.05
    wobbled = z + 0.02 * torch.randn(64, 4, 1, 1, generator=torch.Generator().manual_seed(1))
    assert fsq.ids(wobbled).unique().numel() == 1


def test_bad_levels_are_refused():
    with pytest.raises(ValueError, match="codebook_size=60 and vq_embed_dim=3"):
        ImageVQConfig(**{**DEBUG_FSQ, "codebook_size": 64})
    with pytest.raises(ValueError, match="each >= 2"):
        ImageVQConfig(**{**DEBUG_FSQ, "fsq_levels": (5, 1, 4)})
    with pytest.raises(ValueError, match="only applies with quantizer: fsq"):
        ImageVQConfig(fsq_levels=(8, 5, 5, 5))
    with pytest.raises(ValueError, match="'vq' or 'fsq'"):
        ImageVQConfig(quantizer="lfq")


def test_fsq_tokenizer_saves_loads_and_learns(tmp_path):
    torch.manual_seed(0)
    tok = ImageTokenizer(ImageVQConfig(**DEBUG_FSQ))
    assert tok.codebook.shape == (60, 3)
    tok.model.train()
    opt = torch.optim.Adam(tok.model.parameters(), lr=3e-3)
    pixels = torch.rand(8, 3, 16, 16).round()
    losses = []
    for _ in range(30):
        loss, out, stats = vq_loss(tok, pixels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(stats["loss"])
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    tok.model.eval()
    tok.save(tmp_path / "fsq")
    again = ImageTokenizer.load(tmp_path / "fsq")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    codes = tok.encode(image)
    assert torch.equal(again.encode(image), codes) and int(codes.max()) < 60
    assert again.decode(codes).size == (16, 16)
