"""Smoke test of `regzoo repro sara --tiny`: artefacts, arms, claims, the lr choice rules."""

import json
import math

import pytest

from regzoo.repro.runner import run_reproduction, validate_result
from regzoo.repro.sara import ARMS, SaRAReproConfig, at_target, choose_lr


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sara") / "run"
    return out, run_reproduction("sara", "tiny", out=out, jobs=1, progress=False,
                                 command="regzoo repro sara --tiny")


def test_tiny_run_writes_valid_artefacts_with_every_arm(tiny_run):
    out, result = tiny_run
    validate_result(result)
    validate_result(json.loads((out / "result.json").read_text()))
    for name in ("result.md", "sara.png", "done", "lr_sweep_sara.json", "pretrained_s0.pt"):
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
    config = SaRAReproConfig(lr_grid=(1e-4, 1e-3, 1e-2, 2e-2, 3e-2, 1e-1))
    sweep = {"new_val": [0.1, 0.5, 0.92, 0.95, 0.97, 0.9],
             "old_val": [0.9, 0.8, 0.6, 0.7, 0.3, 0.1]}
    assert choose_lr(config, sweep) == 3  # reaches 0.9 and keeps the most of task A
    sweep["new_val"] = [0.1, 0.5, 0.6, 0.8, 0.7, 0.4]
    assert choose_lr(config, sweep) == 3  # none reaches: the best fit
    assert at_target([0.5, 0.8, 1.0], [0.9, 0.7, 0.3], 0.9) == pytest.approx(0.5)
    assert math.isnan(at_target([0.5, 0.8], [0.9, 0.7], 0.9))


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
