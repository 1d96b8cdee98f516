"""A small speech encoder: log-mel frames -> contextual features at the audio codec's frame rate.

The trunk of `omnidiff.models.audio_encoder` (the model reads prompt audio as a waveform) and of its
CTC pretraining (`omnidiff.training.ctc_pretrain`), in the shape of the field's speech encoders
(Whisper's and wav2vec 2.0's): a log-mel spectrogram normalised per utterance over its real frames,
two 1-D convolutions (the second halves the rate: 62.5 mel frames/s -> 31.25 features/s, the codec's
code-frame rate at 16 kHz with hop 256), learned positions, and a few pre-norm Transformer encoder
layers that see the whole clip.

Tensor legend: ``M`` clips, ``T`` samples, ``N`` mel bins, ``F`` frames, ``C`` channels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from omnidiff.strict import from_known_keys


@dataclass
class SpeechBackboneConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    channels: int = 192
    layers: int = 3
    heads: int = 4
    dropout: float = 0.1
    max_frames: int = 1024  # features per clip the learned positions cover (~33 s at 31.25 frames/s)

    def __post_init__(self):
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "channels", "layers", "heads", "max_frames"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"speech backbone {name} must be a positive integer, got {value!r}")
        if self.channels % self.heads:
            raise ValueError(f"speech backbone channels ({self.channels}) must be a multiple of heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"speech backbone dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def from_dict(cls, d: dict) -> SpeechBackboneConfig:
        return from_known_keys(cls, d, "speech backbone")

    def to_dict(self) -> dict:
        return asdict(self)


def frames_of(lengths_M: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Feature frames of clips of ``lengths`` samples: centred mel frames (``T // hop + 1``), halved (rounded up)."""
    return (lengths_M // hop_length + 2) // 2


class SpeechBackbone(nn.Module):
    """Waves [M, T] (zero-padded) and their lengths [M] -> (features [M, F, C], real frames [M])."""

    def __init__(self, cfg: SpeechBackboneConfig):
        super().__init__()
        import torchaudio.transforms as T

        self.cfg = cfg
        # The mel filterbank follows from the config and is neither trained nor saved: kept outside the module tree
        # and built on the CPU, so a meta-device init (loading an export) has nothing to compute it on.
        with torch.device("cpu"):
            self._mel = [T.MelSpectrogram(cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                          n_mels=cfg.n_mels)]
        self.conv1 = nn.Conv1d(cfg.n_mels, cfg.channels, 3, padding=1)
        self.conv2 = nn.Conv1d(cfg.channels, cfg.channels, 3, stride=2, padding=1)
        self.positions = nn.Embedding(cfg.max_frames, cfg.channels)
        layer = nn.TransformerEncoderLayer(cfg.channels, cfg.heads, 4 * cfg.channels, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.channels)
        nn.init.normal_(self.positions.weight, std=0.02)

    @property
    def channels(self) -> int:
        return self.cfg.channels

    def log_mel(self, waves_MT: torch.Tensor, lengths_M: torch.Tensor) -> torch.Tensor:
        """Log-mel [M, N, F_mel], each clip normalised to zero mean and unit variance per bin over its real frames
        (padding set to 0): loudness and microphone offsets do not reach the encoder."""
        real = lengths_M // self.cfg.hop_length + 1
        # each clip's spectrogram from its own samples: centred frames reflect-pad at the clip's end, so a
        # clip padded to a batch's longest would otherwise get other last frames than it gets alone
        mel = torch.zeros(len(waves_MT), self.cfg.n_mels, int(real.max()), device=waves_MT.device)
        if self._mel[0].spectrogram.window.device != waves_MT.device:
            self._mel[0] = self._mel[0].to(waves_MT.device)
        for m, (wave, n) in enumerate(zip(waves_MT.float(), lengths_M.tolist(), strict=True)):
            mel[m, :, : n // self.cfg.hop_length + 1] = self._mel[0](wave[:n])
        mel = mel.clamp_min(1e-5).log()
        keep = (torch.arange(mel.shape[-1], device=mel.device) < real.view(-1, 1)).unsqueeze(1).to(mel.dtype)
        count = keep.sum(-1, keepdim=True).clamp_min(1)
        mean = (mel * keep).sum(-1, keepdim=True) / count
        var = ((mel - mean) ** 2 * keep).sum(-1, keepdim=True) / count
        return (mel - mean) / (var + 1e-5).sqrt() * keep

    def forward(self, waves_MT: torch.Tensor, lengths_M: torch.Tensor,
                augment: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``augment``: applied to the normalised log-mel [M, N, F_mel] (SpecAugment masks in pretraining)."""
        if waves_MT.ndim != 2 or lengths_M.shape != waves_MT.shape[:1]:
            raise ValueError(f"speech backbone expects waves [M, T] and lengths [M], got {tuple(waves_MT.shape)} "
                             f"and {tuple(lengths_M.shape)}")
        mel = self.log_mel(waves_MT, lengths_M)
        if augment is not None:
            mel = augment(mel)
        x = nn.functional.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))  # bf16 weights read a bf16 spectrogram
        x = nn.functional.gelu(self.conv2(x)).transpose(1, 2)  # [M, F, C]
        frames = frames_of(lengths_M, self.cfg.hop_length).clamp(max=x.shape[1])
        if x.shape[1] > self.cfg.max_frames:
            raise ValueError(f"a clip of {x.shape[1]} frames is longer than the speech backbone's max_frames "
                             f"({self.cfg.max_frames}); cut the audio or raise max_frames")
        x = x + self.positions.weight[: x.shape[1]].to(x.dtype)
        pad = torch.arange(x.shape[1], device=x.device) >= frames.view(-1, 1)
        x = self.layers(x, src_key_padding_mask=pad)
        return self.norm(x) * (~pad).unsqueeze(-1).to(x.dtype), frames
