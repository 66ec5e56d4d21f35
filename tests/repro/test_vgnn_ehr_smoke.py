"""Smoke test of `regzoo repro vgnn_ehr --tiny`: artefacts, arms, derived settings, claims."""

import pytest

from regzoo.repro.runner import run_reproduction, validate_result
from regzoo.repro.vgnn_ehr import VGNNReproConfig


def test_tiny_run_writes_valid_artefacts_with_every_arm_and_claim(tmp_path):
    result = run_reproduction("vgnn_ehr", "tiny", out=tmp_path / "run", jobs=1, progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]
    assert set(aggregate["n100"]) == {"logreg", "mlp", "gnn", "vgnn", "vgnn_official",
                                      "best_baseline"}
    assert set(aggregate["spectrum_n100"]) == {"gnn", "vgnn", "vgnn_official"}
    for arm in ("gnn", "vgnn"):
        ratio = aggregate["n100"][arm]["top1_ratio"]["mean"]
        assert 0 < ratio <= 1
        assert 0 <= aggregate["n100"][arm]["test_auprc"]["mean"] <= 1
    curves = result["metrics"]["curves"]
    assert len(curves["n100"]["vgnn"]["val_auprc"]["mean"]) == 2  # epochs
    assert len(curves["spectrum_n100"]["vgnn"]["spectrum"]["mean"]) == 8  # dim
    assert result["claim"]["margin"] == 0.01 and result["claim"]["baseline"] == "gnn"
    assert [c["metric"] for c in result["secondary_claims"]] == ["top1_ratio", "gap",
                                                                 "test_auprc"]
    assert result["claim"]["verdict"] == "inconclusive"  # one seed
    assert "cannot reproduce" in result["claim"]["note"]
    assert (tmp_path / "run" / "vgnn_ehr.png").is_file()


def test_presets_follow_the_issue_and_refuse_bad_options():
    full = VGNNReproConfig.full()
    assert full.n_trains == (500, 2000) and (full.n_val, full.n_test) == (1000, 5000)
    assert len(full.seeds) >= 5 and full.arms[:4] == ("logreg", "mlp", "gnn", "vgnn")
    assert (full.lam, full.dim, full.dropout) == (1.0, 64, 0.4)
    with pytest.raises(ValueError, match="arms must include gnn and vgnn"):
        VGNNReproConfig(arms=("logreg", "vgnn"))
    with pytest.raises(ValueError, match="lam must be non-negative"):
        VGNNReproConfig(lam=-1.0)


def test_the_diagnostic_official_kl_arm_runs_at_the_smallest_size_only():
    from regzoo.repro.vgnn_ehr import REPRODUCTION

    units = REPRODUCTION.units(VGNNReproConfig.full())
    official = {u.setting for u in units if u.arm == "vgnn_official"}
    assert official == {"n500"}
    assert len(units) == 5 * (4 + 1) + 5 * 4
