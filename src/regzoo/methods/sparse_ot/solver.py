"""The public solvers: :func:`sparsity_constrained_ot` (the plan) and its value, differentiable.

Validation of every argument at the boundary, the result record :class:`SparseOTResult`, and the
dispatch of a batch to the torch L-BFGS (:mod:`~regzoo.methods.sparse_ot.lbfgs`, all problems at
once), to the compiled one (:mod:`~regzoo.methods.sparse_ot.numba_solver`) or to scipy's
(:mod:`~regzoo.methods.sparse_ot.scipy_solver`), one problem after another. The
method, its equations and defaults are in the package docstring (:mod:`regzoo.methods.sparse_ot`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from regzoo.core.arrays import ArrayKind, SolverResult, as_tensor, restore
from regzoo.core.checks import check_choice, check_positive_int, check_range
from regzoo.methods.sparse_ot.compiled import _compiled_loops
from regzoo.methods.sparse_ot.lbfgs import _lbfgs_maximise, _LBFGSOutcome
from regzoo.methods.sparse_ot.numba_solver import (
    NUMBA_HINT,
    _compiled_lbfgs,
    _numba_maximise,
    numba_applies,
)
from regzoo.methods.sparse_ot.objectives import _dense_plan, _Evaluation, _Problem
from regzoo.methods.sparse_ot.scipy_solver import _scipy_maximise
from regzoo.registry import Default, register

FORMULATIONS = ("semi_dual", "dual")
SOLVERS = ("auto", "numba", "scipy", "torch")

DEFAULTS = (
    Default("gamma", 1.0, "POT SparsityConstrained default (ot/smooth.py l. 230) and its "
                "test/test_smooth.py reg; paper §6 uses γ ~ 0.1–10"),
    Default("formulation", "semi_dual", "paper §4.2: exact column masses, fewer variables"),
    Default("max_iter", 500, "POT smooth_ot_semi_dual numItermax"),
    Default("tol", 1e-9, "POT smooth_ot_semi_dual stopThr (scipy L-BFGS-B tol)"),
)


@dataclass(frozen=True)
class SparseOTResult(SolverResult):
    """What :func:`sparsity_constrained_ot` returns with ``log=True``.

    ``solution`` is the plan T; ``objective`` the optimal (semi-)dual value (summed over the
    batch for batched input, per problem in ``objectives``); ``n_iter`` the largest iteration
    count in the batch, ``n_evaluations`` the objective evaluations summed over it. Per-problem
    extras are floats for one problem and arrays (caller's type) for a batch: ``row_error`` =
    ‖T1 − a‖₁, ``col_error`` = ‖Tᵀ1 − b‖₁ (0 up to rounding for the semi-dual),
    ``transport_cost`` = ⟨T, C⟩, ``max_nnz_per_column``; ``alpha`` (and ``beta`` for the dual)
    the optimal potentials.
    """

    alpha: Any = None
    beta: Any = None
    objectives: Any = None
    row_error: Any = None
    col_error: Any = None
    transport_cost: Any = None
    max_nnz_per_column: Any = None
    n_iter_per_problem: Any = None
    n_evaluations: int = 0
    formulation: str = "semi_dual"
    k: int = 1
    gamma: float = 1.0


def _validate(a: Any, b: Any, M: Any, k: int | None, gamma: float, formulation: str,
              max_iter: int, tol: float, device: torch.device | str | None
              ) -> tuple[_Problem, ArrayKind, bool]:
    """Check every argument (naming it, its value and the fix) and build the batch."""
    M_t, kind = as_tensor("M", M, ndim=(2, 3), device=device)
    batched = M_t.ndim == 3
    want = 2 if batched else 1
    a_t, _ = as_tensor("a", a, ndim=want, dtype=M_t.dtype, device=M_t.device)
    b_t, _ = as_tensor("b", b, ndim=want, dtype=M_t.dtype, device=M_t.device)
    if not batched:
        M_t, a_t, b_t = M_t[None], a_t[None], b_t[None]
    B, m, n = M_t.shape
    if tuple(a_t.shape) != (B, m) or tuple(b_t.shape) != (B, n):
        shape = "(B, m), (B, n), (B, m, n)" if batched else "(m,), (n,), (m, n)"
        raise ValueError(f"shape mismatch: a {tuple(a_t.shape)}, b {tuple(b_t.shape)} and M "
                         f"{tuple(M_t.shape)} must be {shape}")
    slack = 1e-4 if M_t.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-6
    for name, w in (("a", a_t), ("b", b_t)):
        if bool((w < 0).any()):
            raise ValueError(f"{name} has negative entries (min {float(w.min()):.3g}); marginals "
                             "must be nonnegative")
        total = w.sum(-1)
        if bool(((total - 1).abs() > slack).any()):
            raise ValueError(f"{name} must sum to 1 (a probability vector), got sums "
                             f"{total.tolist()}; divide it by its sum")
    if k is None:
        k = m
    check_positive_int("k", k)
    gamma = check_range("gamma", gamma, 0.0, low_inclusive=False)
    check_choice("formulation", formulation, FORMULATIONS)
    check_positive_int("max_iter", max_iter)
    check_range("tol", tol, 0.0)
    return _Problem(a_t, b_t, M_t.transpose(1, 2).contiguous(), min(k, m), gamma), kind, batched


def _choose_solver(solver: str, problem: _Problem) -> str:
    """The solver ``"auto"`` stands for, and a clear error where ``"numba"`` cannot run."""
    check_choice("solver", solver, SOLVERS)
    m = problem.Ct.shape[-1]
    if solver == "numba":
        if not numba_applies(problem.k, m):
            raise ValueError(f"solver='numba' needs k ≤ 16 and k < m (got k={problem.k}, "
                             f"m={m}): pass solver='scipy' or 'auto'")
        if _compiled_lbfgs() is None:
            raise ImportError(f"solver='numba' needs numba: {NUMBA_HINT}")
    if solver != "auto":
        return solver
    if problem.Ct.device.type != "cpu":
        return "torch"
    if numba_applies(problem.k, m) and _compiled_loops() is not None:
        return "numba"
    return "scipy"


def _solve(problem: _Problem, formulation: str, max_iter: int, tol: float, record: bool,
           solver: str) -> _LBFGSOutcome:
    """Maximise the (semi-)dual of every problem of the batch with the chosen L-BFGS."""
    B, n, m = problem.Ct.shape
    size = m if formulation == "semi_dual" else m + n
    if solver == "torch":
        objective = problem.semi_dual if formulation == "semi_dual" else problem.dual
        return _lbfgs_maximise(objective, problem.Ct.new_zeros(B, size), max_iter, tol, record)
    maximise = _numba_maximise if solver == "numba" else _scipy_maximise
    outs = [maximise(problem, i, formulation, size, max_iter, tol, record) for i in range(B)]
    ev = _Evaluation(*(torch.cat(parts).to(problem.Ct) if parts[0].is_floating_point()
                       else torch.cat(parts).to(problem.Ct.device)
                       for parts in zip(*(o.evaluation for o in outs), strict=True)))
    return _LBFGSOutcome(torch.cat([o.x for o in outs]).to(problem.Ct), ev,
                         torch.cat([o.n_iter for o in outs]),
                         torch.cat([o.converged for o in outs]),
                         torch.cat([o.n_eval for o in outs]),
                         tuple(h for o in outs for h in o.history))


@register(
    "sparse_ot",
    kind="estimator",
    summary="Optimal transport with at most k nonzeros per plan column: L-BFGS on the smooth "
            "(semi-)dual whose conjugate is a top-k sparse simplex projection.",
    equation="max_α <α,a> − Σ_j max_{t∈b_jΔ, ‖t‖₀≤k} <α − c_j, t> − (γ/2)‖t‖²,  "
             "T[:, j] = b_j P_k((α − c_j)/(γ b_j))",
    defaults=DEFAULTS,
    variants=("semi_dual", "dual", "router: sparse_ot | top1 | sinkhorn"),
)
def sparsity_constrained_ot(a: Any, b: Any, M: Any, k: int | None, gamma: float = 1.0,
                            formulation: str = "semi_dual", max_iter: int = 500,
                            tol: float = 1e-9, log: bool = False,
                            device: torch.device | str | None = None,
                            solver: str = "auto") -> Any:
    """The sparsity-constrained OT plan (paper §4): at most ``k`` nonzeros per column.

    Solves the semi-dual (paper Eq. 8, columns sum to b exactly) or the dual (Eq. 7, both
    marginals met at the optimum) by batched L-BFGS and recovers the plan from the optimal
    potentials. With uniform marginals the per-column cap makes the primal infeasible when
    n·k < m: the plan then misses row mass (``row_error`` > 0), which is what a capacity-limited
    router wants (tokens dropped).

    Args:
        a: source weights, shape (m,) or (B, m) for a batch of B problems; ≥ 0, summing to 1.
        b: target weights, shape (n,) or (B, n); ≥ 0, summing to 1.
        M: cost matrix (m, n) or (B, m, n); its type and device fix the output's.
        k: the maximum number of nonzeros per column (``None``: no cap, quadratic OT).
        gamma: γ > 0, weight of (γ/2)‖T‖² (POT's ``reg``).
        formulation: ``"semi_dual"`` (default) or ``"dual"``.
        max_iter: L-BFGS iterations per problem (POT's ``numItermax``).
        tol: stopping tolerance, scipy's ``tol`` as in POT's ``stopThr``.
        log: also return a :class:`SparseOTResult`.
        device: where to compute (default M's device).
        solver: ``"numba"`` (L-BFGS compiled with the evaluation, float64, one problem after
            another; needs numba, the extra ``fast``, and k ≤ 16 < m), ``"scipy"`` (scipy's
            L-BFGS-B, POT's solver, float64 NumPy evaluations, one problem after another),
            ``"torch"`` (batched L-BFGS in torch on M's device and dtype) or ``"auto"``
            (on CPU numba where it applies, else scipy: their per-iteration overhead is far
            below torch's for these small vectors; torch on CUDA).

    Returns:
        The plan T (m, n) or (B, m, n) in M's array type; with ``log=True``, ``(T, result)``.
    """
    problem, kind, batched = _validate(a, b, M, k, gamma, formulation, max_iter, tol, device)
    solver = _choose_solver(solver, problem)
    out = _solve(problem, formulation, max_iter, tol, log, solver)
    m = problem.a.shape[-1]
    plan = _dense_plan(out.evaluation.weights, out.evaluation.index, m)
    if not log:
        return restore(plan if batched else plan[0], kind)
    C = problem.Ct.transpose(1, 2)
    row_error = (plan.sum(-1) - problem.a).abs().sum(-1)
    col_error = (plan.sum(-2) - problem.b).abs().sum(-1)
    cost = (plan * C).sum((-1, -2))
    nnz = (out.evaluation.weights > 0).sum(-1).amax(-1)
    alpha = out.x[:, :m]
    beta = out.x[:, m:] if formulation == "dual" else None

    def per_problem(t: torch.Tensor | None) -> Any:
        if t is None:
            return None
        if batched:
            return restore(t, kind)
        return float(t[0]) if t[0].ndim == 0 else restore(t[0], kind)

    result = SparseOTResult(
        solution=restore(plan if batched else plan[0], kind),
        objective=float(out.evaluation.value.sum()),
        n_iter=int(out.n_iter.max()),
        converged=bool(out.converged.all()),
        history=out.history,
        alpha=per_problem(alpha),
        beta=per_problem(beta),
        objectives=per_problem(out.evaluation.value),
        row_error=per_problem(row_error),
        col_error=per_problem(col_error),
        transport_cost=per_problem(cost),
        max_nnz_per_column=restore(nnz, kind) if batched else int(nnz[0]),
        n_iter_per_problem=restore(out.n_iter, kind) if batched else int(out.n_iter[0]),
        n_evaluations=int(out.n_eval.sum()),
        formulation=formulation,
        k=problem.k,
        gamma=problem.gamma,
    )
    return result.solution, result


def sparsity_constrained_ot2(a: Any, b: Any, M: Any, k: int | None, gamma: float = 1.0,
                             formulation: str = "semi_dual", max_iter: int = 500,
                             tol: float = 1e-9, solver: str = "auto") -> Any:
    """The regularised OT value, differentiable in ``M``, ``a`` and ``b`` (envelope theorem).

    The value is the optimal (semi-)dual objective, equal to ⟨T, C⟩ + (γ/2)‖T‖² when the plan T
    is feasible. It is recomputed with autograd at the fixed optimal potentials and the fixed
    top-k supports, so ∇_M = T, ∇_a = α (and ∇_b = β for the dual; for the semi-dual
    ∂/∂b_j = γ b_j‖g_j‖² − ⟨α − c_j, g_j⟩ with g_j = t_j/b_j). Torch tensors that require grad
    keep their graph; numpy input gives a float (batched: an array of B values). The arguments
    are those of :func:`sparsity_constrained_ot`.
    """
    problem, kind, batched = _validate(a, b, M, k, gamma, formulation, max_iter, tol, None)
    solver = _choose_solver(solver, problem)
    out = _solve(problem, formulation, max_iter, tol, False, solver)
    dtype, dev = problem.Ct.dtype, problem.Ct.device

    def live(value: Any) -> torch.Tensor:
        # Torch inputs keep their autograd graph; numpy ones become constants.
        t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
        t = t.to(dtype=dtype, device=dev)
        return t if batched else t[None]

    a_l, b_l, C_l = live(a), live(b), live(M)
    m = problem.a.shape[-1]
    index = out.evaluation.index
    alpha = out.x[:, :m].detach()
    # s_j restricted to the fixed support: (α − c_j)[top-k] (+ β_j for the dual).
    C_sup = torch.gather(C_l.transpose(1, 2), -1, index)
    s = torch.gather(alpha[:, None, :].expand(-1, index.shape[1], -1), -1, index) - C_sup
    if formulation == "semi_dual":
        g = out.evaluation.weights.detach() / problem.b.clamp_min(1e-300)[..., None]
        value = ((alpha * a_l).sum(-1)
                 - (b_l * (s * g).sum(-1) - 0.5 * problem.gamma * b_l ** 2 * (g * g).sum(-1))
                 .sum(-1))
    else:
        beta = out.x[:, m:].detach()
        pos = (s + beta[..., None]).clamp_min(0)
        value = ((alpha * a_l).sum(-1) + (beta * b_l).sum(-1)
                 - (pos * pos).sum((-1, -2)) / (2 * problem.gamma))
    value = value if batched else value[0]
    if kind.is_numpy:
        return float(value) if not batched else value.detach().cpu().numpy()
    return value.to(kind.device)
