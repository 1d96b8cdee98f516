"""Audio tokenizer: a learned mel-domain residual-VQ codec for 16 kHz speech, decoded with Griffin-Lim.

Why this design (measured here, see docs/benchmarks/audio_tokenizer.md): log-mel + Griffin-Lim
loses no Whisper accuracy on synthetic speech, so the codec only has to keep the log-mel
spectrogram. A small conv encoder halves the mel frame rate (62.5 -> 31.25 frames/s), a residual
VQ with ``levels`` codebooks quantises each latent frame, and a conv decoder predicts the log-mel
back. At 8 levels this is 250 tokens/s. Codebooks are EMA-updated, k-means initialised from
encoder outputs, and codes unused for ``reseed_every`` steps are re-seeded from current residuals
(without that, most codes die early).

Ids: `encode((wave [T], sample_rate))` -> LongTensor ``[frames, levels]`` of local ids; level
``l`` owns the `Vocab` range ``"audio.l"`` (one range per level, so the model sees which level a
position holds from the id itself). `to_global` lays frames out frame-major with levels
interleaved (f0l0, f0l1, ..., f1l0, ...), so a prefix of the sequence is a prefix in time.

Saved as ``audio_codec.safetensors`` (weights, codebooks, mel statistics) + ``omnidiff_tokenizer.json``
(``{"modality": "audio", "kind": "mel_rvq", "config": {...}}``).

Shape legend: B batch, M mel bins, T mel frames, F code frames (T / downsample), D latent dim,
N flattened vectors, L levels, K codebook size.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.files import load_weights, read_json
from omnidiff.strict import from_known_keys
from omnidiff.tokenization.code_cache import encode_through
from omnidiff.tokenization.vocab import Vocab

CONFIG_NAME = "omnidiff_tokenizer.json"
WEIGHTS_NAME = "audio_codec.safetensors"
LOG_FLOOR = 1e-5
MAX_RESAMPLE_KERNEL = 1 << 20  # (rate / gcd) x (target / gcd) taps torchaudio may build for an exact resample


def resample(wave_T: torch.Tensor, rate: int, target: int) -> torch.Tensor:
    """A mono wave at ``rate`` Hz resampled to ``target`` Hz (``torchaudio.functional.resample``).

    torchaudio's exact polyphase kernel has (rate / g) x (target / g) taps for g = gcd(rate, target):
    tiny for 44.1 or 48 kHz, but gigabytes for an awkward rate such as 44099 Hz. Such a wave is first
    interpolated linearly up to the next multiple of ``target`` (upsampling, so nothing aliases),
    from which the exact kernel is small. Either way the output has ceil(T * target / rate) samples.
    """
    import torchaudio.functional as AF

    if rate == target:
        return wave_T
    g = math.gcd(rate, target)
    if (rate // g) * (target // g) > MAX_RESAMPLE_KERNEL:
        up = -(-rate // target) * target
        length = -(-wave_T.numel() * up // rate)
        position = torch.arange(length, dtype=torch.float64) * (rate / up)  # output sample i sits at i / up s
        left = position.floor().long().clamp(max=wave_T.numel() - 1)
        right = (left + 1).clamp(max=wave_T.numel() - 1)
        frac = (position - left).to(wave_T.dtype)
        wave_T = wave_T[left] * (1 - frac) + wave_T[right] * frac
        rate = up
    return AF.resample(wave_T, rate, target)


@dataclass
class AudioCodecConfig:
    """Settings of the mel RVQ codec (saved with the weights)."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    downsample: int = 2  # mel frames per code frame
    channels: int = 128
    blocks: int = 2  # residual blocks on each side of the resampling layer
    latent_dim: int = 128
    levels: int = 8
    codebook_size: int = 1024
    ema_decay: float = 0.99
    commitment: float = 0.25
    reseed_every: int = 50  # training steps between dead-code re-seeding
    griffin_lim_iters: int = 48

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "channels", "latent_dim", "levels",
                     "codebook_size", "reseed_every", "griffin_lim_iters"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"AudioCodecConfig.{name} must be a positive integer, got {value!r}")
        if self.downsample not in (1, 2, 4):
            raise ValueError(f"AudioCodecConfig.downsample must be 1, 2 or 4, got {self.downsample!r}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"AudioCodecConfig.ema_decay must be in (0, 1), got {self.ema_decay!r}")

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length / self.downsample

    @classmethod
    def from_dict(cls, d: dict) -> AudioCodecConfig:
        return from_known_keys(cls, d, "audio codec settings")


class ResBlock(nn.Module):
    """Dilated conv -> GELU -> 1x1 conv, added to the input."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x_BCT: torch.Tensor) -> torch.Tensor:
        return x_BCT + self.mix(F.gelu(self.conv(F.gelu(x_BCT))))


def _blocks(channels: int, count: int) -> list[nn.Module]:
    return [ResBlock(channels, 3 ** (i % 3)) for i in range(count)]


class ResidualVQ(nn.Module):
    """``levels`` EMA codebooks; level l quantises what levels < l left over."""

    def __init__(self, levels: int, size: int, dim: int, decay: float, reseed_every: int):
        super().__init__()
        self.levels, self.size, self.dim, self.decay, self.reseed_every = levels, size, dim, decay, reseed_every
        self.register_buffer("codebooks", torch.randn(levels, size, dim) * 0.1)
        self.register_buffer("ema_count", torch.ones(levels, size))
        self.register_buffer("ema_sum", self.codebooks.clone())
        self.register_buffer("hits", torch.zeros(levels, size))  # uses since the last re-seed
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    @staticmethod
    def _nearest(x_ND: torch.Tensor, codebook_KD: torch.Tensor) -> torch.Tensor:
        dist_NK = x_ND.pow(2).sum(1, keepdim=True) - 2 * x_ND @ codebook_KD.T + codebook_KD.pow(2).sum(1)[None]
        return dist_NK.argmin(1)

    @torch.no_grad()
    def kmeans_init(self, z_ND: torch.Tensor, iters: int = 10, seed: int = 0) -> None:
        """Fit each level's codebook by k-means to the residual left by the levels before it."""
        if z_ND.shape[0] < self.size:
            raise ValueError(f"k-means init needs at least codebook_size={self.size} vectors, got {z_ND.shape[0]}")
        gen = torch.Generator().manual_seed(seed)
        residual = z_ND.detach().float().clone()
        for level in range(self.levels):
            centres = residual[torch.randperm(residual.shape[0], generator=gen)[: self.size]].clone()
            for _ in range(iters):
                codes = self._nearest(residual, centres)
                counts = torch.bincount(codes, minlength=self.size).float()
                sums = torch.zeros_like(centres).index_add_(0, codes, residual)
                empty = counts == 0
                centres = torch.where(empty[:, None], centres, sums / counts.clamp_min(1)[:, None])
                if empty.any():  # restart empty clusters on random points
                    centres[empty] = residual[torch.randint(residual.shape[0], (int(empty.sum()),), generator=gen)]
            self.codebooks[level] = centres
            self.ema_sum[level] = centres
            self.ema_count[level] = 1.0
            residual -= centres[self._nearest(residual, centres)]
        self.hits.zero_()

    def lookup(self, codes_NL: torch.Tensor) -> torch.Tensor:
        """Sum of the chosen code vectors over levels: ``[N, L]`` -> ``[N, D]``."""
        return sum(self.codebooks[level][codes_NL[:, level]] for level in range(codes_NL.shape[1]))

    def forward(self, z_ND: torch.Tensor, update: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise ``z``: (straight-through quantised z, codes ``[N, L]``, commitment loss).

        With ``update`` (training) the codebooks move by EMA towards their assigned residuals and,
        every ``reseed_every`` calls, codes nobody used since the last re-seed jump to random residuals.
        """
        residual = z_ND
        quantised = torch.zeros_like(z_ND)
        codes, commit = [], z_ND.new_zeros(())
        for level in range(self.levels):
            flat = residual.detach()
            idx = self._nearest(flat, self.codebooks[level])
            if update:
                self._ema_update(level, flat, idx)
            q = self.codebooks[level][idx]
            commit = commit + F.mse_loss(residual, q.detach())
            quantised = quantised + q
            residual = residual - q.detach()
            codes.append(idx)
        if update:
            self.steps += 1
            if int(self.steps) % self.reseed_every == 0:
                self._reseed(z_ND.detach())
        straight_through = z_ND + (quantised - z_ND).detach()
        return straight_through, torch.stack(codes, 1), commit

    @torch.no_grad()
    def _ema_update(self, level: int, x_ND: torch.Tensor, idx_N: torch.Tensor) -> None:
        counts = torch.bincount(idx_N, minlength=self.size).float()
        sums = torch.zeros(self.size, self.dim, dtype=x_ND.dtype).index_add_(0, idx_N, x_ND)
        self.hits[level] += counts
        self.ema_count[level].mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_sum[level].mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_count[level].sum()
        smoothed = (self.ema_count[level] + 1e-5) / (total + self.size * 1e-5) * total
        self.codebooks[level] = self.ema_sum[level] / smoothed[:, None]

    @torch.no_grad()
    def _reseed(self, z_ND: torch.Tensor) -> None:
        residual = z_ND.clone()
        for level in range(self.levels):
            dead = self.hits[level] == 0
            if dead.any():
                picks = residual[torch.randint(residual.shape[0], (int(dead.sum()),))]
                self.codebooks[level][dead] = picks
                self.ema_sum[level][dead] = picks
                self.ema_count[level][dead] = 1.0
            residual -= self.codebooks[level][self._nearest(residual, self.codebooks[level])]
        self.hits.zero_()


class AudioCodec(nn.Module):
    """Log-mel -> conv encoder -> residual VQ -> conv decoder -> log-mel (all in normalised units)."""

    def __init__(self, cfg: AudioCodecConfig):
        super().__init__()
        self.cfg = cfg
        c, s = cfg.channels, cfg.downsample
        down = [nn.Conv1d(c, c, 2 * s, stride=s, padding=s // 2)] if s > 1 else []
        up = [nn.ConvTranspose1d(c, c, 2 * s, stride=s, padding=s // 2)] if s > 1 else []
        self.encoder = nn.Sequential(nn.Conv1d(cfg.n_mels, c, 5, padding=2), *_blocks(c, cfg.blocks), *down,
                                     *_blocks(c, cfg.blocks), nn.GELU(), nn.Conv1d(c, cfg.latent_dim, 1))
        self.decoder = nn.Sequential(nn.Conv1d(cfg.latent_dim, c, 3, padding=1), *_blocks(c, cfg.blocks), *up,
                                     *_blocks(c, cfg.blocks), nn.GELU(), nn.Conv1d(c, cfg.n_mels, 5, padding=2))
        self.rvq = ResidualVQ(cfg.levels, cfg.codebook_size, cfg.latent_dim, cfg.ema_decay, cfg.reseed_every)
        self.register_buffer("mel_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("mel_std", torch.ones(cfg.n_mels))

    def normalise(self, log_mel_BMT: torch.Tensor) -> torch.Tensor:
        return (log_mel_BMT - self.mel_mean[:, None]) / self.mel_std[:, None]

    def denormalise(self, x_BMT: torch.Tensor) -> torch.Tensor:
        return x_BMT * self.mel_std[:, None] + self.mel_mean[:, None]

    def pad_frames(self, x_BMT: torch.Tensor) -> torch.Tensor:
        """Repeat the last frame up to a multiple of ``downsample`` frames."""
        extra = -x_BMT.shape[-1] % self.cfg.downsample
        return F.pad(x_BMT, (0, extra), mode="replicate") if extra else x_BMT

    def encode_latent(self, x_BMT: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel ``[B, M, T]`` (T a multiple of downsample) -> latent ``[B, D, F]``."""
        return self.encoder(x_BMT)

    def decode_latent(self, z_BDF: torch.Tensor) -> torch.Tensor:
        return self.decoder(z_BDF)

    def forward(self, x_BMT: torch.Tensor, update: bool = False,
                quantise: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(reconstructed normalised log-mel ``[B, M, T]``, codes ``[B, F, L]``, commitment loss).

        ``quantise=False`` bypasses the RVQ (plain autoencoder; codes None): the trainer warms the
        encoder up this way so that k-means initialises the codebooks on meaningful latents.
        """
        z_BDF = self.encode_latent(x_BMT)
        if not quantise:
            return self.decode_latent(z_BDF), None, z_BDF.new_zeros(())
        B, D, Fr = z_BDF.shape
        q_ND, codes_NL, commit = self.rvq(z_BDF.transpose(1, 2).reshape(B * Fr, D), update=update)
        recon = self.decode_latent(q_ND.reshape(B, Fr, D).transpose(1, 2))
        return recon, codes_NL.reshape(B, Fr, -1), commit


def codec_loss(codec: AudioCodec, x_BMT: torch.Tensor, update: bool = True,
               quantise: bool = True) -> tuple[torch.Tensor, dict[str, float]]:
    """Training loss on a batch of normalised log-mels: L1 + MSE reconstruction + commitment."""
    recon, _, commit = codec(x_BMT, update=update, quantise=quantise)
    l1, mse = F.l1_loss(recon, x_BMT), F.mse_loss(recon, x_BMT)
    loss = l1 + mse + codec.cfg.commitment * commit
    return loss, {"loss": loss.item(), "mel_l1": l1.item(), "mel_mse": mse.item(), "commit": commit.item()}


class AudioTokenizer:
    """The `Tokenizer` protocol over an `AudioCodec` (modality ``"audio"``, one vocab range per level)."""

    modality = "audio"

    def __init__(self, config: AudioCodecConfig | None = None, codec: AudioCodec | None = None):
        self.config = config or AudioCodecConfig()
        self.codec = (codec or AudioCodec(self.config)).eval()
        self.code_cache = None  # a CodeCache (code_cache.py) while the codec is frozen, e.g. in training
        import torchaudio.transforms as T

        cfg = self.config
        self._mel = T.MelSpectrogram(cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels,
                                     power=1.0)
        self._inverse_mel = T.InverseMelScale(n_stft=cfg.n_fft // 2 + 1, n_mels=cfg.n_mels, sample_rate=cfg.sample_rate)
        self._griffin_lim = T.GriffinLim(n_fft=cfg.n_fft, hop_length=cfg.hop_length, power=1.0,
                                         n_iter=cfg.griffin_lim_iters, rand_init=False)

    # ------------------------------------------------------------------ sizes
    @property
    def levels(self) -> int:
        return self.config.levels

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def frames_per_second(self) -> float:
        return self.config.frames_per_second

    @property
    def tokens_per_second(self) -> float:
        return self.config.frames_per_second * self.config.levels

    def num_tokens(self, num_samples: int, sample_rate: int, levels: int | None = None) -> int:
        """How many global ids `encode` then `to_global` make of ``num_samples`` samples at ``sample_rate``
        (with the first ``levels`` codec levels; all by default).

        Exact, without running the codec: the wave is resampled to the codec's rate (length rounded
        up, as torchaudio does), the mel spectrogram has centred frames (``samples // hop + 1``), and
        the encoder makes one code frame per ``downsample`` mel frames after padding to a multiple.
        """
        cfg = self.config
        samples = -(-num_samples * cfg.sample_rate // sample_rate)
        mel_frames = samples // cfg.hop_length + 1
        return -(-mel_frames // cfg.downsample) * self.check_levels(levels)

    def check_levels(self, levels: int | None) -> int:
        """``levels`` (``None``: all of them), or a ValueError unless 1 <= levels <= the codec's levels."""
        if levels is None:
            return self.levels
        if isinstance(levels, bool) or not isinstance(levels, int) or not 1 <= levels <= self.levels:
            raise ValueError(f"audio levels must be an integer from 1 to the codec's {self.levels}, got {levels!r}")
        return levels

    @property
    def vocab_size(self) -> int:
        return self.config.levels * self.config.codebook_size

    def range_names(self) -> list[str]:
        return [f"audio.{level}" for level in range(self.levels)]

    def vocab_ranges(self) -> dict[str, int]:
        return {name: self.codebook_size for name in self.range_names()}

    # ------------------------------------------------------------------ audio <-> mel
    def wave_tensor(self, raw: Any) -> torch.Tensor:
        """A ``(wave [T], sample_rate)`` pair checked and resampled to the codec's rate: the mono float wave it encodes."""
        if not (isinstance(raw, tuple | list) and len(raw) == 2):
            raise ValueError("audio tokenizer encodes a (wave [T], sample_rate) pair, "
                             f"got {type(raw).__name__}")
        wave, rate = raw
        wave = torch.as_tensor(np.asarray(wave) if not isinstance(wave, torch.Tensor) else wave).float()
        if wave.ndim == 2 and 1 in wave.shape:
            wave = wave.reshape(-1)
        if wave.ndim != 1:
            raise ValueError(f"expected mono audio [T], got shape {tuple(wave.shape)}; mix channels down first "
                             f"(e.g. wave.mean(0))")
        if wave.numel() == 0:
            raise ValueError("cannot encode empty audio (0 samples)")
        if not isinstance(rate, int | np.integer) or rate <= 0:
            raise ValueError(f"sample_rate must be a positive integer (Hz), got {rate!r}")
        if not torch.isfinite(wave).all():
            raise ValueError("audio holds NaN or infinite samples")
        return resample(wave, int(rate), self.config.sample_rate)

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """Log-magnitude mel spectrogram ``[M, T]`` of a 16 kHz mono wave ``[T]``."""
        return torch.log(self._mel(wave).clamp_min(LOG_FLOOR))

    @torch.no_grad()
    def mel_to_wave(self, log_mel_MT: torch.Tensor) -> np.ndarray:
        """Log-mel ``[M, T]`` -> waveform via least-squares inverse mel and Griffin-Lim (deterministic)."""
        frames = log_mel_MT.shape[-1]
        # Griffin-Lim reflect-pads its waves by n_fft / 2, which a few frames cannot hold (a one-frame
        # answer crashed TTS): pad with silence, then keep the (T - 1) * hop samples the frames make.
        short = self.config.n_fft // self.config.hop_length + 1 - frames
        if short > 0:
            log_mel_MT = F.pad(log_mel_MT.float(), (0, short), value=math.log(LOG_FLOOR))
        spec = self._inverse_mel(log_mel_MT.float().exp())
        wave = self._griffin_lim(spec)
        if short > 0:
            wave = wave[: max(frames - 1, 0) * self.config.hop_length]
        return np.clip(wave.numpy(), -1.0, 1.0).astype(np.float32)

    # ------------------------------------------------------------------ the Tokenizer protocol
    @torch.no_grad()
    def encode(self, raw: Any) -> torch.Tensor:
        """``(wave [T], sample_rate)`` -> LongTensor ``[frames, levels]``; resampled to 16 kHz first."""
        wave = self.wave_tensor(raw)
        return encode_through(self.code_cache, wave, lambda: self._encode_wave(wave))

    def _encode_wave(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.codec.pad_frames(self.codec.normalise(self.log_mel(wave))[None])
        z_BDF = self.codec.encode_latent(x)
        _, codes_NL, _ = self.codec.rvq(z_BDF[0].T)
        return codes_NL.long()

    def _check_codes(self, ids: torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(ids)
        if ids.ndim != 2 or not 1 <= ids.shape[1] <= self.levels:
            raise ValueError(f"audio ids must have shape [frames, levels] with 1 to {self.levels} levels, "
                             f"got {tuple(ids.shape)}")
        if ids.shape[0] == 0:
            raise ValueError("cannot decode zero audio frames")
        if ids.dtype.is_floating_point or int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size:
            raise ValueError(f"audio ids must be integers in [0, {self.codebook_size}); got min {ids.min().item()}, "
                             f"max {ids.max().item()}")
        return ids.long()

    @torch.no_grad()
    def decode_mel(self, ids: torch.Tensor) -> torch.Tensor:
        """Codes ``[frames, k]`` -> reconstructed log-mel ``[M, frames * downsample]``.

        ``k`` may be fewer than the codec's levels: the first ``k`` residual levels are summed (a
        coarser reconstruction), as a model trained on fewer levels produces.
        """
        ids = self._check_codes(ids)
        z_DF = self.codec.rvq.lookup(ids).T
        return self.codec.denormalise(self.codec.decode_latent(z_DF[None]))[0]

    def decode(self, ids: torch.Tensor) -> tuple[np.ndarray, int]:
        """Codes ``[frames, levels]`` -> ``(float32 wave [T], 16000)``."""
        return self.mel_to_wave(self.decode_mel(ids)), self.config.sample_rate

    def encode_batch(self, raws: list[Any]) -> list[torch.Tensor]:
        return [self.encode(r) for r in raws]

    def decode_batch(self, ids: list[torch.Tensor]) -> list[tuple[np.ndarray, int]]:
        return [self.decode(i) for i in ids]

    def to_global(self, vocab: Vocab, local_ids: torch.Tensor) -> torch.Tensor:
        """``[F, k]`` local ids of the first k levels -> flat global ids f0l0, f0l1, ..., f1l0, ... (frame-major)."""
        ids = torch.as_tensor(local_ids)
        if ids.ndim != 2 or not 1 <= ids.shape[1] <= self.levels:
            raise ValueError(f"audio ids must have shape [frames, levels] with 1 to {self.levels} levels, "
                             f"got {tuple(ids.shape)}")
        names = self.range_names()
        columns = [vocab.to_global(names[level], ids[:, level]) for level in range(ids.shape[1])]
        return torch.stack(columns, 1).reshape(-1)

    def from_global(self, vocab: Vocab, global_ids: torch.Tensor, levels: int | None = None) -> torch.Tensor:
        """Flat frame-major global ids -> ``[F, levels]`` local ids; each position must hold its level's range."""
        levels = self.check_levels(levels)
        ids = torch.as_tensor(global_ids).reshape(-1)
        if ids.numel() % levels:
            raise ValueError(f"{ids.numel()} audio ids is not a multiple of the {levels} codec levels; "
                             "the sequence must hold whole frames")
        frames = ids.reshape(-1, levels)
        names = self.range_names()
        return torch.stack([vocab.to_local(names[level], frames[:, level]) for level in range(levels)], 1)

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.codec.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_NAME))
        meta = {"modality": "audio", "kind": "mel_rvq", "config": asdict(self.config)}
        (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> AudioTokenizer:
        directory = Path(directory)
        meta_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not meta_path.exists() or not weights_path.exists():
            raise FileNotFoundError(f"{directory} holds no audio tokenizer (needs {CONFIG_NAME} and {WEIGHTS_NAME}); "
                                    "train one with `python tokenizers/train_audio_codec.py`")
        meta = read_json(meta_path, "audio tokenizer settings")
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise ValueError(f"{meta_path} has no config section; save the audio tokenizer again")
        if meta.get("modality") != "audio" or meta.get("kind") != "mel_rvq":
            raise ValueError(f"{meta_path} describes a {meta.get('modality')}/{meta.get('kind')} tokenizer, "
                             "not an audio mel_rvq one")
        tok = cls(AudioCodecConfig.from_dict(meta["config"]))
        load_weights(tok.codec, weights_path, meta_path)
        return tok
