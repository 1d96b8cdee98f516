"""What a user hands the pipelines: image and audio files read with limits, and audio arrays checked.

`load_image` opens any image PIL reads and refuses files that are missing, empty, truncated or larger
than `MAX_IMAGE_PIXELS` (checked from the header, before the pixels are decoded: PIL's
decompression-bomb guard, with a lower limit and a clear message). `load_audio` reads what soundfile
reads, refuses truncated WAVs, empty or over-long recordings and impossible formats (no channels, a
rate outside `MIN_SAMPLE_RATE`..`MAX_SAMPLE_RATE`) from the header, and mixes channels down to mono
block by block. `as_wave` applies the same checks to audio already in memory; the audio tokenizer
resamples to its own rate. Every refusal is a `ValueError` (`FileNotFoundError` for a missing file)
that says what to do.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

MAX_IMAGE_PIXELS = 50_000_000
MAX_AUDIO_SECONDS = 300.0
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 384_000
MAX_CHANNELS = 64
_HEADER_BYTES = 1 << 16


def _input_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {path} is not a file; pass the path of one {what}")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty (0 bytes); pass a complete file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{what} {path} cannot be read (permission denied); check its permissions")
    return path


def check_image_size(size: tuple[int, int], where: str = "the image") -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"{where} has no pixels ({width}x{height}); pass a real picture")
    if width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"{where} is {width}x{height} pixels ({width * height / 1e6:.0f} Mpx), more than the "
                         f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx accepted; downscale it first (the model sees it resized "
                         "to its tokenizer's size anyway)")


def load_image(path: str | Path):
    """The RGB PIL image in ``path``."""
    from PIL import Image, UnidentifiedImageError

    path = _input_file(path, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                check_image_size(im.size, f"image {path}")
                im.load()  # decode now: a truncated file fails here, not inside the tokenizer
                return im.convert("RGB")
    except UnidentifiedImageError:
        raise ValueError(f"{path} is not an image PIL can read; pass a PNG, JPEG, BMP or WebP file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValueError(f"image {path} declares more than {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx (a decompression "
                         "bomb or a huge scan); downscale it first") from None
    except (OSError, SyntaxError) as err:  # PIL's errors for data that ends early or does not decode
        raise ValueError(f"image {path} is truncated or corrupt ({err}); export or download it again") from None


def check_audio_format(channels: int, sample_rate, frames: int, where: str = "the audio") -> None:
    """Refuse what cannot be speech: no channels, an impossible rate, no samples or too many."""
    if not isinstance(sample_rate, int | np.integer) or isinstance(sample_rate, bool):
        if isinstance(sample_rate, float | np.floating) and float(sample_rate).is_integer():
            sample_rate = int(sample_rate)
        else:
            raise ValueError(f"{where}: the sample rate must be a whole number of Hz, got {sample_rate!r}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise ValueError(f"{where} has a sample rate of {sample_rate} Hz; accepted are {MIN_SAMPLE_RATE} to "
                         f"{MAX_SAMPLE_RATE} Hz (the header may be damaged)")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"{where} has {channels} channels; pass a recording with 1 to {MAX_CHANNELS} channels")
    if frames <= 0:
        raise ValueError(f"{where} holds no samples; pass a non-empty recording")
    seconds = frames / sample_rate
    if seconds > MAX_AUDIO_SECONDS:
        raise ValueError(f"{where} is {seconds:.0f} s long, more than the {MAX_AUDIO_SECONDS:.0f} s accepted; "
                         "cut it into shorter clips")


def as_wave(item) -> dict:
    """``{"array": float32 [T], "sample_rate": int}`` of mono audio, from the same dict or a
    ``(wave, sample_rate)`` tuple; a 2-D wave is ``[T, channels]`` (soundfile's layout) and is averaged
    down to mono."""
    if isinstance(item, dict) and "array" in item and "sample_rate" in item:
        wave, rate = item["array"], item["sample_rate"]
    elif isinstance(item, tuple) and len(item) == 2:
        wave, rate = item
    else:
        raise ValueError("audio must be {'array': float32 [T], 'sample_rate': int} or a (wave, sample_rate) tuple; "
                         "read WAV files with omnidiff.pipelines.inputs.load_audio")
    try:
        wave = np.asarray(wave, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"the audio array must hold numbers, got {type(wave).__name__}") from None
    if wave.ndim == 1:
        wave = wave[:, None]
    if wave.ndim != 2:
        raise ValueError(f"audio must be [T] or [T, channels], got shape {wave.shape}")
    check_audio_format(wave.shape[1], rate, wave.shape[0])
    if not np.isfinite(wave).all():
        raise ValueError("the audio holds NaN or infinite samples; pass a clean recording")
    return {"array": np.ascontiguousarray(wave.mean(axis=1), dtype=np.float32), "sample_rate": int(rate)}


def load_audio(path: str | Path) -> dict:
    """``{"array": float32 [T], "sample_rate": int}``: the recording in ``path``, mixed down to mono."""
    import soundfile as sf

    from omnidiff.data.shards import check_wav_length

    path = _input_file(path, "audio file")
    with open(path, "rb") as f:
        head = f.read(_HEADER_BYTES)
    try:
        check_wav_length(head, path.stat().st_size)
    except ValueError as err:
        raise ValueError(f"audio file {path}: {err}; the file is cut short, export it again") from None
    try:
        info = sf.info(str(path))
        check_audio_format(info.channels, info.samplerate, info.frames, f"audio file {path}")
        blocks = [block.mean(axis=1) for block in sf.blocks(str(path), blocksize=1 << 16, dtype="float32",
                                                             always_2d=True)]
    except sf.SoundFileError as err:
        raise ValueError(f"{path} is not audio soundfile can read ({err}); pass a WAV, FLAC or OGG recording") from None
    wave = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if wave.size == 0:
        raise ValueError(f"audio file {path} holds no samples; pass a non-empty recording")
    if not np.isfinite(wave).all():
        raise ValueError(f"audio file {path} holds NaN or infinite samples; pass a clean recording")
    return {"array": np.ascontiguousarray(wave, dtype=np.float32), "sample_rate": int(info.samplerate)}
