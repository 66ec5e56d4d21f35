"""CoLiDE: closed-form scales, score identities, gradients, acyclicity, equivariance, brute
force over DAGs, post-processing, input handling."""

import itertools
import math

import numpy as np
import pytest
import scipy.sparse
import torch
from scipy.optimize import minimize_scalar

from regzoo.data.sem import count_accuracy, is_dag, simulate_linear_sem
from regzoo.methods.colide import (
    CoLiDE,
    concomitant_score,
    concomitant_score_gradient,
    logdet_acyclicity,
    optimal_scale,
    residual_energy,
    to_dag,
)
from regzoo.registry import card

# Short path for fast tests: same algorithm, fewer Adam iterations.
SHORT = {"warm_iter": 2000, "max_iter": 4000}


def _problem(d=5, n=400, seed=0, variance="ev"):
    sem = simulate_linear_sem(d, n, d, variance=variance, seed=seed)
    X = sem.X - sem.X.mean(axis=0)
    return sem, X, X.T @ X / n


@pytest.fixture(params=["numpy", "compiled"])
def loop_path(request, monkeypatch):
    """Run the NumPy loop in NumPy calls or with the compiled step (skipped without numba)."""
    import regzoo.methods.colide.solver as solver
    from regzoo.methods.colide.compiled import compiled_kernels

    if request.param == "numpy":
        monkeypatch.setattr(solver, "compiled_kernels", lambda: None)
    elif compiled_kernels() is None:
        pytest.skip("numba is not installed (pip install 'regzoo[fast]')")
    return request.param


def _random_w(d, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    W = rng.uniform(-scale, scale, (d, d))
    np.fill_diagonal(W, 0.0)
    return W


def test_registered_as_estimator_with_both_variants():
    entry = card("colide")
    assert entry.obj is CoLiDE and entry.kind == "estimator"
    assert set(entry.variants) == {"ev", "nv"}
    assert {d.name for d in entry.defaults} >= {"lambda1", "T", "s", "warm_iter", "max_iter"}


def test_scikit_learn_parameters_round_trip():
    from sklearn.base import clone

    est = CoLiDE("nv", 0.1, T=3)
    assert est.get_params()["lambda1"] == 0.1 and est.get_params()["T"] == 3
    copy = clone(est).set_params(lambda1=0.2)
    assert copy.lambda1 == 0.2 and copy.variance == "nv" and est.lambda1 == 0.1


def test_residual_energy_is_the_per_node_mean_squared_residual():
    _, X, cov = _problem()
    W = _random_w(5, 1)
    assert np.allclose(residual_energy(W, cov), ((X - X @ W) ** 2).mean(axis=0))


@pytest.mark.parametrize("seed", range(3))
def test_closed_form_ev_scale_minimises_the_score(seed):
    _, _, cov = _problem(seed=seed)
    W = _random_w(5, seed)
    sigma = float(optimal_scale(W, cov, "ev"))
    best = minimize_scalar(lambda s: concomitant_score(W, cov, s, 0.1, "ev"),
                           bounds=(1e-3, 100.0), method="bounded", options={"xatol": 1e-10})
    assert sigma == pytest.approx(best.x, rel=1e-4)
    assert concomitant_score(W, cov, sigma, 0.1, "ev") <= best.fun + 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_closed_form_nv_scales_minimise_the_score_node_by_node(seed):
    _, _, cov = _problem(seed=seed, variance="nv")
    W = _random_w(5, seed)
    sigma = optimal_scale(W, cov, "nv")
    base = concomitant_score(W, cov, sigma, 0.1, "nv")
    for i in range(5):
        def along(value, i=i):
            other = sigma.copy()
            other[i] = value
            return concomitant_score(W, cov, other, 0.1, "nv")
        best = minimize_scalar(along, bounds=(1e-3, 100.0), method="bounded",
                               options={"xatol": 1e-10})
        assert sigma[i] == pytest.approx(best.x, rel=1e-4)
        assert base <= best.fun + 1e-12


def test_scale_floor_is_the_constrained_minimiser():
    _, _, cov = _problem()
    W = _random_w(5, 0)
    raw = optimal_scale(W, cov, "nv")
    floor = float(np.median(raw))
    clipped = optimal_scale(W, cov, "nv", sigma_min=floor)
    assert np.allclose(clipped, np.maximum(raw, floor)) and (clipped >= floor).all()


def test_score_at_the_closed_form_is_the_square_root_lasso():
    _, _, cov = _problem()
    W = _random_w(5, 2)
    r = residual_energy(W, cov)
    lam = 0.07
    l1 = lam * np.abs(W).sum()
    ev = concomitant_score(W, cov, optimal_scale(W, cov, "ev"), lam, "ev")
    nv = concomitant_score(W, cov, optimal_scale(W, cov, "nv"), lam, "nv")
    assert ev == pytest.approx(math.sqrt(5 * r.sum()) + l1, rel=1e-12)
    assert nv == pytest.approx(np.sqrt(r).sum() + l1, rel=1e-12)


@pytest.mark.parametrize("variance", ["ev", "nv"])
def test_score_gradient_matches_finite_differences(variance):
    _, _, cov = _problem()
    W = _random_w(5, 3) + 0.05  # no zero entries
    sigma = optimal_scale(W, cov, variance) * 1.3  # any fixed σ, not only the optimum
    grad = concomitant_score_gradient(W, cov, sigma)
    eps = 1e-6
    numeric = np.zeros_like(W)
    for i, j in itertools.product(range(5), repeat=2):
        E = np.zeros_like(W)
        E[i, j] = eps
        numeric[i, j] = (concomitant_score(W + E, cov, sigma, 0.0, variance)
                         - concomitant_score(W - E, cov, sigma, 0.0, variance)) / (2 * eps)
    assert np.allclose(grad, numeric, atol=1e-7, rtol=1e-6)


def test_logdet_gradient_matches_finite_differences():
    W = _random_w(5, 4, scale=0.25)
    h, grad = logdet_acyclicity(W, s=0.9)
    eps = 1e-6
    for i, j in itertools.product(range(5), repeat=2):
        E = np.zeros_like(W)
        E[i, j] = eps
        numeric = (logdet_acyclicity(W + E, 0.9)[0] - logdet_acyclicity(W - E, 0.9)[0]) / (2 * eps)
        assert grad[i, j] == pytest.approx(numeric, abs=1e-7)
    assert h > 0


def test_logdet_is_zero_on_dags_and_positive_with_a_cycle():
    h0, g0 = logdet_acyclicity(np.zeros((4, 4)))
    assert h0 == 0.0 and not g0.any()
    for seed in range(5):
        W = simulate_linear_sem(8, 2, 16, seed=seed).W * 0.4  # stay inside the s = 1 domain
        assert abs(logdet_acyclicity(W, 1.0)[0]) < 1e-12
        assert abs(logdet_acyclicity(np.triu(_random_w(8, seed), k=1), 0.8)[0]) < 1e-12
    for a, b in [(0.5, 0.5), (0.2, -0.9), (-0.3, -0.3)]:
        assert logdet_acyclicity(np.array([[0.0, a], [b, 0.0]]))[0] > 0
    for seed in range(5):  # h ≥ 0 on the domain
        assert logdet_acyclicity(_random_w(6, seed, scale=0.2))[0] >= 0


def test_logdet_refuses_a_singular_matrix():
    with pytest.raises(ValueError, match="domain"):
        logdet_acyclicity(np.array([[0.0, 1.0], [1.0, 0.0]]))


def _sequential_to_dag(W, threshold):
    A = W.copy()
    A[np.abs(A) <= threshold] = 0
    rows, cols = np.nonzero(A)
    for k in np.argsort(np.abs(A[rows, cols]), kind="stable"):
        if is_dag(A):
            break
        A[rows[k], cols[k]] = 0
    return A


@pytest.mark.parametrize("seed", range(10))
def test_to_dag_is_acyclic_and_equals_one_edge_at_a_time_removal(seed):
    W = np.random.default_rng(seed).normal(size=(9, 9))
    out = to_dag(W, 0.3)
    assert is_dag(out)
    assert np.array_equal(out, _sequential_to_dag(W, 0.3))
    assert not np.shares_memory(out, W)


def test_to_dag_keeps_types_and_thresholds():
    W = torch.tensor([[0.0, 0.2], [0.5, 0.0]], dtype=torch.float32)
    out = to_dag(W, 0.3)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    assert out.tolist() == [[0.0, 0.0], [0.5, 0.0]]


def _naive_fit(X, variance, lam, T, s, iters, lr, mu_factor=0.1):
    """Paper Alg. 1 written plainly (explicit Σ = diag(σ), two products), no convergence test."""
    n, d = X.shape
    X = X - X.mean(axis=0)
    C = X.T @ X / n
    eye = np.eye(d)
    W = np.zeros((d, d))
    norms = np.linalg.norm(X, axis=0) / np.sqrt(n)
    sigma = norms.min() if variance == "ev" else norms
    mu = 1.0
    for t in range(T):
        m = np.zeros((d, d))
        v = np.zeros((d, d))
        for it in range(1, iters[t] + 1):
            M = np.linalg.inv(s[t] * eye - W * W)
            scale = np.diag(np.full(d, 1 / sigma) if variance == "ev" else 1 / sigma)
            G = -mu * C @ (eye - W) @ scale + mu * lam * np.sign(W) + 2 * W * M.T
            m = 0.99 * m + 0.01 * G
            v = 0.999 * v + 0.001 * G**2
            W = W - lr * (m / (1 - 0.99**it)) / (np.sqrt(v / (1 - 0.999**it)) + 1e-8)
            R = (eye - W).T @ C @ (eye - W)
            sigma = np.sqrt(np.trace(R) / d) if variance == "ev" else np.sqrt(np.diag(R))
        mu *= mu_factor
    return W, sigma


@pytest.mark.parametrize("variance", ["ev", "nv"])
def test_vectorised_solver_equals_the_plain_algorithm(variance, loop_path):
    sem = simulate_linear_sem(6, 300, 8, variance=variance, seed=1)
    est = CoLiDE(variance, 0.05, T=3, s=(1.0, 0.9, 0.8), warm_iter=300, max_iter=400,
                 tol=0.0).fit(sem.X)
    W, sigma = _naive_fit(sem.X, variance, 0.05, 3, (1.0, 0.9, 0.8), (300, 300, 400), 3e-4)
    assert est.n_iter_ == 1000
    assert np.allclose(est.W_, W, atol=1e-10)
    assert np.allclose(est.sigma_, sigma, atol=1e-10)


@pytest.mark.parametrize("variance", ["ev", "nv"])
def test_vectorised_solver_equals_the_plain_algorithm_at_d_20(variance, loop_path):
    # d = 20 puts LAPACK's gesv through its blocked solves (d = 6 above does not).
    # Measured max |ΔW| ≤ 5.3e-14 and |Δσ| ≤ 8.5e-14 over seeds 0-2.
    sem = simulate_linear_sem(20, 300, 40, variance=variance, seed=1)
    est = CoLiDE(variance, 0.05, T=3, s=(1.0, 0.9, 0.8), warm_iter=300, max_iter=400,
                 tol=0.0).fit(sem.X)
    W, sigma = _naive_fit(sem.X, variance, 0.05, 3, (1.0, 0.9, 0.8), (300, 300, 400), 3e-4)
    assert np.abs(W).max() > 0.2  # edges were learnt: the comparison is not of zeros
    assert np.allclose(est.W_, W, rtol=0.0, atol=1e-11)
    assert np.allclose(est.sigma_, sigma, rtol=0.0, atol=1e-11)


@pytest.mark.parametrize("d", [3, 40, 120])
def test_both_inverses_give_the_transposed_inverse_and_refuse_a_singular_matrix(d):
    from regzoo.methods.colide.solver import LapackInverse, TorchInverse

    rng = np.random.default_rng(d)
    W = rng.normal(size=(d, d)) * (0.5 / np.sqrt(d))
    expected = np.linalg.inv(W * W - 0.9 * np.eye(d)).T
    lapack_inverse, torch_inverse = LapackInverse(d), TorchInverse(torch.from_numpy(W))
    for _ in range(2):  # the buffers are reused: a second call must not see the first's
        out = lapack_inverse(W, 0.9)
        assert out.flags.c_contiguous
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(torch_inverse(torch.from_numpy(W), 0.9).numpy(), expected,
                                   rtol=0, atol=1e-12)
    singular = np.zeros((d, d))
    singular[:, 0] = 1.0  # W∘W − sI with s = 1 has a zero first row
    assert lapack_inverse(singular, 1.0) is None
    assert torch_inverse(torch.from_numpy(singular), 1.0) is None


def _plain_stage(C, sigma, s, lr, iters, variance):
    """One stage of the official ``minimize`` written plainly, with its domain safeguard."""
    d = C.shape[0]
    eye = np.eye(d)
    W, m, v, step = (np.zeros((d, d)) for _ in range(4))
    halvings = 0

    def scale(W):
        R = (eye - W).T @ C @ (eye - W)
        return np.sqrt(np.trace(R) / d) if variance == "ev" else np.sqrt(np.diag(R))

    for it in range(1, iters + 1):
        M = np.linalg.inv(s * eye - W * W)
        while M.min() < -1e-6:
            assert it > 1 and s > 0.9  # the stage restarts otherwise: not this test's case
            W = W + lr * step
            lr *= 0.5
            halvings += 1
            W = W - lr * step
            sigma = scale(W)
            M = np.linalg.inv(s * eye - W * W)
        G = -C @ (eye - W) / sigma + 0.05 * np.sign(W) + 2 * W * M.T
        m = 0.99 * m + 0.01 * G
        v = 0.999 * v + 0.001 * G**2
        step = (m / (1 - 0.99**it)) / (np.sqrt(v / (1 - 0.999**it)) + 1e-8)
        W = W - lr * step
        sigma = scale(W)
    return W, sigma, halvings


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("variance", ["ev", "nv"])
def test_step_halving_safeguard_equals_the_plain_algorithm(variance, seed, loop_path):
    # A large lr at s = 1 leaves the M-matrix domain mid-stage (1-2 halvings with these seeds):
    # the in-place undo/retry must give the official iterates. Such a large step amplifies
    # rounding: measured max |ΔW| ≤ 1.6e-12, |Δσ| ≤ 4.8e-11 (NV, seed 0; the previous solver,
    # with no in-place tricks, is off by as much: 1.2e-12 / 3.5e-11); a wrong undo is off by
    # ~lr·step ≈ 1e-2.
    from regzoo.methods.colide.solver import Solver

    sem = simulate_linear_sem(6, 500, 10, variance=variance, seed=seed)
    X = sem.X - sem.X.mean(axis=0)
    C = X.T @ X / 500
    sigma0 = np.sqrt(np.diag(C))
    sigma0 = float(sigma0.min()) if variance == "ev" else sigma0
    lr = 0.3 if variance == "ev" else 1.0
    W, sigma, halvings = _plain_stage(C, sigma0, 1.0, lr, 300, variance)
    stage = Solver(C, variance, 0.05, 0.0, 0.99, 0.999, 10**9, 1e-6).run(
        np.zeros((6, 6)), sigma0, 1.0, 300, 1.0, lr)
    assert halvings >= 1 and stage.success and stage.n_iter == 300
    assert np.allclose(stage.W, W, rtol=0.0, atol=1e-10)
    assert np.allclose(stage.sigma, sigma, rtol=0.0, atol=1e-9)


@pytest.mark.parametrize("variance", ["ev", "nv"])
def test_scaling_x_by_c_with_lambda_times_c_and_mu_over_c_gives_the_same_w(variance):
    # S(cX; W, cσ) = c·S(X; W, σ) − the ℓ1 term: the path with (cλ, μ₀/c) has the same
    # objective in W at every stage, so the same iterates, and σ scales by c.
    sem = simulate_linear_sem(5, 300, 5, variance=variance, seed=0)
    kwargs = {"warm_iter": 500, "max_iter": 1000, "checkpoint": 100}
    base = CoLiDE(variance, 0.05, **kwargs).fit(sem.X)
    for c in (0.3, 7.0):
        scaled = CoLiDE(variance, 0.05 * c, mu_init=1.0 / c, **kwargs).fit(c * sem.X)
        assert np.allclose(scaled.W_, base.W_, atol=1e-8)
        assert np.allclose(scaled.sigma_, c * np.asarray(base.sigma_), rtol=1e-8)


def test_fixed_lambda_support_is_stable_across_noise_scales_on_an_easy_problem():
    # At fixed λ the effective sparsity weight is λ/c for CoLiDE (λ/c² for least squares):
    # on a well-determined d = 5 problem the support is the same from c = 0.5 to c = 4.
    sem = simulate_linear_sem(5, 2000, 5, seed=3)
    supports = [CoLiDE("ev", **SHORT).fit(c * sem.X).adjacency_ != 0 for c in (0.5, 1.0, 4.0)]
    assert all(np.array_equal(s, supports[0]) for s in supports)
    assert count_accuracy(sem.W, supports[0])["shd"] == 0


def _bic_best_dag(X):
    """Brute force over the 25 DAGs on 3 nodes: equal-variance Gaussian BIC, OLS weights."""
    n, d = X.shape
    X = X - X.mean(axis=0)
    best = (math.inf, None)
    pairs = [(i, j) for i in range(d) for j in range(d) if i != j]
    for mask in itertools.product([0, 1], repeat=len(pairs)):
        A = np.zeros((d, d), dtype=bool)
        for (i, j), on in zip(pairs, mask):
            A[i, j] = bool(on)
        if not is_dag(A):
            continue
        rss = 0.0
        for j in range(d):
            parents = np.flatnonzero(A[:, j])
            y = X[:, j]
            if parents.size:
                coef = np.linalg.lstsq(X[:, parents], y, rcond=None)[0]
                y = y - X[:, parents] @ coef
            rss += y @ y
        bic = n * d * math.log(rss / (n * d)) + A.sum() * math.log(n)
        best = min(best, (bic, A.tobytes()), key=lambda b: b[0])
    return np.frombuffer(best[1], dtype=bool).reshape(d, d)


@pytest.mark.parametrize("seed", range(3))
def test_three_node_ev_graph_matches_brute_force_over_all_dags(seed):
    sem = simulate_linear_sem(3, 5000, 2, seed=seed)
    brute = _bic_best_dag(sem.X)
    assert np.array_equal(brute, sem.adjacency)  # EV: the true DAG is identifiable
    est = CoLiDE("ev", **SHORT).fit(sem.X)
    assert np.array_equal(est.adjacency_ != 0, brute)


def test_fit_recovers_a_small_heteroscedastic_graph_with_nv():
    sem = simulate_linear_sem(6, 2000, 6, variance="nv", seed=0)
    est = CoLiDE("nv", **SHORT).fit(sem.X)
    assert count_accuracy(sem.W, est.adjacency_)["shd"] <= 1
    assert np.allclose(est.sigma_**2, sem.noise_var, rtol=0.2)


def test_domain_safeguard_restarts_with_larger_s_and_smaller_lr():
    sem = simulate_linear_sem(6, 500, 10, seed=0)
    est = CoLiDE("ev", 0.05, T=2, s=(1.0, 0.8), warm_iter=300, max_iter=300, lr=0.5).fit(sem.X)
    restarted = [h for h in est.history_ if h["restarts"] > 0]
    assert restarted, "lr = 0.5 should leave the M-matrix domain"
    for record in restarted:
        assert record["lr"] == pytest.approx(0.5 * 0.5 ** record["restarts"])
    assert is_dag(est.adjacency_)


def test_input_not_mutated_and_types_round_trip():
    sem = simulate_linear_sem(5, 200, 5, seed=0)
    X = sem.X.copy()
    est = CoLiDE("nv", warm_iter=50, max_iter=50).fit(X)
    assert np.array_equal(X, sem.X)  # the official code centres X in place
    assert isinstance(est.W_, np.ndarray) and est.W_.dtype == np.float64
    assert isinstance(est.sigma_, np.ndarray) and est.sigma_.shape == (5,)
    assert len(est.history_) == 4 and est.n_iter_ == 200 and est.n_features_in_ == 5
    Xt = torch.from_numpy(X)
    est_t = CoLiDE("nv", warm_iter=50, max_iter=50).fit(Xt)
    assert isinstance(est_t.W_, torch.Tensor) and isinstance(est_t.adjacency_, torch.Tensor)
    assert torch.equal(Xt, torch.from_numpy(sem.X))
    assert np.allclose(est_t.W_.numpy(), est.W_, atol=1e-12)
    ev = CoLiDE("ev", warm_iter=50, max_iter=50).fit(Xt.float())
    assert ev.W_.dtype == torch.float32 and isinstance(ev.sigma_, float)


def test_torch_backend_runs_the_same_iterates(loop_path):
    # device="cpu" on a tensor uses NumPy; the torch loop (used on CUDA) must agree with it.
    from regzoo.methods.colide.solver import Solver

    _, _, cov = _problem(variance="nv")
    args = ("nv", 0.05, 0.0, 0.99, 0.999, 100, 1e-6)
    sigma = np.sqrt(np.diag(cov))
    a = Solver(cov, *args).run(np.zeros((5, 5)), sigma, 1.0, 300, 1.0, 3e-4)
    b = Solver(torch.from_numpy(cov), *args).run(torch.zeros(5, 5, dtype=torch.float64),
                                                 torch.from_numpy(sigma), 1.0, 300, 1.0, 3e-4)
    assert np.allclose(a.W, b.W.numpy(), atol=1e-12)


@pytest.mark.parametrize("variance", ["ev", "nv"])
def test_one_pass_adam_step_equals_the_array_calls(variance):
    # The plain-Python step (what numba compiles) against the NumPy calls it replaces, on
    # random state with zeros in W (sign 0); measured at most one ulp apart (BLAS axpy may fuse
    # a multiply-add).
    from regzoo.methods.colide.compiled import adam_step, column_dots
    from regzoo.methods.colide.solver import Solver

    rng = np.random.default_rng(3)
    d = 7
    _, _, cov = _problem(d=d, variance=variance)
    solver = Solver(cov, variance, 0.05, 0.0, 0.99, 0.999, 100, 1e-6, compiled=False)
    W = _random_w(d, 4)
    W[0, 1] = 0.0
    inverse_t, rhs = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    sigma = rng.uniform(0.5, 2.0, d) if variance == "nv" else 1.3
    p, u = rng.normal(size=(d, d)), rng.uniform(0.0, 1.0, (d, d))
    buffers = solver._buffers(5)
    buffers[0][0][...], buffers[1][0][...] = p, u
    W_arrays = W.copy()
    solver._array_step(W_arrays.reshape(-1), inverse_t, rhs, sigma, 0.35, 0.02, 1e-7, 0.01,
                       buffers)
    W_pass, p_pass, u_pass, delta = W.copy(), p.copy(), u.copy(), np.empty((d, d))
    scale = np.broadcast_to(0.35 / np.asarray(sigma), (d,)).copy()
    adam_step(W_pass, inverse_t, rhs, scale, 0.02, 0.99, 0.999, p_pass, u_pass, delta, 1e-7,
              0.01)
    for ours, theirs in ((W_pass, W_arrays), (p_pass, buffers[0][0]), (u_pass, buffers[1][0]),
                         (delta, buffers[4][0])):
        np.testing.assert_allclose(ours, theirs, rtol=1e-15, atol=1e-16)
    assert not np.allclose(W_pass, W)  # the step moved W
    energies = np.empty(d)
    column_dots(inverse_t, rhs, energies)
    np.testing.assert_allclose(energies, (inverse_t * rhs).sum(axis=0), rtol=1e-14, atol=0)


def test_compiled_kernels_equal_their_python_source():
    from regzoo.methods.colide import compiled

    kernels = compiled.compiled_kernels()
    if kernels is None:
        pytest.skip("numba is not installed (pip install 'regzoo[fast]')")
    rng = np.random.default_rng(5)
    d = 33
    arrays = [rng.normal(size=(d, d)) for _ in range(3)]
    arrays[0][2, 3] = 0.0
    p, u = rng.normal(size=(d, d)), rng.uniform(0.0, 1.0, (d, d))
    scale = rng.uniform(0.1, 1.0, d)
    states = []
    for step in (compiled.adam_step, kernels.adam_step):
        W, p_i, u_i, delta = arrays[0].copy(), p.copy(), u.copy(), np.empty((d, d))
        step(W, arrays[1], arrays[2], scale, 0.02, 0.99, 0.999, p_i, u_i, delta, 1e-7, 0.01)
        states.append((W, p_i, u_i, delta))
    for python_value, compiled_value in zip(*states, strict=True):
        np.testing.assert_array_equal(compiled_value, python_value)  # no fast-math: same bits
    sums = [np.empty(d), np.empty(d)]
    compiled.column_dots(arrays[1], arrays[2], sums[0])
    kernels.column_dots(arrays[1], arrays[2], sums[1])
    np.testing.assert_array_equal(sums[1], sums[0])


@pytest.mark.parametrize(
    ("kwargs", "X", "error", "match"),
    [
        ({}, np.full((10, 3), np.nan), ValueError, "NaN"),
        ({}, np.c_[np.ones(10), np.arange(10.0), np.arange(10.0) ** 2], ValueError, "constant"),
        # Array input goes through scikit-learn's validation and its messages.
        ({}, np.ones((1, 3)), ValueError, "1 sample"),
        ({}, np.ones((10, 1)), ValueError, "1 feature"),
        ({}, np.ones(10), ValueError, "2D array"),
        ({}, torch.ones(1, 3), ValueError, "at least 2 samples"),
        ({}, torch.ones(10, 1), ValueError, "at least 2 variables"),
        ({}, torch.ones(10), ValueError, "dimensions"),
        ({}, torch.full((10, 3), float("inf")), ValueError, "NaN or infinite"),
        ({"lambda1": -0.1}, None, ValueError, "lambda1"),
        ({"variance": "hetero"}, None, ValueError, "variance"),
        ({"T": 0}, None, ValueError, "T must"),
        ({"lr": 0.0}, None, ValueError, "lr"),
        ({"s": ()}, None, TypeError, "s must"),
        ({"mu_factor": 1.5}, None, ValueError, "mu_factor"),
        ({}, scipy.sparse.csr_matrix(np.eye(3)), TypeError, "[Ss]parse"),
    ],
)
def test_bad_input_raises_a_clear_error(kwargs, X, error, match):
    if X is None:
        X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(error, match=match):
        CoLiDE(**kwargs).fit(X)


def test_bad_warm_start_shape_is_refused():
    X = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="w_init"):
        CoLiDE().fit(X, w_init=np.zeros((2, 2)))
