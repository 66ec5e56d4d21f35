"""The optional compiled evaluation: three numba loops and a helper (extra ``fast``).

They serve the scipy solver's evaluations and, compiled into it, the numba solver
(:mod:`~regzoo.methods.sparse_ot.numba_solver`). numba is imported on the first solve that can
use the loops (k < m and k ≤ :data:`_KERNEL_MAX_K`), never at import time; without it, or when
it fails to import, :func:`_compiled_evaluation` returns None and the scipy solver evaluates
with the screened NumPy evaluation (:class:`~regzoo.methods.sparse_ot.screening._Screen`)
instead, to the same iterates. The loops are plain Python, so their results are tested without
numba as well. numba's disk cache checks only the file of the function it compiled: after
editing this file, delete ``numba_solver``'s cache (``__pycache__/numba_solver.*.nb*``) or the
numba solver keeps the old loops (the plain-vs-compiled test catches a stale cache).
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

_KERNEL_MAX_K = 16  # the compiled loop keeps the top k by insertion: O(k) per insertion


class _Loops(NamedTuple):
    """The compiled :func:`_top_k_loop`, :func:`_semi_dual_terms` and :func:`_dual_terms`."""

    top_k: Callable[..., None]
    semi_dual_terms: Callable[..., float]
    dual_terms: Callable[..., float]


@functools.cache
def _compiled_loops() -> _Loops | None:
    """The three loops compiled by numba (cached on disk), or None when numba does not import.

    Compiled passes over Cᵀ keep each column's top k: several times faster than one
    ``np.partition`` of the matrix alone, the floor of any NumPy evaluation that reads every
    entry (measured in the package docstring).
    """
    try:
        import numba  # noqa: F401  (only whether it imports: _njit_calling uses it)
    except ImportError:
        return None
    sort_kept = _njit_calling(_sort_kept, {})
    return _Loops(_njit_calling(_top_k_loop, {"_sort_kept": sort_kept}),
                  _njit_calling(_semi_dual_terms, {}), _njit_calling(_dual_terms, {}))


def _njit_calling(plain: Callable[..., object], callees: dict[str, Callable[..., object]]
                  ) -> Callable[..., object]:
    """``plain`` compiled by numba (cached on disk), its globals naming the compiled ``callees``.

    numba compiles a call to a global function only when that function is compiled itself, and
    caches on disk only functions that take no functions as arguments; so each loop is
    compiled after the loops it calls, from a copy of it that sees their compiled versions.
    """
    import numba

    bound = types.FunctionType(plain.__code__, {**plain.__globals__, **callees}, plain.__name__)
    return numba.njit(cache=True)(bound)


class _CompiledEvaluation:
    """Exact (semi-)dual value and gradient of one problem by the compiled loops.

    The previous evaluation's top k of every column warm-starts the next one's
    (:func:`_top_k_loop`); values equal the full evaluation's up to summation order.
    """

    def __init__(self, loops: _Loops, a: np.ndarray, b: np.ndarray, Ct: np.ndarray, k: int,
                 gamma: float, semi: bool) -> None:
        self.loops, self.a, self.b, self.Ct, self.k, self.gamma = loops, a, b, Ct, k, gamma
        self.terms = loops.semi_dual_terms if semi else loops.dual_terms
        self.semi = semi
        self.no_shift = np.zeros(Ct.shape[0])
        self.index: np.ndarray | None = None  # the last evaluation's top k rows per column

    def value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """S(α) (or D(α, β)) and its gradient at ``x``."""
        n, m = self.Ct.shape
        warm = self.index is not None
        index = self.index if warm else np.empty((n, self.k), dtype=np.int64)
        values = np.empty((n, self.k))
        self.loops.top_k(x[:m], self.no_shift if self.semi else x[m:], self.Ct, values, index,
                         warm)
        self.index = index
        grad = np.empty(len(x))
        return self.terms(x, self.a, self.b, self.gamma, values, index, grad), grad


def _compiled_evaluation(a: np.ndarray, b: np.ndarray, Ct: np.ndarray, k: int, gamma: float,
                         semi: bool) -> _CompiledEvaluation | None:
    """The compiled evaluation of one problem; None without numba, for k ≥ m or k > 16."""
    if k >= Ct.shape[1] or k > _KERNEL_MAX_K:
        return None
    loops = _compiled_loops()
    return None if loops is None else _CompiledEvaluation(loops, a, b, Ct, k, gamma, semi)


def _top_k_loop(alpha: np.ndarray, shift: np.ndarray, Ct: np.ndarray, values: np.ndarray,
                index: np.ndarray, warm: bool) -> None:
    """Top k of s_j = α + shift_j − c_j for every column j, in decreasing order, in place.

    ``values`` and ``index`` are (n, k), ties ordered by row. Cold: one pass over each row of
    Cᵀ keeping the k largest by insertion. ``warm``: ``index`` holds the previous evaluation's
    top k, whose smallest current value L bounds the new k-th value from below, so only the
    entries at or above L can enter. Two branch-free passes over the row find them: the first
    counts them (vectorised: about a tenth of the cold pass's time), and when there are exactly
    k — the previous top k is still the top k, after most L-BFGS steps late in a solve — only
    those k are re-sorted; otherwise the second gathers their rows (writing every row index
    and advancing past it only if it qualifies) for the insertion. With finite entries the
    result is the exact top k either way, equal to the cold pass's. Plain Python, compiled by
    :func:`_compiled_loops`.
    """
    n, m = Ct.shape
    k = values.shape[1]
    candidates = np.empty(m, dtype=np.int64)
    for j in range(n):
        lower, count = -np.inf, m
        if warm:
            lower = np.inf
            for r in range(k):
                lower = min(lower, alpha[index[j, r]] + shift[j] - Ct[j, index[j, r]])
            count = 0
            for i in range(m):
                count += not alpha[i] + shift[j] - Ct[j, i] < lower
            if count == k:
                _sort_kept(alpha, shift, Ct, values, index, j)
                continue
            count = 0
            for i in range(m):
                candidates[count] = i
                count += not alpha[i] + shift[j] - Ct[j, i] < lower
        kept, threshold = 0, lower
        for q in range(count):
            i = candidates[q] if warm else q
            v = alpha[i] + shift[j] - Ct[j, i]
            if v < threshold:
                continue
            if kept < k:
                p = kept
                kept += 1
            elif v > values[j, k - 1]:
                p = k - 1
            else:
                continue
            while p > 0 and values[j, p - 1] < v:
                values[j, p] = values[j, p - 1]
                index[j, p] = index[j, p - 1]
                p -= 1
            values[j, p] = v
            index[j, p] = i
            if kept == k:
                threshold = max(lower, values[j, k - 1])


def _sort_kept(alpha: np.ndarray, shift: np.ndarray, Ct: np.ndarray, values: np.ndarray,
               index: np.ndarray, j: int) -> None:
    """Column j's current values at its previous top k rows, ordered as the cold pass orders.

    Decreasing, ties by row. Plain Python, compiled with :func:`_top_k_loop`.
    """
    k = values.shape[1]
    for r in range(k):
        i = index[j, r]
        v = alpha[i] + shift[j] - Ct[j, i]
        p = r
        while p > 0 and (values[j, p - 1] < v or (values[j, p - 1] == v and index[j, p - 1] > i)):
            values[j, p] = values[j, p - 1]
            index[j, p] = index[j, p - 1]
            p -= 1
        values[j, p] = v
        index[j, p] = i


def _semi_dual_terms(alpha: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float,
                     values: np.ndarray, index: np.ndarray, grad: np.ndarray) -> float:
    """S(α) from each column's top k (decreasing); ∇S = a − Σ_j t_j written into ``grad``.

    Per column the Held–Wolfe–Crowder θ of u = values/(γ b_j) (as NumPy's
    ``screening._simplex_threshold_np``), g = [u − θ]₊, ψ_j = b_j(⟨values, g⟩ − (γ/2) b_j ‖g‖²)
    and t_j = b_j g (paper Eq. 8).
    Plain Python, compiled by :func:`_compiled_loops`.
    """
    n, k = values.shape
    grad[:] = a
    conj = 0.0
    for j in range(n):
        if b[j] <= 0:
            continue
        scale = gamma * b[j]
        # ρ ≥ 1 as in the NumPy twin: at |u| ~ 1e16 (far L-BFGS-B trial steps) the first
        # test, u₁ − (u₁ − 1) > 0, rounds to 0 > 0.
        cumulative, rho, kept = 0.0, 1, values[j, 0] / scale
        for r in range(k):
            u = values[j, r] / scale
            cumulative += u
            if u - (cumulative - 1.0) / (r + 1) > 0:
                rho, kept = r + 1, cumulative
        theta = (kept - 1.0) / rho
        linear, square = 0.0, 0.0
        for r in range(rho):
            g = values[j, r] / scale - theta
            if g > 0:
                linear += values[j, r] * g
                square += g * g
                grad[index[j, r]] -= b[j] * g
        conj += b[j] * (linear - 0.5 * gamma * b[j] * square)
    return alpha @ a - conj


def _dual_terms(x: np.ndarray, a: np.ndarray, b: np.ndarray, gamma: float,
                values: np.ndarray, index: np.ndarray, grad: np.ndarray) -> float:
    """D(α, β) from each column's top k; its gradient (a − T1, b − Tᵀ1) into ``grad``."""
    n, k = values.shape
    m = a.shape[0]
    grad[:m] = a
    grad[m:] = b
    squares = 0.0
    for j in range(n):
        for r in range(k):
            if values[j, r] > 0:
                squares += values[j, r] * values[j, r]
                grad[index[j, r]] -= values[j, r] / gamma
                grad[m + j] -= values[j, r] / gamma
    return x[:m] @ a + x[m:] @ b - squares / (2 * gamma)
