"""Smoke test of `regzoo repro gigatok --tiny`: artefacts, metrics, claims; presets and teacher."""

import pytest
import torch

from regzoo.repro.gigatok import GigaTokReproConfig, digit_splits
from regzoo.repro.runner import run_reproduction, validate_result


@pytest.mark.slow
def test_tiny_run_writes_valid_artefacts_with_every_metric_and_claim(tmp_path):
    result = run_reproduction("gigatok", "tiny", out=tmp_path / "run", jobs=1, progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]["small"]
    assert set(aggregate) == {"none", "random", "trained"}
    for arm in ("none", "random", "trained"):
        m = {name: summary["mean"] for name, summary in aggregate[arm].items()}
        assert 0 <= m["probe_acc"] <= 1 and 0 < m["usage"] <= 1 and m["rec_mse"] > 0
        assert m["ar_test_nll"] > 0 and 0 <= m["oracle_agreement"] <= 1 and m["fd"] >= 0
        assert 1 <= m["perplexity"] <= 32
    claim = result["claim"]
    assert (claim["method"], claim["baseline"], claim["margin"]) == ("trained", "random", 0.05)
    assert claim["verdict"] == "inconclusive"  # one seed
    pairs = {(c["method"], c["baseline"], c["metric"]) for c in result["secondary_claims"]}
    assert {("trained", "none", "probe_acc"), ("random", "none", "probe_acc"),
            ("trained", "none", "ar_test_nll"), ("trained", "none", "fd")} <= pairs
    assert (tmp_path / "run" / "gigatok.png").is_file()


def test_presets_follow_the_issue_and_refuse_bad_options():
    full = GigaTokReproConfig.full()
    assert len(full.seeds) >= 5 and set(full.sizes) == {"small", "large"}
    assert set(full.arms) == {"none", "random", "trained", "trained_no_entropy"}
    assert (full.semantic_weight, full.entropy_weight, full.tau) == (0.5, 0.005, 0.01)
    large, small = full.tokenizer_config("large"), full.tokenizer_config("small")
    assert large.decoder_depth > small.decoder_depth and large.width > small.width
    with pytest.raises(ValueError, match="including 'random' and 'trained'"):
        GigaTokReproConfig(arms=("none", "trained"))
    with pytest.raises(ValueError, match="sizes"):
        GigaTokReproConfig(sizes=("huge",))


def test_the_splits_are_disjoint_and_the_trained_teacher_is_not_the_oracle():
    from regzoo.generative.assets import digit_oracle
    from regzoo.models.digit_teacher import digit_teacher, random_teacher, teacher_accuracy

    data = digit_splits()
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (998, 200, 599)
    assert data.x_train.min() >= -1 and data.x_train.max() <= 1
    teacher = digit_teacher()
    assert teacher_accuracy() > 0.9
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    assert teacher.patch_features(torch.zeros(2, 64)).shape == (2, 16, 64)
    oracle = digit_oracle()
    assert type(oracle) is not type(teacher)
    a, b = random_teacher(1), random_teacher(1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.body[0].weight, teacher.body[0].weight)
