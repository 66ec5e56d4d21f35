"""The scipy solver: POT's L-BFGS-B on float64 NumPy evaluations, one problem at a time.

The ``solver="scipy"`` path (the CPU default without numba or for k > 16), with restarts while a
restart still gains. Each evaluation is exact and comes from the compiled loops when numba is
installed (:mod:`~regzoo.methods.sparse_ot.compiled`), else from the screened NumPy evaluation
(:mod:`~regzoo.methods.sparse_ot.screening`); both give the plain evaluation's iterates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from regzoo.methods.sparse_ot.compiled import _compiled_evaluation
from regzoo.methods.sparse_ot.lbfgs import _LBFGSOutcome
from regzoo.methods.sparse_ot.objectives import _Evaluation, _Problem
from regzoo.methods.sparse_ot.screening import _Screen


def _scipy_maximise(problem: _Problem, i: int, formulation: str, size: int, max_iter: int,
                    tol: float, record: bool) -> _LBFGSOutcome:
    """Problem ``i`` with scipy's L-BFGS-B in float64 NumPy — POT's solver, same call.

    Each evaluation is the paper's, exact, and cheaper than a partial sort of the whole matrix:
    the compiled loops (:func:`_compiled_evaluation`: numba installed, k ≤ 16 < m) or the
    screened NumPy evaluation (:class:`_Screen`). L-BFGS-B's small BLAS calls only lose from
    threads (10× slower measured on a busy 2-core machine): callers in a loop should run under
    ``threadpoolctl.threadpool_limits(1)``, as the reproduction and the benchmark do (limiting
    per call here costs ~15 ms).
    """
    from scipy.optimize import minimize

    a, b, Ct = _numpy_problem(problem, i)
    k, semi = problem.k, formulation == "semi_dual"
    screen = _Screen(a, b, Ct, k, problem.gamma, semi)
    compiled = _compiled_evaluation(a, b, Ct, k, problem.gamma, semi)
    evaluate = screen.value_and_grad if compiled is None else compiled.value_and_grad

    n_eval = 0

    def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal n_eval
        n_eval += 1
        value, grad = evaluate(x)
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
    return _outcome_at(a, b, Ct, k, problem.gamma, semi, x, n_iter, success, n_eval,
                       tuple(history), screen)


def _numpy_problem(problem: _Problem, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Problem ``i`` as float64 NumPy arrays: a, b and Cᵀ (C-contiguous)."""
    a = problem.a[i].detach().cpu().double().numpy()
    b = problem.b[i].detach().cpu().double().numpy()
    Ct = np.ascontiguousarray(problem.Ct[i].detach().cpu().double().numpy())
    return a, b, Ct


def _outcome_at(a: np.ndarray, b: np.ndarray, Ct: np.ndarray, k: int, gamma: float, semi: bool,
                x: np.ndarray, n_iter: int, success: bool, n_eval: int,
                history: tuple[dict[str, float], ...], screen: _Screen | None = None
                ) -> _LBFGSOutcome:
    """The outcome of one NumPy solve: the plan's sparse columns from one full evaluation at x."""
    screen = _Screen(a, b, Ct, k, gamma, semi) if screen is None else screen
    value, grad, weights, index = screen.full(x)
    # float64 as the solve: a value rounded to float32 would be off by ~1e-8 relative.
    ev = _Evaluation(torch.tensor([value], dtype=torch.float64), torch.from_numpy(grad)[None],
                     torch.from_numpy(np.ascontiguousarray(weights))[None],
                     torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64))[None])
    return _LBFGSOutcome(torch.from_numpy(x)[None], ev, torch.tensor([n_iter]),
                         torch.tensor([success]), torch.tensor([n_eval]), history)
