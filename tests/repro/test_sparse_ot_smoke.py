"""Smoke test of `regzoo repro sparse_ot --tiny`: artefacts, arms, the k sweep, the claims."""

import pytest

from regzoo.repro.runner import run_reproduction, validate_result
from regzoo.repro.sparse_ot import SparseOTReproConfig

pytest.importorskip("ot")


def test_tiny_run_writes_valid_artefacts_with_every_arm_and_claim(tmp_path):
    result = run_reproduction("sparse_ot", "tiny", out=tmp_path / "run", jobs=2, progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]
    assert set(aggregate["gauss12"]) == {"emd", "quadratic", "k1", "kinf", "sweep"}
    assert aggregate["gauss12"]["k1"]["max_nnz_col"]["mean"] == 1
    assert aggregate["tokens16x4"]["sweep"]["cap_met"]["mean"] == 1
    assert aggregate["gauss12"]["emd"]["cost_gap"]["mean"] == pytest.approx(0, abs=1e-12)
    assert set(aggregate["moe_digits"]) == {"sparse_ot", "top1"}
    assert aggregate["moe_digits"]["sparse_ot"]["max_load"]["mean"] <= 1
    curves = result["metrics"]["curves"]["gauss12"]["sweep"]["n_iter"]["mean"]
    assert len(curves) == 2
    assert [c["metric"] for c in result["secondary_claims"]] == ["max_nnz_col", "n_iter",
                                                                 "test_acc"]
    assert result["claim"]["verdict"] == "inconclusive"  # one seed
    assert "Cap met" in result["claim"]["note"]
    assert result["timing"]["regzoo_over_pot"] > 0
    assert (tmp_path / "run" / "sparse_ot.png").is_file()


def test_presets_follow_the_spec_sizes_and_reject_bad_configs():
    full = SparseOTReproConfig.full()
    assert full.ks == (1, 2, 4, 8, 16, 32, 0) and (full.ot_m, full.token_m) == (100, 256)
    assert (full.tol, full.max_iter, full.gamma) == (1e-9, 500, 1.0) and len(full.seeds) >= 3
    with pytest.raises(ValueError, match="baselines"):
        SparseOTReproConfig(baselines=("emd",))
    with pytest.raises(ValueError, match="ks must be"):
        SparseOTReproConfig(ks=(1, 1))
