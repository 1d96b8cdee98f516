"""Sampling: the masked-diffusion decoding loop, commit strategies and schedules, exact and approximate caches."""

from omnidiff.sampling.loop import (
    CACHES,
    SampleOutput,
    SamplerConfig,
    cyclic_layout,
    fixed_layout,
    generate,
    left_pad,
)
from omnidiff.sampling.schedules import COMMIT_SCHEDULES, commit_counts
from omnidiff.sampling.strategies import STRATEGIES

__all__ = ["CACHES", "COMMIT_SCHEDULES", "STRATEGIES", "SampleOutput", "SamplerConfig", "commit_counts", "cyclic_layout",
           "fixed_layout", "generate", "left_pad"]
