"""Smoke test of `regzoo repro ba_lora --tiny`: artefacts, both settings, the sweep, the helpers."""

import json

import pytest
import torch
from torch import nn

from conftest import run_tiny
from regzoo.data.transfer import digits_transfer
from regzoo.methods.ba_lora import PAPER_WEIGHTS
from regzoo.repro.ba_lora import (
    BALoRAReproConfig,
    adapt_arm,
    arm_weights,
    nlu_data,
)
from regzoo.repro.runner import validate_result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_tiny("ba_lora", tmp_path_factory)


def test_tiny_run_writes_valid_artefacts_for_both_settings(tiny_run):
    out, result = tiny_run
    validate_result(result)
    validate_result(json.loads((out / "result.json").read_text()))
    for name in ("result.md", "ba_lora.png", "done", "search_nlu_digits.json",
                 "search_nlg_toy.json"):
        assert (out / name).is_file(), name
    config = BALoRAReproConfig.tiny()
    aggregate = result["metrics"]["aggregate"]
    assert set(aggregate) == set(config.settings)
    for setting in config.settings:
        assert set(aggregate[setting]) == set(config.arms)
    assert result["claim"]["verdict"] == "inconclusive"  # one seed cannot decide
    assert result["claim"]["metric"] == "worst_group_accuracy"
    assert result["timing"]["ba_lora_over_pissa"] > 0
    assert "frozen copy" in result["claim"]["note"]


def test_units_use_the_swept_settings_and_record_curves(tiny_run):
    out, result = tiny_run
    config = BALoRAReproConfig.tiny()
    sweeps = {s: json.loads((out / f"search_{s}.json").read_text()) for s in config.settings}
    for record in result["metrics"]["per_seed"]:
        metrics, curves = record["metrics"], record["curves"]
        epochs = config.nlu_epochs if record["setting"] == "nlu_digits" else config.nlg_epochs
        assert len(curves["target_accuracy"]) == epochs
        assert metrics["lr"] == sweeps[record["setting"]]["chosen"][record["arm"]]["lr"]
        if record["arm"] == "ba_lora_cons":
            assert metrics["lambda1"] > 0 and metrics["lambda2"] == metrics["lambda3"] == 0
        if record["arm"] == "ba_lora_residual":  # only the teacher differs from BA-LoRA
            chosen = sweeps[record["setting"]]["chosen"]
            assert chosen["ba_lora_residual"] == chosen["ba_lora"]
        if record["setting"] == "nlu_digits":
            assert 0 <= metrics["worst_group_accuracy"] <= 1
            assert metrics["bias_gap"] == pytest.approx(
                metrics["aligned_accuracy"] - metrics["worst_group_accuracy"])


def test_the_residual_arm_adapts_with_the_residual_teacher():
    model = nn.Sequential(nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 12))
    adapted = adapt_arm("ba_lora_residual", model, rank=4, task="nlu", weights=PAPER_WEIGHTS,
                        targets=None)
    x = torch.randn(3, 12)
    with torch.no_grad():
        assert float((adapted.handle.pretrained_outputs(x) - model(x)).abs().max()) > 1e-3
    plain_model = nn.Sequential(nn.Linear(12, 12))
    plain = adapt_arm("ba_lora", plain_model, rank=4, task="nlu", weights=PAPER_WEIGHTS,
                      targets=None)
    with torch.no_grad():
        torch.testing.assert_close(plain.handle.pretrained_outputs(x), plain_model(x))


def test_arm_weights_scale_the_paper_lambdas_per_term():
    chosen = {"ba_lora_cons": 10.0, "ba_lora_div": 1.0, "ba_lora_svd": 100.0}
    assert arm_weights("ba_lora_div", chosen) == (0.0, 3e-4, 0.0)
    assert arm_weights("ba_lora", chosen) == pytest.approx((1e-3, 3e-4, 1e-2))


def test_watermark_is_planted_as_configured():
    config = BALoRAReproConfig.tiny()
    data = nlu_data(config, 0)
    pair = digits_transfer(0)
    planted = data.source_train[0][:, -10:].argmax(dim=1)
    share = float((planted == pair.source.y_train).double().mean())
    assert share == pytest.approx(0.9 + 0.1 / 10, abs=0.03)
    target_digits = (pair.target.y_train - 3) % 10
    share = float((data.target_train[0][:, -10:].argmax(1) == target_digits).double().mean())
    assert share == pytest.approx(0.5 + 0.5 / 10, abs=0.06)
    digit = (data.target_test["aligned"][1] - 3) % 10
    assert torch.equal(data.target_test["aligned"][0][:, -10:].argmax(1), digit)
    assert not bool((data.target_test["conflicting"][0][:, -10:].argmax(1) == digit).any())
    assert torch.equal(data.target_test["aligned"][0][:, :64], pair.target.x_test)
    noisy = float((data.target_train[1] != pair.target.y_train).double().mean())
    assert noisy == pytest.approx(0.3 * 0.9, abs=0.05)


def test_config_is_validated():
    config = BALoRAReproConfig.quick()
    with pytest.raises(ValueError, match="arms"):
        config.with_overrides({"arms": "lora,pissa"})
    with pytest.raises(ValueError, match="settings"):
        config.with_overrides({"settings": "glue"})
    with pytest.raises(ValueError, match="sweep_seed"):
        config.with_overrides({"sweep_seed": "1"})
    with pytest.raises(ValueError, match="increasing"):
        config.with_overrides({"nlu_lr_grid": "0.01,0.001"})
    with pytest.raises(ValueError, match="down_noise"):
        config.with_overrides({"down_noise": "1.5"})
