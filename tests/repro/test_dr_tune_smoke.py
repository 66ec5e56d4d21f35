"""Smoke test of `regzoo repro dr_tune --tiny`: artefacts, arms, rates chosen on validation."""

import pytest
import torch

from conftest import run_tiny
from regzoo.repro.dr_tune import (
    ARMS,
    REPRODUCTION,
    DRTuneReproConfig,
    feature_drift,
    few_shot_split,
)
from regzoo.repro.runner import validate_result


def test_tiny_run_writes_valid_artefacts_with_every_arm(tmp_path_factory):
    out, result = run_tiny("dr_tune", tmp_path_factory)
    validate_result(result)
    config = DRTuneReproConfig.tiny()
    arms = result["metrics"]["aggregate"]["shot10"]
    assert set(arms) == set(ARMS)
    for metrics in arms.values():
        assert metrics["backbone_lr"]["values"][0] in config.backbone_lrs
        assert metrics["head_lr"]["values"][0] in config.head_lrs
        assert 0.0 <= metrics["test_accuracy"]["mean"] <= 1.0
    assert arms["linear_probe"]["feature_drift"]["mean"] < 1e-6  # the probe never moves f_θ
    assert result["claim"]["margin"] == 0.01 and result["claim"]["baseline"] == "finetune"
    assert result["timing"]["dr_tune_over_finetune"] > 0
    assert (out / "lr_shot10_dr_tune.json").is_file()
    assert (out / "dr_tune.png").is_file()


def test_presets_follow_the_issue():
    full, quick = DRTuneReproConfig.full(), DRTuneReproConfig.quick()
    assert len(full.seeds) == 10 and len(quick.seeds) == 5
    assert full.shots == (10, 20) and full.arms == ARMS
    assert not set(full.search_seeds) & set(full.seeds)
    assert 0.33 in full.head_lrs and full.queue_size == 128 and full.epochs == 100
    with pytest.raises(ValueError, match="search_seeds"):
        DRTuneReproConfig(seeds=(0, 1), search_seeds=(1,))


def test_the_few_shot_split_is_disjoint_and_balanced():
    split = few_shot_split(10, 40, seed=3)
    assert torch.equal(torch.bincount(split.y_train), torch.full((5,), 10))
    assert torch.equal(torch.bincount(split.y_val), torch.full((5,), 40))
    rows = torch.cat([split.x_train, split.x_val, split.x_test])
    assert torch.unique(rows, dim=0).shape[0] >= rows.shape[0] - 5  # digits has few duplicates
    assert split.x_test.shape[0] > 500 and int(split.y_test.max()) == 4
    again = few_shot_split(10, 40, seed=3)
    assert torch.equal(split.x_train, again.x_train)


def test_feature_drift_is_zero_for_the_same_encoder_and_positive_after_a_change():
    from regzoo.models.pretrained import DigitEncoder

    torch.manual_seed(0)
    encoder = DigitEncoder().eval()
    x = torch.rand(20, 64)
    assert abs(feature_drift(encoder, encoder, x)) < 1e-6
    moved = DigitEncoder().eval()
    assert feature_drift(moved, encoder, x) > 0.0


def test_the_claim_is_fixed_at_ten_shot_with_a_one_point_margin():
    claim = REPRODUCTION.claim(DRTuneReproConfig.full())
    assert (claim.setting, claim.method, claim.baseline, claim.margin) == (
        "shot10", "dr_tune", "finetune", 0.01)
    secondary = REPRODUCTION.secondary_claims(DRTuneReproConfig.full())
    assert {(c.setting, c.baseline) for c in secondary} == {
        ("shot20", "finetune"), ("shot10", "l2sp"), ("shot20", "l2sp"), ("shot10", "dr_only")}
