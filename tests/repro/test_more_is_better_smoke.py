"""Smoke test of `regzoo repro more_is_better --tiny`: artefacts, arms, claims, plot."""

import pytest

from regzoo.repro.more_is_better import MIBReproConfig
from regzoo.repro.runner import run_reproduction, validate_result


def test_tiny_run_writes_valid_artefacts_with_theory_and_simulation(tmp_path):
    result = run_reproduction("more_is_better", "tiny", out=tmp_path / "run", jobs=1,
                              progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]
    assert set(aggregate) == {"width", "samples", "overfitting"}
    width = aggregate["width"]
    assert {"theory", "simulation", "k_eq_n", "k_half", "k_widest", "tolerance"} <= set(width)
    assert width["theory"]["rel_error"]["mean"] == 0.0
    assert 0 < width["simulation"]["rel_error"]["mean"] < 1
    assert len(result["secondary_claims"]) == 5
    assert result["timing"]["trial_over_theory_point"] > 0
    assert (tmp_path / "run" / "more_is_better.png").is_file()


def test_full_preset_uses_the_official_task_and_several_seeds():
    full = MIBReproConfig.full()
    assert (full.alpha, full.beta, full.noise, full.n_fixed) == (1.5, 1.5, 0.5, 256)
    assert len(full.seeds) >= 5 and full.widths[-1] > full.n_fixed


def test_config_rejects_a_grid_without_the_compared_points():
    with pytest.raises(ValueError, match="widths must be increasing and contain 256"):
        MIBReproConfig(widths=(16, 64, 512))
