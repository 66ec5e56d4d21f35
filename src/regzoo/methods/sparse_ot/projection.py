"""P_k, the sparse simplex projection, and δ_Ω, the conjugate of the column regulariser.

Both in torch on any device and dtype, for numpy or torch input (paper §4.1–4.2); the solvers'
torch objectives (:mod:`~regzoo.methods.sparse_ot.objectives`) use the same simplex rule.
"""

from __future__ import annotations

from typing import Any

import torch

from regzoo.core.arrays import as_tensor, restore
from regzoo.core.checks import check_positive_int, check_range


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
