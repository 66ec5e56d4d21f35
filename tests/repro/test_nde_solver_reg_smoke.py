"""Smoke test of `regzoo repro nde_solver_reg --tiny`: artefacts, arms, claims, λ search cache."""

import json
import math

import pytest

from regzoo.repro.nde_solver_reg import (
    NdeSolverRegConfig,
    NdeSolverRegReproduction,
    concentric_circles,
)
from regzoo.repro.runner import run_reproduction, validate_result


def test_tiny_run_writes_valid_artefacts_with_every_arm_and_claim(tmp_path):
    result = run_reproduction("nde_solver_reg", "tiny", out=tmp_path / "run", jobs=1,
                              progress=False)
    validate_result(result)
    aggregates = result["metrics"]["aggregate"]
    assert set(aggregates) == {"circles", "digits", "spirals"}  # Tasks A, B and C
    for setting, aggregate in aggregates.items():
        assert set(aggregate) == {"unreg", "ernode", "taynode"}
        quality = "test_mse" if setting == "spirals" else "test_acc"
        for arm in aggregate.values():
            assert arm["test_nfe"]["mean"] >= 8 and arm["train_nfe"]["mean"] >= 8
            assert arm["seconds_per_epoch"]["mean"] > 0 and arm["test_accepted"]["mean"] >= 1
            assert 0 < arm[quality]["mean"] <= (1 if quality == "test_acc" else 10)
        assert aggregate["ernode"]["lambda0"]["mean"] == 10.0
        search = json.loads((tmp_path / "run" / f"lambda_{setting}_ernode.json").read_text())
        assert search["lambda0"] == 10.0 and set(search["scores"]) == {"10.0"}
    assert result["claim"]["metric"] == "log_test_nfe"
    assert result["claim"]["setting"] == "circles"
    assert result["claim"]["margin"] == pytest.approx(math.log(1.4))
    claims = [(c["setting"], c["metric"], c["method"], c["margin"])
              for c in result["secondary_claims"]]
    ln = math.log
    assert claims == pytest.approx([
        ("circles", "test_acc", "ernode", -0.01),
        ("circles", "log_train_seconds", "ernode", -ln(1.1)),
        ("circles", "log_train_seconds", "taynode", ln(2)),
        ("digits", "log_test_nfe", "ernode", ln(1.4)),
        ("digits", "test_acc", "ernode", -0.01),
        ("digits", "log_train_seconds", "ernode", -ln(1.1)),
        ("digits", "log_train_seconds", "taynode", ln(2)),
        ("spirals", "log_test_nfe", "ernode", ln(1.4)),
        ("spirals", "log_test_mse", "ernode", -ln(1.1)),
        ("spirals", "log_train_seconds", "ernode", -ln(1.1)),
        ("spirals", "log_train_seconds", "taynode", ln(2)),
    ])
    lower = {c["metric"] for c in result["secondary_claims"] if c["direction"] == "lower"}
    assert lower == {"log_test_nfe", "log_test_mse", "log_train_seconds"}
    assert {c["verdict"] for c in [result["claim"], *result["secondary_claims"]]} == {
        "inconclusive"}  # one seed
    assert "ERNODE" in result["claim"]["note"] and "Tasks B and C" in result["claim"]["note"]
    assert (tmp_path / "run" / "nde_solver_reg.png").exists()


def test_presets_and_config_checks():
    full = NdeSolverRegConfig.full()
    assert len(full.seeds) >= 5 and full.rtol == full.atol == 1e-6
    assert (full.steps, full.lr, full.hidden, full.method) == (300, 1e-2, 32, "dopri5")  # spec §5
    assert full.settings == ("circles", "digits", "spirals")  # Tasks A, B, C
    assert set(full.arms) == {"unreg", "ernode", "srnode", "combined", "steer", "taynode",
                              "ernode_mean", "ernode_dt"}
    assert full.lambda_grid == (1.0, 10.0, 100.0) and full.lambda_decay == 10.0
    assert full.lambda_grid_of("circles") == full.lambda_grid
    assert full.lambda_grid_of("digits") == full.lambda_grid_of("spirals") == (
        0.01, 0.1, 1.0, 10.0, 100.0)
    # Tasks B and C: the six arms, no ablations; digits at the MNIST script's tolerance
    six = ("unreg", "ernode", "srnode", "combined", "steer", "taynode")
    assert full.arms_of("circles") == full.arms
    assert full.arms_of("digits") == full.arms_of("spirals") == six
    assert full.tolerances("circles") == full.tolerances("spirals") == (1e-6, 1e-6)
    assert full.tolerances("digits") == (1.4e-8, 1.4e-8)
    assert (full.digits_epochs, full.digits_hidden, full.digits_batch) == (10, 100, 128)
    units = NdeSolverRegReproduction().units(full)
    assert len(units) == 5 * 8 + 2 * 5 * 6
    assert {u.arm for u in units if u.setting == "digits"} == set(six)
    with pytest.raises(ValueError, match="circles"):
        NdeSolverRegConfig(settings=("digits", "spirals"))
    with pytest.raises(ValueError, match="task_bc_arms"):
        NdeSolverRegConfig(task_bc_arms=("unreg", "steer"))
    with pytest.raises(ValueError, match="task_bc_arms"):
        NdeSolverRegConfig(task_bc_arms=("unreg", "ernode", "bogus"))
    with pytest.raises(ValueError, match="search_seed"):
        NdeSolverRegConfig(seeds=(0, 1000))
    with pytest.raises(ValueError, match="arms must include"):
        NdeSolverRegConfig(arms=("unreg", "srnode"))


def test_concentric_circles_are_balanced_and_separated():
    import torch

    x, y = concentric_circles(400, torch.Generator().manual_seed(0))
    r = x.norm(dim=1)
    assert int(y.sum()) == 200
    assert float(r[y == 0].max()) <= 0.5 and float(r[y == 1].min()) >= 1.0
    assert float(r[y == 1].max()) <= 1.5


def test_digits_and_spirals_settings_train_and_report_their_metrics():
    import dataclasses

    import torch

    from regzoo.repro.nde_solver_reg import train_arm

    config = dataclasses.replace(NdeSolverRegConfig.tiny(), digits_epochs=1, digits_batch=512,
                                 spirals_n_train=16, spirals_n_val=8, spirals_n_test=8,
                                 spirals_steps=2, spirals_batch=8)
    digits = train_arm(config, "digits", "ernode", 0, 1.0, torch.device("cpu"))["metrics"]
    assert 0 <= digits["test_acc"] <= 1 and digits["test_nfe"] >= 8
    for arm in ("ernode", "taynode", "steer"):
        spirals = train_arm(config, "spirals", arm, 0, 1.0, torch.device("cpu"))["metrics"]
        assert spirals["test_mse"] > 0 and spirals["val_score"] == -spirals["val_mse"]
        assert spirals["test_nfe"] >= 8


def test_irregular_spirals_are_seeded_and_observe_the_start():
    from regzoo.data.spirals import irregular_spirals

    a, b = irregular_spirals(20, seed=3), irregular_spirals(20, seed=3)
    assert torch_equal(a.values, b.values) and a.values.shape == (20, 40, 2)
    assert bool(a.observed[:, 0].all()) and int(a.observed.sum(1)[0]) == 20
    assert float((a.values - a.clean).std()) == pytest.approx(0.05, rel=0.2)
    with pytest.raises(ValueError, match="observed_fraction"):
        irregular_spirals(4, observed_fraction=1.0)


def torch_equal(x, y):
    import torch

    return bool(torch.equal(x, y))
