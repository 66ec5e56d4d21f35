"""Sparsity-constrained OT: projection, conjugates, (semi-)dual solver, value gradient, router."""

import contextlib
import importlib.util
import io
import itertools
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch

import regzoo.methods.sparse_ot as package
from regzoo.methods.sparse_ot import (
    SparseMoE,
    SparseOTRouter,
    delta_omega,
    numba_solver,
    projection_sparse_simplex,
    sparsity_constrained_ot,
    sparsity_constrained_ot2,
)
from regzoo.methods.sparse_ot.compiled import (
    _compiled_evaluation,
    _compiled_loops,
    _CompiledEvaluation,
    _dual_terms,
    _Loops,
    _semi_dual_terms,
    _top_k_loop,
)
from regzoo.methods.sparse_ot.numba_solver import _compiled_lbfgs, _lbfgs_loop, _line_search, _run
from regzoo.methods.sparse_ot.objectives import _Problem
from regzoo.methods.sparse_ot.screening import _Screen, _top_k_index
from regzoo.methods.sparse_ot.solver import _choose_solver
from regzoo.registry import card


def clouds(m: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform marginals and a squared-Euclidean cost between 2-D Gaussian clouds (max 1)."""
    rng = np.random.default_rng(seed)
    xs, xt = rng.normal(size=(m, 2)), rng.normal(size=(n, 2)) + 1.0
    C = ((xs[:, None, :] - xt[None, :, :]) ** 2).sum(-1)
    return np.full(m, 1.0 / m), np.full(n, 1.0 / n), C / C.max()


def simplex_projection(v: np.ndarray, z: float) -> np.ndarray:
    """Plain Euclidean projection onto z·Δ by bisection on θ (independent of the sort rule)."""
    lo, hi = v.min() - z, v.max()
    for _ in range(200):
        theta = (lo + hi) / 2
        lo, hi = (theta, hi) if np.maximum(v - theta, 0).sum() > z else (lo, theta)
    return np.maximum(v - (lo + hi) / 2, 0)


# ------------------------------------------------------------------------------ P_k


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_projection_equals_brute_force_over_all_k_subsets(seed, k):
    rng = np.random.default_rng(seed)
    d = 7
    v = rng.normal(size=d)
    z = float(rng.uniform(0.5, 2.0))
    best, best_dist = None, np.inf
    for subset in itertools.combinations(range(d), k):
        y = np.zeros(d)
        y[list(subset)] = simplex_projection(v[list(subset)], z)
        dist = ((y - v) ** 2).sum()
        if dist < best_dist:
            best, best_dist = y, dist
    got = projection_sparse_simplex(v, k, z)
    assert ((got - v) ** 2).sum() == pytest.approx(best_dist, abs=1e-10)
    np.testing.assert_allclose(got, best, atol=1e-8)


def test_projection_is_k_sparse_nonnegative_with_mass_z_along_dim_per_slice():
    V = torch.randn(6, 9, 4, dtype=torch.float64)
    z = torch.rand(6, 4, dtype=torch.float64) + 0.1
    P = projection_sparse_simplex(V, 3, z, dim=1)
    assert isinstance(P, torch.Tensor) and P.shape == V.shape
    assert (P >= 0).all() and ((P > 0).sum(1) <= 3).all()
    torch.testing.assert_close(P.sum(1), z)
    Vn = V.numpy()
    np.testing.assert_allclose(projection_sparse_simplex(Vn[:, :, 0], 3, 1.0, dim=0),
                               projection_sparse_simplex(Vn[:, :, 0].T, 3, 1.0, dim=1).T)


def test_projection_matches_pot():
    ot_utils = pytest.importorskip("ot.utils")
    V = np.random.default_rng(0).normal(size=(12, 5))
    z = np.array([1.0, 0.5, 2.0, 1.0, 0.3])
    np.testing.assert_allclose(projection_sparse_simplex(V, 4, z, dim=0),
                               ot_utils.projection_sparse_simplex(V, 4, z, axis=0), atol=1e-12)


# ------------------------------------------------------------------ δ_Ω and objectives


def test_delta_omega_value_and_gradient_match_finite_differences():
    rng = np.random.default_rng(1)
    for k in (1, 2, 4, 8):
        s = rng.normal(size=8)  # distinct entries almost surely: away from ties
        value, grad = delta_omega(s, k, 0.7)
        top = np.sort(s)[::-1][:k]
        assert value == pytest.approx((np.maximum(top, 0) ** 2).sum() / 1.4)
        h = 1e-6
        fd = [(delta_omega(s + h * e, k, 0.7)[0] - delta_omega(s - h * e, k, 0.7)[0]) / (2 * h)
              for e in np.eye(8)]
        np.testing.assert_allclose(grad, fd, atol=1e-6)


def test_fenchel_young_inequality_with_equality_at_the_gradient():
    rng = np.random.default_rng(2)
    gamma, k, d = 0.5, 3, 10
    for _ in range(50):
        s = rng.normal(size=d)
        value, grad = delta_omega(s, k, gamma)
        t = np.zeros(d)
        t[rng.choice(d, k, replace=False)] = rng.uniform(0, 3, size=k)
        assert value >= s @ t - 0.5 * gamma * t @ t - 1e-12
        assert value == pytest.approx(s @ grad - 0.5 * gamma * grad @ grad, abs=1e-12)
        assert (grad > 0).sum() <= k


@pytest.mark.parametrize("formulation", ["semi_dual", "dual"])
def test_objective_gradients_match_finite_differences(formulation):
    a, b, C = clouds(6, 5, 3)
    problem = _Problem(torch.tensor(a)[None], torch.tensor(b)[None],
                       torch.tensor(C).T.contiguous()[None], 2, 0.3)
    fun = problem.semi_dual if formulation == "semi_dual" else problem.dual
    size = 6 if formulation == "semi_dual" else 11
    x = torch.tensor(np.random.default_rng(4).normal(scale=0.3, size=(1, size)))
    grad = fun(x).grad[0]
    h = 1e-7
    for i in range(size):
        e = torch.zeros_like(x)
        e[0, i] = h
        fd = (fun(x + e).value - fun(x - e).value) / (2 * h)
        assert float(fd) == pytest.approx(float(grad[i]), abs=1e-6)


def test_weak_duality_dual_value_below_any_feasible_k_sparse_primal():
    ot = pytest.importorskip("ot")
    a, b, C = clouds(8, 8, 5)
    T = ot.emd(a, b, C)  # a permutation / 8: one nonzero per column, feasible for every k
    gamma = 0.5
    primal = (T * C).sum() + 0.5 * gamma * (T * T).sum()
    problem = _Problem(torch.tensor(a)[None], torch.tensor(b)[None],
                       torch.tensor(C).T.contiguous()[None], 1, gamma)
    rng = np.random.default_rng(0)
    for _ in range(30):
        x = torch.tensor(rng.normal(scale=0.5, size=(1, 16)))
        assert float(problem.dual(x).value) <= primal + 1e-12
        assert float(problem.semi_dual(x[:, :8]).value) <= primal + 1e-12
    _, result = sparsity_constrained_ot(a, b, C, 1, gamma, log=True)
    assert result.objective <= primal + 1e-12


# ------------------------------------------------------------------------- the solver


SOLVERS = ["scipy", "torch",
           pytest.param("numba", marks=pytest.mark.skipif(
               importlib.util.find_spec("numba") is None, reason="numba is not installed"))]


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_semi_dual_plan_columns_sum_to_b_and_hold_at_most_k_nonzeros(k, solver):
    a, _, C = clouds(30, 12, k)
    b = np.random.default_rng(k).uniform(0.5, 1.5, size=12)
    b /= b.sum()
    T, result = sparsity_constrained_ot(a, b, C, k, 1.0, log=True, solver=solver)
    np.testing.assert_allclose(T.sum(0), b, atol=1e-12)
    assert (T >= 0).all() and ((T > 0).sum(0) <= k).all()
    assert result.max_nnz_per_column <= k and result.col_error < 1e-12


def test_large_k_equals_quadratic_ot():
    a, b, C = clouds(40, 30, 6)
    T_quad = sparsity_constrained_ot(a, b, C, None, 1.0, tol=1e-13)
    natural = int((T_quad > 0).sum(0).max())
    assert natural < 40
    for k in (natural, natural + 3, 40, 100):
        T = sparsity_constrained_ot(a, b, C, k, 1.0, tol=1e-13)
        np.testing.assert_allclose(T, T_quad, atol=1e-8)
    # Quadratic-OT optimality: every column is b_j · Proj_Δ((α − c_j)/(γ b_j)).
    _, result = sparsity_constrained_ot(a, b, C, None, 1.0, tol=1e-13, log=True)
    for j in range(30):
        col = b[j] * simplex_projection((result.alpha - C[:, j]) / b[j], 1.0)
        np.testing.assert_allclose(T_quad[:, j], col, atol=1e-9)
    assert result.row_error < 1e-3


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("seed", range(4))
def test_k1_with_small_gamma_matches_emd_cost(seed, solver):
    ot = pytest.importorskip("ot")
    a, b, C = clouds(20, 20, seed)
    emd = (ot.emd(a, b, C) * C).sum()
    T, result = sparsity_constrained_ot(a, b, C, 1, 0.01, log=True, solver=solver)
    assert abs((T * C).sum() - emd) <= 1e-3
    assert result.max_nnz_per_column == 1


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("formulation", ["semi_dual", "dual"])
def test_agrees_with_pots_sparsity_constrained_plan(formulation, solver):
    smooth = pytest.importorskip("ot.smooth")
    a, b, C = clouds(60, 60, 7)
    solve = smooth.smooth_ot_semi_dual if formulation == "semi_dual" else smooth.smooth_ot_dual
    with contextlib.redirect_stdout(io.StringIO()):  # POT 0.9.7 prints inside its projection
        P = solve(a, b, C, 1.0, reg_type="sparsity_constrained", max_nz=10)
    T = sparsity_constrained_ot(a, b, C, 10, 1.0, formulation=formulation, solver=solver)
    assert np.abs(T - P).max() <= 2e-2 * P.max()
    assert (T * C).sum() == pytest.approx((P * C).sum(), rel=1e-3)
    assert (T > 0).sum(0).max() == (P > 0).sum(0).max() == 10


def test_semi_dual_bounds_the_dual_pointwise_and_equals_it_without_the_cap():
    # ψ_j(s) ≤ δ_Ω(s + β_j) − β_j b_j for every β_j (Lagrangian relaxation of the column mass),
    # so D(α, β) ≤ S(α); with no cap Ω is convex and both optima equal the quadratic-OT value.
    a, b, C = clouds(25, 20, 8)
    problem = _Problem(torch.tensor(a)[None], torch.tensor(b)[None],
                       torch.tensor(C).T.contiguous()[None], 3, 0.5)
    rng = np.random.default_rng(3)
    for _ in range(30):
        x = torch.tensor(rng.normal(scale=0.2, size=(1, 45)))
        assert float(problem.dual(x).value) <= float(problem.semi_dual(x[:, :25]).value) + 1e-12
    _, semi = sparsity_constrained_ot(a, b, C, None, 0.5, tol=1e-13, log=True)
    _, dual = sparsity_constrained_ot(a, b, C, None, 0.5, formulation="dual", tol=1e-13,
                                      log=True)
    assert semi.objective == pytest.approx(dual.objective, rel=1e-7)


@pytest.mark.parametrize("solver", SOLVERS)
def test_batched_solve_equals_one_problem_at_a_time_and_keeps_torch_type(solver):
    problems = [clouds(15, 10, s) for s in range(3)]
    a = torch.tensor(np.stack([p[0] for p in problems]))
    b = torch.tensor(np.stack([p[1] for p in problems]))
    C = torch.tensor(np.stack([p[2] for p in problems]))
    T, result = sparsity_constrained_ot(a, b, C, 2, 1.0, log=True, solver=solver)
    assert isinstance(T, torch.Tensor) and T.shape == (3, 15, 10)
    assert result.row_error.shape == (3,)
    for i, (ai, bi, Ci) in enumerate(problems):
        single = sparsity_constrained_ot(ai, bi, Ci, 2, 1.0, solver=solver)
        assert isinstance(single, np.ndarray)
        np.testing.assert_allclose(T[i].numpy(), single, atol=1e-7)


@pytest.mark.parametrize("solver", SOLVERS)
def test_float32_torch_input_gives_float32_plan_with_the_cap(solver):
    a, b, C = clouds(30, 30, 9)
    T = sparsity_constrained_ot(torch.tensor(a, dtype=torch.float32),
                                torch.tensor(b, dtype=torch.float32),
                                torch.tensor(C, dtype=torch.float32), 4, 1.0, tol=1e-6,
                                solver=solver)
    assert T.dtype == torch.float32
    assert ((T > 0).sum(0) <= 4).all()
    torch.testing.assert_close(T.sum(0), torch.tensor(b, dtype=torch.float32))


def test_caller_arrays_are_not_modified():
    a, b, C = clouds(10, 10, 10)
    copies = (a.copy(), b.copy(), C.copy())
    sparsity_constrained_ot(a, b, C, 2, 1.0, formulation="dual")
    for before, after in zip(copies, (a, b, C), strict=True):
        np.testing.assert_array_equal(before, after)


# ------------------------------------------------------------------ value and gradient


@pytest.mark.parametrize("formulation", ["semi_dual", "dual"])
def test_value_gradient_in_M_is_the_plan_and_matches_finite_differences(formulation):
    a, b, C = clouds(12, 10, 11)
    M = torch.tensor(C, requires_grad=True)
    opts = {"formulation": formulation, "tol": 1e-14, "max_iter": 5000}
    value = sparsity_constrained_ot2(torch.tensor(a), torch.tensor(b), M, 3, 0.5, **opts)
    value.backward()
    T = sparsity_constrained_ot(a, b, C, 3, 0.5, **opts)
    np.testing.assert_allclose(M.grad.numpy(), T, atol=1e-9)
    h = 1e-5
    for i, j in [(0, 0), (3, 4), (7, 2), (11, 9), (5, 5)]:
        E = np.zeros_like(C)
        E[i, j] = h
        fd = (sparsity_constrained_ot2(a, b, C + E, 3, 0.5, **opts)
              - sparsity_constrained_ot2(a, b, C - E, 3, 0.5, **opts)) / (2 * h)
        assert fd == pytest.approx(float(M.grad[i, j]), abs=5e-4)


def test_value_equals_primal_cost_plus_regulariser_when_the_plan_is_feasible():
    a, b, C = clouds(30, 30, 12)
    T, result = sparsity_constrained_ot(a, b, C, None, 1.0, log=True)
    value = sparsity_constrained_ot2(a, b, C, None, 1.0)
    assert isinstance(value, float)
    assert value == pytest.approx(result.objective, rel=1e-12)
    assert value == pytest.approx((T * C).sum() + 0.5 * (T * T).sum(), rel=1e-4)


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"a": np.array([0.6, -0.1, 0.5])}, ValueError, "a has negative"),
        ({"b": np.array([0.5, 0.6, 0.2])}, ValueError, "b must sum to 1"),
        ({"k": 0}, ValueError, "k must be >= 1"),
        ({"k": 2.5}, TypeError, "k must be an int"),
        ({"gamma": 0.0}, ValueError, "gamma must lie in"),
        ({"gamma": -1.0}, ValueError, "gamma must lie in"),
        ({"M": np.ones((3, 4)) / 12}, ValueError, "shape mismatch"),
        ({"M": np.array([[0.0, 1, 1], [1, np.nan, 1], [1, 1, 0]])}, ValueError, "M contains NaN"),
        ({"formulation": "primal"}, ValueError, "formulation must be one of"),
        ({"max_iter": 0}, ValueError, "max_iter must be >= 1"),
        ({"solver": "adam"}, ValueError, "solver must be one of"),
        ({"a": [0.3, 0.3, 0.4]}, TypeError, "a must be a numpy array"),
    ],
)
def test_bad_input_raises_a_clear_error(change, error, match):
    args = {"a": np.full(3, 1 / 3), "b": np.full(3, 1 / 3), "M": 1 - np.eye(3), "k": 1,
            "gamma": 1.0}
    args.update(change)
    with pytest.raises(error, match=match):
        sparsity_constrained_ot(**args)


def test_projection_rejects_bad_k_and_negative_z():
    with pytest.raises(ValueError, match="k must be >= 1"):
        projection_sparse_simplex(np.ones(3), 0)
    with pytest.raises(ValueError, match="z must lie in"):
        projection_sparse_simplex(np.ones(3), 1, z=-1.0)


# ----------------------------------------------------------------------------- router


@pytest.mark.parametrize("routing", ["sparse_ot", "top1", "sinkhorn"])
def test_router_never_exceeds_capacity_and_trains_the_gate(routing):
    torch.manual_seed(0)
    router = SparseOTRouter(6, 4, capacity=5, routing=routing)
    x = torch.randn(3, 20, 6)
    routing_out = router(x)
    assert routing_out.dispatch.shape == (3, 20, 4)
    assert (routing_out.dispatch.sum(1) <= 5).all()
    if routing != "sparse_ot":
        assert (routing_out.dispatch.sum(-1) <= 1).all()
    assert ((routing_out.combine > 0) <= routing_out.dispatch).all()
    routing_out.combine.sum().backward()
    assert router.gate.weight.grad is not None and router.gate.weight.grad.abs().sum() > 0


def test_sparse_ot_router_with_exact_capacity_fills_every_expert():
    torch.manual_seed(1)
    router = SparseOTRouter(5, 4, routing="sparse_ot")  # capacity ⌈N/E⌉ = 8
    routing = router(torch.randn(32, 5))
    assert routing.dispatch.shape == (32, 4)
    assert (routing.dispatch.sum(0) <= 8).all()
    assert routing.dispatch.sum() >= 28  # nearly every token served (the relaxation may drop few)


def test_sparse_moe_gives_dropped_tokens_zero_output():
    torch.manual_seed(2)
    router = SparseOTRouter(4, 2, capacity=1, routing="top1")
    moe = SparseMoE(router, [torch.nn.Linear(4, 3) for _ in range(2)])
    out, routing = moe(torch.randn(1, 6, 4))
    assert out.shape == (1, 6, 3)
    dropped = ~routing.dispatch.any(-1)
    assert dropped.sum() >= 4 and (out[dropped] == 0).all()
    with pytest.raises(ValueError, match="expert modules"):
        SparseMoE(router, [torch.nn.Linear(4, 3)])
    with pytest.raises(ValueError, match="routing must be one of"):
        SparseOTRouter(4, 2, routing="topk")


def test_registered_as_an_estimator():
    method = card("sparse_ot")
    assert method.obj is sparsity_constrained_ot and method.kind == "estimator"
    assert {d.name for d in method.defaults} >= {"gamma", "tol", "max_iter"}


def test_top_k_index_handles_ties_at_the_threshold():
    s = np.array([[0.1, 0.5, 0.5, 0.5, 0.2], [0.9, 0.1, 0.3, 0.8, 0.2]])
    index = _top_k_index(s, 2)
    assert index.shape == (2, 2)
    assert set(index[1]) == {0, 3}
    assert set(index[0]) <= {1, 2, 3} and len(set(index[0])) == 2


def test_the_package_exports_the_public_api_and_registers_the_solver():
    assert set(package.__all__) == {
        "DEFAULTS", "FORMULATIONS", "ROUTINGS", "SOLVERS", "Routing", "SparseMoE",
        "SparseOTResult", "SparseOTRouter", "delta_omega", "projection_sparse_simplex",
        "sparsity_constrained_ot", "sparsity_constrained_ot2"}
    assert all(hasattr(package, name) for name in package.__all__)
    assert card("sparse_ot").target == "regzoo.methods.sparse_ot.solver:sparsity_constrained_ot"


# ------------------------------------------------ screened and compiled evaluations (speed)


def has_numba() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@contextlib.contextmanager
def numba_unimportable() -> Iterator[None]:
    """``import numba`` fails inside: the lazy import of the compiled loops finds no numba."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "numba", None)
        _compiled_loops.cache_clear()
        _compiled_lbfgs.cache_clear()
        try:
            yield
        finally:
            _compiled_loops.cache_clear()
            _compiled_lbfgs.cache_clear()


def _random_walk(size, seed, steps=120):
    """Dual points along a random walk whose big jumps shrink (as L-BFGS iterates do)."""
    rng = np.random.default_rng(seed)
    x = np.zeros(size)
    for t in range(steps):
        x = x + rng.normal(scale=0.3 * 0.8 ** (t / 10), size=size) * (rng.uniform() < 0.5)
        x = x + rng.normal(scale=1e-3, size=size)
        yield x


@pytest.mark.parametrize("formulation", ["semi_dual", "dual"])
@pytest.mark.parametrize("k", [1, 3, 10, None])
def test_screened_evaluation_equals_the_full_one_along_a_random_walk(k, formulation):
    # Large steps force refreshes and many references, small ones keep the screen in use.
    a, _, C = clouds(160, 150, 13)
    b = np.random.default_rng(13).uniform(0.5, 1.5, size=150)
    b /= b.sum()
    semi = formulation == "semi_dual"
    screen = _Screen(a, b, np.ascontiguousarray(C.T), k or 160, 0.7, semi)
    assert screen.screened
    for x in _random_walk(160 if semi else 310, seed=14):
        value, grad = screen.value_and_grad(x)
        full_value, full_grad, _, _ = screen.full(x)
        assert value == pytest.approx(full_value, rel=1e-13, abs=1e-15)
        np.testing.assert_allclose(grad, full_grad, rtol=0, atol=1e-12)
    assert len(screen.refs) >= 1


@pytest.mark.parametrize(("formulation", "k"), [("semi_dual", 2), ("semi_dual", None),
                                                 ("dual", 5)])
def test_screened_solve_equals_the_unscreened_solve(formulation, k, monkeypatch):
    a, b, C = clouds(150, 150, 15)
    with numba_unimportable():  # the NumPy path
        T, res = sparsity_constrained_ot(a, b, C, k, 1.0, formulation=formulation, log=True)
        monkeypatch.setattr(_Screen, "value_and_grad", lambda self, x: self.full(x)[:2])
        T_full, res_full = sparsity_constrained_ot(a, b, C, k, 1.0, formulation=formulation,
                                                   log=True)
    # Only summation order differs (the screened gradient adds fewer zeros, in another order):
    # measured max |ΔT| 4e-13 over these three cases, so rounding-level agreement is asserted.
    assert res.n_iter == res_full.n_iter
    np.testing.assert_allclose(T, T_full, rtol=0, atol=1e-11)
    np.testing.assert_allclose(res.alpha, res_full.alpha, rtol=0, atol=1e-10)


def plain_or_compiled_loops(compiled: bool) -> _Loops:
    """The loops as plain Python, or compiled by numba (the test is skipped without it)."""
    if not compiled:
        return _Loops(_top_k_loop, _semi_dual_terms, _dual_terms)
    pytest.importorskip("numba")
    loops = _compiled_loops()
    assert loops is not None
    return loops


@pytest.mark.parametrize("compiled", [False, True], ids=["plain_python", "numba"])
@pytest.mark.parametrize("formulation", ["semi_dual", "dual"])
@pytest.mark.parametrize("k", [1, 4])
def test_compiled_loops_equal_the_numpy_evaluation_cold_and_warm(k, formulation, compiled):
    # Warm: the previous top k bounds the new k-th value from below.
    loops = plain_or_compiled_loops(compiled)
    a, _, C = clouds(20, 15, 16)
    b = np.random.default_rng(16).uniform(0.5, 1.5, size=15)
    b /= b.sum()
    semi = formulation == "semi_dual"
    screen = _Screen(a, b, np.ascontiguousarray(C.T), k, 0.7, semi)
    rng = np.random.default_rng(17)
    x = np.zeros(20 if semi else 35)
    index = np.empty((15, k), dtype=np.int64)
    for warm in (False, True, True, True):
        x = x + rng.normal(scale=0.05, size=x.shape)
        values = np.empty((15, k))
        shift = np.zeros(15) if semi else x[20:]
        loops.top_k(x[:20], shift, screen.Ct, values, index, warm)
        assert (np.diff(values, axis=1) <= 0).all()
        grad = np.empty(len(x))
        terms = loops.semi_dual_terms if semi else loops.dual_terms
        value = terms(x, a, b, 0.7, values, index, grad)
        full_value, full_grad, _, full_index = screen.full(x)
        assert value == pytest.approx(full_value, rel=1e-13, abs=1e-15)
        np.testing.assert_allclose(grad, full_grad, rtol=0, atol=1e-13)
        assert (np.sort(index, 1) == np.sort(full_index, 1)).all()


@pytest.mark.parametrize("compiled", [False, True], ids=["plain_python", "numba"])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_warm_top_k_equals_the_cold_pass_exactly_on_both_warm_paths(k, compiled):
    # A warm call re-sorts the previous top k when exactly k entries reach its smallest
    # current value L, and gathers the entries ≥ L otherwise; either way its values and rows,
    # tie order included, must be the cold pass's. Rows 5 and 6 tie in every column, near the
    # top.
    loops = plain_or_compiled_loops(compiled)
    rng = np.random.default_rng(23)
    m, n = 30, 40
    Ct = rng.uniform(size=(n, m))
    Ct[:, 6] = Ct[:, 5]
    alpha, shift = rng.normal(scale=0.3, size=m), rng.normal(scale=0.1, size=n)
    alpha[5] = alpha[6] = alpha.max()
    warm_values, warm_index = np.empty((n, k)), np.empty((n, k), dtype=np.int64)
    loops.top_k(alpha, shift, Ct, warm_values, warm_index, False)
    paths = {"re-sort": 0, "gather": 0, "tie kept": 0}
    for scale in (1e-7, 0.3, 1e-7, 1e-3, 0.05, 1e-7, 1.0, 1e-5):
        alpha = alpha + rng.normal(scale=scale, size=m)
        alpha[6] = alpha[5]
        s = alpha + shift[:, None] - Ct
        lower = np.take_along_axis(s, warm_index, 1).min(1)
        at_or_above = (s >= lower[:, None]).sum(1)
        paths["re-sort"] += int((at_or_above == k).sum())
        paths["gather"] += int((at_or_above > k).sum())
        loops.top_k(alpha, shift, Ct, warm_values, warm_index, True)
        cold_values, cold_index = np.empty((n, k)), np.empty((n, k), dtype=np.int64)
        loops.top_k(alpha, shift, Ct, cold_values, cold_index, False)
        np.testing.assert_array_equal(warm_values, cold_values)
        np.testing.assert_array_equal(warm_index, cold_index)
        paths["tie kept"] += int((cold_index == 5).any(1).sum())
    assert min(paths.values()) > 0, paths


@pytest.mark.parametrize("formulation", ["semi_dual", "dual"])
@pytest.mark.parametrize("k", [1, 3, 16])
def test_compiled_evaluation_equals_the_full_one_along_a_random_walk(k, formulation):
    loops = plain_or_compiled_loops(True)
    a, _, C = clouds(160, 150, 19)
    b = np.random.default_rng(19).uniform(0.5, 1.5, size=150)
    b /= b.sum()
    semi = formulation == "semi_dual"
    Ct = np.ascontiguousarray(C.T)
    evaluation = _CompiledEvaluation(loops, a, b, Ct, k, 0.7, semi)
    screen = _Screen(a, b, Ct, k, 0.7, semi)
    for x in _random_walk(160 if semi else 310, seed=20):
        value, grad = evaluation.value_and_grad(x)
        full_value, full_grad, _, full_index = screen.full(x)
        assert value == pytest.approx(full_value, rel=1e-13, abs=1e-15)
        np.testing.assert_allclose(grad, full_grad, rtol=0, atol=1e-12)
        assert (np.sort(evaluation.index, 1) == np.sort(full_index, 1)).all()


# Cases whose solve is stable under rounding: a 1e-15 relative change of C moves these plans by
# < 1e-13, whereas the dual at k = 2 here (500 iterations, not converged) moves by 5e-3.
@pytest.mark.parametrize(("formulation", "k"), [("semi_dual", 3), ("dual", 5)])
def test_compiled_solve_equals_the_numpy_solve(formulation, k):
    pytest.importorskip("numba")
    a, b, C = clouds(120, 100, 18)
    T, res = sparsity_constrained_ot(a, b, C, k, 1.0, formulation=formulation, log=True,
                                     solver="scipy")
    with numba_unimportable():
        T_np, res_np = sparsity_constrained_ot(a, b, C, k, 1.0, formulation=formulation,
                                               log=True, solver="scipy")
    assert res.n_iter == res_np.n_iter
    np.testing.assert_allclose(T, T_np, rtol=0, atol=1e-11)
    np.testing.assert_allclose(res.alpha, res_np.alpha, rtol=0, atol=1e-10)


def test_the_compiled_loops_serve_only_k_up_to_16_below_m():
    a, b, C = clouds(30, 20, 21)
    Ct = np.ascontiguousarray(C.T)
    for k in (17, 30):
        assert _compiled_evaluation(a, b, Ct, k, 1.0, True) is None
    expected = _CompiledEvaluation if has_numba() else type(None)
    assert isinstance(_compiled_evaluation(a, b, Ct, 16, 1.0, True), expected)


def test_without_numba_the_scipy_solver_uses_the_screen_and_gives_the_same_plan(monkeypatch):
    a, b, C = clouds(120, 100, 18)
    calls = []
    screened = _Screen.value_and_grad

    def counted(self, x):
        calls.append(1)
        return screened(self, x)

    monkeypatch.setattr(_Screen, "value_and_grad", counted)
    T = sparsity_constrained_ot(a, b, C, 3, 1.0)
    assert (len(calls) == 0) == has_numba()  # with numba, the compiled loops evaluate
    with numba_unimportable():
        assert _compiled_loops() is None
        assert _compiled_evaluation(a, b, np.ascontiguousarray(C.T), 3, 1.0, True) is None
        T_fallback, res = sparsity_constrained_ot(a, b, C, 3, 1.0, log=True)
        value = sparsity_constrained_ot2(a, b, C, 3, 1.0)
        batch = sparsity_constrained_ot(torch.tensor(np.stack([a, a])),
                                        torch.tensor(np.stack([b, b])),
                                        torch.tensor(np.stack([C, C])), 3, 1.0)
    assert len(calls) > 0
    np.testing.assert_allclose(T_fallback, T, rtol=0, atol=1e-11)
    assert value == pytest.approx(res.objective, rel=1e-12)
    np.testing.assert_allclose(batch[1].numpy(), T, rtol=0, atol=1e-11)


def test_scipy_objective_is_the_semi_dual_value_in_float64():
    # The value of the scipy path once went through a float32 tensor: off by ~1e-8 relative.
    a, b, C = clouds(40, 30, 22)
    _, res = sparsity_constrained_ot(a, b, C, 3, 1.0, solver="scipy", log=True)
    problem = _Problem(torch.tensor(a)[None], torch.tensor(b)[None],
                       torch.tensor(C).T.contiguous()[None], 3, 1.0)
    exact = float(problem.semi_dual(torch.tensor(res.alpha)[None]).value[0])
    assert res.objective == pytest.approx(exact, rel=1e-14, abs=0)


# ------------------------------------------------------------------ the numba solver


def scipy_and_numba(formulation, k, seed):
    pytest.importorskip("numba")
    a, b, C = clouds(120, 100, seed)
    return [sparsity_constrained_ot(a, b, C, k, 1.0, formulation=formulation, log=True,
                                    solver=solver) for solver in ("scipy", "numba")]


@pytest.mark.parametrize(("formulation", "k", "seed"),
                         [("semi_dual", 3, 18), ("dual", 5, 18), ("semi_dual", 5, 3),
                          ("semi_dual", 2, 2), ("semi_dual", 4, 4)])
def test_numba_solver_follows_the_scipy_solvers_iterates(formulation, k, seed):
    # Measured: the same iteration count, potentials equal to ≤ 2e-11.
    (T_s, res_s), (T_n, res_n) = scipy_and_numba(formulation, k, seed)
    assert res_n.n_iter == res_s.n_iter and res_n.converged == res_s.converged
    assert res_n.objective == pytest.approx(res_s.objective, rel=1e-11, abs=0)
    np.testing.assert_allclose(res_n.alpha, res_s.alpha, rtol=0, atol=1e-9)
    np.testing.assert_allclose(T_n, T_s, rtol=0, atol=1e-9)


@pytest.mark.parametrize(("k", "seed"), [(2, 0), (1, 1)])
def test_on_the_kinks_rounding_parts_the_two_solvers_only_near_the_optimum(k, seed):
    # At small k a rounding difference can send a step to another side of a kink: measured
    # −1.1e-7 and +9.4e-6 relative apart at the end (313 vs 313, 438 vs 443 iterations).
    (_, res_s), (_, res_n) = scipy_and_numba("semi_dual", k, seed)
    assert res_n.objective == pytest.approx(res_s.objective, rel=5e-5, abs=0)
    assert abs(res_n.n_iter - res_s.n_iter) <= 0.1 * res_s.n_iter


@pytest.mark.parametrize("formulation", ["semi_dual", "dual"])
def test_plain_python_lbfgs_equals_the_compiled_one(formulation):
    compiled = _compiled_lbfgs() if has_numba() else None
    if compiled is None:
        pytest.skip("numba is not installed")
    a, _, C = clouds(30, 20, 23)
    b = np.random.default_rng(23).uniform(0.5, 1.5, size=20)
    b /= b.sum()
    Ct, semi = np.ascontiguousarray(C.T), formulation == "semi_dual"
    size = 30 if semi else 50
    outs = []
    for solve in (_lbfgs_loop, compiled):
        x, trace = np.zeros(size), np.zeros(200)
        value, n_iter, n_eval, success = _run(solve, a, b, Ct, 3, 0.8, semi, x, 200, 1e-9, trace)
        outs.append((x, value, n_iter, n_eval, success, trace[:n_iter]))
    (x_p, v_p, it_p, ev_p, ok_p, tr_p), (x_c, v_c, it_c, ev_c, ok_c, tr_c) = outs
    assert (it_p, ev_p, ok_p) == (it_c, ev_c, ok_c) and it_p > 10
    np.testing.assert_allclose(x_p, x_c, rtol=0, atol=1e-12)
    assert v_p == pytest.approx(v_c, rel=1e-14)
    np.testing.assert_allclose(tr_p, tr_c, rtol=1e-13)


class _Quadratic:
    """f(x) = ½ xᵀAx − cᵀx (= −S) as the solver's ``_evaluate`` gives it, counted."""

    def __init__(self, size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        Q = rng.normal(size=(size, size))
        self.A = Q @ Q.T / size + np.diag(rng.uniform(0.1, 3.0, size))
        self.c = rng.normal(size=size)
        self.calls = 0

    def evaluate(self, point, warm, a, b, Ct, gamma, semi, no_shift, values, index, grad):
        self.calls += 1
        Ax = self.A @ point
        grad[:] = self.c - Ax  # ∇S
        return float(0.5 * point @ Ax - self.c @ point)


def test_plain_lbfgs_reaches_the_closed_form_maximiser_of_a_quadratic_ascending(monkeypatch):
    quadratic = _Quadratic(12, 24)
    monkeypatch.setattr(numba_solver, "_evaluate", quadratic.evaluate)
    x, trace = np.zeros(12), np.zeros(500)
    value, n_iter, n_eval, success = _run(_lbfgs_loop, np.zeros(12), np.zeros(0),
                                          np.zeros((0, 12)), 1, 1.0, True, x, 500, 1e-12, trace)
    optimum = np.linalg.solve(quadratic.A, quadratic.c)
    # It stops on the relative decrease 1e-12, when S is within ~1e-14 of its maximum.
    assert value == pytest.approx(0.5 * quadratic.c @ optimum, rel=1e-12)
    np.testing.assert_allclose(x, optimum, rtol=0, atol=1e-6)
    assert success and n_eval == quadratic.calls and n_eval >= n_iter > 0
    assert (np.diff(trace[:n_iter]) >= 0).all()  # every accepted step decreases f = −S


@pytest.mark.parametrize("seed", range(3))
def test_line_search_returns_a_step_meeting_the_strong_wolfe_conditions(seed, monkeypatch):
    quadratic = _Quadratic(8, seed)
    monkeypatch.setattr(numba_solver, "_evaluate", quadratic.evaluate)
    x = np.random.default_rng(seed).normal(size=8) * 3
    grad = np.empty(8)
    f0 = quadratic.evaluate(x, False, None, None, None, 1.0, True, None, None, None, grad)
    g0 = -grad.copy()

    def search(direction, step):
        trial = np.empty(8)
        out = _line_search(np.zeros(8), np.zeros(0), np.zeros((0, 8)), 1.0, True, np.zeros(0),
                           x, direction, f0, g0, step, trial, None, None, grad)
        return (*out, trial)

    for direction, step in ((-g0, 1.0), (-g0, 1e-4), (-50 * g0, 1.0)):  # too long, too short
        calls = quadratic.calls
        f, evals, found, trial = search(direction, step)
        t = float((trial - x) @ direction / (direction @ direction))
        slope0 = g0 @ direction
        assert found and 1 <= evals <= 20 and quadratic.calls - calls == evals
        assert f == pytest.approx(quadratic.evaluate(trial, False, None, None, None, 1.0, True,
                                                     None, None, None, np.empty(8)), rel=1e-14)
        assert f <= f0 + 1e-3 * t * slope0
        assert abs(-grad @ direction) <= 0.9 * abs(slope0)
    f, evals, found, _ = search(g0, 1.0)
    assert not found and evals == 0 and f == f0  # an ascent direction is refused at once


def test_auto_solver_is_numba_where_its_loops_apply_else_scipy():
    a, b, C = clouds(30, 20, 25)

    def chosen(k):
        problem = _Problem(torch.tensor(a)[None], torch.tensor(b)[None],
                           torch.tensor(C).T.contiguous()[None], min(k, 30), 1.0)
        return _choose_solver("auto", problem)

    assert chosen(16) == ("numba" if has_numba() else "scipy")
    assert chosen(17) == chosen(30) == "scipy"
    with numba_unimportable():
        assert chosen(3) == "scipy"


def test_numba_solver_refuses_what_it_cannot_serve_and_names_the_fix():
    a, b, C = clouds(30, 20, 26)
    with pytest.raises(ValueError, match=r"solver='numba' needs k ≤ 16 and k < m \(got k=17"):
        sparsity_constrained_ot(a, b, C, 17, 1.0, solver="numba")
    with numba_unimportable(), pytest.raises(ImportError, match=r"regzoo\[fast\]"):
        sparsity_constrained_ot(a, b, C, 3, 1.0, solver="numba")


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_reports_its_evaluations(solver):
    a, b, C = clouds(40, 30, 27)
    _, res = sparsity_constrained_ot(a, b, C, 3, 1.0, solver=solver, log=True)
    assert res.n_evaluations >= res.n_iter > 0


def test_compiled_semi_dual_terms_keep_the_top_entry_at_huge_potentials():
    # A far L-BFGS-B trial step (α ~ 1e15) once made the first simplex test round to 0 > 0,
    # leaving ρ = 0 and a ZeroDivisionError; the NumPy evaluation clamps ρ ≥ 1.
    a, b, C = clouds(30, 20, 0)
    Ct = np.ascontiguousarray(C.T)
    x = np.full(30, 8.9e14) + np.arange(30)
    for compiled in (False, True):
        loops = plain_or_compiled_loops(compiled)
        values, index = np.empty((20, 1)), np.empty((20, 1), dtype=np.int64)
        loops.top_k(x, np.zeros(20), Ct, values, index, False)
        grad = np.empty(30)
        value = loops.semi_dual_terms(x, a, b, 1.0, values, index, grad)
        full_value, full_grad, _, _ = _Screen(a, b, Ct, 1, 1.0, True).full(x)
        assert value == pytest.approx(full_value, rel=1e-12)
        np.testing.assert_allclose(grad, full_grad, rtol=0, atol=1e-12)
