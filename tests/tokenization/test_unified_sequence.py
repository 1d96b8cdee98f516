"""One example of every modality in ONE sequence of global ids, and every part decoded back (docs/design.md)."""

import numpy as np
import torch
from PIL import Image

from tests.fixtures import tiny_tokenizers


def test_all_modalities_share_one_vocabulary_and_come_back():
    toks = tiny_tokenizers()
    vocab = toks.build_vocab()
    text = "a red circle above a blue square"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    t = np.arange(8000) / 16000
    wave = torch.as_tensor((0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))
    chunk = torch.as_tensor(np.random.default_rng(1).uniform(-0.9, 0.9, (4, 4)).astype(np.float32))

    local = {"text": toks.text.encode(text), "image": toks.image.encode(image),
             "audio": toks.audio.encode((wave, 16000)), "action": toks.action.encode(chunk)}
    parts = {m: getattr(toks, m).to_global(vocab, ids) for m, ids in local.items()}
    S = vocab.special
    sequence = torch.cat([torch.tensor([vocab.bos_id]), parts["text"], torch.tensor([S("<image>")]), parts["image"],
                          torch.tensor([S("</image>"), S("<audio>")]), parts["audio"], torch.tensor([S("</audio>"),
                          S("<action>")]), parts["action"], torch.tensor([S("</action>"), vocab.eos_id])])

    # every id belongs to exactly the modality it was encoded from, and ranges never overlap
    modality = [vocab.modality_of(int(i)) for i in sequence]
    for m, ids in parts.items():
        assert all(vocab.modality_of(int(i)) == m for i in ids)
    assert modality.count("special") == 8  # bos, three bracket pairs, eos

    # split the sequence back by its brackets and decode each part
    def between(open_, close):
        a, b = (sequence == S(open_)).nonzero()[0, 0] + 1, (sequence == S(close)).nonzero()[0, 0]
        return sequence[a:b]

    text_ids = sequence[1:(sequence == S("<image>")).nonzero()[0, 0]]
    assert toks.text.decode(toks.text.from_global(vocab, text_ids)) == text
    img_local = toks.image.from_global(vocab, between("<image>", "</image>"))
    assert torch.equal(img_local.reshape(local["image"].shape), local["image"])
    assert toks.image.decode(img_local.reshape(local["image"].shape)).size == (32, 32)
    aud_local = toks.audio.from_global(vocab, between("<audio>", "</audio>"))
    assert torch.equal(aud_local, local["audio"])  # [frames, levels], levels interleaved frame-major
    wave_back, rate = toks.audio.decode(aud_local)
    assert rate == 16000 and abs(len(wave_back) - len(wave)) < 2 * 16000 / toks.audio.frames_per_second
    act_local = toks.action.from_global(vocab, between("<action>", "</action>"))
    back = toks.action.decode(act_local.reshape(4, 4))
    assert (torch.as_tensor(back) - chunk).abs().max() <= toks.action.bin_width.max() / 2 + 1e-6
