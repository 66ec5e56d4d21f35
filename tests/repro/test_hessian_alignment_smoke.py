"""Smoke test of `regzoo repro hessian_alignment --tiny`: artefacts, arms, claims, timing."""

import pytest
import torch

from regzoo.data.domains import digits_cmnist, digits_domains, leave_one_domain_out
from regzoo.repro.hessian_alignment import (
    ARMS,
    LOO_SETTING,
    REPRODUCTION,
    HAReproConfig,
    build_loo_penalty,
    build_model,
    build_penalty,
    select_by_validation,
    train_cmnist,
    train_loo,
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
    headline = result["claim"]
    assert (headline["method"], headline["baseline"], headline["margin"]) == (
        "hgp", "best_baseline", 0.0)
    secondary = {(c["setting"], c["method"], c["baseline"]) for c in result["secondary_claims"]}
    assert secondary == {("digits_cmnist", "hutchinson", "erm"),
                         ("digits_cmnist", "hgp", "erm"),
                         *((LOO_SETTING, m, b) for m in ("hgp", "hutchinson")
                           for b in ("erm", "best_baseline"))}
    loo = result["metrics"]["aggregate"][LOO_SETTING]
    assert set(loo) == {*ARMS, "best_baseline"}
    for arm in ARMS:
        per_angle = [loo[arm][f"test_rot{a}"]["values"] for a in (0, 15, 30)]
        assert loo[arm]["test_accuracy"]["values"] == pytest.approx(
            [sum(v) / 3 for v in zip(*per_angle)])
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


def test_full_preset_keeps_the_colored_mnist_units_and_adds_the_rotated_suite():
    # --resume reuses the committed Colored-MNIST units by id: their ids must not move.
    full = HAReproConfig.full()
    units = REPRODUCTION.units(full)
    cmnist = {u.id for u in units if u.setting == "digits_cmnist"}
    assert cmnist == {f"digits_cmnist__{a}__s{s}" for a in ARMS for s in range(5)}
    loo = [u for u in units if u.setting == LOO_SETTING]
    assert len(loo) == len(ARMS) * len(full.loo_seed_list)
    assert full.loo_angles == (0.0, 15.0, 30.0, 45.0)


def test_best_baseline_is_chosen_per_seed_by_validation_else_by_mean_test_accuracy():
    config = HAReproConfig(arms=("erm", "irm", "fishr", "hgp"))

    def record(setting, arm, seed, test, val=None):
        metrics = {"test_accuracy": test} | ({} if val is None else {"val_accuracy": val})
        return {"setting": setting, "arm": arm, "seed": seed, "metrics": metrics}

    records = [record("digits_cmnist", "irm", 0, 0.5), record("digits_cmnist", "irm", 1, 0.9),
               record("digits_cmnist", "fishr", 0, 0.8), record("digits_cmnist", "fishr", 1, 0.7),
               record(LOO_SETTING, "irm", 0, 0.1, val=0.9), record(LOO_SETTING, "irm", 1, 0.2,
                                                                   val=0.1),
               record(LOO_SETTING, "fishr", 0, 0.3, val=0.2),
               record(LOO_SETTING, "fishr", 1, 0.4, val=0.8)]
    derived = {(r["setting"], r["seed"]): r["metrics"]["test_accuracy"]
               for r in REPRODUCTION.derived_arms(config, records)}
    # Colored MNIST: Fishr has the higher mean test accuracy (0.75 vs 0.70) on both seeds.
    assert derived[("digits_cmnist", 0)] == 0.8 and derived[("digits_cmnist", 1)] == 0.7
    # Rotated digits: seed 0 takes IRM (val 0.9), seed 1 takes Fishr (val 0.8).
    assert derived[(LOO_SETTING, 0)] == 0.1 and derived[(LOO_SETTING, 1)] == 0.4


def test_validation_selection_takes_the_first_best_evaluation():
    assert select_by_validation({"val_accuracy": [0.5, 0.9, 0.7, 0.9]}) == 1
    assert select_by_validation({"val_accuracy": [0.8]}) == 0


def test_rotated_training_is_deterministic_and_curves_have_every_evaluation():
    config = HAReproConfig(loo_angles=(0.0, 15.0, 30.0), loo_hidden=8, loo_steps=7,
                           loo_batch=8, loo_eval_every=3, loo_probes=2)
    suite = leave_one_domain_out(digits_domains(0, angles=config.loo_angles), 1, LOO_SETTING)
    model, curves = train_loo(config, "hutchinson", suite, 2)
    again, curves_again = train_loo(config, "hutchinson", suite, 2)
    assert torch.equal(model.head.weight, again.head.weight) and curves == curves_again
    assert len(curves["val_accuracy"]) == len(curves["test_accuracy"]) == 3
    assert not torch.equal(model.head.weight, train_loo(config, "erm", suite, 2)[0].head.weight)
    head = torch.nn.Linear(8, 10)
    assert build_loo_penalty("erm", head, 2) is None
    assert build_loo_penalty("hgp", head, 2).reduction == "mean"


def test_rotated_suite_rejects_bad_angles():
    with pytest.raises(ValueError, match="loo_angles"):
        HAReproConfig(loo_angles=(0.0, 15.0))
    with pytest.raises(ValueError, match="loo_angles"):
        HAReproConfig(loo_angles=(0.0, 15.0, 20.0))
    with pytest.raises(ValueError, match="loo_seeds"):
        HAReproConfig(loo_seeds=(1, 1))
