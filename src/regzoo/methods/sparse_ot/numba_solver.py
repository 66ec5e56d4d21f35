"""The numba solver: L-BFGS-B's iteration compiled with the evaluation, one problem at a time.

The ``solver="numba"`` path, the CPU default when numba is installed (extra ``fast``) and
k ≤ 16 < m. It runs what the scipy solver runs (:mod:`~regzoo.methods.sparse_ot.scipy_solver`:
scipy's L-BFGS-B, POT's solver, with restarts) as L-BFGS-B runs without bounds — the L-BFGS
direction, the Moré–Thuente line search with its constants, its pair-skipping and stopping
rules — around the compiled evaluation (:mod:`~regzoo.methods.sparse_ot.compiled`), so its
iterates are scipy's up to rounding, without L-BFGS-B's per-iteration cost (its Fortran
routine, the Python callback, the NumPy conversions). The loops are plain Python, so they are
tested without numba as well.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from regzoo.methods.sparse_ot.compiled import (
    _KERNEL_MAX_K,
    _compiled_loops,
    _dual_terms,
    _njit_calling,
    _semi_dual_terms,
    _top_k_loop,
)
from regzoo.methods.sparse_ot.lbfgs import _MEMORY, _LBFGSOutcome
from regzoo.methods.sparse_ot.objectives import _Problem
from regzoo.methods.sparse_ot.scipy_solver import _numpy_problem, _outcome_at

NUMBA_HINT = 'pip install "regzoo[fast]" (numba), or pass solver="scipy"'
_SEARCH_EVALS = 20  # evaluations per line search, L-BFGS-B's limit


def numba_applies(k: int, m: int) -> bool:
    """Whether the compiled loops cover a cap k on m rows: k ≤ 16 (insertion) and k < m."""
    return k < m and k <= _KERNEL_MAX_K


_Solve = Callable[..., tuple[float, int, int, bool]]


@functools.cache
def _compiled_lbfgs() -> _Solve | None:
    """:func:`_lbfgs_loop` compiled by numba (cached on disk), or None without numba."""
    loops = _compiled_loops()
    if loops is None:
        return None
    compiled: dict[str, Callable[..., object]] = {
        "_top_k_loop": loops.top_k, "_semi_dual_terms": loops.semi_dual_terms,
        "_dual_terms": loops.dual_terms}
    for plain in (_more_thuente_step, _evaluate, _line_search, _lbfgs_loop):  # callees first
        compiled[plain.__name__] = _njit_calling(plain, compiled)
    return compiled["_lbfgs_loop"]  # type: ignore[return-value]


def _numba_maximise(problem: _Problem, i: int, formulation: str, size: int, max_iter: int,
                    tol: float, record: bool) -> _LBFGSOutcome:
    """Problem ``i`` with the compiled L-BFGS; the plan from one full evaluation at the end."""
    solve = _compiled_lbfgs()
    if solve is None:
        raise ImportError(f"solver='numba' needs numba: {NUMBA_HINT}")
    a, b, Ct = _numpy_problem(problem, i)
    semi = formulation == "semi_dual"
    x = np.zeros(size)
    trace = np.zeros(max_iter)
    _, n_iter, n_eval, success = _run(solve, a, b, Ct, problem.k, problem.gamma, semi, x,
                                      max_iter, tol, trace)
    history = tuple({"objective": float(v)} for v in trace[:n_iter]) if record else ()
    return _outcome_at(a, b, Ct, problem.k, problem.gamma, semi, x, n_iter, success, n_eval,
                       history)


def _run(solve: _Solve, a: np.ndarray, b: np.ndarray, Ct: np.ndarray, k: int, gamma: float,
         semi: bool, x: np.ndarray, max_iter: int, tol: float, trace: np.ndarray
         ) -> tuple[float, int, int, bool]:
    """One ``solve`` (:func:`_lbfgs_loop`, compiled or plain) with the evaluation's buffers."""
    n = Ct.shape[0]
    return solve(a, b, Ct, gamma, semi, x, max_iter, tol, np.empty((n, k)),
                 np.empty((n, k), dtype=np.int64), trace)


def _evaluate(point: np.ndarray, warm: bool, a: np.ndarray, b: np.ndarray, Ct: np.ndarray,
              gamma: float, semi: bool, no_shift: np.ndarray, values: np.ndarray,
              index: np.ndarray, grad: np.ndarray) -> float:
    """The minimised f = −S (or −D) at ``point`` by the evaluation's loops; ∇S into ``grad``."""
    m = Ct.shape[1]
    _top_k_loop(point[:m], no_shift if semi else point[m:], Ct, values, index, warm)
    if semi:
        return -_semi_dual_terms(point, a, b, gamma, values, index, grad)
    return -_dual_terms(point, a, b, gamma, values, index, grad)


def _lbfgs_loop(a: np.ndarray, b: np.ndarray, Ct: np.ndarray, gamma: float, semi: bool,
                x: np.ndarray, max_iter: int, tol: float, values: np.ndarray, index: np.ndarray,
                trace: np.ndarray) -> tuple[float, int, int, bool]:
    """Maximise S (or D) from ``x`` in place; returns (value, iterations, evaluations, success).

    scipy's L-BFGS-B (v3.0) as it runs without bounds, on f = −S; there its search direction is
    the L-BFGS one, −H∇f, computed here by the two-loop recursion over the last
    :data:`_MEMORY` pairs, scaled by sᵀy/yᵀy of the newest. Each iteration: stop if
    ‖∇f‖_∞ ≤ tol; line search (:func:`_line_search`) from step 1, or 1/‖∇f‖₂ at the first
    iteration; on a failed search go back to x and retry once with an empty memory (an empty
    memory failing ends the run, unsuccessfully, counted as an iteration); then stop if
    ‖∇f‖_∞ ≤ tol or f_old − f ≤ tol·max(|f_old|, |f|, 1), else store the pair unless
    sᵀy ≤ ε·(−∇f_oldᵀs).
    Like the scipy solver, a new run with an empty memory starts where a run stopped while it
    gained more than tol·max(|S|, 1) and the budget lasts. ``trace[t]`` receives S after
    iteration t. ``values`` and ``index`` are the evaluation's (n, k) buffers.
    Plain Python, compiled by :func:`_compiled_lbfgs`.
    """
    n = Ct.shape[0]
    d = x.shape[0]
    no_shift = np.zeros(n)
    grad = np.empty(d)
    S = np.zeros((_MEMORY, d))
    Y = np.zeros((_MEMORY, d))
    rho = np.zeros(_MEMORY)
    coef = np.zeros(_MEMORY)
    direction = np.empty(d)
    trial = np.empty(d)
    f = _evaluate(x, False, a, b, Ct, gamma, semi, no_shift, values, index, grad)
    g = -grad
    n_iter, n_eval, success, best = 0, 1, False, -np.inf
    while n_iter < max_iter:
        stored, newest, scale, start = 0, -1, 1.0, n_iter
        success, done = False, np.abs(g).max() <= tol
        while not done and n_iter < max_iter:
            direction[:] = g
            for r in range(stored):
                j = (newest - r) % _MEMORY
                coef[j] = rho[j] * (S[j] @ direction)
                direction -= coef[j] * Y[j]
            direction *= scale
            for r in range(stored):
                j = (newest - stored + 1 + r) % _MEMORY
                direction += S[j] * (coef[j] - rho[j] * (Y[j] @ direction))
            direction *= -1.0
            first = 1.0 / np.sqrt(direction @ direction) if n_iter == start else 1.0
            f_new, evals, found = _line_search(a, b, Ct, gamma, semi, no_shift, x, direction, f,
                                               g, first, trial, values, index, grad)
            n_eval += evals
            if not found:
                if stored == 0:
                    trace[n_iter] = -f
                    n_iter += 1
                    break
                stored, scale = 0, 1.0
                continue
            s = trial - x
            y = -grad - g
            sy, descent = s @ y, -(g @ s)
            x[:] = trial
            f_old, f = f, f_new
            g = -grad
            trace[n_iter] = -f
            n_iter += 1
            if np.abs(g).max() <= tol:
                success, done = True, True
            elif f_old - f <= tol * max(abs(f_old), abs(f), 1.0):
                success = True
                break
            elif sy > 2.220446049250313e-16 * descent:
                newest = (newest + 1) % _MEMORY
                S[newest], Y[newest], rho[newest] = s, y, 1.0 / sy
                stored = min(stored + 1, _MEMORY)
                scale = sy / (y @ y)
        gained = -f - best
        best = max(best, -f)
        if done or n_iter == start or gained <= tol * max(abs(best), 1.0):
            break
    return -f, n_iter, n_eval, success


def _line_search(a: np.ndarray, b: np.ndarray, Ct: np.ndarray, gamma: float, semi: bool,
                 no_shift: np.ndarray, x: np.ndarray, direction: np.ndarray, f0: float,
                 g0: np.ndarray, step: float, trial: np.ndarray, values: np.ndarray,
                 index: np.ndarray, grad: np.ndarray) -> tuple[float, int, bool]:
    """Moré–Thuente search (ACM TOMS 20, 1994) with L-BFGS-B's constants; (f, evals, found).

    Finds t with f(x + t p) ≤ f0 + μ t f'(0) and |f'(t)| ≤ η |f'(0)|, μ = 1e-3, η = 0.9,
    relative interval tolerance 0.1, steps in [0, 1e10], at most :data:`_SEARCH_EVALS`
    evaluations. Stage 1 works on the auxiliary ψ(t) = f(t) − f0 − μ t f'(0) until ψ ≤ 0 and
    f' ≥ 0; each trial step comes from :func:`_more_thuente_step`, bisected when the bracket
    does not shrink by 2/3 in two trials. Found: ``trial`` holds x + t p and ``grad`` ∇S there;
    when the bracket or the step reaches its tolerance or bound first (the search's warnings)
    the last trial is taken all the same, as L-BFGS-B takes it (it is the best step seen).
    Not found: p is not a descent direction, or 20 evaluations did not end the search.
    """
    mu, eta, xtol, step_max = 1e-3, 0.9, 0.1, 1e10
    slope0 = g0 @ direction
    if slope0 >= 0:
        return f0, 0, False
    test_slope = mu * slope0
    bracketed, stage = False, 1
    width, width_before = step_max, 2.0 * step_max
    stx, fx, gx, sty, fy, gy = 0.0, f0, slope0, 0.0, f0, slope0
    low, high = 0.0, step + 4.0 * step
    evals = 0
    while evals < _SEARCH_EVALS:
        trial[:] = x + step * direction
        f = _evaluate(trial, True, a, b, Ct, gamma, semi, no_shift, values, index, grad)
        slope = -(grad @ direction)
        evals += 1
        f_test = f0 + step * test_slope
        if stage == 1 and f <= f_test and slope >= 0:
            stage = 2
        if f <= f_test and abs(slope) <= -eta * slope0:
            return f, evals, True
        if ((bracketed and (step <= low or step >= high))
                or (bracketed and high - low <= xtol * high)
                or (step == step_max and f <= f_test and slope <= test_slope)
                or (step == 0.0 and (f > f_test or slope >= test_slope))):
            return f, evals, True
        if stage == 1 and f <= fx and f > f_test:
            # Stage 1 steps on ψ = f − μ t f'(0), whose values and slopes are shifted.
            stx, fx, gx, sty, fy, gy, step, bracketed = _more_thuente_step(
                stx, fx - stx * test_slope, gx - test_slope, sty, fy - sty * test_slope,
                gy - test_slope, step, f - step * test_slope, slope - test_slope, bracketed,
                low, high)
            fx, fy = fx + stx * test_slope, fy + sty * test_slope
            gx, gy = gx + test_slope, gy + test_slope
        else:
            stx, fx, gx, sty, fy, gy, step, bracketed = _more_thuente_step(
                stx, fx, gx, sty, fy, gy, step, f, slope, bracketed, low, high)
        if bracketed:
            if abs(sty - stx) >= 0.66 * width_before:
                step = stx + 0.5 * (sty - stx)
            width_before, width = width, abs(sty - stx)
            low, high = min(stx, sty), max(stx, sty)
        else:
            low, high = step + 1.1 * (step - stx), step + 4.0 * (step - stx)
        step = min(max(step, 0.0), step_max)
        if (bracketed and (step <= low or step >= high)) or (bracketed
                                                             and high - low <= xtol * high):
            step = stx
    return f0, evals, False


def _more_thuente_step(stx: float, fx: float, dx: float, sty: float, fy: float, dy: float,
                       stp: float, fp: float, dp: float, bracketed: bool, low: float,
                       high: float) -> tuple[float, float, float, float, float, float, float, bool]:
    """One safeguarded step of the Moré–Thuente search and the updated interval (1994, §4).

    stx is the best step so far (value fx, slope dx), sty the interval's other end, stp the
    trial (fp, dp). Four cases: a higher value (the cubic minimiser or halfway to the
    quadratic's: bracketed); slopes of opposite sign (cubic or secant: bracketed); a smaller
    slope of the same sign (cubic if it goes the right way, else the secant, kept within 66 %
    of the bracket, or extrapolated within [low, high]); else the cubic with the other end, or
    a bound. Returns (stx, fx, dx, sty, fy, dy, next step, bracketed).
    """
    sign = dp * np.sign(dx)
    if fp > fx or sign < 0 or abs(dp) < abs(dx):
        # The cubic through (stx, fx, dx) and (stp, fp, dp): its discriminant's root, signed
        # for the minimiser seen from stp (from stx in the first case: the sign flips there).
        theta = 3.0 * (fx - fp) / (stp - stx) + dx + dp
        s = max(abs(theta), abs(dx), abs(dp))
        root = s * np.sqrt(max(0.0, (theta / s) ** 2 - (dx / s) * (dp / s)))
        root = -root if stp > stx else root
        if fp > fx:
            r = ((-root - dx) + theta) / (((-root - dx) - root) + dp)
            cubic = stx + r * (stp - stx)
            quadratic = stx + (dx / ((fx - fp) / (stp - stx) + dx)) / 2.0 * (stp - stx)
            if abs(cubic - stx) < abs(quadratic - stx):
                new = cubic
            else:
                new = cubic + (quadratic - cubic) / 2.0
            bracketed = True
        elif sign < 0:
            r = ((root - dp) + theta) / (((root - dp) + root) + dx)
            cubic = stp + r * (stx - stp)
            secant = stp + (dp / (dp - dx)) * (stx - stp)
            new = cubic if abs(cubic - stp) > abs(secant - stp) else secant
            bracketed = True
        else:
            r = ((root - dp) + theta) / ((root + (dx - dp)) + root)
            # The cubic's minimiser when it lies beyond stp, else the bound on that side.
            cubic = stp + r * (stx - stp) if r < 0 and root != 0 else (high if stp > stx else low)
            secant = stp + (dp / (dp - dx)) * (stx - stp)
            if bracketed:
                new = cubic if abs(cubic - stp) < abs(secant - stp) else secant
                if stp > stx:
                    new = min(stp + 0.66 * (sty - stp), new)
                else:
                    new = max(stp + 0.66 * (sty - stp), new)
            else:
                new = cubic if abs(cubic - stp) > abs(secant - stp) else secant
                new = max(low, min(high, new))
    elif bracketed:
        theta = 3.0 * (fp - fy) / (sty - stp) + dy + dp
        s = max(abs(theta), abs(dy), abs(dp))
        root = s * np.sqrt(max(0.0, (theta / s) ** 2 - (dy / s) * (dp / s)))
        root = -root if stp > sty else root
        r = ((root - dp) + theta) / (((root - dp) + root) + dy)
        new = stp + r * (sty - stp)
    else:
        new = high if stp > stx else low
    if fp > fx:
        sty, fy, dy = stp, fp, dp
    else:
        if sign < 0:
            sty, fy, dy = stx, fx, dx
        stx, fx, dx = stp, fp, dp
    return stx, fx, dx, sty, fy, dy, new, bracketed

