"""Action tokenizer: round-trip error within half a bin, clipping, exact gripper, proprio, persistence, vocab layout."""

import io
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from omnidiff.data.builder import write_split
from omnidiff.tokenization.action import CONFIG_NAME, ActionTokenizer
from omnidiff.tokenization.base import Tokenizer, register
from omnidiff.tokenization.vocab import Vocab


def robot_like_actions(n: int = 2000, seed: int = 0) -> np.ndarray:
    """[n, 4]: three continuous dims of different scales and a ±1 gripper (like MetaWorld's xyz + grip)."""
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(n, 3)) * np.array([0.5, 2.0, 0.05])
    grip = np.where(rng.random(n) > 0.4, 1.0, -1.0)
    return np.concatenate([xyz, grip[:, None]], axis=1).astype(np.float32)


def proprio_like(n: int = 2000, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 5)) * np.array([0.1, 0.1, 0.1, 1.0, 30.0]) + np.array([0, 0.6, 0.2, 0, 100])).astype(
        np.float32)


@pytest.fixture(scope="module")
def tok() -> ActionTokenizer:
    return ActionTokenizer.fit(robot_like_actions(), proprio_like(), horizon=8, bins=256, gripper_dims=[3])


def test_satisfies_protocol_and_fits_percentiles(tok):
    assert isinstance(tok, Tokenizer)
    assert tok.modality == "action" and tok.vocab_ranges() == {"action": 256} and tok.vocab_size == 256
    acts = robot_like_actions().astype(np.float64)
    np.testing.assert_allclose(tok.stats.low[:3], np.percentile(acts[:, :3], 1, axis=0), rtol=1e-6)
    np.testing.assert_allclose(tok.stats.high[:3], np.percentile(acts[:, :3], 99, axis=0), rtol=1e-6)
    assert tok.stats.gripper_open == [-1.0] and tok.stats.gripper_closed == [1.0]
    assert tok.tokens_per_chunk == 32 and tok.bin_width.shape == (4,) and float(tok.bin_width[3]) == 0.0


def test_round_trip_error_is_at_most_half_a_bin_inside_the_range(tok):
    rng = np.random.default_rng(5)
    low, high = np.array(tok.stats.low), np.array(tok.stats.high)
    chunk = rng.uniform(low, high, size=(500, 4)).astype(np.float32)
    chunk[:, 3] = np.where(chunk[:, 3] > 0, 1.0, -1.0)
    chunk[0, :3], chunk[1, :3] = low[:3], high[:3]  # the edges too
    ids = tok.encode(torch.from_numpy(chunk))
    assert ids.dtype == torch.long and ids.shape == (500, 4) and int(ids.min()) >= 0 and int(ids.max()) < 256
    back = tok.decode(ids)
    assert back.dtype == torch.float32 and back.shape == (500, 4)
    err = (back - torch.from_numpy(chunk)).abs().max(dim=0).values
    half = tok.bin_width / 2
    assert (err[:3] <= half[:3] * (1 + 1e-4) + 1e-7).all(), (err, half)
    assert (err[:3] > half[:3] * 0.9).all()  # and the bound is tight: the bins are really that wide
    assert torch.equal(back[:, 3], torch.from_numpy(chunk[:, 3]))  # gripper exact


def test_values_outside_the_range_are_clipped_to_the_edge_bins(tok):
    low, high = torch.tensor(tok.stats.low), torch.tensor(tok.stats.high)
    chunk = torch.stack([low - 10.0, high + 10.0]).float()
    chunk[:, 3] = torch.tensor([-1.0, 1.0])
    ids = tok.encode(chunk)
    assert ids[0, :3].tolist() == [0, 0, 0] and ids[1, :3].tolist() == [255, 255, 255]
    back = tok.decode(ids)
    assert torch.allclose(back[0, :3], (low + tok.bin_width.double() / 2)[:3].float())
    assert torch.allclose(back[1, :3], (high - tok.bin_width.double() / 2)[:3].float())


def test_gripper_uses_threshold_and_decodes_fitted_values():
    acts = np.array([[0.0, 0.2], [1.0, 0.9], [2.0, 0.1], [3.0, 0.8]], dtype=np.float32)
    tok = ActionTokenizer.fit(acts, horizon=2, bins=16, gripper_dims=[1], gripper_threshold=0.5)
    ids = tok.encode(torch.tensor([[1.5, 0.49], [1.5, 0.51]]))
    assert ids[:, 1].tolist() == [0, 15]
    # the lower median of each side: a value that was really sent, not an average of two
    assert tok.decode(ids)[:, 1].tolist() == pytest.approx([0.1, 0.8])


def test_flat_decode_is_time_major(tok):
    chunk = torch.from_numpy(robot_like_actions(8, seed=3))
    ids = tok.encode(chunk)
    assert torch.equal(tok.decode(ids.reshape(-1)), tok.decode(ids))
    assert torch.equal(ids.reshape(-1)[:4], ids[0])


def test_proprio_round_trip(tok):
    state = proprio_like(50, seed=9)
    low, high = np.array(tok.stats.proprio_low), np.array(tok.stats.proprio_high)
    state = np.clip(state, low, high)
    ids = tok.encode_proprio(torch.from_numpy(state[0]))
    assert ids.shape == (5,) and ids.dtype == torch.long
    back = tok.decode_proprio(tok.encode_proprio(torch.from_numpy(state)))
    err = (back - torch.from_numpy(state)).abs().max(dim=0).values
    assert (err <= tok.proprio_bin_width / 2 * (1 + 1e-4) + 1e-5).all()
    with pytest.raises(ValueError, match=r"shape \[5\]"):
        tok.encode_proprio(torch.zeros(4))


def test_proprio_without_statistics_is_a_clear_error():
    tok = ActionTokenizer.fit(robot_like_actions(100), horizon=4)
    with pytest.raises(ValueError, match="no proprio statistics"):
        tok.encode_proprio(torch.zeros(5))


def test_save_load_identical(tok, tmp_path):
    tok.save(tmp_path / "act")
    payload = json.loads((tmp_path / "act" / CONFIG_NAME).read_text())
    assert payload["modality"] == "action" and payload["config"]["bins"] == 256
    again = ActionTokenizer.load(tmp_path / "act")
    assert again.stats == tok.stats and again.config == tok.config
    chunk = torch.from_numpy(robot_like_actions(64, seed=11))
    assert torch.equal(again.encode(chunk), tok.encode(chunk))
    assert torch.equal(again.decode(tok.encode(chunk)), tok.decode(tok.encode(chunk)))
    with pytest.raises(FileNotFoundError, match="fit_action_bins"):
        ActionTokenizer.load(tmp_path / "missing")


def test_vocab_global_round_trip(tok):
    vocab = Vocab()
    vocab.add_range("text", 300)
    register(vocab, tok)
    ids = tok.encode(torch.from_numpy(robot_like_actions(8, seed=4)))
    glob = tok.to_global(vocab, ids)
    assert glob.shape == (32,) and all(vocab.modality_of(int(g)) == "action" for g in glob)
    assert torch.equal(glob, ids.reshape(-1) + vocab.range("action").offset)
    assert torch.equal(tok.from_global(vocab, glob), ids)
    with pytest.raises(ValueError, match="multiple of 4"):
        tok.from_global(vocab, glob[:6])


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(8, 3), r"shape \[H, 4\]"),
    (torch.zeros(8), r"shape \[H, 4\]"),
    (torch.tensor([[0.0, float("nan"), 0.0, 1.0]]), "NaN"),
])  # fmt: skip
def test_encode_refuses_bad_chunks(tok, bad, match):
    with pytest.raises(ValueError, match=match):
        tok.encode(bad)


def test_decode_refuses_bad_ids(tok):
    with pytest.raises(ValueError, match=r"in \[0, 256\)"):
        tok.decode(torch.tensor([[0, 1, 2, 256]]))
    with pytest.raises(ValueError, match=r"in \[0, 256\)"):
        tok.decode(torch.tensor([[0, -1, 2, 3]]))
    with pytest.raises(ValueError, match="multiple of 4"):
        tok.decode(torch.arange(10))
    with pytest.raises(ValueError, match="integer"):
        tok.decode(torch.zeros(2, 4))


def test_fit_refuses_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        ActionTokenizer.fit(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        ActionTokenizer.fit(np.zeros(5))
    with pytest.raises(ValueError, match="gripper dim 7"):
        ActionTokenizer.fit(np.zeros((5, 4)), gripper_dims=[7])
    with pytest.raises(ValueError, match="bins"):
        ActionTokenizer.fit(np.zeros((5, 4)), bins=1)


def test_constant_dimension_decodes_to_its_value():
    acts = np.stack([np.linspace(-1, 1, 50), np.full(50, 0.25)], axis=1)
    tok = ActionTokenizer.fit(acts, bins=32)
    back = tok.decode(tok.encode(torch.tensor([[0.0, 0.25], [0.5, 0.25]])))
    assert back[:, 1].tolist() == [0.25, 0.25]


def test_fit_script_reads_robot_shards_and_reports_half_bin_errors(tmp_path):
    def npy(array):
        buf = io.BytesIO()
        np.save(buf, array)
        return buf.getvalue()

    acts, state = robot_like_actions(300, seed=2), proprio_like(300, seed=3)[:, :4]
    for split, rows in (("train", range(0, 250)), ("val", range(250, 300))):
        samples = [{"__key__": f"{split}-{i:05d}", "actions.npy": npy(acts[i: i + 1].repeat(3, axis=0)),
                    "proprio.npy": npy(state[i]), "json": {"task": "push-v3", "step": i}} for i in rows]
        write_split(tmp_path / "robot", split, samples, shard_size=100)
    root = Path(__file__).resolve().parents[2]
    main = runpy.run_path(str(root / "tokenizers" / "fit_action_bins.py"), run_name="fit_action_bins")["main"]
    report = main(["--data", str(tmp_path / "robot"), "--out", str(tmp_path / "tok"), "--bins", "64"])
    assert report["train_steps"] == 250 and report["settings"]["horizon"] == 3 and report["settings"]["bins"] == 64
    for split in ("train", "val"):
        assert max(report[split]["actions"]["max_error_inside_over_bin_width"]) <= 0.5 + 1e-3
        assert max(report[split]["proprio"]["max_error_inside_over_bin_width"]) <= 0.5 + 1e-3
    tok = ActionTokenizer.load(tmp_path / "tok")
    assert tok.bins == 64 and tok.horizon == 3 and tok.proprio_dim == 4
    np.testing.assert_allclose(tok.stats.low, np.percentile(acts[:250].astype(np.float64), 1, axis=0), rtol=1e-6)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "tok2")])
