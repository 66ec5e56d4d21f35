"""Smoke test of `regzoo repro holobeam --tiny`: artefacts, arms, derived arms, claims."""

from regzoo.repro.holobeam import HoloBeamReproConfig
from regzoo.repro.runner import run_reproduction, validate_result


def test_tiny_run_writes_valid_artefacts_with_every_arm(tmp_path):
    result = run_reproduction("holobeam", "tiny", out=tmp_path / "run", jobs=2, progress=False,
                              overrides={"settings": "rss_20db"})
    validate_result(result)
    arms = result["metrics"]["aggregate"]["rss_20db"]
    assert {"holobeam", "unimodal_2d", "sequential_halving", "successive_rejects", "uniform",
            "holobeam_oracle_y", "best_baseline", "sh_double_budget"} <= set(arms)
    # SH needs 25·5 = 125 pilots on the 5 × 5 grid of the tiny preset: no value at T = 64.
    assert "error_T64" not in arms["sequential_halving"]
    assert 0.0 <= arms["holobeam"]["error_T128"]["mean"] <= 1.0
    assert result["claim"]["verdict"] in ("reproduced", "not_reproduced", "inconclusive")
    assert len(result["secondary_claims"]) == 2
    assert (tmp_path / "run" / "holobeam.png").is_file()


def test_full_preset_has_two_thousand_receivers_per_point():
    full = HoloBeamReproConfig.full()
    assert full.receivers * len(full.seeds) >= 1000 and full.claim_budget in full.budgets
