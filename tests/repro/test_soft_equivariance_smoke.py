"""Smoke test of `regzoo repro soft_equivariance --tiny`: artefacts, arms, strengths, claims."""

import math

from regzoo.repro.runner import run_reproduction, validate_result
from regzoo.repro.soft_equivariance import SoftEquivarianceConfig


def test_tiny_run_writes_valid_artefacts_with_every_arm_and_claim(tmp_path):
    result = run_reproduction("soft_equivariance", "tiny", out=tmp_path / "run", jobs=1,
                              progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]
    config = SoftEquivarianceConfig.tiny()
    assert set(aggregate["inertia"]) == set(config.arms_a)
    assert set(aggregate["digits_d4"]) == set(config.arms_b)
    auto = aggregate["inertia"]["per_auto"]
    assert auto["lambda_O3"]["mean"] == 0.0  # the largest group starts (and stays) at 0
    assert all(math.isfinite(aggregate["inertia"][a]["test_mse"]["mean"])
               for a in config.arms_a)
    assert aggregate["digits_d4"]["per_fixed"]["log10_lambda_gap"]["mean"] == 0.0
    assert len(result["secondary_claims"]) == 5
    assert result["timing"]["per_over_plain"] > 0
    assert (tmp_path / "run" / "soft_equivariance.png").is_file()


def test_full_preset_has_five_seeds_and_the_official_window_warmup_power_strength():
    full = SoftEquivarianceConfig.full()
    assert len(full.seeds) == 5 and 0 not in full.seeds  # seed 0 tuned the learning rates
    assert 2 * full.adjust_at <= full.epochs
    assert (full.window, full.warmup, full.power, full.strength) == (100, 50, 2.0, 100.0)
