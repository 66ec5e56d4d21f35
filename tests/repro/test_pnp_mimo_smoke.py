"""Smoke test of `regzoo repro pnp_mimo --tiny`: artefacts, arms, derived arms, the claims."""

import pytest

from conftest import run_tiny
from regzoo.repro.pnp_mimo import ARMS, PnPMIMOReproConfig


def test_tiny_run_writes_valid_artefacts_with_every_arm_and_claim(tmp_path_factory):
    from regzoo.repro.runner import validate_result

    out, result = run_tiny("pnp_mimo", tmp_path_factory)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]["nf5_snr30"]
    assert set(aggregate) == {*ARMS, "best_classical", "worst_magnitude_prior"}
    best = aggregate["best_classical"]["psnr"]["mean"]
    assert best == max(aggregate["bp"]["psnr"]["mean"], aggregate["kirchhoff"]["psnr"]["mean"])
    assert "alpha" in aggregate["pnp_cnn"] and "alpha" not in aggregate["bp"]
    curves = result["metrics"]["curves"]["nf5_snr30"]
    assert len(curves["l1_mag"]["psnr"]["mean"]) == 3
    assert len(curves["bp"]["truth_projection"]["mean"]) == 64
    assert result["claim"]["method"] == "worst_magnitude_prior"
    assert result["claim"]["verdict"] == "inconclusive"  # one seed
    assert [c["margin"] for c in result["secondary_claims"]] == [2.0, 2.0, 0.0]
    assert "Headline verdict" in result["claim"]["note"]
    assert (out / "pnp_mimo.png").is_file()


def test_presets_follow_the_issue_and_reject_bad_configs():
    full = PnPMIMOReproConfig.full()
    assert full.grid == 16 and full.n_freqs == (5, 10) and full.snrs == (30.0, 10.0)
    assert len(full.seeds) >= 5 and full.scenes * len(full.seeds) == 20
    assert set(full.arms) == set(ARMS)
    with pytest.raises(ValueError, match="arms"):
        PnPMIMOReproConfig(arms=("bm3d",))
    with pytest.raises(ValueError, match="must include"):
        PnPMIMOReproConfig(arms=("bp", "kirchhoff", "l1_mag"))
    with pytest.raises(ValueError, match="n_freqs"):
        PnPMIMOReproConfig(n_freqs=(0,))
