"""CTC pretraining of the audio encoder's speech backbone: transcripts are spelled as CTC targets, best-path
decoding merges repeats and drops blanks, training lowers the loss, the written trunk is what a run starts
from (and only a run whose encoder has its shape), and bad input is refused."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from omnidiff.models.audio_encoder import AudioEncoder, AudioEncoderConfig
from omnidiff.models.speech_backbone import SpeechBackboneConfig
from omnidiff.training.ctc_pretrain import CTCReader, load_speech_backbone, main, pretrain, spelling

ROOT = Path(__file__).resolve().parents[2]
needs_engines = pytest.mark.skipif(
    not all(shutil.which(b) for b in ("espeak-ng", "flite", "text2wave")),
    reason="speech synthesisers missing; run `make data-deps`",
)
SMALL = {"channels": 32, "layers": 1, "heads": 2}


def test_transcripts_are_spelled_in_lower_case_letters_digits_and_single_spaces():
    assert spelling("Open the  Drawer, now!") == "open the drawer now"
    assert spelling("It's 5 o'clock.") == "it's 5 o'clock"
    assert spelling("?!") == ""


def test_best_path_merges_repeats_and_drops_blanks():
    reader = CTCReader(SpeechBackboneConfig(**SMALL), alphabet=" ab")
    # classes: 0 blank, 1 ' ', 2 'a', 3 'b'; "a a _ a b _ b ' ' b" -> "aab b", and frames past the clip are ignored
    path = torch.tensor([[2, 2, 0, 2, 3, 0, 3, 1, 3, 2, 2]])
    logp = torch.nn.functional.one_hot(path, 4).float().log()
    assert reader.greedy(logp, torch.tensor([9])) == ["aabb b"]
    targets, lengths = reader.targets(["ab", "b a"])
    assert targets.tolist() == [2, 3, 3, 1, 2] and lengths.tolist() == [2, 3]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctc")
    subprocess.run([sys.executable, "data/build_speech.py", "--out", str(root / "speech"), "--num", "48",
                    "--mix", "digits:1", "--max-seconds", "2.0"], cwd=ROOT, check=True, capture_output=True)
    summary = pretrain(str(root / "speech"), str(root / "enc"), channels=32, layers=1, heads=2, epochs=30, batch=8,
                       lr=3e-3)
    return root, summary


@needs_engines
def test_training_lowers_the_ctc_loss_and_records_error_rates(pretrained):
    root, summary = pretrained
    history = summary["loss_history"]
    assert len(history) == summary["steps"] > 0
    assert sum(history[-5:]) / 5 < 0.6 * sum(history[:5]) / 5
    written = json.loads((root / "enc" / "ctc.json").read_text())
    assert written["backbone"]["channels"] == 32 and set(written["alphabet"]) <= set(" 'abcdefghijklmnopqrstuvwxyz0123456789")
    assert 0 <= written["val_after"]["cer"] and written["val_after"]["examples"]


@needs_engines
def test_the_encoder_starts_from_the_pretrained_trunk_of_its_own_shape(pretrained):
    from safetensors.torch import load_file

    root, _ = pretrained
    encoder = AudioEncoder(AudioEncoderConfig(backbone=SpeechBackboneConfig(**SMALL)), dim=16)
    load_speech_backbone(encoder, root / "enc")
    saved = load_file(str(root / "enc" / "backbone.safetensors"))
    assert all(torch.equal(v, saved[k]) for k, v in encoder.backbone.state_dict().items())
    wider = AudioEncoder(AudioEncoderConfig(backbone=SpeechBackboneConfig(channels=64, layers=1, heads=2)), dim=16)
    with pytest.raises(ValueError, match="other settings"):
        load_speech_backbone(wider, root / "enc")


def test_bad_input_exits_2_with_a_message(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist; build it" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--epochs", "0"]) == 2
    assert "epochs >= 1" in capsys.readouterr().err
    encoder = AudioEncoder(AudioEncoderConfig(backbone=SpeechBackboneConfig(**SMALL)), dim=16)
    with pytest.raises(ValueError, match="ctc_pretrain"):
        load_speech_backbone(encoder, tmp_path / "nothing")
