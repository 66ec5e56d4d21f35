"""The semi-dual S(α) (paper Eq. 8) and dual D(α, β) (Eq. 7) of a batch of problems, in torch.

One evaluation gives the value, the gradient and the plan's sparse columns (each column's
top-k rows and their weights), on the input's device and dtype; the torch L-BFGS maximises
these, and the plan of every solver is read from them (:func:`_dense_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from regzoo.methods.sparse_ot.projection import _simplex_from_sorted


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
