"""Smoke test of `regzoo repro hag --tiny`: artefacts, arms, derived gate arms, claims."""

import pytest

from regzoo.repro.hag import ARMS, HAGReproConfig, HAGReproduction
from regzoo.repro.runner import run_reproduction, validate_result


@pytest.mark.slow
def test_tiny_run_writes_valid_artefacts_with_every_arm(tmp_path):
    result = run_reproduction("hag", "tiny", out=tmp_path / "run", jobs=1, progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]
    expected = set(ARMS) - {"gates_routed_sum"} | {"routed_real_inputs", "routed_noise_inputs"}
    assert set(aggregate["mnist1d"]) == expected
    assert "gates_routed_sum" in aggregate["digits"]
    assert "vit_plain" not in aggregate["digits"]
    routed = aggregate["digits"]["gates_routed"]
    assert 0 < routed["mean_input_gate_real"]["mean"] < 1
    assert "mean_vit_gate" in aggregate["mnist1d"]["vit_routed"]
    curves = result["metrics"]["curves"]["digits"]["gates_routed"]
    assert abs(sum(curves["gate_hist_noise"]["mean"]) - 1) < 1e-6
    assert result["claim"]["method"] == "gates_routed" and result["claim"]["margin"] == 0.0
    assert len(result["secondary_claims"]) == 5
    assert result["timing"]["gates_routed_over_plain"] > 0
    assert (tmp_path / "run" / "hag.png").is_file()


def test_full_preset_has_at_least_five_seeds_and_every_arm():
    full = HAGReproConfig.full()
    assert len(full.seeds) >= 5 and set(full.arms) == set(ARMS)
    units = HAGReproduction().units(full)
    assert not any(u.arm.startswith("vit") and u.setting == "digits" for u in units)
