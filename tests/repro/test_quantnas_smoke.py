"""Smoke test of `regzoo repro quantnas --tiny`: artefacts, metrics, derived arms, claims."""

import math

import pytest

from regzoo.repro.quantnas import QuantNASReproConfig, front_psnr
from regzoo.repro.runner import run_reproduction, validate_result


@pytest.mark.slow
def test_tiny_run_writes_valid_artefacts_with_every_metric_and_claim(tmp_path):
    result = run_reproduction("quantnas", "tiny", out=tmp_path / "run", jobs=1, progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]
    searched = aggregate["lam0"]
    for arm in ("quantnas", "noise_no_entropy"):
        metrics = searched[arm]
        assert 0 < metrics["mean_max_p"]["mean"] <= 1
        assert metrics["gap"]["mean"] == pytest.approx(
            metrics["supernet_psnr"]["mean"] - metrics["discrete_psnr"]["mean"]
        )
        assert metrics["psnr"]["mean"] > 5 and metrics["bitops_m"]["mean"] > 0
    assert searched["max_p_target"]["mean_max_p"]["mean"] == 0.9
    assert searched["half_no_entropy_gap"]["gap"]["mean"] == pytest.approx(
        searched["noise_no_entropy"]["gap"]["mean"] / 2
    )
    assert {"lsq_shared_timed", "lsq_per_bit_timed"} <= set(searched)
    assert set(aggregate["fixed"]) == {"uniform4", "uniform8"}
    assert set(aggregate["pareto"]) == {"quantnas", "uniform_front"}
    assert result["claim"]["setting"] == "pareto" and result["claim"]["margin"] == 0.0
    margins = {(c["metric"], c["baseline"]): c["margin"] for c in result["secondary_claims"]}
    assert margins[("mean_max_p", "max_p_target")] == 0.0
    assert margins[("log_step_time", "lsq_shared_timed")] == pytest.approx(-math.log(0.7))
    assert result["claim"]["verdict"] == "inconclusive"  # one seed
    assert (tmp_path / "run" / "quantnas.png").is_file()


def test_front_is_linear_in_log_bitops_and_flat_outside():
    points = [(10.0, 20.0), (40.0, 24.0), (160.0, 25.0)]
    assert front_psnr(20.0, points) == pytest.approx(22.0)
    assert front_psnr(80.0, points) == pytest.approx(24.5)
    assert front_psnr(1.0, points) == 20.0 and front_psnr(1e4, points) == 25.0


def test_presets_follow_the_issue_and_refuse_bad_options():
    full = QuantNASReproConfig.full()
    assert len(full.seeds) >= 5 and full.hardware_weights == (0.0, 1e-3, 1e-2)
    assert {
        "quantnas",
        "lsq_entropy",
        "noise_no_entropy",
        "noise_detached",
        "uniform4",
        "uniform8",
        "full_precision",
    } == set(full.arms)
    with pytest.raises(ValueError, match="including 'quantnas'"):
        QuantNASReproConfig(arms=("quantnas",))
    with pytest.raises(ValueError, match="ablation_lambda"):
        QuantNASReproConfig(ablation_lambda=0.5)
