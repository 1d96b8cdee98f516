"""Bad input at the entry points: one ``error:`` line on stderr, exit status 2, nothing written.

``infer.py`` and ``train.py`` run in-process (``main(argv)``) on the shared tiny exported model of
`tests.fixtures.build_multimodal_model`; nothing is trained (every train.py refusal here comes before
the first step). Each class of bad input a user can type has a case: files (images, audio, model and
tokenizer folders, configs), numbers, options, and outputs. A few good-but-unusual inputs (RGBA
images, stereo audio at odd rates) are checked to work.
"""

import pickle
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

import infer
import train
from tests.fixtures import build_multimodal_model, build_text_dataset

FAST = ["--steps", "2", "--strategy", "low_confidence"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_multimodal_model(tmp_path_factory.mktemp("bad_input"))


def png_with_size(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header claims ``width`` x ``height`` (what a decompression bomb looks like)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def wav(path: Path, seconds: float = 0.3, rate: int = 16000, channels: int = 1, subtype: str = "PCM_16") -> Path:
    t = np.arange(int(seconds * rate)) / rate
    wave = np.stack([0.3 * np.sin(2 * np.pi * 220 * (c + 1) * t) for c in range(channels)], 1).astype(np.float32)
    sf.write(path, wave, rate, subtype=subtype)
    return path


def patched(path: Path, offset: int, fmt: str, value: int) -> Path:
    data = bytearray(path.read_bytes())
    data[offset: offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    noisy.save(d / "ok.png")
    (d / "truncated.png").write_bytes((d / "ok.png").read_bytes()[:400])
    Image.new("RGBA", (7, 3), (255, 0, 0, 128)).save(d / "rgba.png")
    (d / "empty.png").write_bytes(b"")
    (d / "text.png").write_text("not a picture")
    (d / "folder.png").mkdir()
    png_with_size(d / "huge.png", 8000, 8000)  # 64 Mpx: over our limit, under PIL's own guard
    png_with_size(d / "bomb.png", 30000, 30000)  # 900 Mpx: PIL's decompression-bomb error
    wav(d / "ok.wav")
    wav(d / "stereo44k.wav", rate=44100, channels=2)
    wav(d / "odd_rate.wav", rate=44099, channels=3)
    (d / "empty.wav").write_bytes(b"")
    (d / "text.wav").write_text("not audio")
    data = wav(d / "cut.wav").read_bytes()
    (d / "truncated.wav").write_bytes(data[: len(data) // 2])
    wav(d / "silent.wav", seconds=0)
    wav(d / "long.wav", seconds=301, rate=1000)
    wav(d / "slow.wav", rate=500)
    patched(wav(d / "fast.wav"), 24, "<I", 50_000_000)  # the header's sample rate
    patched(wav(d / "no_channels.wav"), 22, "<H", 0)  # the header's channel count
    nan = np.full((1600, 1), np.nan, np.float32)
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    return d


def run_infer(capsys, *argv):
    code = infer.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def refused(code, err, message):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line
    assert message in err, err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------------ options and numbers
@pytest.mark.parametrize("argv, message", [
    (["paint"], "unknown task 'paint'"),
    (["caption"], "the 'caption' task needs --image"),
    (["vqa", "--image", "{ok_png}"], "needs --question"),
    (["caption", "--image", "{ok_png}", "--guidance", "2"], "--guidance does not apply to the 'caption' task"),
    (["text", "--prompt", "hi", "--proprio", "1,2,3"], "--proprio does not apply to the 'text' task"),
    (["vla", "--image", "{ok_png}", "--instruction", "go", "--answer-len", "9"], "--answer-len does not apply"),
    (["caption", "--image", "{ok_png}", "--tokenizer", "x"], "--tokenizer does not apply"),
    (["text", "--prompt", "   "], "the prompt is empty"),
    (["vqa", "--image", "{ok_png}", "--question", ""], "the question is empty"),
    (["text", "--prompt", "hi", "--tokenizer", "a", "--tokenizers", "b"], "not both"),
    (["text", "--prompt", "hi", "--strategy", "fastest"], "--strategy 'fastest' is not one of"),
    (["text", "--prompt", "hi", "--bogus"], "unrecognized arguments: --bogus"),
    (["text", "--prompt", "hi", "--steps", "-1"], "argument --steps: must be an integer in [1, 1000000], got '-1'"),
    (["text", "--prompt", "hi", "--steps", "0"], "argument --steps: must be an integer"),
    (["text", "--prompt", "hi", "--steps", "2.5"], "argument --steps: must be an integer, got '2.5'"),
    (["text", "--prompt", "hi", "--steps", "many"], "argument --steps: must be an integer, got 'many'"),
    (["text", "--prompt", "hi", "--answer-len", "0"], "argument --answer-len: must be an integer in [1, 1000000]"),
    (["text", "--prompt", "hi", "--block-len", "-4"], "argument --block-len"),
    (["text", "--prompt", "hi", "--temperature", "nan"], "argument --temperature: must be a finite number, got 'nan'"),
    (["text", "--prompt", "hi", "--temperature", "inf"], "must be a finite number, got 'inf'"),
    (["text", "--prompt", "hi", "--temperature", "-0.5"], "argument --temperature: must be a number in [0, 100]"),
    (["t2i", "--prompt", "a", "--out", "{out_png}", "--guidance", "nan"], "argument --guidance: must be a finite number"),
    (["t2i", "--prompt", "a", "--out", "{out_png}", "--guidance", "1e9"], "argument --guidance: must be a number in"),
    (["text", "--prompt", "hi", "--threshold", "0"], "argument --threshold: must be a number in (0, 1]"),
    (["text", "--prompt", "hi", "--threshold", "1.5"], "argument --threshold: must be a number in (0, 1]"),
    (["text", "--prompt", "hi", "--seed", "-1"], "argument --seed: must be an integer in [0, 4294967295]"),
    (["vla", "--image", "{ok_png}", "--instruction", "go", "--proprio", "a,b"], "must be comma-separated numbers"),
    (["vla", "--image", "{ok_png}", "--instruction", "go", "--proprio", "0,nan,0"], "comma-separated finite numbers"),
    (["text", "--prompt", "hi", "--steps", "4"], "--steps does not apply to the threshold strategy"),
    (["text", "--prompt", "hi", "--strategy", "margin", "--threshold", "0.5"], "--threshold applies to the threshold"),
    (["vla", "--image", "{ok_png}", "--instruction", "go", "--proprio", "0.1,0.2"],
     "the robot state has 2 values but this policy was trained with 3; pass all 3"),
    (["text", "--prompt", "hi", "--answer-len", "5000"], "but the model reads at most 1024 positions"),
    (["t2i", "--prompt", "a", "--out", "{out_dir}/picture.txt"], "cannot write images as .txt; use .png or .jpg"),
    (["tts", "--prompt", "a", "--out", "{out_dir}/speech.mp4"], "cannot write audio as .mp4; use .wav or .flac"),
    (["tts", "--prompt", "a", "--out", "{out_dir}/speech.wav", "--seconds", "0"], "argument --seconds: must be a number"),
    (["tts", "--prompt", "a", "--out", "{out_dir}/speech.wav", "--seconds", "30"], "pass a larger answer_len"),
    (["text", "--prompt", "hi", "--seconds", "1"], "--seconds does not apply to the 'text' task"),
    (["t2i", "--prompt", "a", "--out", "{ok_png}/x.png"], "is a file, not a folder"),
])
def test_infer_refuses_bad_options_and_numbers(model_dir, files, tmp_path, capsys, argv, message):
    names = {"ok_png": files / "ok.png", "out_png": tmp_path / "out" / "x.png", "out_dir": tmp_path / "out"}
    argv = [a.format(**names) for a in argv]
    code, out, err = run_infer(capsys, *argv, "--model", model_dir)
    refused(code, err, message)
    assert out == "" and not (tmp_path / "out").exists()  # nothing printed, nothing written


def test_infer_usage_errors_are_one_line(capsys):
    code, _, err = run_infer(capsys, "text", "--prompt", "hi")  # no --model
    refused(code, err, "the following arguments are required: --model (see infer.py --help)")


# ------------------------------------------------------------------------------------------------ images and audio
@pytest.mark.parametrize("task, name, message", [
    ("caption", "missing.png", "does not exist"),
    ("caption", "folder.png", "is not a file"),
    ("caption", "empty.png", "is empty (0 bytes)"),
    ("caption", "text.png", "is not an image PIL can read"),
    ("vqa", "truncated.png", "is truncated or corrupt"),
    ("caption", "huge.png", "is 8000x8000 pixels (64 Mpx), more than the 50 Mpx accepted; downscale it first"),
    ("vla", "bomb.png", "declares more than 50 Mpx"),
    ("asr", "missing.wav", "does not exist"),
    ("asr", "empty.wav", "is empty (0 bytes)"),
    ("asr", "text.wav", "is not audio soundfile can read"),
    ("asr", "truncated.wav", "truncated WAV: the header declares"),
    ("asr", "silent.wav", "holds no samples"),
    ("asr", "long.wav", "is 301 s long, more than the 300 s accepted; cut it into shorter clips"),
    ("asr", "slow.wav", "has a sample rate of 500 Hz; accepted are 1000 to 384000 Hz"),
    ("asr", "fast.wav", "has a sample rate of 50000000 Hz"),
    ("asr", "no_channels.wav", "Channel count is zero.); pass a WAV, FLAC or OGG recording"),
    ("asr", "nan.wav", "holds NaN or infinite samples"),
])
def test_infer_refuses_bad_media(model_dir, files, capsys, task, name, message):
    media = ["--audio", files / name] if task == "asr" else ["--image", files / name]
    extra = {"vqa": ["--question", "what?"], "vla": ["--instruction", "go", "--proprio", "0,0,0"]}.get(task, [])
    code, out, err = run_infer(capsys, task, "--model", model_dir, *media, *extra)
    refused(code, err, message)


@pytest.mark.parametrize("task, name", [("caption", "rgba.png"), ("asr", "stereo44k.wav"), ("asr", "odd_rate.wav")])
def test_unusual_but_valid_media_work(model_dir, files, capsys, task, name):
    media = ["--audio", files / name] if task == "asr" else ["--image", files / name]
    code, out, err = run_infer(capsys, task, "--model", model_dir, *media, *FAST)
    assert code == 0, err


def test_a_speech_answer_of_a_few_frames_decodes(model_dir, tmp_path, capsys):
    out = tmp_path / "short.wav"  # Griffin-Lim used to crash on fewer frames than its window
    code, _, err = run_infer(capsys, "tts", "--model", model_dir, "--prompt", "hi", "--out", out, "--answer-len", "4",
                             "--steps", "4", "--strategy", "low_confidence")
    assert code == 0, err
    assert sf.info(str(out)).samplerate == 16000


def test_audio_at_any_rate_and_channel_count_is_mixed_down_and_resampled():
    from omnidiff.pipelines.inputs import as_wave
    from omnidiff.tokenization.audio import resample

    stereo = np.stack([np.ones(441, np.float32), -np.ones(441, np.float32) * 0.5], 1)
    wave = as_wave((stereo, 44100))
    assert wave["array"].shape == (441,) and np.allclose(wave["array"], 0.25) and wave["sample_rate"] == 44100
    t = torch.arange(44099) / 44099  # an awkward rate: gcd(44099, 16000) = 1
    out = resample(torch.sin(2 * torch.pi * 300 * t), 44099, 16000)
    assert out.numel() == 16000
    torch.testing.assert_close(out[100:-100], torch.sin(2 * torch.pi * 300 * torch.arange(16000) / 16000)[100:-100],
                               atol=5e-3, rtol=0)
    with pytest.raises(ValueError, match="0 channels"):
        as_wave((np.zeros((100, 0), np.float32), 16000))
    with pytest.raises(ValueError, match="whole number of Hz"):
        as_wave((np.zeros(100, np.float32), 16000.5))


# ------------------------------------------------------------------------------------------------ model folders
def _drop_key(d: Path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / "model.safetensors"))
    state.pop(next(k for k in state if "q_proj" in k))
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})


def _reshape_key(d: Path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / "model.safetensors"))
    key = next(k for k in state if "q_proj" in k)
    state[key] = state[key].reshape(-1)
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})


def _nan_weights(d: Path):
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / "model.safetensors"))
    key = next(k for k in state if "q_proj" in k)
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})


class _Payload:
    """Unpickling this creates the marker file: proof that a pickle was (or was not) loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def _pickle_only(d: Path):
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed.weight": _Payload(d / "UNPICKLED")}))


def _truncate(name: str):
    def damage(d: Path):
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])
    return damage


def _write(name: str, text: str):
    return lambda d: (d / name).write_text(text)


def _delete(name: str):
    return lambda d: shutil.rmtree(d / name) if (d / name).is_dir() else (d / name).unlink()


@pytest.mark.parametrize("damage, message", [
    (_delete("config.json"), "is not a model folder (no config.json)"),
    (_write("config.json", "{broken"), "config.json is not valid JSON"),
    (_write("config.json", '{"model_type": "llama"}'), "is not an OmniDiff model config (model_type 'llama')"),
    (_delete("model.safetensors"), "has a config.json but no model.safetensors: the export is incomplete"),
    (_pickle_only, "holds pickled weights (pytorch_model.bin), which OmniDiff never loads"),
    (_truncate("model.safetensors"), "model.safetensors is not a readable safetensors file"),
    (_write("model.safetensors", "\x10\x00\x00\x00\x00\x00\x00\x00{not json!!!!!!}"), "not a readable safetensors"),
    (_drop_key, "do not match its config.json (missing ['model.layers.0.attn.q_proj.weight'])"),
    (_reshape_key, "do not match its config.json (wrong shapes"),
    (_nan_weights, "hold NaN or infinite values"),
    (_write("omnidiff_generation.json", "{broken"), "generation settings"),
    (_delete("tokenizers"), "no tokenizers for"),
    (_write("tokenizers/tokenizers.json", "[1, 2]"), "must map modalities to sub-folders"),
    (_delete("tokenizers/image"), "holds no image tokenizer"),
    (_truncate("tokenizers/image/model.safetensors"), "image/model.safetensors is not a readable safetensors file"),
    (_truncate("tokenizers/audio/audio_codec.safetensors"), "audio_codec.safetensors is not a readable safetensors"),
    (_write("tokenizers/text/tokenizer.json", "{broken"), "is not a readable BPE"),
    (_write("tokenizers/action/omnidiff_tokenizer.json", "{broken"), "action tokenizer"),
])
def test_infer_refuses_broken_model_folders(model_dir, files, tmp_path, capsys, damage, message):
    broken = tmp_path / "model"
    shutil.copytree(model_dir, broken)
    damage(broken)
    out = tmp_path / "out" / "x.png"
    code, stdout, err = run_infer(capsys, "t2i", "--model", broken, "--prompt", "a red circle", "--out", out, *FAST)
    refused(code, err, message)
    assert not (tmp_path / "out").exists() and not (broken / "UNPICKLED").exists()


def test_a_pickled_checkpoint_is_never_unpickled_by_the_library(tmp_path):
    from omnidiff.models.from_causal_lm import read_checkpoint
    from omnidiff.models.hf import OmniDiffModel

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(tmp_path / "UNPICKLED")))
    with pytest.raises(ValueError, match="pickled weights"):
        read_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "omnidiff", "transformer": {"vocab_size": 8}}')
    with pytest.raises(ValueError, match="pickled weights"):
        OmniDiffModel.from_pretrained(tmp_path)
    assert not (tmp_path / "UNPICKLED").exists()


# ------------------------------------------------------------------------------------------------ outputs
def test_outputs_are_written_whole_or_not_at_all(model_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "images" / "circle.png"
    code, stdout, err = run_infer(capsys, "t2i", "--model", model_dir, "--prompt", "a red circle", "--out", out, *FAST)
    assert code == 0, err
    assert Image.open(out).size == (32, 32) and [p.name for p in out.parent.iterdir()] == ["circle.png"]

    def half_then_fail(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_then_fail)
    failed = tmp_path / "full_disk" / "circle.png"
    code, stdout, err = run_infer(capsys, "t2i", "--model", model_dir, "--prompt", "a circle", "--out", failed, *FAST)
    refused(code, err, "No space left on device")
    assert list(failed.parent.iterdir()) == []  # neither the file nor its temporary copy

    from omnidiff.pipelines import TTSPipeline

    def decoding_fails(self, *args, **kwargs):
        raise ValueError("the decoder gave up")

    monkeypatch.setattr(TTSPipeline, "__call__", decoding_fails)
    speech = tmp_path / "speech" / "hello.wav"
    code, stdout, err = run_infer(capsys, "tts", "--model", model_dir, "--prompt", "hello", "--out", speech, *FAST)
    refused(code, err, "the decoder gave up")
    assert not speech.parent.exists()


# ------------------------------------------------------------------------------------------------ train.py
@pytest.fixture(scope="module")
def recipes(tmp_path_factory):
    d = tmp_path_factory.mktemp("recipes")
    (d / "bad.yaml").write_text("optim: [unclosed\n")
    (d / "list.yaml").write_text("- optim\n- train\n")
    (d / "latin1.yaml").write_bytes(b"train:\n  out: caf\xe9\n")
    (d / "unknown.yaml").write_text("optim:\n  lrr: 0.1\n")
    build_text_dataset(d)  # d / "text": valid data, so each case fails on its own mistake
    return d


@pytest.mark.parametrize("argv, message", [
    (["--config", "{recipes}/missing.yaml"], "config file {recipes}/missing.yaml does not exist"),
    (["--config", "{recipes}"], "is not a file; pass a YAML recipe"),
    (["--config", "{recipes}/bad.yaml"], "is not valid YAML"),
    (["--config", "{recipes}/list.yaml"], "must map sections to settings"),
    (["--config", "{recipes}/latin1.yaml"], "is not UTF-8 text"),
    (["--config", "{recipes}/unknown.yaml"], "unknown config key 'optim.lrr'; did you mean 'lr'?"),
    (["--config"], "argument --config: expected one argument (see train.py --help)"),
    (["--resum"], "unrecognized arguments: --resum"),
    (["optim.lr"], "override 'optim.lr' must look like key.sub=value"),
    (["=3"], "needs a dotted key before '='"),
    (["optim..lr=3"], "needs a dotted key before '='"),
    (["optim.lr=[0.1,"], "is not a YAML value"),
    (["optim.lr=fast"], "optim.lr must be a number, got 'fast'"),
    (["optim.lr=nan"], "optim.lr must be a finite number, got 'nan'"),
    (["optim.lr=.inf"], "optim.lr must be a finite number"),
    (["optim.lr=-1"], "optim.lr must be > 0, got -1.0"),
    (["optim.betas=[0.9]"], "optim.betas must be a list of 2 values"),
    (["optim.betas=[0.9, 1.5]"], "optim.betas must be two numbers in [0, 1)"),
    (["optim.decay=linear"], "optim.decay must be 'cosine' or 'wsd'"),
    (["train.steps=-5"], "train.steps must be >= 1, got -5"),
    (["train.steps=2.5"], "train.steps must be int, got 2.5"),
    (["train.steps=true"], "train.steps must be int, got True"),
    (["train.log_every=0"], "train.log_every must be >= 1"),
    (["distributed.zero_stage=5"], "distributed.zero_stage must be in [0, 3]"),
    (["model.overrides=3"], "model.overrides must be a mapping"),
    (["model.preset=huge"], "unknown model preset 'huge'"),
    (["model.overrides={num_layerz: 3}"], "unknown model override(s) ['num_layerz']"),
    (["data.tasks=[{task: painting, path: x}]"], "unknown task 'painting'"),
    (["data.tasks=[{task: text, path: {recipes}/no_data, answer_len: 16}]"], "no_data does not exist; build it"),
    (["tokenizers.text={recipes}/no_tokenizer"], "holds no text tokenizer"),
    (["data.tasks=[{task: text, path: {recipes}/text, answer_len: 16, start: 0.5}]"],
     "no task with a positive weight starts at once"),
    (["data.tasks=[{task: text, path: {recipes}/text, answer_len: 16, start: 1.5}]"],
     "task start must be a fraction of the run in [0, 1), got [1.5]"),
])
def test_train_refuses_bad_configs_and_writes_nothing(model_dir, recipes, tmp_path, capsys, argv, message):
    run_dir = tmp_path / "run"
    base = [f"tokenizers.text={model_dir / 'tokenizers' / 'text'}", f"train.out={run_dir}", "train.export=false",
            "train.tensorboard=false", f"data.tasks=[{{task: text, path: {recipes / 'text'}, answer_len: 16}}]"]
    code = train.main(base + [a.replace("{recipes}", str(recipes)) for a in argv])  # flags may follow overrides
    _, err = capsys.readouterr()
    refused(code, err, message.replace("{recipes}", str(recipes)))
    assert not run_dir.exists()
