"""Properties of regzoo's differentiable dopri5/Tsit5 solver and the solver-heuristics penalties."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from regzoo.methods.nde_solver_reg import (
    DOPRI5,
    TSIT5,
    ExponentialAnnealing,
    SolverHeuristicsPenalty,
    SolverRegularizedODE,
    SteerEndTime,
    StepBudgetExceeded,
    StepTrace,
    TaylorModeRegularizedDynamics,
    fixed_step,
    odeint,
    replay_steps,
    solve,
    total_derivative,
)

F64 = torch.float64


def _trees(order):
    """Rooted trees with ``order`` nodes as sorted tuples of children."""
    if order == 1:
        return [()]
    out = set()

    def partitions(n, maximum):
        if n == 0:
            yield []
            return
        for k in range(min(n, maximum), 0, -1):
            for rest in partitions(n - k, k):
                yield [k, *rest]

    for parts in partitions(order - 1, order - 1):
        combos = [[]]
        for k in parts:
            combos = [[*c, t] for c in combos for t in _trees(k)]
        out.update(tuple(sorted(c)) for c in combos)
    return sorted(out)


def _size(tree):
    return 1 + sum(_size(c) for c in tree)


def _gamma(tree):
    return _size(tree) * math.prod(_gamma(c) for c in tree)


def _internal(A, tree):
    """Φ_i(tree) for every stage i."""
    out = np.ones(A.shape[0])
    for child in tree:
        out = out * (A @ _internal(A, child))
    return out


def _matrix(tab):
    s = tab.stages
    A = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        A[i, :len(row)] = row
    return A


@pytest.mark.parametrize("tab", [DOPRI5, TSIT5], ids=lambda t: t.name)
def test_tableaux_satisfy_the_order_conditions_of_their_5_4_pairs(tab):
    A, b = _matrix(tab), np.array(tab.b)
    b_hat = b - np.array(tab.b_error)
    np.testing.assert_allclose(A.sum(1), tab.c, atol=1e-14)  # row-sum condition
    for order in range(1, 6):
        for tree in _trees(order):
            target = 1.0 / _gamma(tree)
            assert b @ _internal(A, tree) == pytest.approx(target, abs=1e-13), tree
            if order <= 4:
                assert b_hat @ _internal(A, tree) == pytest.approx(target, abs=1e-13), tree
    # the fifth-order solution is not a fourth-order one in disguise: some order-5 condition of
    # the embedded weights fails, so the error estimate is O(h^5), not identically zero
    assert max(abs(b_hat @ _internal(A, t) - 1 / _gamma(t)) for t in _trees(5)) > 1e-4
    assert len(_trees(5)) == 9 and sum(len(_trees(k)) for k in range(1, 6)) == 17
    # FSAL: the last stage's row is b, and the last two stages sit at t + h (Hairer's test)
    assert tab.a[-1] == tab.b[:-1] and tab.b[-1] == 0 and tab.c[-2:] == (1.0, 1.0)


def test_tsit5_interpolant_ends_on_the_step_weights_and_dopri5_midpoint_is_consistent():
    weights_at_one = [sum(coeffs) for coeffs in TSIT5.interpolant]
    np.testing.assert_allclose(weights_at_one, TSIT5.b, atol=1e-12)
    # Shampine's midpoint weights integrate the constant ODE exactly: Σ mid = 1/2
    assert sum(DOPRI5.mid) == pytest.approx(0.5, abs=1e-14)
    assert Fraction(sum(TSIT5.b)).limit_denominator(10**6) == 1


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_fixed_step_error_shrinks_with_order_five(method):
    # y' = y cos t, y(2) = exp(sin 2); measured rates: dopri5 5.30/5.19/5.11, Tsit5
    # 5.84/5.67/5.47 (pre-asymptotic excess decaying towards 5)
    y0 = torch.ones(1, dtype=F64)
    exact = math.exp(math.sin(2.0))
    errors = [float((fixed_step(lambda t, y: y * torch.cos(t), y0, 0.0, 2.0, n, method)
                     - exact).abs()) for n in (8, 16, 32, 64)]
    rates = [math.log2(a / b) for a, b in itertools.pairwise(errors)]
    assert all(4.8 < r < 6.0 for r in rates) and rates[-1] < 5.6, rates
    assert rates[0] > rates[-1]


class _Counter(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f, self.calls, self.accepted, self.rejected = f, 0, 0, 0

    def forward(self, t, y):
        self.calls += 1
        return self.f(t, y)

    def callback_accept_step(self, *args):
        self.accepted += 1

    def callback_reject_step(self, *args):
        self.rejected += 1


def _mlp_problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    return (lambda t, y: net(y) * (1 + 0.5 * torch.sin(3 * t)),
            torch.randn(8, 3, dtype=F64), torch.linspace(0, 3, 7, dtype=F64))


PROBLEMS = {
    "damped_rotation": (lambda t, y: y @ torch.tensor([[-0.1, -1.0], [1.0, -0.1]], dtype=F64),
                        torch.tensor([1.0, 0.0], dtype=F64), torch.linspace(0, 10, 11, dtype=F64)),
    "van_der_pol": (lambda t, y: torch.stack([y[1], 2.0 * (1 - y[0] ** 2) * y[1] - y[0]]),
                    torch.tensor([2.0, 0.0], dtype=F64), torch.tensor([0.0, 1.5, 4.0, 7.0],
                                                                       dtype=F64)),
    "mlp_time_dependent_batch": _mlp_problem(),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
@pytest.mark.parametrize("tol", [1e-5, 1e-8])
def test_dopri5_matches_torchdiffeq_steps_nfe_and_trajectory(name, tol):
    torchdiffeq = pytest.importorskip("torchdiffeq")
    f, y0, t = PROBLEMS[name]
    counter = _Counter(f)
    reference = torchdiffeq.odeint(counter, y0, t, rtol=tol, atol=tol, method="dopri5")
    sol = solve(f, y0, t, rtol=tol, atol=tol, method="dopri5")
    assert sol.trace.nfe == counter.calls
    assert (sol.trace.n_accepted, sol.trace.n_rejected) == (counter.accepted, counter.rejected)
    assert float((sol.ys - reference).detach().abs().max()) < 1e-10
    # float32: same function evaluations and steps as torchdiffeq on the same float32 input
    counter32 = _Counter(lambda tt, y: f(tt.double(), y.double()).float())
    torchdiffeq.odeint(counter32, y0.float(), t, rtol=tol, atol=tol)
    assert solve(lambda tt, y: f(tt.double(), y.double()).float(), y0.float(), t, rtol=tol,
                 atol=tol).trace.nfe == counter32.calls


def test_drop_in_for_torchdiffeq_odeint_including_backward_time_and_rejections():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    f, y0, _ = PROBLEMS["van_der_pol"]
    t = torch.tensor([5.0, 2.0, 0.0], dtype=F64)  # integrating backwards
    opts = {"first_step": 1.0}  # a too-large first step forces rejections
    ours = odeint(f, y0, t, rtol=1e-7, atol=1e-7, method=None, options=opts)
    theirs = torchdiffeq.odeint(f, y0, t, rtol=1e-7, atol=1e-7, method="dopri5", options=opts)
    assert float((ours - theirs).abs().max()) < 1e-10
    assert solve(f, y0, t, rtol=1e-7, atol=1e-7, options=opts).trace.n_rejected > 0


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_accepted_steps_have_error_ratio_at_most_one_and_rejected_above(method):
    f, y0, t = PROBLEMS["van_der_pol"]
    trace = solve(f, y0, t, rtol=1e-6, atol=1e-6, method=method,
                  options={"first_step": 2.0}).trace
    assert trace.n_rejected > 0 and trace.n_accepted > 5
    assert bool((trace.error_ratio[trace.accepted] <= 1).all())
    assert bool((trace.error_ratio[~trace.accepted] > 1).all())
    assert trace.nfe == 1 + 6 * len(trace.accepted)  # f0 + six stages per step (first_step given)


@pytest.mark.parametrize("tab", [DOPRI5, TSIT5], ids=lambda t: t.name)
def test_error_ratio_of_a_scalar_linear_step_is_the_embedded_pairs_closed_form(tab):
    lam, h, y0, tol = -2.0, 0.3, 1.5, 1e-4
    A = _matrix(tab)
    z = lam * h
    stages = np.linalg.solve(np.eye(tab.stages) - z * A, np.ones(tab.stages))  # Y_i / y0
    y1 = y0 * (1 + z * np.array(tab.b) @ stages)
    error = y0 * z * np.array(tab.b_error) @ stages  # (R(z) − R̂(z)) y0
    expected = abs(error) / (tol + tol * max(abs(y0), abs(y1)))
    trace = solve(lambda t, y: lam * y, torch.tensor([y0], dtype=F64),
                  torch.tensor([0.0, 5.0], dtype=F64), rtol=tol, atol=tol, method=tab.name,
                  options={"first_step": h}).trace
    assert float(trace.h[0]) == h
    assert float(trace.error_ratio[0]) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_stiffness_estimate_recovers_the_dominant_eigenvalue(method):
    a = 7.0
    rho = {"dopri5": 3.3066, "tsit5": 3.5068}[method]
    trace = solve(lambda t, y: -a * y, torch.ones(3, dtype=F64),
                  torch.tensor([0.0, 2.0], dtype=F64), rtol=1e-6, atol=1e-6,
                  method=method).trace
    assert torch.allclose(trace.stiffness * rho, torch.full_like(trace.stiffness, a), rtol=1e-6)
    # two modes: after the fast one has not decayed, the estimate approaches its modulus
    rates = torch.tensor([-40.0, -1.0], dtype=F64)
    trace = solve(lambda t, y: rates * y, torch.ones(2, dtype=F64),
                  torch.tensor([0.0, 0.05], dtype=F64), rtol=1e-8, atol=1e-8,
                  method=method).trace
    assert abs(float(trace.stiffness[-1]) * rho - 40.0) / 40.0 < 0.01


def test_scaling_the_dynamics_by_s_scales_the_stiffness_regulariser_by_s():
    penalty = SolverHeuristicsPenalty("stiffness")
    y0, t = torch.ones(4, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)
    base = penalty(solve(lambda tt, y: -3.0 * y, y0, t, rtol=1e-6, atol=1e-6).trace)
    for s in (0.5, 2.0, 5.0):
        scaled = penalty(solve(lambda tt, y, s=s: -3.0 * s * y, y0, t, rtol=1e-6,
                               atol=1e-6).trace)
        assert float(scaled) == pytest.approx(s * float(base), rel=1e-9)


def test_error_regulariser_vanishes_for_constant_dynamics():
    c = torch.tensor([0.3, -1.2, 2.0], dtype=F64)
    trace = solve(lambda t, y: c, torch.zeros(3, dtype=F64), torch.tensor([0.0, 4.0], dtype=F64),
                  rtol=1e-6, atol=1e-6).trace
    assert trace.n_accepted > 0
    # only rounding is left (≈ 1e-16·|c|·h / atol per step); any curvature gives far more
    assert float(SolverHeuristicsPenalty("error")(trace)) < 1e-9
    curved = solve(lambda t, y: c * torch.cos(t), torch.zeros(3, dtype=F64),
                   torch.tensor([0.0, 4.0], dtype=F64), rtol=1e-6, atol=1e-6).trace
    assert float(SolverHeuristicsPenalty("error")(curved)) > 1e-2


class _Linear2(nn.Module):
    """dy/dt = diag(θ₁, θ₂) y + 1: two parameters."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([-1.3, 0.4], dtype=F64))

    def forward(self, t, y):
        return self.theta * y + 1.0


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
def test_error_regulariser_gradient_matches_finite_differences_on_frozen_steps(aggregate):
    func, y0 = _Linear2(), torch.tensor([1.0, -0.5], dtype=F64)
    penalty = SolverHeuristicsPenalty("error", aggregate)
    trace = solve(func, y0, torch.tensor([0.0, 2.0], dtype=F64), rtol=1e-5, atol=1e-5).trace
    (grad,) = torch.autograd.grad(penalty(trace), func.theta)
    h = trace.h[trace.accepted]
    replayed = replay_steps(func, y0, 0.0, h, rtol=1e-5, atol=1e-5)
    (grad_replay,) = torch.autograd.grad(penalty(replayed), func.theta)
    assert torch.allclose(grad, grad_replay, rtol=1e-12, atol=0)
    eps = 1e-6
    fd = []
    for i in range(2):
        values = []
        for sign in (1, -1):
            with torch.no_grad():
                func.theta[i] += sign * eps
                values.append(float(penalty(replay_steps(func, y0, 0.0, h, rtol=1e-5,
                                                         atol=1e-5))))
                func.theta[i] -= sign * eps
        fd.append((values[0] - values[1]) / (2 * eps))
    assert torch.allclose(grad, torch.tensor(fd, dtype=F64), rtol=1e-5)


def test_differentiate_dt_gives_the_derivative_of_the_full_adaptive_solve():
    func, y0 = _Linear2(), torch.tensor([1.0, -0.5], dtype=F64)
    penalty = SolverHeuristicsPenalty("error")
    t = torch.tensor([0.0, 2.0], dtype=F64)

    def value(differentiate):
        return penalty(solve(func, y0, t, rtol=1e-5, atol=1e-5,
                             options={"differentiate_dt": differentiate}).trace)

    trace = solve(func, y0, t, rtol=1e-5, atol=1e-5, options={"differentiate_dt": True}).trace
    assert trace.h.requires_grad
    assert not solve(func, y0, t, rtol=1e-5, atol=1e-5).trace.h.requires_grad
    (grad_dt,) = torch.autograd.grad(value(True), func.theta)
    (grad_frozen,) = torch.autograd.grad(value(False), func.theta)
    eps = 1e-7
    fd = []
    for i in range(2):
        with torch.no_grad():
            func.theta[i] += eps
            up = float(value(False))
            func.theta[i] -= 2 * eps
            down = float(value(False))
            func.theta[i] += eps
        fd.append((up - down) / (2 * eps))
    assert torch.allclose(grad_dt, torch.tensor(fd, dtype=F64), rtol=1e-4)
    assert not torch.allclose(grad_frozen, grad_dt, rtol=1e-2)


def _trace(ratios, h, stiff, accepted):
    return StepTrace(torch.zeros(len(ratios), dtype=F64), torch.tensor(h, dtype=F64),
                     torch.tensor(ratios, dtype=F64), torch.tensor(stiff, dtype=F64),
                     torch.tensor(accepted), nfe=0)


def test_regularisers_aggregate_accepted_steps_only():
    trace = _trace([0.5, 3.0, 0.2], [0.1, 0.4, 0.2], [1.0, 9.0, 2.0], [True, False, True])
    assert float(SolverHeuristicsPenalty("error")(trace)) == pytest.approx(0.05 + 0.04)
    assert float(SolverHeuristicsPenalty("error", "mean")(trace)) == pytest.approx(0.045)
    assert float(SolverHeuristicsPenalty("stiffness")(trace)) == 2.0
    assert float(SolverHeuristicsPenalty("both")(trace)) == pytest.approx(0.09 + 0.1 * 3.0)
    assert float(SolverHeuristicsPenalty("both", "mean")(trace)) == pytest.approx(0.195)
    assert float(SolverHeuristicsPenalty("none")(trace)) == 0.0
    nothing = _trace([2.0], [0.1], [1.0], [False])
    assert float(SolverHeuristicsPenalty("error")(nothing)) == 0.0


def test_lambda_zero_gives_exactly_the_unregularised_loss_and_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3))

    class Func(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, t, y):
            return self.net(y)

    func = Func()
    x, target = torch.randn(16, 3), torch.randn(16, 3)
    node = SolverRegularizedODE(func, method="dopri5", rtol=1e-5, atol=1e-5)

    def loss_and_grads(weight):
        z, stats = node(x)
        loss = (z - target).pow(2).mean() + (None if weight is None else weight * stats.reg)
        return loss, torch.autograd.grad(loss, list(net.parameters()))

    def plain():
        z = odeint(func, x, torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-5)[-1]
        loss = (z - target).pow(2).mean()
        return loss, torch.autograd.grad(loss, list(net.parameters()))

    (l0, g0), (l1, g1) = plain(), loss_and_grads(0.0)
    assert torch.equal(l0, l1) and all(torch.equal(a, b) for a, b in zip(g0, g1))
    _, g2 = loss_and_grads(10.0)
    assert not all(torch.equal(a, b) for a, b in zip(g0, g2))


def test_solver_regularized_ode_reports_stats_and_uses_one_solve():
    calls = []
    torch.manual_seed(1)
    net = nn.Linear(2, 2)

    def func(t, y):
        calls.append(1)
        return torch.tanh(net(y))

    node = SolverRegularizedODE(func, rtol=1e-6, atol=1e-6, reg="both")
    z, stats = node(torch.randn(5, 2))
    assert z.shape == (5, 2) and stats.reg.ndim == 0 and stats.reg.requires_grad
    assert stats.nfe == len(calls) == 2 + 6 * (stats.n_accepted + stats.n_rejected)
    default = SolverRegularizedODE(func)
    assert (default.method, default.rtol, default.atol) == ("tsit5", 1.4e-8, 1.4e-8)
    assert (default.penalty.reg, default.penalty.aggregate) == ("error", "sum")
    assert not default.differentiate_dt


def test_annealing_starts_at_lambda0_and_ends_at_lambda1_monotonically():
    schedule = ExponentialAnnealing(100.0, 10.0, 75)
    values = [schedule(e) for e in range(76)]
    assert values[0] == 100.0 and values[-1] == pytest.approx(10.0, rel=1e-12)
    assert all(a > b for a, b in itertools.pairwise(values))
    assert values[37] == pytest.approx(100.0 * 10 ** (-37 / 75), rel=1e-12)
    assert ExponentialAnnealing(0.0, 0.0, 5)(3) == 0.0
    with pytest.raises(ValueError, match="both be positive or both zero"):
        ExponentialAnnealing(1.0, 0.0, 5)


def test_steer_end_times_are_uniform_in_range():
    steer = SteerEndTime(1.0, 0.5, generator=torch.Generator().manual_seed(0))
    samples = np.array([steer.sample() for _ in range(2000)])
    assert samples.min() >= 0.5 and samples.max() <= 1.5
    assert abs(samples.mean() - 1.0) < 0.03 and samples.min() < 0.52 and samples.max() > 1.48
    with pytest.raises(ValueError, match="b must lie"):
        SteerEndTime(1.0, 1.0)


def test_taylor_mode_total_derivatives_match_the_analytic_ones():
    A = torch.tensor([[-0.5, 1.0], [-1.0, -0.2]], dtype=F64)
    z = torch.tensor([[1.0, 2.0], [0.3, -0.4]], dtype=F64)
    t = torch.tensor(0.7, dtype=F64)
    linear = lambda tt, y: y @ A.T  # noqa: E731
    assert torch.allclose(total_derivative(linear, t, z, 2), z @ (A @ A).T, atol=1e-12)
    assert torch.allclose(total_derivative(linear, t, z, 3), z @ (A @ A @ A).T, atol=1e-12)
    # time-dependent: z' = t z gives z'' = (1 + t²) z
    assert torch.allclose(total_derivative(lambda tt, y: tt * y, t, z, 2), (1 + 0.49) * z)


def test_taynode_integral_matches_the_closed_form_and_reaches_the_parameters():
    a, z0, T = -0.8, torch.tensor([[1.5]], dtype=F64), 1.0
    weight = nn.Parameter(torch.tensor([[a]], dtype=F64))
    dyn = TaylorModeRegularizedDynamics(lambda t, y: y @ weight.T, order=2)
    state = odeint(dyn, dyn.augment(z0), torch.tensor([0.0, T], dtype=F64), rtol=1e-10,
                   atol=1e-10)[-1]
    z, reg = dyn.split(state)
    expected = a**4 * 1.5**2 * (math.exp(2 * a * T) - 1) / (2 * a)
    assert float(reg) == pytest.approx(expected, rel=1e-7)
    assert float(z) == pytest.approx(1.5 * math.exp(a * T), rel=1e-8)
    (grad,) = torch.autograd.grad(reg, weight)
    assert float(grad) != 0 and math.isfinite(float(grad))


def test_float32_batched_solve_keeps_dtype_and_shape():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))
    y0 = torch.randn(6, 4)
    sol = solve(lambda t, y: net(y), y0, torch.tensor([0.0, 0.5, 1.0]), rtol=1e-5, atol=1e-5,
                method="tsit5")
    assert sol.ys.shape == (3, 6, 4) and sol.ys.dtype == torch.float32
    assert sol.trace.error_ratio.dtype == torch.float32 and sol.trace.h.dtype == torch.float32
    assert torch.equal(sol.ys[0], y0)


def test_tsit5_is_accurate_and_close_to_torchode_in_nfe():
    f, y0, t = PROBLEMS["damped_rotation"]
    A = torch.tensor([[-0.1, 1.0], [-1.0, -0.1]], dtype=F64)
    exact = torch.stack([torch.linalg.matrix_exp(A * ti) @ y0 for ti in t])
    for method in ("dopri5", "tsit5"):  # dense output between steps at the 11 requested times
        sol = solve(f, y0, t, rtol=1e-9, atol=1e-9, method=method)
        assert sol.trace.n_accepted > len(t)  # several outputs fall inside steps
        assert float((sol.ys - exact).abs().max()) < 1e-7
    torchode = pytest.importorskip("torchode")
    term = torchode.ODETerm(lambda tt, y: f(tt, y[0]).unsqueeze(0))
    solver = torchode.AutoDiffAdjoint(torchode.Tsit5(term=term),
                                      torchode.IntegralController(atol=1e-6, rtol=1e-6,
                                                                  term=term))
    ref = solver.solve(torchode.InitialValueProblem(y0=y0[None], t_eval=t[None]))
    ours = solve(f, y0, t, rtol=1e-6, atol=1e-6, method="tsit5")
    assert abs(ours.trace.nfe - int(ref.stats["n_f_evals"])) <= 0.25 * ours.trace.nfe
    assert float((ours.ys - ref.ys[0]).abs().max()) < 1e-4


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"rtol": 0.0}, ValueError, "rtol must lie"),
    ({"atol": -1e-6}, ValueError, "atol must lie"),
    ({"t": torch.tensor([0.0, 1.0, 1.0])}, ValueError, "strictly increasing or strictly"),
    ({"t": torch.tensor([0.0, 2.0, 1.0])}, ValueError, "strictly increasing or strictly"),
    ({"y0": torch.tensor([1.0, float("nan")])}, ValueError, "y0 contains NaN"),
    ({"y0": torch.tensor([1, 2])}, TypeError, "y0 must be a floating-point"),
    ({"method": "rk45"}, ValueError, "method must be one of"),
    ({"func": lambda t, y: y[:1]}, ValueError, "func must return a tensor shaped like"),
    ({"options": {"atol_scale": 2}}, ValueError, "options has unknown key 'atol_scale'"),
    ({"options": {"max_num_steps": 3}}, StepBudgetExceeded, r"at t=\S+ with step size h="),
])
def test_bad_input_is_refused_with_a_message_naming_it(kwargs, error, match):
    call = {"func": lambda t, y: -y, "y0": torch.tensor([1.0, 2.0]),
            "t": torch.tensor([0.0, 10.0]), "rtol": 1e-8, "atol": 1e-8, "method": "dopri5"}
    call.update(kwargs)
    func, y0, t = call.pop("func"), call.pop("y0"), call.pop("t")
    with pytest.raises(error, match=match):
        solve(func, y0, t, **call)


def test_bad_penalty_and_layer_options_are_refused():
    with pytest.raises(ValueError, match="reg must be one of"):
        SolverHeuristicsPenalty("jacobian")
    with pytest.raises(ValueError, match="aggregate must be one of"):
        SolverHeuristicsPenalty(aggregate="max")
    with pytest.raises(TypeError, match="trace must be a StepTrace"):
        SolverHeuristicsPenalty()(torch.ones(3))
    with pytest.raises(ValueError, match="t_span must be"):
        SolverRegularizedODE(lambda t, y: y, t_span=(1.0, 1.0))
    with pytest.raises(ValueError, match="pass differentiate_dt as its own argument"):
        SolverRegularizedODE(lambda t, y: y, options={"differentiate_dt": True})
