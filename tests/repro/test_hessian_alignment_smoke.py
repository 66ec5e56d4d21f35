"""Smoke test of `regzoo repro hessian_alignment --tiny`: artefacts, arms, claims, timing."""

import pytest
import torch

from regzoo.data.domains import digits_cmnist
from regzoo.repro.hessian_alignment import (
    ARMS,
    HAReproConfig,
    build_model,
    build_penalty,
    train_cmnist,
)
from regzoo.repro.runner import run_reproduction, validate_result


def test_tiny_run_writes_valid_artefacts_with_every_arm_and_claim(tmp_path):
    result = run_reproduction("hessian_alignment", "tiny", out=tmp_path / "run", jobs=1,
                              progress=False)
    validate_result(result)
    arms = result["metrics"]["aggregate"]["digits_cmnist"]
    assert set(arms) == {*ARMS, "best_baseline"}
    for arm in ARMS:
        assert 0.0 <= arms[arm]["test_accuracy"]["mean"] <= 1.0
    assert result["claim"]["method"] == "hgp" and result["claim"]["margin"] == 0.15
    secondary = {(c["method"], c["baseline"]) for c in result["secondary_claims"]}
    assert secondary == {("hutchinson", "erm"), ("hgp", "best_baseline")}
    assert result["timing"]["hgp_over_erm"] > 0
    assert (tmp_path / "run" / "hessian_alignment.png").is_file()


def test_full_preset_is_the_official_recipe_with_five_seeds():
    full = HAReproConfig.full()
    assert len(full.seeds) == 5 and set(full.arms) == set(ARMS)
    assert (full.steps, full.anneal_steps) == (501, 190)
    assert full.penalty_weight == pytest.approx(91257.18613115903)


def test_training_is_deterministic_and_the_penalty_changes_the_model():
    config = HAReproConfig(steps=4, anneal_steps=2, hidden=8, probes=2, eval_every=2)
    suite = digits_cmnist(0)
    first = train_cmnist(config, "hgp", suite, 3)[0].head.weight
    again = train_cmnist(config, "hgp", suite, 3)[0].head.weight
    erm = train_cmnist(config, "erm", suite, 3)[0].head.weight
    assert torch.equal(first, again)
    assert not torch.allclose(first, erm)


def test_model_and_penalties_are_built_as_the_script():
    model = build_model(128, 8)
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in model.modules()
               if isinstance(m, torch.nn.Linear))
    assert build_penalty("erm", model.head, 2) is None
    assert all(build_penalty(a, model.head, 2) is not None for a in ARMS if a != "erm")
    with pytest.raises(ValueError, match="includes 'erm'"):
        HAReproConfig(arms=("hgp",))
