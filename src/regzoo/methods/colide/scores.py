"""CoLiDE's score, its closed-form noise scales and DAGMA's log-det acyclicity (paper §4).

Every function takes NumPy arrays or torch tensors (any device) and answers in the same type;
:func:`array_ops` gives the few operations the solver needs for either.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.linalg import blas, lapack

from regzoo.core.checks import check_choice

VARIANCES = ("ev", "nv")

class _NumpyOps:
    """The few array operations of the solver, for NumPy arrays (CPU)."""

    @staticmethod
    def inv(A: np.ndarray) -> np.ndarray | None:
        lu, piv, info = lapack.dgetrf(A)
        if info != 0:
            return None
        inverse, info = lapack.dgetri(lu, piv, overwrite_lu=1)
        return inverse if info == 0 else None

    sqrt = staticmethod(np.sqrt)
    sign = staticmethod(np.sign)
    maximum = staticmethod(np.maximum)

    @staticmethod
    def logdet(A: np.ndarray) -> float:
        return float(np.linalg.slogdet(A)[1])

    # In-place BLAS level 1 on flat contiguous float64 views: one pass for y ← y + a·x (two
    # NumPy ufuncs otherwise) and a lower call overhead than a ufunc at these sizes.
    @staticmethod
    def axpy(a: float, x: np.ndarray, y: np.ndarray) -> None:
        blas.daxpy(x, y, a=a)

    @staticmethod
    def scal(a: float, x: np.ndarray) -> None:
        blas.dscal(a, x)

    @staticmethod
    def dot(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.dot(x, y))

    @staticmethod
    def amax(x: np.ndarray) -> float:
        return float(np.maximum.reduce(x, axis=None))

    @staticmethod
    def zeros(n: int, like: np.ndarray) -> np.ndarray:
        return np.zeros(n)


class _TorchOps:
    """The same operations for torch tensors (any device)."""

    @staticmethod
    def inv(A: torch.Tensor) -> torch.Tensor | None:
        inverse, info = torch.linalg.inv_ex(A)
        return inverse if int(info) == 0 else None

    sqrt = staticmethod(torch.sqrt)
    sign = staticmethod(torch.sign)

    @staticmethod
    def maximum(a: torch.Tensor, floor: float) -> torch.Tensor:
        return torch.clamp(a, min=floor)

    @staticmethod
    def logdet(A: torch.Tensor) -> float:
        return float(torch.linalg.slogdet(A)[1])

    @staticmethod
    def axpy(a: float, x: torch.Tensor, y: torch.Tensor) -> None:
        y.add_(x, alpha=a)

    @staticmethod
    def scal(a: float, x: torch.Tensor) -> None:
        x.mul_(a)

    @staticmethod
    def dot(x: torch.Tensor, y: torch.Tensor) -> float:
        return float(torch.dot(x, y))

    @staticmethod
    def amax(x: torch.Tensor) -> float:
        return float(x.max())

    @staticmethod
    def zeros(n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.zeros(n, dtype=like.dtype, device=like.device)


def array_ops(a: Any) -> type[_NumpyOps] | type[_TorchOps]:
    """The operations for ``a``'s array type."""
    return _NumpyOps if isinstance(a, np.ndarray) else _TorchOps


def eye_like(like: Any) -> Any:
    """The identity of ``like``'s trailing size, type, dtype and device."""
    d = like.shape[-1]
    if isinstance(like, np.ndarray):
        return np.eye(d)
    return torch.eye(d, dtype=like.dtype, device=like.device)


def residual_energy(W: Any, cov: Any) -> Any:
    """r_i(W) = [(I − W)ᵀ Σ̂ (I − W)]_ii for every node i, as a ``(d,)`` array.

    Formed as the column sums of (I − W) ∘ Σ̂(I − W): O(d²) beyond the one product.
    """
    dif = eye_like(W) - W
    return (dif * (cov @ dif)).sum(axis=0)


def optimal_scale(W: Any, cov: Any, variance: str = "ev", sigma_min: float = 0.0) -> Any:
    """The closed-form minimiser over σ ≥ σ₀ of the CoLiDE score at fixed W (paper §4).

    EV: max(sqrt(Σ_i r_i / d), σ₀) (a 0-d array); NV: max(sqrt(r_i), σ₀) per node.
    """
    check_choice("variance", variance, VARIANCES)
    r = residual_energy(W, cov)
    ops = array_ops(r)
    raw = ops.sqrt(r.sum() / r.shape[0]) if variance == "ev" else ops.sqrt(r)
    return ops.maximum(raw, sigma_min)


def concomitant_score(W: Any, cov: Any, sigma: Any, lambda1: float = 0.0,
                      variance: str = "ev") -> float:
    """S(W, σ): Σ_i r_i/(2σ) + dσ/2 (EV) or ½Σ_i(r_i/σ_i + σ_i) (NV), plus λ‖W‖₁ (paper §4)."""
    check_choice("variance", variance, VARIANCES)
    r = residual_energy(W, cov)
    d = r.shape[0]
    if variance == "ev":
        smooth = r.sum() / (2 * sigma) + d * sigma / 2
    else:
        smooth = 0.5 * (r / sigma + sigma).sum()
    return float(smooth) + lambda1 * float(abs(W).sum())


def concomitant_score_gradient(W: Any, cov: Any, sigma: Any) -> Any:
    """∇_W of the smooth part of S at fixed σ: −Σ̂(I − W) diag(1/σ) (σ a scalar or a vector)."""
    return -(cov @ (eye_like(W) - W)) / sigma


def logdet_acyclicity(W: Any, s: float = 1.0) -> tuple[float, Any]:
    """DAGMA's h(W; s) = −log det(sI − W∘W) + d log s and ∇h = 2 W ∘ (sI − W∘W)⁻ᵀ.

    Valid where sI − W∘W is an M-matrix (spectral radius of W∘W below s); there h ≥ 0 with
    equality exactly when W is a DAG.
    """
    ops = array_ops(W)
    A = s * eye_like(W) - W * W
    inverse = ops.inv(A)
    if inverse is None:
        raise ValueError(f"sI - W∘W is singular for s={s}: W is outside the log-det domain; "
                         "use a larger s or a smaller W")
    return ops.logdet(A) * -1.0 + W.shape[0] * math.log(s), 2 * W * inverse.T


