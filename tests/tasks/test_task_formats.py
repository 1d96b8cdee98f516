"""Task formatters: sequence layouts of docs/design.md, answer lengths, deterministic choices, bad samples."""

import dataclasses

import numpy as np
import pytest
import torch

from omnidiff.tasks import TASKS, get_task
from tests.tasks.stubs import robot_sample, shapes_sample, speech_sample, stub_tokenizers

TOKS = stub_tokenizers()
VOCAB = TOKS.build_vocab()
S = VOCAB.special


def text_of(ids):
    ids = [int(i) for i in ids if int(i) != VOCAB.eos_id]
    return TOKS.text.decode(VOCAB.to_local("text", torch.tensor(ids)))


def test_every_task_is_in_the_dict_and_aliases_resolve():
    assert sorted(TASKS) == ["asr", "caption", "t2i", "text", "tts", "vla", "vqa"]
    assert get_task("captioning") is TASKS["caption"] and get_task("text_to_image") is TASKS["t2i"]
    with pytest.raises(ValueError, match="available"):
        get_task("painting")


def test_caption_layout():
    sample = {**shapes_sample(3), "__epoch__": 0}
    prefix, answer = get_task("caption").format(sample, TOKS, VOCAB, 40)
    codes = 16  # 32x32 image, 8x8 patches
    assert prefix[:3].tolist() == [VOCAB.bos_id, S("<caption>"), S("<image>")]
    assert prefix[-1] == S("</image>") and prefix.numel() == 3 + codes + 1
    assert VOCAB.modality_of(int(prefix[3])) == "image"
    assert answer.numel() == 40 and answer[-1] == VOCAB.eos_id
    assert text_of(answer) in sample["json"]["captions"]


def test_caption_default_is_the_canonical_caption_every_epoch():
    task = get_task("caption")
    answers = {text_of(task.format({**shapes_sample(3), "__epoch__": e, "__shard__": "x.tar"}, TOKS, VOCAB, 40)[1])
               for e in range(8)}
    assert answers == {shapes_sample(3)["txt"]}


def test_caption_option_must_be_known():
    with pytest.raises(ValueError, match="'captions' must be one of"):
        dataclasses.replace(get_task("caption"), captions="all")


def test_random_caption_choice_is_fixed_per_epoch_and_varies_across_epochs():
    task = dataclasses.replace(get_task("caption"), captions="random")
    seen = set()
    for epoch in range(8):
        sample = {**shapes_sample(3), "__epoch__": epoch, "__shard__": "x.tar"}
        a = task.format(sample, TOKS, VOCAB, 40)[1]
        assert torch.equal(a, task.format(dict(sample), TOKS, VOCAB, 40)[1])
        seen.add(text_of(a))
    assert seen == set(shapes_sample(3)["json"]["captions"])


def test_vqa_layout():
    prefix, answer = get_task("vqa").format({**shapes_sample(1), "__epoch__": 2}, TOKS, VOCAB, 8)
    assert prefix[:3].tolist() == [VOCAB.bos_id, S("<vqa>"), S("<image>")]
    question = text_of(prefix[prefix.tolist().index(S("</image>")) + 1:])
    assert (question, text_of(answer)) in [tuple(p) for p in shapes_sample(1)["json"]["qa"]]
    assert answer.numel() == 8


def test_t2i_layout_unconditional_and_too_short_answer():
    task = get_task("t2i")
    prefix, answer = task.format(shapes_sample(2), TOKS, VOCAB, 20)
    assert prefix[:2].tolist() == [VOCAB.bos_id, S("<t2i>")] and prefix[-1] == S("<image>")
    assert answer.numel() == 20 and answer[16] == S("</image>") and (answer[17:] == VOCAB.eos_id).all()
    assert all(VOCAB.modality_of(int(i)) == "image" for i in answer[:16])
    uncond = type(task)(uncond_prob=1.0).format(shapes_sample(2), TOKS, VOCAB, 20)[0]
    assert uncond.tolist() == [VOCAB.bos_id, S("<t2i>"), S("<uncond>"), S("<image>")]
    with pytest.raises(ValueError, match="needs 17 answer tokens.*answer_len is 10"):
        task.format(shapes_sample(2), TOKS, VOCAB, 10)


def test_asr_and_tts_layout():
    sample = speech_sample(4, seconds=0.2)  # 20 frames x 2 levels
    prefix, answer = get_task("asr").format(sample, TOKS, VOCAB, 12)
    assert prefix[:3].tolist() == [VOCAB.bos_id, S("<asr>"), S("<audio>")] and prefix[-1] == S("</audio>")
    assert prefix.numel() == 3 + 40 + 1 and text_of(answer) == "say 4"
    prefix, answer = get_task("tts").format(sample, TOKS, VOCAB, 48)
    assert prefix[-1] == S("<audio>") and text_of(prefix[2:-1]) == "say 4"
    assert answer[40] == S("</audio>") and (answer[41:] == VOCAB.eos_id).all()
    assert [VOCAB.range_of(int(i)).name for i in answer[:4]] == ["audio_l0", "audio_l1", "audio_l0", "audio_l1"]
    with pytest.raises(ValueError, match="raise answer_len"):
        get_task("tts").format(sample, TOKS, VOCAB, 30)


def test_audio_levels_keep_the_first_codec_levels():
    sample = speech_sample(4, seconds=0.2)  # 20 frames x 2 levels
    full_prefix = get_task("asr").format(sample, TOKS, VOCAB, 12)[0]
    asr = dataclasses.replace(get_task("asr"), audio_levels=1)
    prefix, answer = asr.format(sample, TOKS, VOCAB, 12)
    assert prefix.numel() == 3 + 20 + 1 and text_of(answer) == "say 4"
    assert torch.equal(prefix[3:-1], full_prefix[3:-1:2])  # level 0 of every frame, in order
    tts = dataclasses.replace(get_task("tts"), audio_levels=1)
    answer = tts.format(sample, TOKS, VOCAB, 24)[1]
    assert answer[20] == S("</audio>") and {VOCAB.range_of(int(i)).name for i in answer[:20]} == {"audio_l0"}
    manifest = {"max_seconds": 0.2, "sample_rate": 16000}
    assert tts.needed_answer_len(TOKS, manifest) == 21 and get_task("tts").needed_answer_len(TOKS, manifest) == 41
    for bad in (0, 3):
        with pytest.raises(ValueError, match="audio levels must be an integer from 1 to the codec's 2"):
            dataclasses.replace(get_task("asr"), audio_levels=bad).needed_answer_len(TOKS, {})


def test_vla_layout_with_and_without_proprio():
    sample = {**robot_sample(5), "__epoch__": 1}
    prefix, answer = get_task("vla").format(sample, TOKS, VOCAB, 20)
    assert prefix[:3].tolist() == [VOCAB.bos_id, S("<vla>"), S("<image>")]
    options = ["push the puck"] + sample["json"]["paraphrases"]
    assert text_of(prefix[prefix.tolist().index(S("</image>")) + 1:-1]) in options
    assert prefix[-1] == S("<action>")  # the answer starts at the first action token
    assert answer[16] == S("</action>") and (answer[17:] == VOCAB.eos_id).all()
    chunk = TOKS.action.decode(VOCAB.to_local("action", answer[:16]).view(4, 4))
    assert np.allclose(chunk.numpy(), sample["actions.npy"], atol=1 / 31 + 1e-6)
    with_state = type(get_task("vla"))(use_proprio=True).format(sample, TOKS, VOCAB, 20)[0]
    assert with_state[-7] == S("<proprio>") and with_state[-2] == S("</proprio>") and with_state[-1] == S("<action>")
    with pytest.raises(ValueError, match="no proprio.npy"):
        type(get_task("vla"))(use_proprio=True).format({k: v for k, v in sample.items() if k != "proprio.npy"},
                                                       TOKS, VOCAB, 20)


def test_text_task_keeps_its_layout():
    prefix, answer = get_task("text").format({"txt": "in the beginning was the word"}, TOKS, VOCAB, 40)
    assert prefix[0] == VOCAB.bos_id and text_of(torch.cat([prefix[1:], answer])) == "in the beginning was the word"


def test_missing_member_names_the_sample_and_what_it_has():
    with pytest.raises(ValueError, match=r"s00001 has none of \['png', 'jpg', 'jpeg'\].*members: \['json', 'txt'\]"):
        get_task("caption").format({k: v for k, v in shapes_sample(1).items() if k != "png"}, TOKS, VOCAB, 16)
    with pytest.raises(ValueError, match="no question/answer pairs"):
        get_task("vqa").format({**shapes_sample(1), "json": {}}, TOKS, VOCAB, 16)
