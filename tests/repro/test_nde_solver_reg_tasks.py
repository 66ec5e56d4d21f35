"""Task models of the nde_solver_reg reproduction: the latent ODE (Task C) and its metric."""

import dataclasses
import math

import pytest
import torch

from regzoo.repro.nde_solver_reg import (
    LatentODE,
    NdeSolverRegConfig,
    NdeSolverRegReproduction,
    interpolation_mse,
)


def _series(n=5, m=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    times = torch.linspace(0, 1, m)
    values = torch.randn(n, m, 2, generator=g)
    observed = torch.rand(n, m, generator=g) < 0.5
    observed[:, 0] = True
    observed[:, -1] = False
    return times, values, observed


def test_latent_ode_shapes_and_decoder():
    torch.manual_seed(0)
    model = LatentODE(latent=4, hidden=6)
    times, values, observed = _series()
    mean, logvar = model.encode(times, values, observed)
    assert mean.shape == logvar.shape == (5, 4)
    assert model.func(torch.zeros(()), mean).shape == (5, 4)
    assert model.decoder(torch.zeros(7, 5, 4)).shape == (7, 5, 2)


def test_encoder_ignores_unobserved_values_and_reads_observed_ones():
    torch.manual_seed(0)
    model = LatentODE(latent=3, hidden=5)
    times, values, observed = _series()
    mean, logvar = model.encode(times, values, observed)
    garbage = values.clone()
    garbage[~observed] = 1e3  # held-out points must never reach the encoder
    mean2, logvar2 = model.encode(times, garbage, observed)
    assert torch.equal(mean, mean2) and torch.equal(logvar, logvar2)
    moved = values.clone()
    moved[:, 0] += 1.0  # the first point is always observed
    assert not torch.allclose(model.encode(times, moved, observed)[0], mean)


def test_encoder_with_nothing_observed_but_the_start_reads_one_gru_step():
    torch.manual_seed(0)
    model = LatentODE(latent=2, hidden=4)
    times, values, _ = _series(n=3)
    observed = torch.zeros(3, len(times), dtype=torch.bool)
    observed[:, 0] = True
    mean, logvar = model.encode(times, values, observed)
    step = torch.cat([values[:, 0], torch.ones(3, 1), (times[1] - times[0]).expand(3, 1)], 1)
    expected = model.to_q(model.gru(step, torch.zeros(3, 4))).chunk(2, dim=1)
    torch.testing.assert_close(mean, expected[0])
    torch.testing.assert_close(logvar, expected[1])


def test_interpolation_mse_counts_only_held_out_points():
    _, values, observed = _series()
    assert float(interpolation_mse(values, values, observed)) == 0.0
    pred = values.clone()
    pred[observed] += 5.0  # errors on observed points do not count
    assert float(interpolation_mse(pred, values, observed)) == 0.0
    pred = values + 0.3
    assert float(interpolation_mse(pred, values, observed)) == pytest.approx(0.09)
    pred = values.clone()
    pred[..., 0] += 1.0  # one of two dims off by 1 on every point: MSE 1/2
    assert float(interpolation_mse(pred, values, observed)) == pytest.approx(0.5)
    held = ~observed
    manual = ((pred - values)[held] ** 2).mean()
    torch.testing.assert_close(interpolation_mse(pred, values, observed), manual)


def test_bad_input_names_the_argument():
    model = LatentODE(latent=2, hidden=4)
    times, values, observed = _series()
    with pytest.raises(ValueError, match="times"):
        model.encode(times.flip(0), values, observed)
    with pytest.raises(ValueError, match="values"):
        model.encode(times, values[..., :1], observed)
    with pytest.raises(ValueError, match="observed"):
        model.encode(times, values, observed.float())
    with pytest.raises(ValueError, match="observed"):
        model.encode(times, values, observed[:, 1:])
    with pytest.raises(ValueError, match="latent"):
        LatentODE(latent=0, hidden=4)
    with pytest.raises(ValueError, match="pred"):
        interpolation_mse(values[:, 1:], values, observed)
    with pytest.raises(ValueError, match="held-out"):
        interpolation_mse(values, values, torch.ones_like(observed))
    with pytest.raises(ValueError, match="observed"):
        interpolation_mse(values, values, observed.long())


def test_task_a_claims_are_unchanged_without_tasks_b_and_c():
    config = dataclasses.replace(NdeSolverRegConfig.full(), settings=("circles",))
    repro = NdeSolverRegReproduction()
    claims = repro.secondary_claims(config)
    assert [(c.setting, c.metric, c.method) for c in claims] == [
        ("circles", "test_acc", "ernode"),
        ("circles", "log_train_seconds", "ernode"),
        ("circles", "log_train_seconds", "taynode"),
    ]
    assert repro.claim(config).margin == pytest.approx(math.log(1.4))
    assert {u.setting for u in repro.units(config)} == {"circles"}
    assert len(repro.units(config)) == 5 * 8


def test_task_c_mse_claim_reads_the_tolerance_of_the_lambda_search():
    config = dataclasses.replace(NdeSolverRegConfig.full(), mse_tolerance=0.25)
    (mse,) = [
        c for c in NdeSolverRegReproduction().secondary_claims(config) if c.metric == "log_test_mse"
    ]
    assert mse.setting == "spirals" and not mse.higher_is_better
    assert mse.margin == pytest.approx(-math.log(1.25))
    # effect = −(log MSE_ernode − log MSE_unreg): 1.2× worse passes a 1.25× tolerance
    out = mse.evaluate({s: math.log(1.2) for s in range(5)}, dict.fromkeys(range(5), 0.0))
    assert out["verdict"] == "reproduced"
    out = mse.evaluate({s: math.log(1.3) for s in range(5)}, dict.fromkeys(range(5), 0.0))
    assert out["verdict"] == "not_reproduced"


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only check of the unit's device")
@pytest.mark.parametrize("setting", ["digits", "spirals"])
def test_task_b_and_c_units_honour_the_unit_device(setting, tmp_path):
    from regzoo.repro.protocol import Unit, UnitEnv
    from regzoo.train.distributed import DistributedContext

    context = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cuda"))
    env = UnitEnv(
        context=context,
        checkpoint_path=str(tmp_path / "unit.pt"),
        resume=False,
        log=lambda record: None,
        progress=False,
        workdir=str(tmp_path),
    )
    # a unit that ignored the device would train on the CPU and return
    with pytest.raises((AssertionError, RuntimeError), match=r"CUDA|cuda"):
        NdeSolverRegReproduction().run_unit(
            NdeSolverRegConfig.tiny(), Unit(setting, "unreg", 0), env
        )


def test_lambda_search_uses_the_setting_grid_and_the_quality_tolerance(monkeypatch):
    from regzoo.repro import nde_solver_reg as mod

    # spirals: val MSE 0.010 unregularised; λ₀ = 0.1 is 1.05× (within 1.1×), 1 is 1.5×
    mse = {0.01: 0.0100, 0.1: 0.0105, 1.0: 0.015, 10.0: 0.03, 100.0: 0.05}
    nfe = {0.01: 74.0, 0.1: 62.0, 1.0: 26.0, 10.0: 26.0, 100.0: 20.0}
    seen = []

    def fake(config, setting, arm, seed, lam, device):
        seen.append((setting, seed, lam))
        return {"metrics": {"val_score": -mse[lam], "val_nfe": nfe[lam]}}

    monkeypatch.setattr(mod, "train_arm", fake)
    config = NdeSolverRegConfig.full()
    base = {"val_score": -0.010, "val_nfe": 74.0}
    out = mod.select_lambda(config, "spirals", "ernode", torch.device("cpu"), base)
    assert out["lambda0"] == 0.1  # lowest NFE among those within tolerance
    assert [lam for _, _, lam in seen] == [0.01, 0.1, 1.0, 10.0, 100.0]
    assert {seed for _, seed, _ in seen} == {config.search_seed}
    # nothing within tolerance: the best-scoring λ₀
    out = mod.select_lambda(
        config, "spirals", "ernode", torch.device("cpu"), {"val_score": -0.001, "val_nfe": 74.0}
    )
    assert out["lambda0"] == 0.01
    seen.clear()
    mod.select_lambda(config, "circles", "ernode", torch.device("cpu"), base)
    assert [lam for _, _, lam in seen] == [1.0, 10.0, 100.0]  # Task A's grid
