"""`Task.needed_answer_len` is exact: the answers `format` makes fit at that length and not one shorter."""

import json

import numpy as np
import pytest

from omnidiff.data.mixing import MixtureConfig, TaskDataConfig, build_mixture_loader, check_task
from omnidiff.tasks import TASKS, get_task
from omnidiff.tasks.base import MIN_TEXT_ANSWER_LEN
from tests.fixtures import tiny_tokenizers
from tests.tasks.stubs import robot_sample, shapes_sample, speech_sample

TOKS = tiny_tokenizers()
VOCAB = TOKS.build_vocab()


def fits_exactly(task: str, sample: dict, needed: int) -> None:
    _, answer = get_task(task).format(sample, TOKS, VOCAB, needed)
    assert answer.numel() == needed and answer[-1] != VOCAB.eos_id  # no <eos> to spare
    with pytest.raises(ValueError, match=f"needs {needed} answer tokens"):
        get_task(task).format(sample, TOKS, VOCAB, needed - 1)


def test_an_image_needs_its_codes_and_the_closing_bracket():
    needed = get_task("t2i").needed_answer_len(TOKS, {})
    assert needed == TOKS.image.tokens_per_image + 1 == 65
    fits_exactly("t2i", shapes_sample(0), needed)


def test_an_action_chunk_needs_the_datasets_horizon():
    assert get_task("vla").needed_answer_len(TOKS, {}) == TOKS.action.horizon * TOKS.action.action_dim + 1 == 17
    needed = get_task("vla").needed_answer_len(TOKS, {"horizon": 6})
    assert needed == 6 * 4 + 1
    fits_exactly("vla", robot_sample(0, horizon=6), needed)


@pytest.mark.parametrize("rate", [16000, 22050])
def test_speech_needs_the_codes_of_the_longest_clip_the_dataset_keeps(rate):
    manifest = {"max_seconds": 0.7, "sample_rate": rate}
    needed = get_task("tts").needed_answer_len(TOKS, manifest)
    longest = speech_sample(0, seconds=0.7)
    longest["wav"] = {"array": np.resize(longest["wav"]["array"], int(0.7 * rate)), "sample_rate": rate}
    fits_exactly("tts", longest, needed)
    assert get_task("tts").needed_answer_len(TOKS, {}) == MIN_TEXT_ANSWER_LEN  # no bound known: checked per sample


@pytest.mark.parametrize("task", ["caption", "vqa", "asr", "text"])
def test_text_answers_are_cut_to_fit(task):
    assert TASKS[task].needed_answer_len(TOKS, {}) == MIN_TEXT_ANSWER_LEN


def test_check_task_and_the_loader_name_the_task_and_both_lengths(tmp_path):
    (tmp_path / "robot").mkdir()
    (tmp_path / "robot" / "manifest.json").write_text(json.dumps({"horizon": 8}))
    spec = TaskDataConfig("vla", str(tmp_path / "robot"), answer_len=32)
    message = "task 'vla' .*answer_len 32 is too short; its answers need 33 tokens.*at least 33"
    with pytest.raises(ValueError, match=message):
        check_task(spec, TOKS)
    with pytest.raises(ValueError, match=message):
        build_mixture_loader(MixtureConfig(tasks=[spec]), TOKS, VOCAB)
    check_task(TaskDataConfig("vla", str(tmp_path / "robot"), answer_len=33), TOKS)
    (tmp_path / "robot" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json is not readable JSON"):
        check_task(spec, TOKS)
