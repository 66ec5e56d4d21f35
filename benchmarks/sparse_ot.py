"""Sparse-OT benchmark: regzoo's semi-dual solver vs POT's ``reg_type="sparsity_constrained"``.

Same problems (m = n Gaussian clouds in 2-D, squared Euclidean cost scaled to max 1, uniform
marginals), same γ = 1, same tolerance and iteration budget (POT's defaults: ``stopThr=1e-9``,
``numItermax=500``; both solvers stop on scipy's rules for ``tol``), same start (zero
potentials). For each size and cap k the table gives the wall time of both (median of
``repeats``, the solvers alternating), POT/regzoo (> 1: regzoo faster) for regzoo's default
solver (``"numba"`` with numba installed and k ≤ 16 < m, else ``"scipy"``) and the time of its
``"scipy"`` solver beside it, the iteration and objective-evaluation counts (one run each,
untimed), and plan quality: the semi-dual
value S(α) reached (higher is better, both evaluated by the same function), the gap
|cost − EMD|/EMD, the row-marginal L1 error and the largest column support. The last rows
solve a batch of 16 problems in one call against 16 POT calls. A second table sets the time
per evaluation (solve time / evaluations) against the floor of one evaluation done in full:
one ``np.partition`` (and one ``torch.topk``) of the m×n matrix α − Cᵀ at the optimum, and
forming that matrix alone; beside them, one evaluation of regzoo's scipy solver alone at the
optimum, cold (no previous evaluation) and warm (after one at the same α): the compiled loop
with numba installed (``pip install "regzoo[fast]"``, k ≤ 16 < m), else the screened NumPy
evaluation — both go below the floor. One process, one thread. Run:
``python benchmarks/sparse_ot.py [--quick]`` or ``regzoo bench sparse_ot``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from regzoo.methods.sparse_ot import sparsity_constrained_ot
from regzoo.methods.sparse_ot.compiled import _compiled_evaluation
from regzoo.methods.sparse_ot.objectives import _Problem
from regzoo.methods.sparse_ot.screening import _Screen
from regzoo.train.timing import machine_line

GAMMA = 1.0
TOL = 1e-9
MAX_ITER = 500


def problem(m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xs, xt = rng.normal(size=(m, 2)), rng.normal(size=(m, 2)) + 1.0
    C = ((xs[:, None, :] - xt[None, :, :]) ** 2).sum(-1)
    return np.full(m, 1.0 / m), np.full(m, 1.0 / m), C / C.max()


def pot_solve(a: np.ndarray, b: np.ndarray, C: np.ndarray, k: int | None
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """POT's semi-dual (``l2`` for k=None); its 0.9.7 projection prints, so stdout is muted."""
    import ot

    kwargs = ({"reg_type": "l2"} if k is None
              else {"reg_type": "sparsity_constrained", "max_nz": k})
    with contextlib.redirect_stdout(io.StringIO()):
        T, log = ot.smooth.smooth_ot_semi_dual(a, b, C, GAMMA, stopThr=TOL, numItermax=MAX_ITER,
                                               log=True, **kwargs)
    return T, log["alpha"], int(log["res"].nit)


def semi_dual_value(a: np.ndarray, b: np.ndarray, C: np.ndarray, k: int | None,
                    alpha: np.ndarray) -> float:
    """S(α) of the paper's Eq. 8, one evaluator for both solvers' potentials."""
    m = len(a)
    prob = _Problem(torch.tensor(a)[None], torch.tensor(b)[None],
                    torch.tensor(C).T.contiguous()[None], k or m, GAMMA)
    return float(prob.semi_dual(torch.tensor(alpha)[None]).value[0])


def timed(fn: Any, repeats: int) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls and the last output."""
    times, out = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), out


def side_by_side(fns: list[Any], repeats: int) -> list[tuple[float, Any]]:
    """Median time and last output of each, calls alternating so that load hits all alike."""
    times: list[list[float]] = [[] for _ in fns]
    outs: list[Any] = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t, outs[i] = timed(fn, 1)
            times[i].append(t)
    return [(statistics.median(t), out) for t, out in zip(times, outs, strict=True)]


@contextlib.contextmanager
def counting_evaluations() -> Iterator[list[int]]:
    """Count objective evaluations of every scipy ``minimize`` call (POT's)."""
    import ot.smooth
    import scipy.optimize

    count = [0]
    original = scipy.optimize.minimize

    def counted(fun: Any, x0: Any, *args: Any, **kwargs: Any) -> Any:
        def wrapped(x: Any, *a: Any) -> Any:
            count[0] += 1
            return fun(x, *a)

        return original(wrapped, x0, *args, **kwargs)

    scipy.optimize.minimize = ot.smooth.minimize = counted
    try:
        yield count
    finally:
        scipy.optimize.minimize = ot.smooth.minimize = original


def evaluations(fn: Any) -> int:
    with counting_evaluations() as count:
        fn()
    return count[0]


FLOORS: list[str] = []


def one_evaluation(a: np.ndarray, b: np.ndarray, C: np.ndarray, k: int, alpha: np.ndarray
                   ) -> tuple[str, float, float]:
    """The scipy solver's evaluation at α, alone: its kind, cold and warm median times."""
    Ct = np.ascontiguousarray(C.T)
    if _compiled_evaluation(a, b, Ct, k, GAMMA, True) is not None:
        def fresh() -> Any:
            return _compiled_evaluation(a, b, Ct, k, GAMMA, True)

        kind = "compiled"
    else:
        def fresh() -> Any:
            return _Screen(a, b, Ct, k, GAMMA, True)

        kind = "screened" if fresh().screened else "full"
    t_cold, _ = timed(lambda: fresh().value_and_grad(alpha), 21)
    warm = fresh()
    warm.value_and_grad(alpha)
    t_warm, _ = timed(lambda: warm.value_and_grad(alpha), 21)
    return kind, t_cold, t_warm


def floor_row(a: np.ndarray, b: np.ndarray, C: np.ndarray, k: int | None, alpha: np.ndarray,
              t_pot: float, t_ours: float, ev_pot: int, ev_ours: int) -> str:
    """Time per evaluation of both against one np.partition / torch.topk of α − Cᵀ."""
    m = len(a)
    s = alpha[None, :] - C.T
    kk = m if k is None else k
    t_part, _ = timed(lambda: np.partition(s, m - kk, axis=1), 21)
    st = torch.from_numpy(s)
    t_topk, _ = timed(lambda: torch.topk(st, kk, dim=1), 21)
    t_form, _ = timed(lambda: alpha[None, :] - C.T, 21)
    kind, t_cold, t_warm = one_evaluation(a, b, C, kk, alpha)
    label = "∞" if k is None else str(k)
    return (f"| {m} | {label} | {1e3 * t_pot / ev_pot:.3f} | {1e3 * t_ours / ev_ours:.3f} | "
            f"{1e3 * t_part:.3f} | {1e3 * t_topk:.3f} | {1e3 * t_form:.3f} | {kind} | "
            f"{1e3 * t_cold:.3f} | {1e3 * t_warm:.3f} |")


def compare(m: int, k: int | None, repeats: int) -> str:
    import ot

    a, b, C = problem(m, 0)
    emd = float((ot.emd(a, b, C) * C).sum())

    def ours(solver: str = "auto") -> Any:
        return sparsity_constrained_ot(a, b, C, k, GAMMA, tol=TOL, max_iter=MAX_ITER, log=True,
                                       solver=solver)

    (t_ours, (T, res)), (t_scipy, _), (t_pot, (P, alpha_pot, nit_pot)) = side_by_side(
        [ours, lambda: ours("scipy"), lambda: pot_solve(a, b, C, k)], repeats)
    ev_ours, ev_pot = res.n_evaluations, evaluations(lambda: pot_solve(a, b, C, k))
    FLOORS.append(floor_row(a, b, C, k, res.alpha, t_pot, t_ours, ev_pot, ev_ours))
    quality = []
    for plan, alpha in ((T, res.alpha), (P, alpha_pot)):
        quality.append((semi_dual_value(a, b, C, k, alpha),
                        abs((plan * C).sum() - emd) / emd,
                        np.abs(plan.sum(1) - a).sum(), int((plan > 0).sum(0).max())))
    (s_o, gap_o, row_o, nnz_o), (s_p, gap_p, row_p, nnz_p) = quality
    label = "∞" if k is None else str(k)
    return (f"| {m} | {label} | {t_pot:.3f} | {t_ours:.3f} | {t_pot / t_ours:.1f} | "
            f"{t_scipy:.3f} | {nit_pot} | "
            f"{res.n_iter} | {ev_pot} | {ev_ours} | {s_p:.9f} | {s_o:.9f} | "
            f"{(s_o - s_p) / abs(s_p):+.1e} | {gap_p:.2e} | {gap_o:.2e} | {row_p:.1e} | "
            f"{row_o:.1e} | {nnz_p} | {nnz_o} |")


def batched(m: int, k: int, count: int, repeats: int) -> str:
    problems = [problem(m, seed) for seed in range(count)]
    a = torch.tensor(np.stack([p[0] for p in problems]))
    b = torch.tensor(np.stack([p[1] for p in problems]))
    C = torch.tensor(np.stack([p[2] for p in problems]))

    def ours(solver: str = "auto") -> Any:
        return sparsity_constrained_ot(a, b, C, k, GAMMA, tol=TOL, max_iter=MAX_ITER, log=True,
                                       solver=solver)

    def pot() -> Any:
        return [pot_solve(*p, k) for p in problems]

    (t_ours, (_, res)), (t_scipy, _), (t_pot, outs) = side_by_side(
        [ours, lambda: ours("scipy"), pot], repeats)
    ev_ours, ev_pot = res.n_evaluations, evaluations(pot)
    s_o = np.array([semi_dual_value(*p, k, res.alpha[i].numpy())
                    for i, p in enumerate(problems)])
    s_p = np.array([semi_dual_value(*p, k, out[1])
                    for p, out in zip(problems, outs, strict=True)])
    worst = float(((s_o - s_p) / np.abs(s_p)).min())
    return (f"| {count}×{m} batched | {k} | {t_pot:.3f} | {t_ours:.3f} | {t_pot / t_ours:.1f} | "
            f"{t_scipy:.3f} | {max(o[2] for o in outs)} | {res.n_iter} | {ev_pot} | {ev_ours} | "
            f"{s_p.mean():.9f} | {s_o.mean():.9f} | {worst:+.1e} (worst) | | | | | | |")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="100×100 and one 500×500 case, one repeat (smoke run)")
    parser.add_argument("--large", action="store_true", help="also 2000×2000 at k = 10")
    args = parser.parse_args(argv)
    try:
        import ot
    except ImportError:
        raise SystemExit("sparse_ot benchmark needs POT: pip install 'regzoo[peers]'") from None
    torch.set_num_threads(1)
    print(f"POT {ot.__version__}, {machine_line()}; "
          f"γ = {GAMMA}, tol = {TOL}, "
          f"max_iter = {MAX_ITER}\n")
    try:
        import numba

        compiled = (f"numba {numba.__version__}: the default solver is \"numba\" (L-BFGS-B's "
                    "iteration compiled with the top-k loop) for k ≤ 16 < m, else \"scipy\"")
    except ImportError:
        compiled = "no numba: the default solver is \"scipy\" (screened NumPy evaluation)"
    print(f"regzoo: {compiled}\n")
    print("| m = n | k | POT s | regzoo s | POT / regzoo | regzoo scipy s | POT it | regzoo it "
          "| POT evals "
          "| regzoo evals | S(α) POT | S(α) regzoo | S rel. diff (regzoo − POT) | gap POT "
          "| gap regzoo | row err POT | row err regzoo | max nnz POT | max nnz regzoo |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
          "|---:|---:|")
    if args.quick:
        cases = [(100, 2, 1), (100, 10, 1), (500, 10, 1)]
    else:
        cases = [(100, k, 3) for k in (1, 2, 5, 10, None)]
        cases += [(500, k, 3) for k in (2, 5, 10, None)]
        if args.large:
            cases.append((2000, 10, 1))
    # Compiles (first run) or loads the optional numba loops outside the timings.
    sparsity_constrained_ot(*problem(40, 0), 2, GAMMA)
    sparsity_constrained_ot(*problem(40, 0), 2, GAMMA, solver="scipy")
    with threadpool_limits(1):
        for m, k, repeats in cases:
            print(compare(m, k, repeats), flush=True)
        print(batched(100, 5, 4 if args.quick else 16, 1 if args.quick else 3), flush=True)
        print("\nTime per objective evaluation (ms) against the floor of one full evaluation "
              "(α − Cᵀ at the optimum):\n")
        print("| m = n | k | POT ms/eval | regzoo ms/eval | np.partition | torch.topk "
              "| forming α − Cᵀ | regzoo evaluation | one eval, cold | one eval, warm |")
        print("|---:|---:|---:|---:|---:|---:|---:|:---|---:|---:|")
        for row in FLOORS:
            print(row)


if __name__ == "__main__":
    main(sys.argv[1:])
