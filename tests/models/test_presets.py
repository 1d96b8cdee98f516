import pytest

from omnidiff.models.presets import PRESETS, count_parameters, preset_config
from omnidiff.models.transformer import Transformer


def test_debug_is_small_and_counts_match_the_module():
    cfg = preset_config("debug", 4096)
    counted = count_parameters(cfg)
    assert counted["params_total"] < 1_000_000
    assert counted["params_total"] == sum(p.numel() for p in Transformer(cfg).parameters())
    assert counted["params_active"] < counted["params_total"]


def test_dense_twins_have_equal_active_parameters():
    for name in ("tiny", "small"):
        moe, dense = count_parameters(preset_config(name, 8192)), count_parameters(preset_config(f"{name}-dense", 8192))
        router = PRESETS[name]["moe"].num_experts * PRESETS[name]["dim"] * (PRESETS[name]["num_layers"] - 1)
        assert moe["params_active"] - router == dense["params_active"]


def test_gpu_preset_is_about_1b_total_250m_active():
    c = count_parameters(preset_config("moe-1b", 65536))
    assert 0.9e9 < c["params_total"] < 1.2e9 and 0.2e9 < c["params_active"] < 0.32e9


def test_unknown_preset_lists_allowed():
    with pytest.raises(ValueError, match="allowed: .*debug"):
        preset_config("huge", 100)
