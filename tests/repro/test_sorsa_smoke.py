"""Smoke test of `regzoo repro sorsa --tiny`: artefacts, arms, lr chosen on validation."""

import pytest

from regzoo.repro.runner import run_reproduction, validate_result
from regzoo.repro.sorsa import ARMS, SORSAReproConfig


def test_tiny_run_writes_valid_artefacts_with_every_arm(tmp_path):
    result = run_reproduction("sorsa", "tiny", out=tmp_path / "run", jobs=1, progress=False)
    validate_result(result)
    config = SORSAReproConfig.tiny()
    assert set(result["metrics"]["aggregate"]) == {"lr_by_auc", "lr_by_final"}
    arms = result["metrics"]["aggregate"]["lr_by_auc"]
    assert set(arms) == set(ARMS)
    for arm, metrics in arms.items():
        assert all(v in config.lrs for v in metrics["lr"]["values"])
        assert 0.0 <= metrics["target_accuracy"]["mean"] <= 1.0
        assert ("ortho_error" in metrics) == arm.startswith("sorsa")
    # Only the factors train: rank 4 on 64→32→10 is 4·(64+32) + 4·(32+10) plus 4 + 4 values of σ.
    assert arms["lora"]["trainable_parameters"]["mean"] == 4 * (64 + 32) + 4 * (32 + 10)
    assert arms["sorsa"]["trainable_parameters"]["mean"] == 4 * (64 + 32 + 32 + 10) + 8
    assert len(result["secondary_claims"]) == 8
    assert result["timing"]["sorsa_over_full_ft"] > 0
    assert (tmp_path / "run" / "sorsa.png").is_file()


def test_presets_follow_the_spec():
    full = SORSAReproConfig.full()
    assert len(full.seeds) == 5 and full.rank == 4 and full.steps == 150
    assert full.lrs == (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    assert full.gamma_over_lr == pytest.approx(4e-4 / 3e-5)


def test_config_rejects_search_seeds_that_overlap_the_evaluation_seeds():
    with pytest.raises(ValueError, match="search_seeds"):
        SORSAReproConfig(seeds=(0, 1), search_seeds=(1,))
