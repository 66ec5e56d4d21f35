"""Sparsity-constrained optimal transport (Liu, Puigcerver, Blondel; ICLR 2023; arXiv 2209.15466).

Entropic OT gives dense plans and quadratic OT sparse ones with no control over how many
nonzeros a column gets. The paper regularises every column ``t = T[:, j]`` of the plan with a
squared L2 term *and* a cardinality constraint, ``Ω(t) = (γ/2)‖t‖² + ι{‖t‖₀ ≤ k}`` on t ≥ 0
(paper §3), so each column holds at most k nonzeros. The primal is nonconvex, yet its dual and
semi-dual are unconstrained, piecewise smooth and cheap to evaluate (a top-k per column), so
L-BFGS solves them; k = 1 behaves like unregularised OT, k ≥ m is quadratic OT (paper §3–4).

Notation: a ∈ Δ^m (rows), b ∈ Δ^n (columns), cost C ∈ R^{m×n}, c_j its j-th column.

* Conjugate (paper §4.1, Prop. 2): δ_Ω(s) = sup_{t ≥ 0, ‖t‖₀ ≤ k} ⟨s, t⟩ − (γ/2)‖t‖²
  = (1/2γ) Σ_{i ∈ top-k(s)} [s_i]₊², with ∇δ_Ω(s) = [s]₊/γ on the top-k entries, 0 elsewhere.
* Dual (paper Eq. 7): max_{α, β} D(α, β) = ⟨α, a⟩ + ⟨β, b⟩ − Σ_j δ_Ω(α + β_j 1 − c_j);
  ∇_α D = a − T 1, ∇_β D = b − Tᵀ 1 with T[:, j] = ∇δ_Ω(α + β_j − c_j), the recovered plan.
* Semi-dual (paper Eq. 8, §4.2): max_α S(α) = ⟨α, a⟩ − Σ_j ψ_j(α − c_j) with
  ψ_j(s) = max_{t ∈ b_j Δ^m, ‖t‖₀ ≤ k} ⟨s, t⟩ − (γ/2)‖t‖², whose maximiser is
  t_j = b_j P_k(s / (γ b_j)); ∇S = a − Σ_j t_j, plan T[:, j] = t_j (columns sum to b exactly).
* P_k (:func:`projection_sparse_simplex`, Kyrillidis et al., ICML 2013; paper §4.2): the
  Euclidean projection onto {y ≥ 0, Σ y = z, ‖y‖₀ ≤ k} keeps the k largest entries, projects
  them onto the simplex and zeroes the rest — exact although the set is nonconvex.
* OT value and gradient (:func:`sparsity_constrained_ot2`): the optimal (semi-)dual value.
  By the envelope theorem ∇_C value = T, ∇_a value = α (∇_b = β for the dual); the value is
  recomputed with autograd at the fixed optimal duals and fixed top-k supports, so torch
  inputs that require grad get exactly these gradients and the value can be a loss.

Solvers (``solver=``), both started at zero potentials with POT's stopping rule — scipy's for
``minimize(..., tol=tol)``: ‖∇‖_∞ ≤ tol (the marginal error itself, ∇ = a − T1) or a relative
objective decrease ≤ tol. ``"scipy"`` (CPU default) is POT's own solver, scipy's L-BFGS-B on
float64 NumPy evaluations, one problem after another, restarted from where it stopped while a
restart still gains (on the kinks of this piecewise-smooth objective scipy often stops early;
the k = 1 tests caught it 1 time in 8). ``"torch"`` (CUDA default) is a batched L-BFGS (memory
10, compact form, backtracking Armijo search) on the input's device and dtype. Defaults are
POT's ``smooth_ot_semi_dual`` (``stopThr=1e-9``, ``numItermax=500``; POT ``ot/smooth.py``,
contributed by the paper's first author) and γ = 1 (``SparsityConstrained``'s default ``gamma``,
``ot/smooth.py`` l. 230, and the ``reg`` of POT's tests, ``test/test_smooth.py``; POT's example
``examples/plot_OT_1D.py`` uses 0.1).

Cost per evaluation: forming α − c_j (O(mn)), a top-k per column (O(mn): ``np.partition`` or
``torch.topk``) and the simplex projection of the k kept values (O(nk log k)); POT sorts every
full column instead (O(mn log m)) and runs in NumPy on CPU only. Differences from POT, none of
which changes the optimum: zero-mass columns are allowed (their plan column is 0); POT's
``delta_Omega`` edits its argument in place and its row-wise projection prints to stdout,
neither is reproduced; the scipy solver restarts (above); the torch solver's line search is
backtracking (scipy's is Moré–Thuente), so its iteration counts differ slightly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from regzoo.core.arrays import ArrayKind, SolverResult, as_tensor, restore
from regzoo.core.checks import check_choice, check_positive_int, check_range
from regzoo.registry import Default, register

FORMULATIONS = ("semi_dual", "dual")
ROUTINGS = ("sparse_ot", "top1", "sinkhorn")
SOLVERS = ("auto", "scipy", "torch")
_MEMORY = 10  # L-BFGS history, scipy's L-BFGS-B default (maxcor=10)
_ARMIJO = 1e-4  # sufficient-decrease constant of the line search
_MAX_BACKTRACK = 30

DEFAULTS = (
    Default("gamma", 1.0, "POT SparsityConstrained default (ot/smooth.py l. 230) and its "
                "test/test_smooth.py reg; paper §6 uses γ ~ 0.1–10"),
    Default("formulation", "semi_dual", "paper §4.2: exact column masses, fewer variables"),
    Default("max_iter", 500, "POT smooth_ot_semi_dual numItermax"),
    Default("tol", 1e-9, "POT smooth_ot_semi_dual stopThr (scipy L-BFGS-B tol)"),
)


# ---------------------------------------------------------------------------- projections


def _simplex_from_sorted(u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Project rows of ``u`` (sorted in decreasing order on the last axis) onto z·Δ.

    Held–Wolfe–Crowder / Duchi et al.: θ = (Σ_{r ≤ ρ} u_r − z)/ρ with ρ the largest r such that
    u_r − (Σ_{s ≤ r} u_s − z)/r > 0; the projection is [u − θ]₊.
    """
    cssv = torch.cumsum(u, dim=-1) - z[..., None]
    ranks = torch.arange(1, u.shape[-1] + 1, device=u.device, dtype=u.dtype)
    support = (u - cssv / ranks) > 0
    rho = support.sum(dim=-1, keepdim=True).clamp_min(1)
    theta = torch.gather(cssv, -1, rho - 1) / rho.to(u.dtype)
    return (u - theta).clamp_min(0)


def _top_k_simplex(x: torch.Tensor, k: int, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and indices of P_k along the last axis: top-k of ``x``, projected onto z·Δ."""
    values, index = torch.topk(x, min(k, x.shape[-1]), dim=-1, sorted=True)
    return _simplex_from_sorted(values, z), index


def projection_sparse_simplex(V: Any, k: int, z: Any = 1.0, dim: int = 0) -> Any:
    """P_k: Euclidean projection of every slice of ``V`` along ``dim`` onto the k-sparse simplex.

    argmin_y ‖y − v‖² s.t. y ≥ 0, Σ_i y_i = z, ‖y‖₀ ≤ k (paper §4.2, Kyrillidis et al. 2013):
    the k largest entries of v projected onto the simplex of mass z, the rest set to 0. Ties
    among the k-th largest entries are broken by ``torch.topk``.

    Args:
        V: numpy array or tensor of any shape (a 1-D vector, or slices along ``dim``).
        k: the maximum number of nonzeros per slice (k ≥ the slice length: plain simplex).
        z: the mass of each projection, ≥ 0: a number, or an array broadcastable to ``V``'s
            shape without ``dim`` (one mass per slice).
        dim: the axis along which slices are projected.

    Returns:
        The projection, with ``V``'s shape and array type.
    """
    check_positive_int("k", k)
    V_t, kind = as_tensor("V", V)
    if not -V_t.ndim <= dim < max(V_t.ndim, 1):
        raise ValueError(f"dim must index one of V's {V_t.ndim} axes, got {dim}")
    moved = V_t.movedim(dim, -1)
    if isinstance(z, (int, float)) and not isinstance(z, bool):
        z_t = torch.full(moved.shape[:-1], check_range("z", z, 0.0), dtype=V_t.dtype,
                         device=V_t.device)
    else:
        z_t, _ = as_tensor("z", z, dtype=V_t.dtype, device=V_t.device)
        if bool((z_t < 0).any()):
            raise ValueError("z must be >= 0 (a mass per slice), got a negative entry")
        try:
            z_t = torch.broadcast_to(z_t, moved.shape[:-1])
        except RuntimeError:
            raise ValueError(f"z of shape {tuple(z_t.shape)} does not broadcast to V's shape "
                             f"without dim, {tuple(moved.shape[:-1])}") from None
    values, index = _top_k_simplex(moved, k, z_t)
    out = torch.zeros_like(moved).scatter_(-1, index, values)
    return restore(out.movedim(-1, dim), kind)


# ------------------------------------------------------------- conjugates and objectives


def delta_omega(s: Any, k: int, gamma: float) -> tuple[Any, Any]:
    """δ_Ω(s) and ∇δ_Ω(s) for each column of ``s`` (paper §4.1, Prop. 2).

    δ_Ω(s) = (1/2γ) Σ_{i ∈ top-k(s)} [s_i]₊², ∇δ_Ω(s) = [s]₊/γ on the top-k entries, 0 elsewhere.
    ``s`` is a vector (one column) or a matrix whose columns are handled independently.
    """
    check_positive_int("k", k)
    gamma = check_range("gamma", gamma, 0.0, low_inclusive=False)
    s_t, kind = as_tensor("s", s, ndim=(1, 2))
    cols = s_t.reshape(s_t.shape[0], -1).T
    values, index = torch.topk(cols, min(k, cols.shape[-1]), dim=-1)
    pos = values.clamp_min(0)
    value = (pos * pos).sum(-1) / (2 * gamma)
    grad = torch.zeros_like(cols).scatter_(-1, index, pos / gamma).T.reshape(s_t.shape)
    return restore(value if s_t.ndim == 2 else value[0], kind), restore(grad, kind)


class _Evaluation(NamedTuple):
    """One objective evaluation of a batch: value, gradient and the plan's sparse columns."""

    value: torch.Tensor  # (B,), the (semi-)dual objective to maximise
    grad: torch.Tensor  # (B, m) or (B, m + n)
    weights: torch.Tensor  # (B, n, k'), nonzeros of each plan column
    index: torch.Tensor  # (B, n, k'), their row indices


@dataclass(frozen=True)
class _Problem:
    """A validated batch of problems in the solver's layout (columns of the plan as rows)."""

    a: torch.Tensor  # (B, m)
    b: torch.Tensor  # (B, n)
    Ct: torch.Tensor  # (B, n, m), Cᵀ contiguous so each top-k runs along the last axis
    k: int
    gamma: float

    def semi_dual(self, alpha: torch.Tensor) -> _Evaluation:
        """S(α) and ∇S = a − Σ_j t_j with t_j = b_j P_k((α − c_j)/(γ b_j)) (paper Eq. 8)."""
        s = alpha[:, None, :] - self.Ct
        values, index = torch.topk(s, min(self.k, s.shape[-1]), dim=-1, sorted=True)
        b = self.b
        # Scaling by 1/(γ b_j) > 0 keeps the order, so P_k runs on the top-k values only.
        g = _simplex_from_sorted(values / (self.gamma * b.clamp_min(1e-300))[..., None],
                                 torch.ones_like(b))
        psi = b * ((values * g).sum(-1) - 0.5 * self.gamma * b * (g * g).sum(-1))
        weights = b[..., None] * g
        value = (alpha * self.a).sum(-1) - psi.sum(-1)
        grad = self.a - _column_sums_to_rows(weights, index, alpha.shape[-1])
        return _Evaluation(value, grad, weights, index)

    def dual(self, params: torch.Tensor) -> _Evaluation:
        """D(α, β) and its gradient (a − T1, b − Tᵀ1), T[:, j] = ∇δ_Ω(α + β_j − c_j) (Eq. 7)."""
        m = self.a.shape[-1]
        alpha, beta = params[:, :m], params[:, m:]
        s = beta[..., None] + alpha[:, None, :] - self.Ct
        values, index = torch.topk(s, min(self.k, m), dim=-1, sorted=False)
        pos = values.clamp_min(0)
        weights = pos / self.gamma
        value = ((alpha * self.a).sum(-1) + (beta * self.b).sum(-1)
                 - (pos * pos).sum((-1, -2)) / (2 * self.gamma))
        grad = torch.cat([self.a - _column_sums_to_rows(weights, index, m),
                          self.b - weights.sum(-1)], dim=-1)
        return _Evaluation(value, grad, weights, index)


def _column_sums_to_rows(weights: torch.Tensor, index: torch.Tensor, m: int) -> torch.Tensor:
    """T 1 from the sparse columns: scatter-add every column's nonzeros into their rows."""
    out = torch.zeros(weights.shape[0], m, dtype=weights.dtype, device=weights.device)
    return out.scatter_add_(-1, index.flatten(1), weights.flatten(1))


def _dense_plan(weights: torch.Tensor, index: torch.Tensor, m: int) -> torch.Tensor:
    """The (B, m, n) plan from its sparse columns."""
    B, n, _ = weights.shape
    Tt = torch.zeros(B, n, m, dtype=weights.dtype, device=weights.device)
    return Tt.scatter_(-1, index, weights).transpose(1, 2)


# --------------------------------------------------------------------------- the solver


class _LBFGSOutcome(NamedTuple):
    x: torch.Tensor
    evaluation: _Evaluation
    n_iter: torch.Tensor  # (B,) iterations per problem
    converged: torch.Tensor  # (B,) stopping rule met (not max_iter, not a failed line search)
    history: tuple[dict[str, float], ...]


def _lbfgs_maximise(objective: Any, x0: torch.Tensor, max_iter: int, tol: float,
                    record: bool) -> _LBFGSOutcome:
    """Batched L-BFGS on −objective, one history and one step size per problem.

    Compact (Byrd–Nocedal–Schnabel) product with memory :data:`_MEMORY` and initial scaling
    sᵀy/yᵀy of the latest accepted pair; pairs with sᵀy ≤ 1e-10·‖s‖‖y‖ are skipped (the
    objective is only piecewise smooth). Backtracking Armijo line search from step 1 (from
    1/‖∇‖₁ at the first iteration or after a reset). A problem stops when ‖∇‖_∞ ≤ tol or
    (f_old − f_new) ≤ tol·max(|f_old|, |f_new|, 1) — scipy L-BFGS-B's pgtol and factr rules
    with ``tol`` for both — or when its line search fails; stopped problems are frozen while
    the others go on.
    """
    B, d = x0.shape
    x = x0.clone()
    ev = objective(x)
    f, g = -ev.value, -ev.grad
    S = x.new_zeros(B, _MEMORY, d)
    Y = x.new_zeros(B, _MEMORY, d)  # an all-zero pair marks an empty or skipped slot
    scale = x.new_ones(B)
    fresh = torch.ones(B, dtype=torch.bool, device=x.device)
    active = g.abs().amax(-1) > tol
    converged = ~active
    n_iter = torch.zeros(B, dtype=torch.long, device=x.device)
    history: list[dict[str, float]] = []
    for it in range(max_iter):
        if not bool(active.any()):
            break
        direction = -_inverse_hessian_times(g, S, Y, scale, it)
        slope = (g * direction).sum(-1)
        bad = slope >= 0  # not a descent direction: drop the history of that problem
        if bool(bad.any()):
            S[bad] = 0
            Y[bad] = 0
            scale[bad] = 1
            fresh |= bad
            direction = torch.where(bad[:, None], -g, direction)
            slope = (g * direction).sum(-1)
        step = torch.where(fresh, (1.0 / g.abs().sum(-1).clamp_min(1e-300)).clamp(max=1.0),
                           torch.ones_like(f))
        pending = active.clone()
        x_new, f_new, ev_new = x, f, ev
        for _ in range(_MAX_BACKTRACK):
            trial = x + step[:, None] * direction
            ev_try = objective(trial)
            f_try = -ev_try.value
            ok = pending & (f_try <= f + _ARMIJO * step * slope)
            x_new = torch.where(ok[:, None], trial, x_new)
            f_new = torch.where(ok, f_try, f_new)
            ev_new = _select(ok, ev_try, ev_new)
            pending &= ~ok
            if not bool(pending.any()):
                break
            step = torch.where(pending, step * 0.5, step)
        failed = pending  # no sufficient decrease: the problem stops where it is
        moved = active & ~failed
        g_new = torch.where(moved[:, None], -ev_new.grad, g)
        s_vec = x_new - x
        y_vec = g_new - g
        sy = (s_vec * y_vec).sum(-1)
        keep = moved & (sy > 1e-10 * s_vec.norm(dim=-1) * y_vec.norm(dim=-1))
        slot = it % _MEMORY
        # A pair that is not kept empties its slot: no stale pair survives in the product.
        S[:, slot] = torch.where(keep[:, None], s_vec, 0.0)
        Y[:, slot] = torch.where(keep[:, None], y_vec, 0.0)
        scale = torch.where(keep, sy / (y_vec * y_vec).sum(-1).clamp_min(1e-300), scale)
        fresh = fresh & ~keep
        decrease = f - f_new
        small = decrease <= tol * torch.maximum(torch.maximum(f.abs(), f_new.abs()),
                                                torch.ones_like(f))
        gtol = g_new.abs().amax(-1) <= tol
        n_iter += moved.long()
        x, f, g, ev = x_new, f_new, g_new, ev_new
        converged |= moved & (gtol | small)
        active &= ~(failed | gtol | small)
        if record:
            history.append({"objective": float(-f.sum()), "grad_inf": float(g.abs().amax()),
                            "active": float(active.sum())})
    return _LBFGSOutcome(x, ev, n_iter, converged, tuple(history))


def _inverse_hessian_times(g: torch.Tensor, S: torch.Tensor, Y: torch.Tensor,
                           scale: torch.Tensor, it: int) -> torch.Tensor:
    """H g for the L-BFGS inverse Hessian H of stored pairs, in the compact form.

    With pairs (s_i, y_i) oldest first, R = triu(SᵀY), D = diag(SᵀY), γ = ``scale``
    (Nocedal & Wright, Eq. 7.24): H = γI + [S γY] [[R⁻ᵀ(D + γYᵀY)R⁻¹, −R⁻ᵀ], [−R⁻¹, 0]]
    [Sᵀ; γYᵀ]. One batched product replaces the two-loop recursion's 4M small operations.
    Empty slots hold zero pairs and get a unit diagonal in R, so they contribute nothing.
    """
    order = [(it + j) % _MEMORY for j in range(_MEMORY)]  # slot ``it`` is the oldest
    Sc, Yc = S[:, order], Y[:, order]
    SY = Sc @ Yc.transpose(1, 2)
    diag = torch.diagonal(SY, dim1=1, dim2=2)
    empty = diag == 0
    R = torch.triu(SY) + torch.diag_embed(empty.to(SY.dtype))
    p = (Sc @ g[..., None])
    q = (Yc @ g[..., None])
    gam = scale[:, None, None]
    a1 = torch.linalg.solve_triangular(R, p, upper=True)
    inner = diag[..., None] * a1 + gam * (Yc @ (Yc.transpose(1, 2) @ a1)) - gam * q
    top = torch.linalg.solve_triangular(R.transpose(1, 2), inner, upper=False)
    return (gam[..., 0] * g + (Sc.transpose(1, 2) @ top)[..., 0]
            - gam[..., 0] * (Yc.transpose(1, 2) @ a1)[..., 0])


def _select(mask: torch.Tensor, new: _Evaluation, old: _Evaluation) -> _Evaluation:
    """Per problem, ``new`` where ``mask`` else ``old``."""
    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.view(-1, *([1] * (a.ndim - 1))), a, b)

    return _Evaluation(*(pick(a, b) for a, b in zip(new, old, strict=True)))


# ------------------------------------------------------------------------ public solver


@dataclass(frozen=True)
class SparseOTResult(SolverResult):
    """What :func:`sparsity_constrained_ot` returns with ``log=True``.

    ``solution`` is the plan T; ``objective`` the optimal (semi-)dual value (summed over the
    batch for batched input, per problem in ``objectives``); ``n_iter`` the largest iteration
    count in the batch. Per-problem extras are floats for one problem and arrays (caller's type)
    for a batch: ``row_error`` = ‖T1 − a‖₁, ``col_error`` = ‖Tᵀ1 − b‖₁ (0 up to rounding for the
    semi-dual), ``transport_cost`` = ⟨T, C⟩, ``max_nnz_per_column``; ``alpha`` (and ``beta`` for
    the dual) the optimal potentials.
    """

    alpha: Any = None
    beta: Any = None
    objectives: Any = None
    row_error: Any = None
    col_error: Any = None
    transport_cost: Any = None
    max_nnz_per_column: Any = None
    n_iter_per_problem: Any = None
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


def _solve(problem: _Problem, formulation: str, max_iter: int, tol: float, record: bool,
           solver: str) -> _LBFGSOutcome:
    """Maximise the (semi-)dual of every problem of the batch with the chosen L-BFGS."""
    B, n, m = problem.Ct.shape
    size = m if formulation == "semi_dual" else m + n
    if solver == "auto":
        solver = "scipy" if problem.Ct.device.type == "cpu" else "torch"
    if solver == "torch":
        objective = problem.semi_dual if formulation == "semi_dual" else problem.dual
        return _lbfgs_maximise(objective, problem.Ct.new_zeros(B, size), max_iter, tol, record)
    outs = [_scipy_maximise(problem, i, formulation, size, max_iter, tol, record)
            for i in range(B)]
    ev = _Evaluation(*(torch.cat(parts).to(problem.Ct) if parts[0].is_floating_point()
                       else torch.cat(parts).to(problem.Ct.device)
                       for parts in zip(*(o.evaluation for o in outs), strict=True)))
    return _LBFGSOutcome(torch.cat([o.x for o in outs]).to(problem.Ct), ev,
                         torch.cat([o.n_iter for o in outs]),
                         torch.cat([o.converged for o in outs]),
                         tuple(h for o in outs for h in o.history))


def _scipy_maximise(problem: _Problem, i: int, formulation: str, size: int, max_iter: int,
                    tol: float, record: bool) -> _LBFGSOutcome:
    """Problem ``i`` with scipy's L-BFGS-B in float64 NumPy — POT's solver, same call.

    The evaluation is the paper's, vectorised over columns: :func:`_top_k_index` finds each
    column's top k in O(m) (POT sorts the whole column), then only those k are sorted.
    L-BFGS-B's small BLAS calls only lose from threads (10× slower measured on a busy 2-core
    machine): callers in a loop should run under ``threadpoolctl.threadpool_limits(1)``, as the
    reproduction and the benchmark do (limiting per call here costs ~15 ms).
    """
    from scipy.optimize import minimize

    a = problem.a[i].detach().cpu().double().numpy()
    b = problem.b[i].detach().cpu().double().numpy()
    Ct = problem.Ct[i].detach().cpu().double().numpy()
    k, gamma, m = problem.k, problem.gamma, a.shape[0]
    semi = formulation == "semi_dual"

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        s = (x[None, :m] - Ct) if semi else (x[m:, None] + x[None, :m] - Ct)
        if k < m:
            index = _top_k_index(s, k)
            values = np.take_along_axis(s, index, 1)
        else:
            index = np.broadcast_to(np.arange(m), s.shape)
            values = s
        if semi:
            # θ of the projection needs the kept values sorted; the projection itself does not,
            # so only values are sorted (no argsort, no index shuffling).
            u = values / (gamma * np.maximum(b, 1e-300))[:, None]
            g = np.maximum(u - _simplex_threshold_np(np.sort(u, axis=1)[:, ::-1])[:, None], 0)
            psi = b * ((values * g).sum(1) - 0.5 * gamma * b * (g * g).sum(1))
            weights = b[:, None] * g
            value = x @ a - psi.sum()
            grad = a - np.bincount(index.ravel(), weights.ravel(), minlength=m)
        else:
            pos = np.maximum(values, 0)
            weights = pos / gamma
            value = x[:m] @ a + x[m:] @ b - (pos * pos).sum() / (2 * gamma)
            grad = np.concatenate([a - np.bincount(index.ravel(), weights.ravel(), minlength=m),
                                   b - weights.sum(1)])
        return value, grad, weights, index

    def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad, _, _ = evaluate(x)
        return -value, -grad

    history: list[dict[str, float]] = []

    def callback(intermediate_result: Any) -> None:
        history.append({"objective": -float(intermediate_result.fun)})

    x, n_iter, success, best = np.zeros(size), 0, False, -np.inf
    # scipy stops when a step gains too little, which on the kinks of this piecewise-smooth
    # objective happens far from the optimum; a restart (fresh memory) from there usually moves
    # on, so the solve restarts while it still gains and the budget is not spent.
    while n_iter < max_iter:
        res = minimize(negative, x, jac=True, method="L-BFGS-B", tol=tol,
                       options={"maxiter": max_iter - n_iter},
                       callback=callback if record else None)
        n_iter += max(int(res.nit), 1)
        gained = -res.fun - best
        x, best, success = res.x, max(best, -res.fun), bool(res.success)
        if np.abs(res.jac).max() <= tol or gained <= tol * max(abs(best), 1.0):
            break
    value, grad, weights, index = evaluate(x)
    ev = _Evaluation(torch.tensor([value]), torch.from_numpy(grad)[None],
                     torch.from_numpy(np.ascontiguousarray(weights))[None],
                     torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64))[None])
    return _LBFGSOutcome(torch.from_numpy(x)[None], ev, torch.tensor([n_iter]),
                         torch.tensor([success]), tuple(history))


def _top_k_index(s: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest entries of every row of ``s`` (unsorted), shape (n, k).

    ``np.partition`` finds each row's k-th largest value ~10× faster than ``np.argpartition``
    (measured at 500×500); the entries at or above it are the top k unless there are ties at
    the threshold, in which case those rows fall back to ``np.argpartition``.
    """
    m = s.shape[1]
    threshold = np.partition(s, m - k, axis=1)[:, m - k]
    mask = s >= threshold[:, None]
    counts = mask.sum(1)
    # flatnonzero is several times faster than the 2-D nonzero; row-major order keeps rows.
    if (counts == k).all():
        return (np.flatnonzero(mask) % m).reshape(-1, k)
    index = np.empty((s.shape[0], k), dtype=np.int64)
    tied = counts != k
    index[~tied] = (np.flatnonzero(mask[~tied]) % m).reshape(-1, k)
    index[tied] = np.argpartition(-s[tied], k - 1, axis=1)[:, :k]
    return index


def _simplex_threshold_np(u: np.ndarray) -> np.ndarray:
    """θ of the unit-simplex projection [u − θ]₊ of every row of ``u`` (sorted decreasingly).

    NumPy twin of :func:`_simplex_from_sorted`.
    """
    cssv = np.cumsum(u, axis=1) - 1.0
    ranks = np.arange(1, u.shape[1] + 1)
    rho = np.maximum(((u - cssv / ranks) > 0).sum(1), 1)
    return cssv[np.arange(u.shape[0]), rho - 1] / rho


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
        solver: ``"scipy"`` (scipy's L-BFGS-B, POT's solver, float64 NumPy evaluations, one
            problem after another), ``"torch"`` (batched L-BFGS in torch on M's device and
            dtype) or ``"auto"`` (scipy on CPU, where its per-iteration overhead is far below
            torch's for these small vectors; torch on CUDA).

    Returns:
        The plan T (m, n) or (B, m, n) in M's array type; with ``log=True``, ``(T, result)``.
    """
    problem, kind, batched = _validate(a, b, M, k, gamma, formulation, max_iter, tol, device)
    check_choice("solver", solver, SOLVERS)
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
    check_choice("solver", solver, SOLVERS)
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


# ------------------------------------------------------------------ mixture-of-experts


class Routing(NamedTuple):
    """A router's decision for groups of tokens: which expert gets which token, and weights."""

    dispatch: torch.Tensor  # (G, N, E) bool: token i is processed by expert j
    combine: torch.Tensor  # (G, N, E) gate weights on dispatched pairs (differentiable)
    logits: torch.Tensor  # (G, N, E) router logits


class SparseOTRouter(nn.Module):
    """Token-to-expert routing with a per-expert capacity (paper §6, sparse mixture of experts).

    Tokens are the rows, experts the columns of a transport problem with uniform marginals
    (a = 1/N, b = 1/E) and cost C = −logits (the router's scores, detached). ``routing``:

    * ``"sparse_ot"`` (the paper): the semi-dual sparsity-constrained plan with k = capacity;
      expert j processes the tokens in the support of T[:, j] — never more than k.
    * ``"top1"``: each token picks its highest-logit expert; an expert over capacity keeps its
      k highest-scoring tokens and drops the rest (V-MoE's batch-priority routing).
    * ``"sinkhorn"``: the entropic plan of (a, b, C) with ε = ``sinkhorn_eps`` (BASE/S-BASE-
      style balancing) picks each token's expert, then the same capacity rule as ``top1``.

    Combine weights are the softmax gate probabilities on dispatched pairs (the V-MoE
    convention), so the router learns through them; a dropped token gets no expert output.

    Args:
        in_features: token dimension.
        num_experts: E.
        capacity: tokens per expert and group, k (default ⌈N/E⌉ at call time: capacity ratio 1).
        routing: ``"sparse_ot"``, ``"top1"`` or ``"sinkhorn"``.
        gamma: γ of the sparsity-constrained problem.
        max_iter: L-BFGS iterations per routing solve.
        tol: the solver's tolerance.
        sinkhorn_eps: entropic regularisation of the Sinkhorn baseline (on costs −logits).
        sinkhorn_iters: Sinkhorn iterations.
    """

    def __init__(self, in_features: int, num_experts: int, capacity: int | None = None,
                 routing: str = "sparse_ot", gamma: float = 1.0, max_iter: int = 100,
                 tol: float = 1e-6, sinkhorn_eps: float = 0.1, sinkhorn_iters: int = 50) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("num_experts", num_experts, minimum=2)
        if capacity is not None:
            check_positive_int("capacity", capacity)
        self.routing = check_choice("routing", routing, ROUTINGS)
        self.gamma = check_range("gamma", gamma, 0.0, low_inclusive=False)
        self.sinkhorn_eps = check_range("sinkhorn_eps", sinkhorn_eps, 0.0, low_inclusive=False)
        self.max_iter = check_positive_int("max_iter", max_iter)
        self.sinkhorn_iters = check_positive_int("sinkhorn_iters", sinkhorn_iters)
        self.tol = check_range("tol", tol, 0.0)
        self.capacity = capacity
        self.num_experts = num_experts
        self.gate = nn.Linear(in_features, num_experts, bias=False)

    def forward(self, x: torch.Tensor) -> Routing:
        """Route ``x`` of shape (G, N, d) (G groups of N tokens) or (N, d) (one group)."""
        if x.ndim not in (2, 3):
            raise ValueError(f"x must be (N, d) or (G, N, d), got shape {tuple(x.shape)}")
        if x.shape[-1] != self.gate.in_features:
            raise ValueError(f"x has {x.shape[-1]} features, the router expects "
                             f"{self.gate.in_features}")
        logits = self.gate(x if x.ndim == 3 else x[None])
        G, N, E = logits.shape
        k = self.capacity or math.ceil(N / E)
        probs = torch.softmax(logits, dim=-1)
        scores = logits.detach()
        if self.routing == "sparse_ot":
            a = scores.new_full((G, N), 1.0 / N)
            b = scores.new_full((G, E), 1.0 / E)
            plan = sparsity_constrained_ot(a, b, -scores, k, self.gamma, max_iter=self.max_iter,
                                           tol=self.tol)
            dispatch = plan > 0
        else:
            if self.routing == "top1":
                priority = scores
            else:
                priority = _sinkhorn_log(-scores, self.sinkhorn_eps, self.sinkhorn_iters)
            dispatch = _top1_with_capacity(priority, k)
        combine = probs * dispatch
        if x.ndim == 2:
            return Routing(dispatch[0], combine[0], logits[0])
        return Routing(dispatch, combine, logits)


def _sinkhorn_log(C: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Log of the entropic plan with uniform marginals for a batch of costs (G, N, E)."""
    G, N, E = C.shape
    log_a, log_b = -math.log(N), -math.log(E)
    f = C.new_zeros(G, N, 1)
    g = C.new_zeros(G, 1, E)
    for _ in range(iters):
        f = eps * log_a - eps * torch.logsumexp((g - C) / eps, dim=-1, keepdim=True)
        g = eps * log_b - eps * torch.logsumexp((f - C) / eps, dim=-2, keepdim=True)
    return (f + g - C) / eps


def _top1_with_capacity(priority: torch.Tensor, k: int) -> torch.Tensor:
    """Each token to its argmax expert; each expert keeps its k highest-priority tokens."""
    choice = priority.argmax(-1, keepdim=True)
    chosen = torch.zeros_like(priority, dtype=torch.bool).scatter_(-1, choice, True)
    score = torch.where(chosen, priority, torch.full_like(priority, -math.inf))
    keep = torch.topk(score, min(k, score.shape[-2]), dim=-2).indices
    within = torch.zeros_like(chosen).scatter_(-2, keep, True)
    return chosen & within


class SparseMoE(nn.Module):
    """A sparse mixture-of-experts layer: ``router`` picks tokens, each expert sees only its own.

    y_i = Σ_j combine_ij · expert_j(x_i) over the experts that token i is dispatched to (0 for a
    dropped token; use a residual connection around the layer).
    """

    def __init__(self, router: SparseOTRouter, experts: list[nn.Module]) -> None:
        super().__init__()
        if len(experts) != router.num_experts:
            raise ValueError(f"router has {router.num_experts} experts, got {len(experts)} "
                             "expert modules")
        self.router = router
        self.experts = nn.ModuleList(experts)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        """``x`` (G, N, d) → (output (G, N, d_out), the routing used)."""
        routing = self.router(x)
        out: torch.Tensor | None = None
        for j, expert in enumerate(self.experts):
            where = routing.dispatch[..., j].nonzero(as_tuple=True)
            y = expert(x[where]) * routing.combine[..., j][where][:, None]
            if out is None:
                out = x.new_zeros(*x.shape[:-1], y.shape[-1])
            out = out.index_put(where, y, accumulate=True)
        assert out is not None  # at least two experts (checked by the router)
        return out, routing
