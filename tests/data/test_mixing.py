"""Multi-task mixing: per-task answer lengths, weights, exact resume with 0 and 2 workers, corrupt images."""

import dataclasses
import itertools
import logging

import pytest
import torch

from omnidiff.data.builder import write_split
from omnidiff.data.mixing import MixtureConfig, TaskDataConfig, build_mixture_loader, collate
from omnidiff.data.shards import ShardStream, split_shards
from omnidiff.tokenization.vocab import Vocab
from tests.tasks.stubs import encode_for_shards, png_bytes, robot_sample, shapes_sample, speech_sample, stub_tokenizers

TOKS = stub_tokenizers()
VOCAB = TOKS.build_vocab()


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    for name, make, n in (("shapes", shapes_sample, 40), ("speech", speech_sample, 24), ("robot", robot_sample, 24)):
        write_split(root / name, "train", (encode_for_shards(make(i)) for i in range(n)), shard_size=8)
    return root


def mixture(root, num_workers=0, **kw):
    tasks = [TaskDataConfig("caption", str(root / "shapes"), weight=3.0, answer_len=24),
             TaskDataConfig("asr", str(root / "speech"), weight=1.0, answer_len=10),
             TaskDataConfig("vla", str(root / "robot"), weight=1.0, answer_len=17)]
    return MixtureConfig(tasks=tasks, batch_size=4, seed=2, num_workers=num_workers, **kw)


def test_batches_follow_the_contract_with_per_task_answer_lengths(datasets):
    loader = build_mixture_loader(mixture(datasets), TOKS, VOCAB)
    lengths = {"caption": 24, "asr": 10, "vla": 17}
    counts = {t: 0 for t in lengths}
    for batch in itertools.islice(loader, 30):
        B, L = batch["tokens"].shape
        assert B == 4 and batch["padding_mask"].shape == batch["answer_mask"].shape == (B, L)
        start = batch["answer_mask"].int().argmax(1)
        assert (start == start[0]).all()  # one answer column for the whole batch
        for row, task in enumerate(batch["tasks"]):
            counts[task] += 1
            assert int(batch["answer_mask"][row].sum()) == lengths[task]
            real = batch["tokens"][row][batch["padding_mask"][row]]
            assert real[0] == VOCAB.bos_id and (batch["tokens"][row][~batch["padding_mask"][row]] == VOCAB.pad_id).all()
            last = VOCAB.special("</action>") if task == "vla" else VOCAB.eos_id  # an exact-fit chunk ends itself
            assert batch["tokens"][row, int(start[row]) + lengths[task] - 1] == last
        assert not (batch["answer_mask"] & ~batch["padding_mask"]).any()
    assert counts["caption"] > 1.8 * counts["asr"] and counts["asr"] > 0 and counts["vla"] > 0


def test_group_by_task_gives_single_task_batches_in_proportion(datasets):
    loader = build_mixture_loader(mixture(datasets, group_by_task=True), TOKS, VOCAB)
    tasks = [set(b["tasks"]) for b in itertools.islice(loader, 40)]
    assert all(len(t) == 1 for t in tasks)
    names = [next(iter(t)) for t in tasks]
    assert names.count("caption") > names.count("asr") and names.count("asr") > 0 and names.count("vla") > 0


def test_tasks_of_one_group_share_batches_and_the_rest_stay_alone(datasets):
    cfg = mixture(datasets, group_by_task=True)
    cfg.tasks[0] = TaskDataConfig("caption", cfg.tasks[0].path, weight=3.0, answer_len=24, group="scenes")
    cfg.tasks.insert(1, TaskDataConfig("vqa", cfg.tasks[0].path, weight=1.0, answer_len=4, group="scenes"))
    tasks = [set(b["tasks"]) for b in itertools.islice(build_mixture_loader(cfg, TOKS, VOCAB), 60)]
    assert all(t <= {"caption", "vqa"} or len(t) == 1 for t in tasks)  # asr and vla batches stay single-task
    assert any(t == {"caption", "vqa"} for t in tasks)  # the group's members meet in one batch
    assert sum(t <= {"caption", "vqa"} for t in tasks) > sum(t == {"asr"} for t in tasks) > 0


@pytest.mark.parametrize("group_by_task,batches_per_step", [(True, 1), (False, 2)])
def test_a_task_joins_at_its_start(datasets, group_by_task, batches_per_step):
    cfg = mixture(datasets, group_by_task=group_by_task, batches_per_step=batches_per_step, steps=20)
    cfg.tasks = [cfg.tasks[0]] + [dataclasses.replace(t, start=0.25) for t in cfg.tasks[1:]]  # step 5 of 20
    tasks = [set(b["tasks"]) for b in itertools.islice(build_mixture_loader(cfg, TOKS, VOCAB), 40)]
    first = 5 * batches_per_step  # the first batch of step 5
    assert all(t == {"caption"} for t in tasks[:first])
    assert set().union(*tasks[first:]) > {"caption"}  # the others are drawn from then on


def test_a_curriculum_must_start_with_something(datasets):
    cfg = mixture(datasets, steps=20)
    cfg.tasks = [dataclasses.replace(t, start=0.1) for t in cfg.tasks]
    with pytest.raises(ValueError, match="starts at once"):
        build_mixture_loader(cfg, TOKS, VOCAB)
    for bad in (-0.1, 1.0):
        cfg.tasks[0] = dataclasses.replace(cfg.tasks[0], start=bad)
        with pytest.raises(ValueError, match=r"start must be a fraction of the run in \[0, 1\)"):
            build_mixture_loader(cfg, TOKS, VOCAB)


def test_without_the_run_length_every_task_starts_at_once(datasets):
    cfg = mixture(datasets)  # steps=0: a loader that is not a run's (the output prior's, a benchmark's)
    cfg.tasks = [cfg.tasks[0]] + [dataclasses.replace(t, start=0.5) for t in cfg.tasks[1:]]
    tasks = set().union(*(b["tasks"] for b in itertools.islice(build_mixture_loader(cfg, TOKS, VOCAB), 12)))
    assert tasks == {"caption", "asr", "vla"}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_stop_and_resume_gives_the_same_batches(datasets, num_workers):
    cfg = mixture(datasets, num_workers=num_workers, shuffle_buffer=12)
    straight = [b["tokens"] for b in itertools.islice(build_mixture_loader(cfg, TOKS, VOCAB), 20)]
    loader = build_mixture_loader(cfg, TOKS, VOCAB)
    head = [next(loader)["tokens"] for _ in range(7)]  # mid-shard, and workers have prefetched beyond
    state = loader.state_dict()
    loader.close()
    resumed = build_mixture_loader(cfg, TOKS, VOCAB)
    resumed.load_state_dict(state)
    tail = [next(resumed)["tokens"] for _ in range(13)]
    assert all(torch.equal(a, b) for a, b in zip(head + tail, straight, strict=True))
    resumed.close()


def test_resume_with_another_worker_count_is_refused(datasets):
    state = build_mixture_loader(mixture(datasets), TOKS, VOCAB).state_dict()
    with pytest.raises(ValueError, match="same number of workers"):
        build_mixture_loader(mixture(datasets, num_workers=2), TOKS, VOCAB).load_state_dict(state)


def test_workers_split_every_group_without_overlap(datasets):
    shards = split_shards(datasets / "shapes", "train")
    w0 = ShardStream(shards, seed=1, shuffle_buffer=16, worker=0, num_workers=2)
    w1 = ShardStream(shards, seed=1, shuffle_buffer=16, worker=1, num_workers=2)
    a = [s["__key__"] for s in itertools.islice(w0, 20)]
    b = [s["__key__"] for s in itertools.islice(w1, 20)]
    assert not set(a) & set(b) and sorted(a + b) == [f"s{i:05d}" for i in range(40)]


def test_shuffle_buffer_mixes_shards_and_resumes_mid_group(datasets):
    shards = split_shards(datasets / "shapes", "train")
    straight = [s["__key__"] for s in itertools.islice(ShardStream(shards, seed=4, shuffle_buffer=20), 50)]
    first_group = {int(k[1:]) // 8 for k in straight[:20]}  # shards the first 20 samples came from
    assert len(first_group) >= 3  # a 20-sample buffer mixes three 8-sample shards
    stream = ShardStream(shards, seed=4, shuffle_buffer=20)
    head = [s["__key__"] for s in itertools.islice(stream, 13)]
    again = ShardStream(shards, seed=4, shuffle_buffer=20)
    again.load_state_dict(stream.state_dict())
    assert head + [s["__key__"] for s in itertools.islice(again, 37)] == straight


def test_corrupt_image_is_skipped_counted_and_logged(tmp_path, caplog):
    samples = [encode_for_shards(shapes_sample(i)) for i in range(10)]
    samples[4]["png"] = png_bytes(shapes_sample(4)["png"])[:60]  # a truncated PNG
    samples[7]["json"] = b"{broken"
    write_split(tmp_path / "bad", "train", iter(samples), shard_size=10)
    cfg = MixtureConfig(tasks=[TaskDataConfig("caption", str(tmp_path / "bad"), answer_len=24)], batch_size=4)
    loader = build_mixture_loader(cfg, TOKS, VOCAB)
    with caplog.at_level(logging.WARNING):
        batches = [next(loader) for _ in range(2)]  # 8 good samples = one epoch
    assert loader.skipped == 2 and all(b["tokens"].shape[0] == 4 for b in batches)
    assert "s00004" in caplog.text and "s00007" in caplog.text and "train-000000.tar" in caplog.text


def test_truncated_wav_is_skipped_counted_and_logged(tmp_path, caplog):
    samples = [encode_for_shards(speech_sample(i)) for i in range(6)]
    samples[2]["wav"] = samples[2]["wav"][: len(samples[2]["wav"]) // 2]  # header intact, audio cut
    write_split(tmp_path / "speech", "train", iter(samples), shard_size=6)
    stream = ShardStream(split_shards(tmp_path / "speech", "train"), shuffle=False)
    with caplog.at_level(logging.WARNING):
        got = [s["__key__"] for s in itertools.islice(stream, 5)]
    assert got == ["a00000", "a00001", "a00003", "a00004", "a00005"] and stream.skipped == 1
    assert "a00002" in caplog.text and "truncated WAV" in caplog.text


def test_bad_mixtures_are_clear_errors(datasets):
    with pytest.raises(ValueError, match="weights"):
        build_mixture_loader(MixtureConfig(tasks=[TaskDataConfig("caption", str(datasets / "shapes"), weight=0)]),
                             TOKS, VOCAB)
    with pytest.raises(ValueError, match="needs the \\['audio'\\]"):
        build_mixture_loader(mixture(datasets), type(TOKS)(text=TOKS.text, image=TOKS.image, action=TOKS.action), VOCAB)
    with pytest.raises(FileNotFoundError, match="build it with"):
        build_mixture_loader(MixtureConfig(tasks=[TaskDataConfig("caption", str(datasets / "nope"))]), TOKS, VOCAB)


def test_collate_starts_answers_at_a_multiple_of_prefix_multiple():
    vocab = Vocab.build({"text": 16})
    batch = collate([(torch.tensor([2, 5, 6]), torch.tensor([7, 8])), (torch.tensor([2]), torch.tensor([9, 10]))],
                    vocab, prefix_multiple=4)
    assert batch["tokens"].shape == (2, 6) and batch["answer_mask"][:, 4:].all() and not batch["answer_mask"][:, :4].any()
    assert batch["tokens"][0].tolist() == [vocab.pad_id, 2, 5, 6, 7, 8]


def test_unknown_task_options_are_named_even_for_a_task_without_options():
    from omnidiff.data.mixing import configured_task

    with pytest.raises(ValueError, match=r"task 'text' has no options \['audio_levels'\]; allowed: none"):
        configured_task(TaskDataConfig(task="text", options={"audio_levels": 2}))
    with pytest.raises(ValueError, match=r"task 'asr' has no options \['levels'\]; allowed: \['audio_levels'\]"):
        configured_task(TaskDataConfig(task="asr", options={"levels": 2}))
