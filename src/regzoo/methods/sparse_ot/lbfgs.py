"""Batched L-BFGS in torch: every problem of a batch on its own history and step, one device.

The ``solver="torch"`` path (the default on CUDA): one batched evaluation per trial step for
all problems still running, stopped problems frozen while the others go on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from regzoo.methods.sparse_ot.objectives import _Evaluation

_MEMORY = 10  # L-BFGS history, scipy's L-BFGS-B default (maxcor=10)
_ARMIJO = 1e-4  # sufficient-decrease constant of the line search
_MAX_BACKTRACK = 30


class _LBFGSOutcome(NamedTuple):
    x: torch.Tensor
    evaluation: _Evaluation
    n_iter: torch.Tensor  # (B,) iterations per problem
    converged: torch.Tensor  # (B,) stopping rule met (not max_iter, not a failed line search)
    n_eval: torch.Tensor  # (B,) objective evaluations per problem (its own trial points)
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
    n_eval = torch.ones(B, dtype=torch.long, device=x.device)
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
            n_eval += pending.long()
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
    return _LBFGSOutcome(x, ev, n_iter, converged, n_eval, tuple(history))


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
