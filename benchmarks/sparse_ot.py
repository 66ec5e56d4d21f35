"""Sparse-OT benchmark: regzoo's semi-dual solver vs POT's ``reg_type="sparsity_constrained"``.

Same problems (m = n Gaussian clouds in 2-D, squared Euclidean cost scaled to max 1, uniform
marginals), same γ = 1, same tolerance and iteration budget (POT's defaults: ``stopThr=1e-9``,
``numItermax=500``; both solvers stop on scipy's rules for ``tol``), same start (zero
potentials). For each size and cap k the table gives the wall time of both (best of
``repeats``), POT/regzoo (> 1: regzoo faster), the iteration counts, and plan quality: the
semi-dual value S(α) reached (higher is better, both evaluated by the same function), the gap
|cost − EMD|/EMD, the row-marginal L1 error and the largest column support. The last rows solve
a batch of 16 problems in one call against 16 POT calls. One process, one thread. Run:
``python benchmarks/sparse_ot.py [--quick]`` or ``regzoo bench sparse_ot``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from regzoo.methods.sparse_ot import _Problem, sparsity_constrained_ot
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
    best, out = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def compare(m: int, k: int | None, repeats: int) -> str:
    import ot

    a, b, C = problem(m, 0)
    emd = float((ot.emd(a, b, C) * C).sum())
    t_ours, (T, res) = timed(lambda: sparsity_constrained_ot(a, b, C, k, GAMMA, tol=TOL,
                                                             max_iter=MAX_ITER, log=True),
                             repeats)
    t_pot, (P, alpha_pot, nit_pot) = timed(lambda: pot_solve(a, b, C, k), repeats)
    quality = []
    for plan, alpha in ((T, res.alpha), (P, alpha_pot)):
        quality.append((semi_dual_value(a, b, C, k, alpha),
                        abs((plan * C).sum() - emd) / emd,
                        np.abs(plan.sum(1) - a).sum(), int((plan > 0).sum(0).max())))
    (s_o, gap_o, row_o, nnz_o), (s_p, gap_p, row_p, nnz_p) = quality
    label = "∞" if k is None else str(k)
    return (f"| {m} | {label} | {t_pot:.3f} | {t_ours:.3f} | {t_pot / t_ours:.1f} | {nit_pot} | "
            f"{res.n_iter} | {s_p:.7f} | {s_o:.7f} | {gap_p:.2e} | {gap_o:.2e} | {row_p:.1e} | "
            f"{row_o:.1e} | {nnz_p} | {nnz_o} |")


def batched(m: int, k: int, count: int) -> str:
    problems = [problem(m, seed) for seed in range(count)]
    a = torch.tensor(np.stack([p[0] for p in problems]))
    b = torch.tensor(np.stack([p[1] for p in problems]))
    C = torch.tensor(np.stack([p[2] for p in problems]))
    t_ours, (_, res) = timed(lambda: sparsity_constrained_ot(a, b, C, k, GAMMA, tol=TOL,
                                                             max_iter=MAX_ITER, log=True), 1)
    t_pot, outs = timed(lambda: [pot_solve(*p, k) for p in problems], 1)
    s_o = np.mean([semi_dual_value(*p, k, res.alpha[i].numpy())
                   for i, p in enumerate(problems)])
    s_p = np.mean([semi_dual_value(*p, k, out[1]) for p, out in zip(problems, outs, strict=True)])
    return (f"| {count}×{m} batched | {k} | {t_pot:.3f} | {t_ours:.3f} | {t_pot / t_ours:.1f} | "
            f"{max(o[2] for o in outs)} | {res.n_iter} | {s_p:.7f} | {s_o:.7f} | | | | | | |")


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
    print("| m = n | k | POT s | regzoo s | POT / regzoo | POT it | regzoo it | S(α) POT "
          "| S(α) regzoo | gap POT | gap regzoo | row err POT | row err regzoo | max nnz POT "
          "| max nnz regzoo |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    if args.quick:
        cases = [(100, 2, 1), (100, 10, 1), (500, 10, 1)]
    else:
        cases = [(100, k, 3) for k in (1, 2, 5, 10, None)]
        cases += [(500, k, 1) for k in (2, 5, 10, None)]
        if args.large:
            cases.append((2000, 10, 1))
    with threadpool_limits(1):
        for m, k, repeats in cases:
            print(compare(m, k, repeats), flush=True)
        print(batched(100, 5, 4 if args.quick else 16), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
