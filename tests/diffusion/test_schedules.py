"""Noise schedules and time draws."""

from __future__ import annotations

import math

import pytest
import torch

from omnidiff.diffusion.schedules import NoiseSchedule, TimeSampler


def test_linear_weight_is_one_over_t():
    t = torch.linspace(0.01, 1.0, 50)
    torch.testing.assert_close(NoiseSchedule("linear").weight(t), 1.0 / t)


@pytest.mark.parametrize("name", ["linear", "cosine", "loglinear"])
def test_alpha_boundaries_derivative_and_inverse(name):
    s = NoiseSchedule(name)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    assert float(s.alpha(torch.tensor(0.0))) == pytest.approx(1.0)
    assert float(s.alpha(torch.tensor(1.0))) < 1e-2
    h = 1e-6  # alpha' against a central difference
    torch.testing.assert_close(s.alpha_prime(t), (s.alpha(t + h) - s.alpha(t - h)) / (2 * h), atol=1e-6, rtol=1e-5)
    assert (s.weight(t) > 0).all()
    torch.testing.assert_close(s.time_of_rate(s.mask_rate(t)), t)


def test_cosine_weight_formula():
    t = torch.tensor([0.3, 0.7])
    half = 0.5 * math.pi * t
    torch.testing.assert_close(NoiseSchedule("cosine").weight(t), 0.5 * math.pi * torch.sin(half) / (1 - torch.cos(half)))


def test_eps_floor_and_clip_ranges():
    lin = NoiseSchedule("linear")
    g = torch.Generator().manual_seed(0)
    t = TimeSampler(lin, "uniform", eps=0.2).sample(4000, generator=g)
    assert t.min() >= 0.2 and t.max() <= 1.0 and t.min() < 0.21
    clipped = TimeSampler(lin, "uniform", clip=(0.3, 0.8)).sample(4000, generator=g)
    assert clipped.min() >= 0.3 and clipped.max() <= 0.8
    cos = NoiseSchedule("cosine")
    rates = cos.mask_rate(TimeSampler(cos, "antithetic", clip=(0.25, 0.6)).sample(1000, generator=g))
    assert rates.min() >= 0.25 - 1e-5 and rates.max() <= 0.6 + 1e-5


def test_antithetic_is_stratified():
    t = TimeSampler(NoiseSchedule("linear"), "antithetic", eps=0.0).sample(10, generator=torch.Generator().manual_seed(1))
    strata = (t.sort().values * 10).floor().long()
    assert strata.tolist() == list(range(10))


def test_symmetric_range_for_complementary_masking():
    s = TimeSampler(NoiseSchedule("linear"), clip=(0.1, 0.95), symmetric=True)
    assert s.rate_interval() == pytest.approx((0.1, 0.9))
    with pytest.raises(ValueError, match="symmetric"):
        TimeSampler(NoiseSchedule("linear"), clip=(0.6, 0.9), symmetric=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown noise schedule"):
        NoiseSchedule("sqrt")
    with pytest.raises(ValueError, match="time sampling"):
        TimeSampler(NoiseSchedule("linear"), "sobol")
    with pytest.raises(ValueError, match="beta < omega"):
        TimeSampler(NoiseSchedule("linear"), clip=(0.5, 0.2))
