"""More is Better: eigenframework closed forms, limits, fixed points, monotonicity, simulation."""

import math

import numpy as np
import pytest
import torch

from regzoo.methods.more_is_better import (
    EigenframeworkRisk,
    krr_risk,
    optimal_ridge,
    optimal_risks,
    powerlaw_task,
    rf_risk,
    simulate_rf,
)
from regzoo.registry import card

LAM, V = powerlaw_task(2000, 1.5, 1.5)
SMALL_LAM, SMALL_V = powerlaw_task(500, 1.5, 1.5)


def test_the_card_is_registered_as_an_estimator():
    method = card("more_is_better")
    assert method.implemented and method.obj is rf_risk and method.kind == "estimator"


def test_powerlaw_task_has_the_papers_exponents():
    lam, v = powerlaw_task(4, alpha=2.0, beta=3.0)
    np.testing.assert_allclose(lam, [1, 1 / 4, 1 / 9, 1 / 16])
    np.testing.assert_allclose(v**2, [1, 1 / 8, 1 / 27, 1 / 64])


@pytest.mark.parametrize(("n", "k", "ridge"), [(256, 16, 1e-3), (256, 256, 1e-3),
                                                (256, 1000, 0.3), (64, 3000, 10.0),
                                                (1000, 50, 1e-3)])
def test_rf_fixed_point_satisfies_both_equations(n, k, ridge):
    r = rf_risk(LAM, V, n, k, ridge, noise=0.5)
    z = np.sum(LAM / (LAM + r.gamma))
    assert r.converged and r.kappa > 0 and r.gamma > 0
    assert abs(z + ridge / r.kappa - n) / n < 1e-10  # (A)
    assert abs(z + k * r.kappa / r.gamma - k) / k < 1e-10  # (B)
    assert max(r.residuals) < 1e-10


def test_krr_learnabilities_obey_the_sum_rule_and_lie_in_zero_one():
    r = krr_risk(LAM, V, 300, ridge=0.05, noise=0.1)
    learn = r.solution
    assert isinstance(learn, np.ndarray) and learn.dtype == np.float64
    assert np.all((learn > 0) & (learn < 1))
    assert abs(learn.sum() + 0.05 / r.kappa - 300) < 1e-9
    np.testing.assert_allclose(r.omega, 300 / (300 - np.sum(learn**2)), rtol=1e-12)


def test_one_mode_krr_matches_the_quadratic_solution():
    # 1/(1+κ) + δ/κ = n  ⇔  nκ² + (n − 1 − δ)κ − δ = 0.
    n, ridge = 3.0, 0.7
    kappa = (-(n - 1 - ridge) + math.sqrt((n - 1 - ridge) ** 2 + 4 * n * ridge)) / (2 * n)
    r = krr_risk(np.array([1.0]), np.array([2.0]), n, ridge, noise=0.3)
    learn = 1 / (1 + kappa)
    expected = n / (n - learn**2) * ((1 - learn) ** 2 * 4.0 + 0.3)
    assert r.kappa == pytest.approx(kappa, rel=1e-12)
    assert r.test_mse == pytest.approx(expected, rel=1e-12)


def test_isotropic_ridgeless_krr_has_the_closed_form_risk():
    m, noise = 50, 0.2
    lam, v = np.ones(m), np.full(m, 0.3)
    power = float(np.sum(v**2))
    over = krr_risk(lam, v, 30, 0.0, noise)  # n < M: κ = M/n − 1, L = n/M
    expected = m / (m - 30) * ((1 - 30 / m) ** 2 * power + noise)
    assert over.test_mse == pytest.approx(expected, rel=1e-9)
    under = krr_risk(lam, v, 80, 0.0, noise)  # n > M: exact fit of every mode
    assert under.test_mse == pytest.approx(80 / (80 - m) * noise, rel=1e-12)


def test_rf_with_huge_k_equals_kernel_ridge_regression():
    for ridge in (1e-3, 0.1, 3.0):
        rf, krr = rf_risk(LAM, V, 256, 1e9, ridge, 0.5), krr_risk(LAM, V, 256, ridge, 0.5)
        assert rf.test_mse == pytest.approx(krr.test_mse, rel=1e-6)
        assert rf.train_mse == pytest.approx(krr.train_mse, rel=1e-6)
        assert rf.kappa == pytest.approx(rf.gamma, rel=1e-6)


def test_ridgeless_underparameterised_rf_has_omega_n_over_n_minus_k():
    r = rf_risk(LAM, V, 256, 100, 0.0, 0.5)
    assert r.kappa == 0 and r.omega == pytest.approx(256 / 156, rel=1e-12)
    near = rf_risk(LAM, V, 256, 100, 1e-10, 0.5)  # the δ → 0 limit is continuous
    assert near.test_mse == pytest.approx(r.test_mse, rel=1e-6)
    assert r.fitting_ratio == pytest.approx((156 / 256) ** 2, rel=1e-9)
    assert rf_risk(LAM, V, 256, 256, 0.0, 0.5).test_mse == math.inf


@pytest.mark.parametrize("k", [64, 1024, math.inf])
def test_huge_ridge_gives_the_null_predictor_risk(k):
    null = float(np.sum(V**2)) + 0.5
    r = rf_risk(LAM, V, 256, k, 1e9, 0.5)
    assert r.test_mse == pytest.approx(null, rel=1e-5)
    assert r.fitting_ratio == pytest.approx(1.0, rel=1e-5)


def test_krr_risk_tends_to_the_noise_floor_as_n_grows():
    # Beyond the M = 2000 modes (a fixed small ridge peaks near n = M, like k = n for RF).
    risks = [krr_risk(LAM, V, n, 1e-3, 0.5).test_mse for n in (1e4, 1e5, 1e6)]
    assert np.all(np.diff(risks) < 0)
    assert risks[-1] == pytest.approx(0.5, rel=1e-2)
    # Finite width: the infinite-data limit keeps the k-feature approximation error.
    assert rf_risk(LAM, V, 1e6, 64, 1e-3, 0.5).test_mse > 0.5 + 0.05


def test_optimal_ridge_beats_every_ridge_of_a_dense_grid():
    best = optimal_ridge(LAM, V, 256, 512, noise=0.5)
    dense = [rf_risk(LAM, V, 256, 512, d, 0.5).test_mse for d in np.logspace(-6, 3, 200)]
    assert best.test_mse <= min(dense) + 1e-9
    assert best.train_mse < best.test_mse


def test_noiseless_optimal_ridge_is_ridgeless_on_a_powerlaw_task():
    # Paper §5: without noise, interpolation (δ* → 0, train error 0) is optimal here.
    best = optimal_ridge(LAM, V, 256, math.inf, noise=0.0)
    assert best.ridge == 0.0 and best.fitting_ratio == pytest.approx(0.0, abs=1e-12)


def test_optimal_risk_is_non_increasing_in_width_and_samples():
    ks = [8, 16, 32, 64, 128, 200, 256, 300, 512, 1024, 4096, math.inf]
    ns = [8, 16, 32, 64, 128, 256, 512, 1024]
    by_k = optimal_risks(SMALL_LAM, SMALL_V, 128, ks, noise=0.5)["test_mse"][0]
    by_n = optimal_risks(SMALL_LAM, SMALL_V, ns, 128, noise=0.5)["test_mse"][:, 0]
    assert np.all(np.diff(by_k) <= 1e-9 * by_k[:-1])
    assert np.all(np.diff(by_n) <= 1e-9 * by_n[:-1])
    assert by_k[0] > 1.2 * by_k[-1]  # and strictly better by a visible amount


def test_a_fixed_small_ridge_peaks_at_k_equals_n():
    risks = [rf_risk(LAM, V, 256, k, 1e-3, 0.5).test_mse for k in (128, 256, 512)]
    assert risks[1] > 2 * max(risks[0], risks[2])


def test_theory_matches_simulation_within_tolerance_over_seeds():
    ridges = np.array([1e-2, 1e-1, 1.0])
    ks = [32, 128]
    theory = np.array([[rf_risk(SMALL_LAM, SMALL_V, 64, k, d, 0.5).test_mse for d in ridges]
                       for k in ks])
    per_seed = []
    for seed in range(3):
        sim = simulate_rf(SMALL_LAM, SMALL_V, 64, ks, ridges, noise=0.5, trials=20, seed=seed)
        per_seed.append(np.mean(np.abs(sim.test_mse.mean(0)[0] - theory) / theory))
    # Measured over seeds 0-5: per-seed mean relative error 0.006-0.045 (mean 0.024).
    assert max(per_seed) < 0.07 and np.mean(per_seed) < 0.04


def test_krr_train_error_identity_holds_in_simulation_within_three_se():
    lam, v = powerlaw_task(1000, 1.5, 2.0)
    ridges = np.array([0.1, 1.0])
    sim = simulate_rf(lam, v, 256, math.inf, ridges, noise=0.1, trials=20, seed=0)
    for j, ridge in enumerate(ridges):
        r = krr_risk(lam, v, 256, ridge, 0.1)
        for predicted, values in ((r.train_mse, sim.train_mse[:, 0, 0, j]),
                                  (r.test_mse, sim.test_mse[:, 0, 0, j])):
            se = values.std(ddof=1) / math.sqrt(values.size)
            assert abs(values.mean() - predicted) < 3 * se


def test_simulation_recovers_a_noiseless_target_with_enough_samples():
    lam, v = powerlaw_task(20, 1.5, 1.5)
    sim = simulate_rf(lam, v, 40, [math.inf, 200], np.array([0.0, 1e12]), trials=2, seed=3)
    assert np.all(sim.test_mse[:, 0, 0, 0] < 1e-16)  # ridgeless KRR, n > M: exact fit
    assert np.all(sim.train_mse[:, 0, :, 0] < 1e-16)
    np.testing.assert_allclose(sim.test_mse[..., 1], np.sum(v**2), rtol=1e-6)  # null predictor


def test_simulation_is_seeded_and_keeps_the_callers_array_type():
    ridges = np.array([0.1, 1.0])
    a = simulate_rf(SMALL_LAM, SMALL_V, [16, 32], [8, 64], ridges, noise=0.5, trials=2, seed=7)
    b = simulate_rf(SMALL_LAM, SMALL_V, [16, 32], [8, 64], ridges, noise=0.5, trials=2, seed=7)
    assert isinstance(a.test_mse, np.ndarray) and a.test_mse.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(a.test_mse, b.test_mse)
    np.testing.assert_array_equal(a.train_mse, b.train_mse)
    t = simulate_rf(torch.from_numpy(SMALL_LAM), torch.from_numpy(SMALL_V), 16, 8,
                    torch.tensor(ridges), trials=1, seed=7, device="cpu")
    assert isinstance(t.test_mse, torch.Tensor) and t.test_mse.dtype == torch.float64
    r = rf_risk(torch.from_numpy(LAM), torch.from_numpy(V), 64, 32, 0.1)
    assert isinstance(r.solution, torch.Tensor) and isinstance(r, EigenframeworkRisk)


def test_inputs_are_not_modified():
    lam = LAM.copy()
    rf_risk(lam, V, 64, 32, 0.1)
    np.testing.assert_array_equal(lam, LAM)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"eigenvalues": np.array([1.0, -0.1])}, ValueError, "eigenvalues must be >= 0"),
        ({"eigenvalues": np.zeros(2)}, ValueError, "all zero"),
        ({"coefficients": np.ones(3)}, ValueError, "one entry per eigenvalue"),
        ({"eigenvalues": [1.0, 0.5]}, TypeError, "numpy array or a torch tensor"),
        ({"eigenvalues": np.array([1.0, np.nan])}, ValueError, "NaN"),
        ({"n": 0}, ValueError, "n must lie in"),
        ({"n": -5}, ValueError, "n must lie in"),
        ({"k": 0}, ValueError, "k must lie in"),
        ({"ridge": -1.0}, ValueError, "ridge must lie in"),
        ({"noise": -0.1}, ValueError, "noise must lie in"),
    ],
)
def test_bad_theory_input_raises_naming_the_argument(kwargs, error, message):
    args = {"eigenvalues": np.array([1.0, 0.5]), "coefficients": np.array([1.0, 0.2]),
            "n": 10, "k": 5, "ridge": 0.1, "noise": 0.0, **kwargs}
    with pytest.raises(error, match=message):
        rf_risk(**args)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"ridges": np.array([-1.0])}, ValueError, "ridges must be >= 0"),
        ({"n": [16, 0]}, ValueError, "n must be >= 1"),
        ({"n": 2.5}, TypeError, "n must be an int"),
        ({"k": []}, ValueError, "k is empty"),
        ({"trials": 0}, ValueError, "trials must be >= 1"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
    ],
)
def test_bad_simulation_input_raises_naming_the_argument(kwargs, error, message):
    args = {"n": 16, "k": 8, "ridges": np.array([0.1]), "trials": 1, "seed": 0, **kwargs}
    with pytest.raises(error, match=message):
        simulate_rf(SMALL_LAM, SMALL_V, **args)


def test_bad_optimal_ridge_bounds_raise():
    with pytest.raises(ValueError, match="bounds must satisfy"):
        optimal_ridge(LAM, V, 64, 32, bounds=(1.0, 0.1))
