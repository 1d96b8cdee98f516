"""Sampling: the masked-diffusion decoding loop, commit strategies and schedules, exact and approximate caches."""

from omnidiff.sampling.loop import CACHES, SampleOutput, SamplerConfig, generate, left_pad
from omnidiff.sampling.schedules import COMMIT_SCHEDULES, commit_counts
from omnidiff.sampling.strategies import STRATEGIES

__all__ = ["CACHES", "COMMIT_SCHEDULES", "STRATEGIES", "SampleOutput", "SamplerConfig", "commit_counts", "generate",
           "left_pad"]
