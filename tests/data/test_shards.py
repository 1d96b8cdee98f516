"""Shard reading: exact resume mid-shard, corrupt members skipped and counted, mixing and collation."""

import itertools
import tarfile

import pytest
import torch

from omnidiff.data.mixing import MixtureConfig, TaskDataConfig, build_mixture_loader, collate
from omnidiff.data.shards import ShardStream, split_shards
from omnidiff.tokenization.registry import TokenizerSet
from omnidiff.tokenization.vocab import Vocab
from tests.fixtures import build_text_dataset, build_text_tokenizer


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory):
    return build_text_dataset(tmp_path_factory.mktemp("data"))


def keys(stream, n):
    return [s["__key__"] for s in itertools.islice(iter(stream), n)]


def test_stream_visits_every_sample_once_per_epoch(text_dir):
    stream = ShardStream(split_shards(text_dir, "train"), seed=3)
    first_epoch = keys(stream, 60)
    assert sorted(first_epoch) == sorted(f"train-{i:05d}" for i in range(60))
    assert first_epoch != sorted(first_epoch)  # shuffled
    second = keys(stream, 60)
    assert sorted(second) == sorted(first_epoch) and second != first_epoch  # a new order per epoch


def test_resume_mid_shard_sees_exactly_the_remaining_samples(text_dir):
    shards = split_shards(text_dir, "train")
    straight = keys(ShardStream(shards, seed=5), 100)
    stream = ShardStream(shards, seed=5)
    head = keys(stream, 37)  # stops in the middle of the third shard
    state = stream.state_dict()
    assert state["sample_cursor"] not in (0,)
    resumed = ShardStream(shards, seed=5)
    resumed.load_state_dict(state)
    assert head + keys(resumed, 63) == straight


def test_ranks_read_disjoint_shards(text_dir):
    shards = split_shards(text_dir, "train")
    a = set(keys(ShardStream(shards, rank=0, world_size=2), 30))
    b = set(keys(ShardStream(shards, rank=1, world_size=2), 28))
    assert not a & b


def test_corrupt_member_is_skipped_and_counted(text_dir, tmp_path, caplog):
    bad = tmp_path / "train-000000.tar"
    with tarfile.open(split_shards(text_dir, "train")[0]) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith("train-00003.json"):
                data = b"{not json"
            member.size = len(data)
            import io
            dst.addfile(member, io.BytesIO(data))
    stream = ShardStream([str(bad)], shuffle=False)
    with caplog.at_level("WARNING"):
        got = keys(stream, 15)
    assert "train-00003" not in got and len(set(got)) == 15
    assert stream.skipped == 1
    assert "train-00003" in caplog.text and "train-000000.tar" in caplog.text


def test_truncated_shard_does_not_crash(text_dir, tmp_path):
    src = open(split_shards(text_dir, "train")[0], "rb").read()
    cut = tmp_path / "train-000000.tar"
    cut.write_bytes(src[: len(src) // 2 + 100])
    stream = ShardStream([str(cut)], shuffle=False)
    got = keys(stream, 5)
    assert len(got) == 5 and stream.skipped >= 1


def test_missing_dataset_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="build it with"):
        split_shards(tmp_path / "nope", "train")


def test_collate_left_pads_prefixes_and_marks_answers():
    v = Vocab.build({"text": 10})
    b = collate([(torch.tensor([2, 30]), torch.tensor([31, 3])), (torch.tensor([2, 30, 31, 32]), torch.tensor([33, 3]))], v)
    assert b["tokens"].tolist() == [[0, 0, 2, 30, 31, 3], [2, 30, 31, 32, 33, 3]]
    assert b["padding_mask"][0].tolist() == [False, False, True, True, True, True]
    assert b["answer_mask"].int().argmax(1).tolist() == [4, 4]


def test_mixture_loader_resumes_the_same_batches(text_dir, tmp_path):
    toks = TokenizerSet.load({"text": build_text_tokenizer(tmp_path)})
    vocab = toks.build_vocab()
    cfg = MixtureConfig(tasks=[TaskDataConfig(task="text", path=str(text_dir), answer_len=16)], batch_size=4, seed=1)
    straight = [next(build_mixture_loader(cfg, toks, vocab)) for _ in range(1)]
    loader = build_mixture_loader(cfg, toks, vocab)
    run = [next(loader)["tokens"] for _ in range(9)]
    state = loader.state_dict()
    tail = [next(loader)["tokens"] for _ in range(5)]
    again = build_mixture_loader(cfg, toks, vocab)
    again.load_state_dict(state)
    assert all(torch.equal(a, next(again)["tokens"]) for a in tail)
    assert torch.equal(straight[0]["tokens"], run[0])
    b = straight[0]
    assert (b["tokens"][b["answer_mask"]].view(4, 16)[:, -1] == vocab.eos_id).all()
