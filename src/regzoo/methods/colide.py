"""CoLiDE: Concomitant Linear DAG Estimation (Saboksayr, Mateos, Tepper; ICLR 2024; 2310.02895).

CoLiDE learns a linear SEM X ≈ XW (W a weighted DAG) by replacing the lasso-type least-squares
score of NOTEARS/DAGMA with a *concomitant* score that estimates the noise scale jointly with W,
so that the sparsity weight λ no longer has to follow the noise level, and, with one scale per
node, heteroscedastic noise is modelled. Acyclicity is DAGMA's log-det function on a
decreasing-μ path; the scales have closed-form updates.

With Σ̂ = XᵀX/n (X centred) and the residual energy of node i,
r_i(W) = [(I − W)ᵀ Σ̂ (I − W)]_ii = ‖X_i − X W_i‖²/n, the scores are (paper §4; derivations
in its appendix B):

* CoLiDE-EV (one scale σ): S(W, σ) = Σ_i r_i / (2σ) + dσ/2 + λ‖W‖₁, minimised over σ by
  σ̂ = sqrt(Σ_i r_i / d), where S(W, σ̂) = sqrt(d Σ_i r_i) + λ‖W‖₁;
* CoLiDE-NV (σ ∈ R^d₊): S(W, σ) = ½ Σ_i (r_i/σ_i + σ_i) + λ‖W‖₁, σ̂_i = sqrt(r_i), where
  S(W, σ̂) = Σ_i sqrt(r_i) + λ‖W‖₁ (one square-root lasso per node).

The paper constrains σ ≥ σ₀ without a value; the official code uses no floor (``sigma_min=0``,
the default); with σ₀ > 0 the closed form is max(σ̂, σ₀), still the exact minimiser since S is
convex in σ.

Acyclicity (DAGMA, Bello et al. 2022): h(W; s) = −log det(sI − W∘W) + d log s ≥ 0 on the
M-matrix domain {W : (sI − W∘W)⁻¹ ≥ 0}, zero exactly on DAGs, ∇h = 2 W ∘ (sI − W∘W)⁻ᵀ.
Path following (paper §4.1): for t = 0..T−1 minimise μ_t (S(W, σ) + λ‖W‖₁) + h(W; s_t),
alternating one Adam step on W (subgradient μ[−Σ̂(I − W) diag(1/σ) + λ sign W] + ∇h, β₁ = 0.99,
β₂ = 0.999, ε = 1e-8, bias-corrected) with the closed-form σ update, from the previous stage's
(W, σ); then μ_{t+1} = μ_t · mu_factor. Domain safeguard (official ``minimize``): when
(s_t I − W∘W)⁻¹ has an entry < −1e-6, at the first iteration or when s_t ≤ 0.9 the stage
restarts from its start with lr/2 and s_t + 0.1; otherwise the step is undone, lr halved and the
step retried (the stage ends when lr ≤ 1e-16). Every ``checkpoint`` iterations the stage stops
when the objective's relative change is ≤ ``tol``. Post-processing (:func:`to_dag`): zero
|W_ij| ≤ 0.3, then delete the remaining edges in increasing |W_ij| until the graph is acyclic.

Defaults are those of the official ``main.py`` (λ = 0.05 for both variants, T = 4,
s = (1, .9, .8, .7), 2·10⁴ iterations in stages 0..T−2 and 7·10⁴ in the last, lr = 3e-4, μ₀ = 1,
μ factor 0.1, threshold 0.3); the official class defaults (T = 5, s down to 0.6, 3·10⁴/6·10⁴
iterations) are DAGMA's.

Cost per iteration: one d×d inverse and one d×d product, as DAGMA's, plus 17 elementwise passes
(DAGMA: about 35). The gradient needs every entry of (sI − W∘W)⁻¹, so an LU alone (the floor LU +
product) is not enough: the inverse from the LU costs about twice the LU again. All arrays of a
stage live in one preallocated block updated in place, scalar multiply-adds are BLAS ``axpy``
calls, and the inverse is taken from LAPACK in place (scipy's getri below d = 80, torch's
``inv_ex`` from there on, faster there on this machine). Measured, one thread,
``benchmarks/colide.py`` (CPU time, median of 3, side by side with the PyPI ``dagma`` at the same
iterations, on a shared 2-core machine): 0.43–0.6× DAGMA's time per iteration at d = 10–50 (the
previous version of this loop, in the same runs: 0.53–0.83×), 0.5–0.73× at d = 100 (before:
0.61–0.88×), the spread being the machine's load. Differences from the official code, none of which
changes an iterate beyond rounding on the normal path (checked against a plain implementation in
the tests): Σ̂(I − W) is formed once per iteration and serves both the σ update and the next
gradient (the official code forms it twice and the NV update also forms the full (I − W)ᵀΣ̂(I − W)
for its diagonal); Adam runs on −∇/2 with rescaled moments (exact up to rounding, see
``_Solver.run``); the inverse is that of W∘W − sI = −(sI − W∘W), read transposed; the caller's X is
not centred in place; the official ``+ 1e-16`` added to the inverse is dropped. On two rare paths:
a singular sI − W∘W counts as leaving the domain (the official code raises), and when the safeguard
gives up (lr ≤ 1e-16) σ is recomputed at the returned W (the official code keeps the last σ). On a
CUDA ``device`` the same loop runs in torch; on CPU it runs in NumPy, whose per-call overhead is
several times lower than torch's for these small matrices (the loop is ~10⁵ iterations of ~20 small
operations).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.linalg import blas, lapack
from sklearn.base import BaseEstimator
from sklearn.utils.validation import validate_data

from regzoo.core.arrays import as_tensor, restore
from regzoo.core.checks import check_choice, check_positive_int, check_range
from regzoo.data.sem import is_dag
from regzoo.registry import Default, register

VARIANCES = ("ev", "nv")
_DOMAIN_TOL = -1e-6  # official: an inverse entry below this means W left the M-matrix domain
_MIN_LR = 1e-16

DEFAULTS = (
    Default("lambda1", 0.05, "official main.py (both variants)"),
    Default("T", 4, "official main.py"),
    Default("s", (1.0, 0.9, 0.8, 0.7), "official main.py"),
    Default("warm_iter", 20000, "official main.py"),
    Default("max_iter", 70000, "official main.py"),
    Default("lr", 3e-4, "official main.py / model.py"),
    Default("mu_init", 1.0, "official model.py fit()"),
    Default("mu_factor", 0.1, "official model.py fit()"),
    Default("checkpoint", 1000, "official model.py fit()"),
    Default("tol", 1e-6, "official model.py minimize()"),
    Default("beta_1", 0.99, "official model.py fit()"),
    Default("beta_2", 0.999, "official model.py fit()"),
    Default("threshold", 0.3, "official utils.py to_dag(thr=0.3)"),
    Default("sigma_min", 0.0, "official model.py (no floor); paper §4 names σ₀ without a value"),
)


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


def _ops(a: Any) -> type[_NumpyOps] | type[_TorchOps]:
    return _NumpyOps if isinstance(a, np.ndarray) else _TorchOps


def _eye(like: Any) -> Any:
    d = like.shape[-1]
    if isinstance(like, np.ndarray):
        return np.eye(d)
    return torch.eye(d, dtype=like.dtype, device=like.device)


def residual_energy(W: Any, cov: Any) -> Any:
    """r_i(W) = [(I − W)ᵀ Σ̂ (I − W)]_ii for every node i, as a ``(d,)`` array.

    Formed as the column sums of (I − W) ∘ Σ̂(I − W): O(d²) beyond the one product.
    """
    dif = _eye(W) - W
    return (dif * (cov @ dif)).sum(axis=0)


def optimal_scale(W: Any, cov: Any, variance: str = "ev", sigma_min: float = 0.0) -> Any:
    """The closed-form minimiser over σ ≥ σ₀ of the CoLiDE score at fixed W (paper §4).

    EV: max(sqrt(Σ_i r_i / d), σ₀) (a 0-d array); NV: max(sqrt(r_i), σ₀) per node.
    """
    check_choice("variance", variance, VARIANCES)
    r = residual_energy(W, cov)
    ops = _ops(r)
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
    return -(cov @ (_eye(W) - W)) / sigma


def logdet_acyclicity(W: Any, s: float = 1.0) -> tuple[float, Any]:
    """DAGMA's h(W; s) = −log det(sI − W∘W) + d log s and ∇h = 2 W ∘ (sI − W∘W)⁻ᵀ.

    Valid where sI − W∘W is an M-matrix (spectral radius of W∘W below s); there h ≥ 0 with
    equality exactly when W is a DAG.
    """
    ops = _ops(W)
    A = s * _eye(W) - W * W
    inverse = ops.inv(A)
    if inverse is None:
        raise ValueError(f"sI - W∘W is singular for s={s}: W is outside the log-det domain; "
                         "use a larger s or a smaller W")
    return ops.logdet(A) * -1.0 + W.shape[0] * math.log(s), 2 * W * inverse.T


def to_dag(W: Any, threshold: float = 0.3) -> Any:
    """CoLiDE/DAGMA post-processing: threshold, then drop the weakest edges until acyclic.

    Zeroes |W_ij| ≤ threshold, then deletes the remaining edges in increasing |W_ij| until the
    graph is acyclic (official ``utils.to_dag``).

    Acyclicity only improves as edges are removed, so the number of removed edges is found by
    bisection (O(log E) acyclicity checks) instead of one check per edge; the result is the
    same as removing one edge at a time. Returns the caller's array type.
    """
    check_range("threshold", threshold, 0.0)
    A, kind = as_tensor("W", W, ndim=2)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"W must be a square (d, d) matrix, got shape {tuple(A.shape)}")
    A = A.cpu().numpy()
    A[np.abs(A) <= threshold] = 0.0
    if not is_dag(A):
        rows, cols = np.nonzero(A)
        order = np.argsort(np.abs(A[rows, cols]), kind="stable")
        low, high = 0, order.size  # removing `high` smallest edges gives a DAG (empty graph)

        def acyclic_after(k: int) -> bool:
            B = A.copy()
            B[rows[order[:k]], cols[order[:k]]] = 0.0
            return is_dag(B)

        while low < high:
            mid = (low + high) // 2
            if acyclic_after(mid):
                high = mid
            else:
                low = mid + 1
        A[rows[order[:low]], cols[order[:low]]] = 0.0
    return restore(torch.from_numpy(A).to(kind.dtype), kind)


@dataclass
class _Stage:
    """Outcome of one inner solve (one μ, one s)."""

    W: Any
    sigma: Any
    success: bool
    n_iter: int
    objective: float
    score: float
    h: float


def _objective(W: Any, cov: Any, sigma: Any, mu: float, s: float, lambda1: float,
               variance: str) -> tuple[float, float, float]:
    score = concomitant_score(W, cov, sigma, 0.0, variance)
    A = s * _eye(W) - W * W
    h = -_ops(W).logdet(A) + W.shape[0] * math.log(s)
    return mu * (score + lambda1 * float(abs(W).sum())) + h, score, h


class _LapackInverse:
    """(W∘W − sI)⁻ᵀ by scipy's LAPACK (getrf + getri), in place in one Fortran-ordered buffer.

    B = W∘W − sI = −(sI − W∘W) is written straight into column-major order (the one transposed
    pass LAPACK needs), factored and inverted in place; the inverse of a column-major B read
    row-major is B⁻ᵀ, so the result is a C-contiguous view with no copy. Negating the matrix
    saves a pass and changes no bit (LU with partial pivoting is odd in A).
    """

    def __init__(self, d: int) -> None:
        self.B = np.empty((d, d), order="F")
        self.diagonal = self.B.ravel(order="K")[:: d + 1]  # a view: (i, i) sits at i(d + 1)

    def __call__(self, W: np.ndarray, s: float) -> np.ndarray | None:
        np.multiply(W, W, out=self.B)
        self.diagonal -= s
        lu, piv, info = lapack.dgetrf(self.B, overwrite_a=1)
        if info != 0:
            return None
        inverse, info = lapack.dgetri(lu, piv, overwrite_lu=1)
        return inverse.T if info == 0 else None


class _TorchInverse:
    """(W∘W − sI)⁻ᵀ by ``torch.linalg.inv_ex`` into preallocated buffers (NumPy or torch W).

    The output buffer is column-major, so its transpose is a C-contiguous B⁻ᵀ; for NumPy input
    the buffers are shared with NumPy views (no copies). On CPU this is PyTorch's LAPACK (MKL on
    x86 wheels): against scipy's OpenBLAS getrf + getri, measured on one thread, 1.44× the time
    at d = 50, 1.00× at 60, 0.96× at 70, 0.85× at 80, 0.81× at 100.
    """

    def __init__(self, like: Any) -> None:
        d = like.shape[0]
        numpy = isinstance(like, np.ndarray)
        device = None if numpy else like.device
        dtype = torch.float64 if numpy else like.dtype
        self.B = torch.empty((d, d), dtype=dtype, device=device)
        self.out = torch.empty((d, d), dtype=dtype, device=device).mT
        self.info = torch.empty((), dtype=torch.int32, device=device)
        self.B_in = self.B.numpy() if numpy else self.B
        self.result = self.out.mT.numpy() if numpy else self.out.mT
        self.diagonal = self.B.diagonal()

    def __call__(self, W: Any, s: float) -> Any:
        if isinstance(W, np.ndarray):
            np.multiply(W, W, out=self.B_in)
        else:
            torch.multiply(W, W, out=self.B)
        self.diagonal -= s
        torch.linalg.inv_ex(self.B, out=(self.out, self.info))
        return self.result if int(self.info) == 0 else None


_TORCH_INVERSE_MIN_D = 80  # CPU/NumPy: torch's inverse from here on (clearly faster, measured)


class _Solver:
    """The inner Adam loop of one path stage (official ``minimize``), vectorised.

    Every array of a stage lives in one preallocated block and is updated in place (``xp`` is
    ``numpy`` or ``torch``: the same names take the same arguments; ``ops.axpy``/``ops.scal``
    are BLAS level 1 on CPU); the EV scale is a Python float (scalar arithmetic is free).
    Per iteration: one inverse, one d×d product and 17 elementwise passes (see :meth:`run`).
    """

    def __init__(self, cov: Any, variance: str, lambda1: float, sigma_min: float,
                 beta_1: float, beta_2: float, checkpoint: int, tol: float) -> None:
        self.cov = cov
        self.eye = _eye(cov)
        self.d = cov.shape[0]
        self.variance = variance
        self.lambda1 = lambda1
        self.sigma_min = sigma_min
        self.beta_1, self.beta_2 = beta_1, beta_2
        self.checkpoint = checkpoint
        self.tol = tol
        self.ops = _ops(cov)
        self.numpy = isinstance(cov, np.ndarray)
        self.xp: Any = np if self.numpy else torch
        self.ones = self.ops.zeros(self.d, cov) + 1.0
        use_lapack = self.numpy and self.d < _TORCH_INVERSE_MIN_D
        self.inverse_t = _LapackInverse(self.d) if use_lapack else _TorchInverse(cov)

    def _buffers(self, count: int) -> list[tuple[Any, Any]]:
        """``count`` zeroed C-contiguous (d, d) arrays, each with its flat view (one block)."""
        size = self.d * self.d
        block = self.ops.zeros(count * size, self.cov)
        flats = [block[i * size:(i + 1) * size] for i in range(count)]
        return [(flat.reshape(self.d, self.d), flat) for flat in flats]

    def _residuals(self, W: Any) -> tuple[Any, Any]:
        """Σ̂(I − W) (the factor of the score gradient) and the closed-form σ from it."""
        (dif, dif_flat), (rhs, rhs_flat), (tmp, _) = self._buffers(3)
        sigma = self._residuals_into(W, dif, rhs, dif_flat, rhs_flat, tmp)
        return rhs, sigma

    def _residuals_into(self, W: Any, dif: Any, rhs: Any, dif_flat: Any, rhs_flat: Any,
                        tmp: Any) -> Any:
        """Set rhs ← Σ̂(I − W); return the closed-form σ, from r_i = Σ_k (I − W)_ki rhs_ki.

        One product and two passes: EV needs only Σ_i r_i = ⟨I − W, rhs⟩ (one dot product),
        NV the column sums (a product into ``tmp`` and one matrix-vector product).
        """
        xp = self.xp
        xp.subtract(self.eye, W, out=dif)
        xp.matmul(self.cov, dif, out=rhs)
        if self.variance == "ev":
            total = self.ops.dot(dif_flat, rhs_flat)
            return max(math.sqrt(max(total, 0.0) / self.d), self.sigma_min)
        xp.multiply(dif, rhs, out=tmp)
        sigma = self.ops.sqrt(self.ones @ tmp)
        return self.ops.maximum(sigma, self.sigma_min) if self.sigma_min > 0 else sigma

    def run(self, W: Any, sigma: Any, mu: float, max_iter: int, s: float, lr: float) -> _Stage:
        """Adam on μ(S + λ‖W‖₁) + h(W; s) from (W, σ), σ updated in closed form after each step.

        Adam is run on q = −∇/2 instead of ∇ (its step is odd in the gradient, and a factor 2
        is exact: the same iterates up to rounding, one pass fewer), with m and v kept as
        p = −m/(2(1 − β₁)) and u = v/(4(1 − β₂)), so that p ← β₁p + q, u ← β₂u + q² and
        W ← W − lr·m̂/(sqrt(v̂) + ε) = W + lr·a·p/(sqrt(u) + ε/(2k)), with
        k = sqrt((1 − β₂)/(1 − β₂ᵗ)) and a = (1 − β₁)/((1 − β₁ᵗ)k).
        """
        xp, ops, cov = self.xp, self.ops, self.cov
        b1, b2 = self.beta_1, self.beta_2
        half_l1 = 0.5 * mu * self.lambda1
        buffers = self._buffers(8)
        (W_new, W_flat), (p, p_flat), (u, u_flat), (q, q_flat) = buffers[:4]
        (tmp, tmp_flat), (delta, delta_flat), (dif, dif_flat), (rhs, rhs_flat) = buffers[4:]
        W_new[...] = W  # private copy: updated in place below
        W = W_new
        self._residuals_into(W, dif, rhs, dif_flat, rhs_flat, tmp)  # the caller's σ serves
        obj_prev = 1e16  # the first step (official)
        it, step_scale = 0, 0.0
        for it in range(1, max_iter + 1):
            # (W∘W − sI)⁻ᵀ = −(sI − W∘W)⁻ᵀ: in the domain iff no entry exceeds 1e-6 (official:
            # (sI − W∘W)⁻¹ ≥ −1e-6)
            inverse_t = self.inverse_t(W, s)
            while inverse_t is None or ops.amax(inverse_t) > -_DOMAIN_TOL:
                if it == 1 or s <= 0.9:
                    return _Stage(W, sigma, False, it, math.nan, math.nan, math.nan)
                ops.axpy(-step_scale, delta_flat, W_flat)  # undo the step that left the
                lr *= 0.5  # domain, retry it shorter
                if lr <= _MIN_LR:
                    return self._finish(W, mu, s, it)
                step_scale *= 0.5
                ops.axpy(step_scale, delta_flat, W_flat)
                sigma = self._residuals_into(W, dif, rhs, dif_flat, rhs_flat, tmp)
                inverse_t = self.inverse_t(W, s)
            # q = −∇/2 = W ∘ (W∘W − sI)⁻ᵀ − (μλ/2) sign(W) + (μ/2) Σ̂(I − W) diag(1/σ)
            xp.multiply(W, inverse_t, out=q)
            xp.sign(W, out=tmp)
            ops.axpy(-half_l1, tmp_flat, q_flat)
            if self.variance == "ev":
                ops.axpy(0.5 * mu / sigma, rhs_flat, q_flat)
            else:
                xp.multiply(rhs, 0.5 * mu / sigma, out=tmp)
                q += tmp
            ops.scal(b1, p_flat)
            ops.axpy(1.0, q_flat, p_flat)
            xp.multiply(q, q, out=tmp)
            ops.scal(b2, u_flat)
            ops.axpy(1.0, tmp_flat, u_flat)
            k = math.sqrt((1 - b2) / (1 - b2**it))
            xp.sqrt(u, out=tmp)
            tmp += 1e-8 / (2 * k)
            xp.divide(p, tmp, out=delta)
            step_scale = lr * (1 - b1) / ((1 - b1**it) * k)
            ops.axpy(step_scale, delta_flat, W_flat)
            sigma = self._residuals_into(W, dif, rhs, dif_flat, rhs_flat, tmp)
            if it % self.checkpoint == 0 or it == max_iter:
                obj, _, _ = _objective(W, cov, sigma, mu, s, self.lambda1, self.variance)
                if abs((obj_prev - obj) / obj_prev) <= self.tol:
                    break
                obj_prev = obj
        return self._finish(W, mu, s, it)

    def _finish(self, W: Any, mu: float, s: float, it: int) -> _Stage:
        W = W * 1.0  # out of the stage's buffer block
        sigma = self._residuals(W)[1]
        obj, score, h = _objective(W, self.cov, sigma, mu, s, self.lambda1, self.variance)
        return _Stage(W, sigma, True, it, obj, score, h)


def _schedule(s: float | Sequence[float], T: int) -> list[float]:
    if isinstance(s, int | float) and not isinstance(s, bool):
        values = [float(s)] * T
    elif isinstance(s, Sequence) and len(s) > 0:
        values = [float(v) for v in s]
        values += [values[-1]] * (T - len(values))  # official: pad with the last value
    else:
        raise TypeError(f"s must be a positive number or a non-empty sequence of them, got {s!r}")
    for value in values:
        check_range("s", value, 0.0, low_inclusive=False)
    return values[:T]


@register(
    "colide",
    kind="estimator",
    summary="Concomitant linear DAG estimation: scaled-lasso score with closed-form noise "
    "scale(s) (EV: one, NV: one per node), DAGMA log-det acyclicity on a decreasing-μ path.",
    equation="min_W,σ μ[Σ_i r_i(W)/(2σ_i) + Σ_i σ_i/2 + λ‖W‖₁] + h(W; s), "
    "r_i = [(I−W)ᵀΣ̂(I−W)]_ii, σ̂_i = sqrt(r_i) (NV) or σ̂ = sqrt(Σ_i r_i/d) (EV)",
    defaults=DEFAULTS,
    variants=("ev", "nv"),
)
class CoLiDE(BaseEstimator):
    """CoLiDE estimator (scikit-learn style): ``CoLiDE(variance="nv").fit(X).adjacency_``.

    A scikit-learn ``BaseEstimator``: ``get_params``, ``set_params`` and ``sklearn.clone`` work.
    The solver is deterministic (W₀ = 0, no sampling), so it takes no ``random_state``.

    Args:
        variance: ``"ev"`` (CoLiDE-EV, one noise scale) or ``"nv"`` (CoLiDE-NV, one per node).
        lambda1: ℓ1 weight λ ≥ 0.
        T: number of path stages.
        mu_init: μ₀, the score's weight in the first stage.
        mu_factor: μ_{t+1} = μ_t · mu_factor, in (0, 1].
        s: log-det parameter per stage (a number, or a sequence padded with its last value).
        warm_iter: Adam iterations in stages 0..T−2.
        max_iter: Adam iterations in the last stage.
        lr: Adam learning rate.
        checkpoint: iterations between objective-based convergence checks.
        tol: relative change of the objective that ends a stage.
        beta_1: Adam's first-moment decay.
        beta_2: Adam's second-moment decay.
        threshold: |W_ij| ≤ threshold is zeroed in ``adjacency_``.
        sigma_min: the floor σ₀ of the scales (0: the official code).
        device: where to compute (default: the input's device; CPU for numpy).

    Attributes (after :meth:`fit`):
        W_: ``(d, d)`` raw weighted adjacency (before thresholding), the input's array type.
        sigma_: the estimated noise scale: a float (EV) or a ``(d,)`` array (NV).
        adjacency_: :func:`to_dag` of ``W_`` at ``threshold``: a weighted DAG.
        n_iter_: Adam iterations run, over every stage and restart.
        history_: one record per stage: s, μ, lr, iterations, restarts, objective, score, h.
        n_features_in_: d.
        feature_names_in_: the column names when ``X`` was a pandas DataFrame with string
            column names (scikit-learn's convention); absent otherwise.

    For graph users: :meth:`to_networkx` gives the DAG as a weighted ``networkx.DiGraph`` and
    :meth:`to_dataframe` the adjacency as a labelled ``pandas.DataFrame``, both named by the
    DataFrame's columns (``pip install 'regzoo[graph]'``). ``W_[i, j] ≠ 0`` is an edge
    i → j (X = X W + noise).
    """

    def __init__(
        self,
        variance: str = "ev",
        lambda1: float = 0.05,
        *,
        T: int = 4,
        mu_init: float = 1.0,
        mu_factor: float = 0.1,
        s: float | Sequence[float] = (1.0, 0.9, 0.8, 0.7),
        warm_iter: int = 20000,
        max_iter: int = 70000,
        lr: float = 3e-4,
        checkpoint: int = 1000,
        tol: float = 1e-6,
        beta_1: float = 0.99,
        beta_2: float = 0.999,
        threshold: float = 0.3,
        sigma_min: float = 0.0,
        device: torch.device | str | None = None,
    ) -> None:
        self.variance = variance
        self.lambda1 = lambda1
        self.T = T
        self.mu_init = mu_init
        self.mu_factor = mu_factor
        self.s = s
        self.warm_iter = warm_iter
        self.max_iter = max_iter
        self.lr = lr
        self.checkpoint = checkpoint
        self.tol = tol
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.threshold = threshold
        self.sigma_min = sigma_min
        self.device = device

    def _validate(self) -> list[float]:
        check_choice("variance", self.variance, VARIANCES)
        check_range("lambda1", self.lambda1, 0.0)
        check_positive_int("T", self.T)
        check_range("mu_init", self.mu_init, 0.0, low_inclusive=False)
        check_range("mu_factor", self.mu_factor, 0.0, 1.0, low_inclusive=False)
        check_positive_int("warm_iter", self.warm_iter)
        check_positive_int("max_iter", self.max_iter)
        check_range("lr", self.lr, 0.0, low_inclusive=False)
        check_positive_int("checkpoint", self.checkpoint)
        check_range("tol", self.tol, 0.0)
        check_range("beta_1", self.beta_1, 0.0, 1.0, high_inclusive=False)
        check_range("beta_2", self.beta_2, 0.0, 1.0, high_inclusive=False)
        check_range("threshold", self.threshold, 0.0)
        check_range("sigma_min", self.sigma_min, 0.0)
        return _schedule(self.s, self.T)

    def fit(self, X: Any, y: Any = None, *, w_init: Any = None) -> CoLiDE:
        """Estimate W and the noise scale(s) from samples ``X`` of shape ``(n, d)``.

        Args:
            X: data, a torch tensor or anything scikit-learn takes as an array (numpy, lists,
                memory maps; not sparse); copied, never modified.
            y: ignored (scikit-learn's signature of an unsupervised estimator).
            w_init: optional ``(d, d)`` warm start (official NV option); the scales start at
                its residual scales. Default: W = 0 and σ from the column norms of X.
        """
        schedule = self._validate()
        if isinstance(X, torch.Tensor) and hasattr(self, "feature_names_in_"):
            del self.feature_names_in_  # a refit on a tensor must not keep old names
        if not isinstance(X, torch.Tensor):
            # scikit-learn's own checks (and messages) for array input: dtype, NaN/inf,
            # complex, sparse, at least 2 samples and 2 variables; sets n_features_in_ and,
            # for a DataFrame with string columns, feature_names_in_.
            X = validate_data(self, X, dtype=np.float64, ensure_min_samples=2,
                              ensure_min_features=2)
        data, kind = as_tensor("X", X, ndim=2, dtype=torch.float64, device=self.device,
                               finite=True)
        n, d = data.shape
        if n < 2:
            raise ValueError(f"X needs at least 2 samples (rows), got n_samples={n}")
        if d < 2:
            raise ValueError(f"X needs at least 2 variables (columns), got n_features={d}")
        data = data - data.mean(dim=0, keepdim=True)
        norms = data.norm(dim=0) / math.sqrt(n)
        constant = torch.nonzero(norms <= 1e-12 * max(float(norms.max()), 1e-300)).flatten()
        if constant.numel():
            raise ValueError(f"X has constant columns {constant.tolist()[:10]}: their noise "
                             "scale is 0 and the score is undefined; drop them")
        to_backend = (lambda t: t.cpu().numpy()) if data.device.type == "cpu" else (lambda t: t)
        cov = to_backend(data.T @ data / n)
        if w_init is None:
            W = cov * 0.0
            start = to_backend(norms)
            sigma = float(start.min()) if self.variance == "ev" else start
        else:
            init, _ = as_tensor("w_init", w_init, ndim=2, dtype=torch.float64,
                                device=data.device)
            if tuple(init.shape) != (d, d):
                raise ValueError(f"w_init must have shape ({d}, {d}), got {tuple(init.shape)}")
            W = to_backend(init)
            sigma = optimal_scale(W, cov, self.variance, self.sigma_min)
            if self.variance == "ev":
                sigma = float(sigma)
        solver = _Solver(cov, self.variance, float(self.lambda1), float(self.sigma_min),
                         float(self.beta_1), float(self.beta_2), self.checkpoint,
                         float(self.tol))
        mu = float(self.mu_init)
        history: list[dict[str, float]] = []
        total = 0
        for t, s in enumerate(schedule):
            iters = self.max_iter if t == self.T - 1 else self.warm_iter
            lr, restarts = float(self.lr), 0
            while True:
                stage = solver.run(W, sigma, mu, iters, s, lr)
                total += stage.n_iter
                if stage.success:
                    break
                lr *= 0.5  # official: restart the stage with a smaller step and a larger s
                s += 0.1
                restarts += 1
            W, sigma = stage.W, stage.sigma
            history.append({"stage": float(t), "s": s, "mu": mu, "lr": lr,
                            "n_iter": float(stage.n_iter), "restarts": float(restarts),
                            "objective": stage.objective, "score": stage.score, "h": stage.h})
            mu *= float(self.mu_factor)
        W_t = torch.as_tensor(W, dtype=torch.float64)
        self.W_ = restore(W_t.to(kind.dtype), kind)
        sigma_t = torch.as_tensor(sigma, dtype=torch.float64)
        self.sigma_ = float(sigma_t) if self.variance == "ev" else restore(
            sigma_t.to(kind.dtype), kind)
        self.adjacency_ = to_dag(self.W_, float(self.threshold))
        self.n_iter_ = total
        self.history_ = tuple(history)
        self.n_features_in_ = d
        return self

    def _graph_export(self, package: str, method: str) -> tuple[Any, list[Any], np.ndarray]:
        """``package`` imported, the node names and ``adjacency_`` as numpy, for an export."""
        try:
            module = importlib.import_module(package)
        except ImportError as error:
            raise ImportError(f"CoLiDE.{method} needs {package}: pip install {package} "
                              "(or pip install 'regzoo[graph]')") from error
        if not hasattr(self, "adjacency_"):
            raise ValueError("this CoLiDE is not fitted yet: call fit(X) first")
        names = getattr(self, "feature_names_in_", None)
        names = list(range(self.n_features_in_)) if names is None else list(names)
        return module, names, torch.as_tensor(self.adjacency_).detach().cpu().numpy()

    def to_networkx(self, *, weighted: bool = True) -> Any:
        """The estimated DAG ``adjacency_`` as a ``networkx.DiGraph``.

        Every variable is a node, named by the DataFrame's columns (else 0..d−1); an edge
        i → j for each non-zero entry, with attribute ``weight`` = W_ij when ``weighted``.

        Raises:
            ImportError: networkx is not installed (``pip install 'regzoo[graph]'``).
            ValueError: the estimator is not fitted.
        """
        nx, names, adjacency = self._graph_export("networkx", "to_networkx")
        graph = nx.DiGraph()
        graph.add_nodes_from(names)
        for i, j in zip(*np.nonzero(adjacency), strict=True):
            attributes = {"weight": float(adjacency[i, j])} if weighted else {}
            graph.add_edge(names[i], names[j], **attributes)
        return graph

    def to_dataframe(self) -> Any:
        """The estimated DAG ``adjacency_`` as a labelled ``pandas.DataFrame``.

        Rows are the causes and columns the effects, both labelled by the variables' names.

        Raises:
            ImportError: pandas is not installed (``pip install 'regzoo[graph]'``).
            ValueError: the estimator is not fitted.
        """
        pd, names, adjacency = self._graph_export("pandas", "to_dataframe")
        return pd.DataFrame(adjacency, index=names, columns=names)


__all__ = ["CoLiDE", "concomitant_score", "concomitant_score_gradient", "logdet_acyclicity",
           "optimal_scale", "residual_energy", "to_dag"]
