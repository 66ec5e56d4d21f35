"""Smoke test of `regzoo repro weight_compander --tiny`: artefacts, arms, grid selection."""

from regzoo.methods.weight_compander import PAPER_GRID
from regzoo.repro.runner import run_reproduction, validate_result
from regzoo.repro.weight_compander import WCReproConfig, weight_statistics


def test_tiny_run_writes_valid_artefacts_with_every_arm(tmp_path):
    result = run_reproduction("weight_compander", "tiny", out=tmp_path / "run", jobs=1,
                              progress=False)
    validate_result(result)
    arms = result["metrics"]["aggregate"]["digits200"]
    assert set(arms) == {"wd", "wc_fixed", "wc_learned", "weight_norm"}
    grid = WCReproConfig.tiny().grid_values
    chosen = arms["wc_fixed"]
    assert chosen["a_first_layer"]["values"][0] in grid
    assert chosen["b_first_layer"]["values"][0] in grid
    assert {"max_abs_weight", "near_zero_fraction", "excess_kurtosis"} <= set(arms["wd"])
    assert result["timing"]["folded_over_plain"] > 0
    assert (tmp_path / "run" / "weight_compander.png").is_file()


def test_full_preset_uses_the_papers_grid_and_ten_seeds():
    full = WCReproConfig.full()
    assert full.grid and full.grid_values == PAPER_GRID and len(full.seeds) == 10


def test_weight_statistics_of_a_known_layer():
    import torch
    from torch import nn

    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 1.0], [-2.0, 1.0]]))
    stats = weight_statistics(nn.Sequential(layer))
    assert stats["max_abs_weight"] == 2.0
    assert stats["near_zero_fraction"] == 0.25
