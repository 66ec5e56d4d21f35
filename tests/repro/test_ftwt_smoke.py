"""Smoke test of `regzoo repro ftwt --tiny`: artefacts, arms, derived τ* arms, claims."""

import pytest

from conftest import run_tiny
from regzoo.repro.ftwt import (
    FAMILIES,
    THRESHOLDS_ARM,
    VARIANTS,
    FTWTReproConfig,
    FTWTReproduction,
    arm_name,
    parse_arm,
    select_tau,
    selected_arm,
)
from regzoo.repro.runner import validate_result


@pytest.mark.slow
def test_tiny_run_writes_valid_artefacts_with_every_arm(tmp_path_factory):
    out, result = run_tiny("ftwt", tmp_path_factory)
    validate_result(result)
    arms = result["metrics"]["aggregate"]["digits"]
    trained = {arm_name(f, 0.9, v) for f in FAMILIES for v in VARIANTS}
    selected = {selected_arm(f, v) for f in FAMILIES for v in VARIANTS}
    assert set(arms) == trained | selected | {"dense", THRESHOLDS_ARM}
    ftwt = arms[selected_arm("ftwt")]
    assert ftwt["tau"]["mean"] == 0.9 and 0 <= ftwt["mask_accuracy"]["mean"] <= 1
    for variant in VARIANTS:  # both baselines run at one budget, matched to the FTWT arm's MACs
        static, random = (arms[arm_name(f, 0.9, variant)] for f in ("static", "random"))
        assert static["flops_reduction"]["mean"] == random["flops_reduction"]["mean"]
    assert arms["dense"]["flops_reduction"]["mean"] == 0.0
    assert result["claim"]["metric"] == "headline_slack" and result["claim"]["margin"] == 0.0
    assert result["claim"]["verdict"] == "inconclusive"  # one seed
    margins = [c["margin"] for c in result["secondary_claims"]]
    assert margins == [0.35, -0.02, 0.05, 0.0, 0.0, 0.35, -0.02, 0.05, 0.0]
    assert result["timing"]["ftwt_over_plain"] > 0
    assert (out / "ftwt.png").is_file()


def test_tau_is_chosen_on_validation_within_two_points_of_dense():
    candidates = {
        1.0: {"val_accuracy": 0.99, "val_flops_reduction": 0.05},
        0.9: {"val_accuracy": 0.975, "val_flops_reduction": 0.40},
        0.8: {"val_accuracy": 0.96, "val_flops_reduction": 0.55},
    }
    assert select_tau(0.99, candidates) == 0.9  # 0.8 loses 3 points
    assert select_tau(0.999, {0.8: candidates[0.8], 0.9: candidates[0.9]}) == 0.9  # none: best val


def test_arm_names_round_trip():
    for variant in VARIANTS:
        for family in FAMILIES:
            assert parse_arm(arm_name(family, 0.85, variant)) == (family, variant, 0.85)


def test_full_preset_has_five_seeds_every_tau_and_the_baselines():
    full = FTWTReproConfig.full()
    assert len(full.seeds) >= 5 and full.taus == (1.0, 0.95, 0.9, 0.85, 0.8)
    units = FTWTReproduction().units(full)
    assert len(units) == 5 * (2 * 3 * 5 + 1)  # 2 variants × 3 families × 5 τ, and dense
    first_baseline = next(i for i, u in enumerate(units) if u.arm.startswith(("static", "random")))
    assert all(u.arm.startswith("ftwt") or u.arm == "dense" for u in units[:first_baseline])
    assert all(u.arm.startswith(("static", "random")) for u in units[first_baseline:])
