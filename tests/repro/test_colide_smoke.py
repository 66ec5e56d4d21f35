"""Smoke test of `regzoo repro colide --tiny`: artefacts, arms, derived noise-scale setting."""

import pytest

from regzoo.repro.colide import CoLiDEReproConfig
from regzoo.repro.runner import run_reproduction, validate_result

pytest.importorskip("dagma")


def test_tiny_run_writes_valid_artefacts_with_every_arm_and_claim(tmp_path):
    result = run_reproduction("colide", "tiny", out=tmp_path / "run", jobs=1, progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]
    arms = {"colide_nv", "colide_ev", "dagma", "dagma_colide_path"}
    assert set(aggregate["nv_er2_d6"]) == arms
    assert set(aggregate["ev_var1"]) == set(aggregate["ev_var16"]) == arms - {"colide_nv"}
    spread = aggregate["noise_scale"]["colide_ev"]["shd_spread"]["mean"]
    assert spread >= 0
    curves = result["metrics"]["curves"]["noise_scale"]["dagma"]["shd_vs_var"]["mean"]
    assert len(curves) == 2
    assert [c["metric"] for c in result["secondary_claims"]] == ["shd_spread", "shd"]
    assert result["claim"]["verdict"] == "inconclusive"  # one seed
    assert "CoLiDE-NV SHD" in result["claim"]["note"]
    assert result["timing"]["colide_ev_over_dagma"] > 0
    assert (tmp_path / "run" / "colide.png").is_file()


def test_presets_follow_the_official_path_and_the_spec_sizes():
    full = CoLiDEReproConfig.full()
    assert (full.T, full.s, full.warm_iter, full.max_iter) == (4, (1.0, 0.9, 0.8, 0.7),
                                                              20000, 70000)
    assert (full.het_d, full.het_degree, full.n) == (50, 4, 1000) and len(full.seeds) >= 3
    assert max(full.scale_vars) / min(full.scale_vars) >= 100
    # DAGMA's baseline arm runs the package's own fit() defaults
    assert (full.dagma_T, full.dagma_s, full.dagma_warm_iter, full.dagma_max_iter) == (
        5, (1.0, 0.9, 0.8, 0.7, 0.6), 30000, 60000)
    with pytest.raises(ValueError, match="scale_arms"):
        CoLiDEReproConfig(scale_arms=("colide_ev",))
