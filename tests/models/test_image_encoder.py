"""Prompt images read as pixels (model.image_encoder): features reach exactly the prompt's codes, caches
stay exact, batches equal singles, and the trainer, the loader and the pipelines carry the pictures."""

import numpy as np
import pytest
import torch
from PIL import Image

from omnidiff.data.formatting import collate, image_pixels
from omnidiff.diffusion.objectives import DiffusionLossConfig, diffusion_loss
from omnidiff.models.image_encoder import ImageEncoderConfig, image_inputs
from omnidiff.models.presets import preset_config
from omnidiff.models.transformer import Transformer
from omnidiff.sampling import SamplerConfig, generate
from omnidiff.tasks import get_task
from tests.fixtures import tiny_tokenizers

TOKS = tiny_tokenizers()
VOCAB = TOKS.build_vocab()


def model(seed=0):
    torch.manual_seed(seed)
    cfg = preset_config("debug", len(VOCAB), image_encoder={"backbone": "resnet10t", "out_index": 2, "grid": 8,
                                                            "image_size": 32})
    return Transformer(cfg).eval()


def picture(seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))


def caption_prompt(image):
    return get_task("caption").prompt(TOKS, VOCAB, image)


def test_features_change_only_rows_with_an_image_and_only_through_their_codes():
    net = model()
    images = [picture(0), picture(1)]
    prompts = [caption_prompt(im) for im in images]
    t2i = get_task("t2i").prompt(TOKS, VOCAB, "a red circle")
    answer = torch.full((6,), VOCAB.mask_id)
    batch = collate([(prompts[0], answer), (t2i, answer)], VOCAB,
                    pixels=[image_pixels(TOKS, images[0]), None])
    inputs = batch["images"]
    assert inputs.row_image.tolist() == [0, -1] and inputs.start.tolist() == [3, 0]  # after <bos> <caption> <image>
    with torch.no_grad():
        plain = net(batch["tokens"])
        seen = net(batch["tokens"], images=inputs)
        swapped = net(batch["tokens"], images=image_inputs(
            [prompts[1], t2i], [image_pixels(TOKS, images[1]), None], VOCAB))
    assert not torch.allclose(plain[0], seen[0]) and not torch.allclose(seen[0], swapped[0])
    assert torch.equal(plain[1], seen[1]) and torch.equal(seen[1], swapped[1])  # the T2I row reads no pixels


@pytest.mark.parametrize("cache", ["prefix", "none"])
def test_cached_decoding_is_exact_and_batches_equal_singles(cache):
    net = model(1)
    images = [picture(2), picture(3), picture(4)]
    prompts = [caption_prompt(im) for im in images]
    prompts[1] = get_task("vqa").prompt(TOKS, VOCAB, images[1], "what colour is the circle?")  # a longer prompt
    pixels = [image_pixels(TOKS, im) for im in images]
    cfg = SamplerConfig(attention="prefix", cache=cache, steps=8)
    reference = SamplerConfig(attention="prefix", cache="none", steps=8)
    batched = generate(net, prompts, answer_len=8, vocab=VOCAB, config=cfg,
                       images=image_inputs(prompts, pixels, VOCAB)).tokens
    uncached = generate(net, prompts, answer_len=8, vocab=VOCAB, config=reference,
                        images=image_inputs(prompts, pixels, VOCAB)).tokens
    assert torch.equal(batched, uncached)
    for i in range(3):
        single = generate(net, [prompts[i]], answer_len=8, vocab=VOCAB, config=cfg,
                          images=image_inputs([prompts[i]], [pixels[i]], VOCAB)).tokens
        assert torch.equal(single[0], batched[i])
    blind = generate(net, prompts, answer_len=8, vocab=VOCAB, config=cfg).tokens
    assert not torch.equal(blind, batched)  # the pixels are read


def test_a_decode_runs_the_backbone_once_whatever_its_number_of_steps():
    net = model(1)
    calls = []
    net.image_encoder.backbone.register_forward_hook(lambda *_: calls.append(1))
    prompts = [caption_prompt(picture(2)), caption_prompt(picture(3))]
    pixels = [image_pixels(TOKS, picture(2)), image_pixels(TOKS, picture(3))]
    out = generate(net, prompts, answer_len=8, vocab=VOCAB, config=SamplerConfig(attention="prefix", cache="none"),
                   images=image_inputs(prompts, pixels, VOCAB))
    assert out.stats["nfe"] >= 8 and len(calls) == 1


@pytest.mark.parametrize("share_prefix", [True, False])
def test_the_loss_trains_the_backbone_under_complementary_masking(share_prefix):
    net = model(2).train()
    images = [picture(5), picture(6)]
    answers = [torch.tensor([VOCAB.to_global("text", torch.tensor([i + 3]))[0].item()] * 4) for i in range(2)]
    batch = collate([(caption_prompt(im), a) for im, a in zip(images, answers, strict=True)], VOCAB,
                    pixels=[image_pixels(TOKS, im) for im in images])
    cfg = DiffusionLossConfig(attention="prefix", complementary=True, share_prefix=share_prefix,
                              mask_id=VOCAB.mask_id)
    out = diffusion_loss(net, batch, cfg, generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    grads = [p.grad for p in net.image_encoder.backbone.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_bad_inputs_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="timm"):
        Transformer(preset_config("debug", len(VOCAB), image_encoder={"backbone": "no_such_net"}))
    with pytest.raises(ValueError, match="valid keys"):
        ImageEncoderConfig.from_dict({"size": 3})
    prompt = caption_prompt(picture(0))
    with pytest.raises(ValueError, match="needs its pixels"):
        image_inputs([prompt], [None], VOCAB)
    inputs = image_inputs([prompt], [image_pixels(TOKS, picture(0))], VOCAB)
    plain = Transformer(preset_config("debug", len(VOCAB)))
    with pytest.raises(ValueError, match="no image encoder"):
        plain(prompt[None], images=inputs)


def test_train_py_trains_exports_and_the_pipeline_reads_pixels(tmp_path):
    """A caption run with ``model.image_encoder``: batches carry pixels, the export keeps the encoder,
    and the captioning pipeline loaded from it decodes from pixels as well as codes."""
    import subprocess
    import sys
    from pathlib import Path

    from omnidiff.config import load_config
    from omnidiff.models.hf import OmniDiffModel
    from omnidiff.pipelines import CaptioningPipeline
    from omnidiff.training.trainer import train

    root = Path(__file__).resolve().parents[2]
    data = tmp_path / "shapes"
    subprocess.run([sys.executable, "data/build_shapes.py", "--out", str(data), "--num", "40", "--size", "32"],
                   cwd=root, check=True, capture_output=True)
    TOKS.text.save(tmp_path / "text")
    TOKS.image.save(tmp_path / "image")
    cfg = load_config(None, [
        "model.preset=debug", f"tokenizers.text={tmp_path / 'text'}", f"tokenizers.image={tmp_path / 'image'}",
        f"train.out={tmp_path / 'run'}", "train.tensorboard=false", "train.steps=3", "train.eval_every=3",
        "train.eval_batches=1", "train.log_every=1", "data.batch_size=4",
        f"data.tasks=[{{task: caption, path: {data}, answer_len: 12}}]", "model.image_encoder={backbone: resnet10t}"])
    summary = train(cfg)
    assert all(torch.isfinite(torch.tensor(summary["loss_history"])))
    loaded = OmniDiffModel.from_pretrained(summary["model"]).model
    assert loaded.cfg.image_encoder == ImageEncoderConfig(backbone="resnet10t", out_index=2, grid=8, image_size=32)
    pipe = CaptioningPipeline.from_pretrained(summary["model"], tmp_path / "run" / "model" / "tokenizers")
    image = picture(3)
    prompt = pipe.task_impl.prompt(pipe.tokenizers, pipe.vocab, image)
    inputs = pipe.image_inputs([prompt], [image])
    assert inputs is not None and inputs.start.tolist() == [3]
    with torch.no_grad():
        seeing, blind = pipe.model(prompt[None], images=inputs), pipe.model(prompt[None])
    assert not torch.allclose(seeing, blind)  # the exported backbone and projector are loaded and used
    (caption,) = pipe([image], answer_len=12)
    assert isinstance(caption, str)


def test_replace_makes_the_prompt_image_read_from_pixels_alone():
    image = picture(5)
    prompt = caption_prompt(image)
    codes = VOCAB.range("image")
    other = prompt.clone()
    in_image = (prompt >= codes.offset) & (prompt < codes.end)
    other[in_image] = codes.offset + (prompt[in_image] - codes.offset + 7) % codes.size  # other codes, same picture
    inputs = image_inputs([prompt], [image_pixels(TOKS, image)], VOCAB)
    for combine, same in (("replace", True), ("add", False)):
        torch.manual_seed(0)
        net = Transformer(preset_config("debug", len(VOCAB), image_encoder={
            "backbone": "resnet10t", "out_index": 2, "grid": 8, "image_size": 32, "combine": combine})).eval()
        with torch.no_grad():
            a, b = net(prompt[None], images=inputs), net(other[None], images=inputs)
        assert torch.allclose(a, b) == same
    with pytest.raises(ValueError, match="combine must be"):
        ImageEncoderConfig(combine="concat")


def test_grid_positions_give_every_cell_its_row_plus_its_column():
    torch.manual_seed(0)
    net = Transformer(preset_config("debug", len(VOCAB), image_encoder={
        "backbone": "resnet10t", "out_index": 2, "grid": 8, "image_size": 32, "grid_positions": True})).eval()
    encoder = net.image_encoder
    pixels = image_pixels(TOKS, picture(6))[None]
    with torch.no_grad():
        placed = encoder(pixels)
        positions, encoder.positions = encoder.positions, None
        plain = encoder(pixels)
    added = (placed - plain)[0].view(8, 8, -1)  # [row, column, C]
    # factorised: moving one column changes a feature by the same vector on every row
    assert torch.allclose(added[:, 3] - added[:, 0], (added[0, 3] - added[0, 0]).expand(8, -1), atol=1e-6)
    assert torch.allclose(added[5] - added[0], (added[5, 0] - added[0, 0]).expand(8, -1), atol=1e-6)
    assert len({tuple(v.round(decimals=5).tolist()) for v in added.flatten(0, 1)}) == 64  # every cell differs
    assert positions.row.weight.std().item() == pytest.approx(0.02, rel=0.3)  # the transformer's init_std


def test_patch_backbone_gives_each_code_the_pixels_of_its_own_cell_only():
    torch.manual_seed(0)
    net = Transformer(preset_config("debug", len(VOCAB), image_encoder={
        "backbone": "patch", "grid": 8, "image_size": 32})).eval()
    encoder = net.image_encoder
    pixels = image_pixels(TOKS, picture(7))[None]
    changed = pixels.clone()
    changed[0, :, 8:12, 20:24] = -changed[0, :, 8:12, 20:24]  # cell (row 2, column 5) of 4x4-pixel patches
    with torch.no_grad():
        a, b = encoder(pixels)[0], encoder(changed)[0]
    moved = (a - b).abs().amax(-1) > 1e-6
    assert moved.nonzero().flatten().tolist() == [2 * 8 + 5]
    # the backbone is linear in the pixels: colour is a linear read-out of each cell's pre-norm features
    fmap = encoder.backbone(pixels)[0] + encoder.backbone(changed)[0] - 2 * encoder.backbone.embed.proj.bias.view(1, -1, 1, 1)
    assert torch.allclose(fmap, encoder.backbone(pixels + changed)[0] - encoder.backbone.embed.proj.bias.view(1, -1, 1, 1),
                          atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the code grid"):
        Transformer(preset_config("debug", len(VOCAB), image_encoder={"backbone": "patch", "grid": 5,
                                                                      "image_size": 32}))


def test_a_frozen_backbone_gets_no_gradient_and_keeps_its_statistics():
    torch.manual_seed(3)
    cfg = preset_config("debug", len(VOCAB), image_encoder={"backbone": "resnet10t", "out_index": 2, "grid": 8,
                                                            "image_size": 32, "freeze_backbone": True})
    net = Transformer(cfg).train()
    backbone = net.image_encoder.backbone
    assert not backbone.training and net.image_encoder.proj.training  # train() leaves the frozen part in eval
    stats = {k: v.clone() for k, v in backbone.state_dict().items()}
    images = [picture(7), picture(8)]
    answers = [torch.tensor([VOCAB.to_global("text", torch.tensor([i + 3]))[0].item()] * 4) for i in range(2)]
    batch = collate([(caption_prompt(im), a) for im, a in zip(images, answers, strict=True)], VOCAB,
                    pixels=[image_pixels(TOKS, im) for im in images])
    cfg_loss = DiffusionLossConfig(attention="prefix", complementary=True, share_prefix=True, mask_id=VOCAB.mask_id)
    diffusion_loss(net, batch, cfg_loss, generator=torch.Generator().manual_seed(0)).loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in backbone.parameters())
    assert net.image_encoder.proj.weight.grad is not None and float(net.image_encoder.proj.weight.grad.abs().sum()) > 0
    assert all(torch.equal(v, stats[k]) for k, v in backbone.state_dict().items())  # batch-norm stats untouched


def test_freezing_needs_a_pretrained_backbone():
    from omnidiff.config import ModelConfig

    with pytest.raises(ValueError, match="freeze_backbone must be true or false"):
        ImageEncoderConfig.from_dict({"freeze_backbone": "yes"})
    with pytest.raises(ValueError, match="names none"):
        ModelConfig(image_encoder={"backbone": "resnet10t", "freeze_backbone": True})
