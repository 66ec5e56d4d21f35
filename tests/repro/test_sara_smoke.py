"""Smoke test of `regzoo repro sara --tiny`: artefacts, arms, claims, the lr choice rules."""

import json
import math

import pytest

from conftest import run_tiny
from regzoo.repro.finetune import score_grid, source_at_matched_target
from regzoo.repro.runner import validate_result
from regzoo.repro.sara import ARMS, SaRAReproConfig, matched_score


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_tiny("sara", tmp_path_factory)


def test_tiny_run_writes_valid_artefacts_with_every_arm(tiny_run):
    out, result = tiny_run
    validate_result(result)
    validate_result(json.loads((out / "result.json").read_text()))
    for name in ("result.md", "sara.png", "done", "search_sara.json"):
        assert (out / name).is_file(), name
    aggregate = result["metrics"]["aggregate"]["digits"]
    assert set(aggregate) == set(ARMS)
    assert result["claim"]["verdict"] == "inconclusive"  # one seed cannot decide
    assert (result["claim"]["baseline"], result["claim"]["margin"]) == ("full_ft", 0.0)
    assert [(c["method"], c["baseline"]) for c in result["secondary_claims"]] == [
        ("sara", "lora"), ("sara", "lora"), ("smallest", "random"), ("smallest", "largest"),
        ("sara", "sara_no_nuclear"), ("sara", "sara_no_progressive")]
    assert result["timing"]["sara_over_lora"] > 0
    assert "Premise" in result["claim"]["note"]


def test_units_share_the_pretrained_model_and_count_state_bytes(tiny_run):
    _, result = tiny_run
    config = SaRAReproConfig.tiny()
    records = {r["arm"]: r for r in result["metrics"]["per_seed"]}
    pretrained = {r["metrics"]["pretrained_accuracy"] for r in records.values()}
    assert len(pretrained) == 1
    trainable = {arm: r["metrics"]["trainable"] for arm, r in records.items()}
    # One hidden layer of 32: 64·32 + 32·10 weights, plus biases for full fine-tuning.
    assert trainable["full_ft"] == 64 * 32 + 32 + 32 * 10 + 10
    assert trainable["sara"] == trainable["random"] == int(0.1 * 64 * 32) + int(0.1 * 320)
    assert trainable["lora"] == 8 * (64 + 32) + 8 * (32 + 10)
    for arm, record in records.items():
        # AdamW float32: a gradient and two moments per trainable number.
        assert record["metrics"]["state_bytes"] == 12 * trainable[arm], arm
        assert len(record["curves"]["new_test"]) == len(config.lr_grid)


def test_learning_rate_choice_and_matched_accuracy_rules():
    grid = (1e-4, 1e-3, 1e-2, 2e-2, 3e-2, 1e-1)

    def choose(new, old):
        found = score_grid(grid, seeds=(1000,), rules={"matched": lambda r: matched_score(r, 0.9)},
                           run=lambda lr, seed: {"new_val": new[grid.index(lr)],
                                                 "old_val": old[grid.index(lr)]})
        return grid.index(found["best"]["matched"])

    old = [0.9, 0.8, 0.6, 0.7, 0.3, 0.1]
    assert choose([0.1, 0.5, 0.92, 0.95, 0.97, 0.9], old) == 3  # reaches 0.9, keeps most of A
    assert choose([0.1, 0.5, 0.6, 0.8, 0.7, 0.4], old) == 3  # none reaches: the best fit
    assert source_at_matched_target([0.5, 0.8, 1.0], [0.9, 0.7, 0.3], 0.9) == pytest.approx(0.5)
    assert math.isnan(source_at_matched_target([0.5, 0.8], [0.9, 0.7], 0.9))


def test_config_is_validated():
    with pytest.raises(ValueError, match="arms"):
        SaRAReproConfig(arms=("sara", "adalora"))
    with pytest.raises(ValueError, match="'sara', 'full_ft' and 'lora'"):
        SaRAReproConfig(arms=("sara", "random"))
    with pytest.raises(ValueError, match="lr_grid"):
        SaRAReproConfig(lr_grid=(1e-2, 1e-3))
    with pytest.raises(ValueError, match="sweep_seed"):
        SaRAReproConfig(seeds=(0, 1000))
    with pytest.raises(ValueError, match="progressive_share"):
        SaRAReproConfig(progressive_share=1.0)
    assert len(SaRAReproConfig.full().seeds) == 5
