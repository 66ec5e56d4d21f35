"""CoLiDE benchmark: wall time and SHD of regzoo's CoLiDE-EV/NV vs DAGMA (PyPI ``dagma``).

Same data (seeded linear SEM, heteroscedastic Gaussian noise, ER graphs, n = 1000), same path
(T = 4, s = (1, .9, .8, .7), lr 3e-4) and two budgets:

* ``fixed``: 4 stages × ``iters`` Adam iterations with the convergence test disabled
  (checkpoint > budget), so both solvers run exactly the same number of iterations: the ratio
  is the per-iteration cost;
* ``official``: the official budget (2·10⁴ warm, 7·10⁴ final iterations) with the relative-
  objective stopping test of both codes (skipped with ``--quick``): wall time to a solution and
  its SHD after the same post-processing (threshold 0.3, then acyclic).

Each fit is timed twice, interleaved, and the faster run kept. One process, one thread.
Ratios below 1 mean regzoo is faster. Run: ``python benchmarks/colide.py [--quick]`` or
``regzoo bench colide``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from regzoo.data.sem import count_accuracy, simulate_linear_sem
from regzoo.methods.colide import CoLiDE, to_dag
from regzoo.train.timing import machine_line

S = (1.0, 0.9, 0.8, 0.7)


def fit(arm: str, X: np.ndarray, warm: int, final: int, checkpoint: int) -> np.ndarray:
    """One fit of ``arm`` (``ev``, ``nv`` or ``dagma``); returns the post-processed DAG."""
    if arm == "dagma":
        from dagma.linear import DagmaLinear

        with contextlib.redirect_stderr(io.StringIO()):
            W = DagmaLinear("l2").fit(X.copy(), lambda1=0.02, w_threshold=0.0, T=4, s=list(S),
                                      warm_iter=warm, max_iter=final, checkpoint=checkpoint)
        return to_dag(W, 0.3)
    return CoLiDE(arm, 0.05, T=4, s=S, warm_iter=warm, max_iter=final,
                  checkpoint=checkpoint).fit(X).adjacency_


def compare(d: int, degree: int, budget: str, iters: int) -> str:
    sem = simulate_linear_sem(d, 1000, degree * d, variance="nv", seed=0)
    if budget == "fixed":
        warm, final, checkpoint = iters, iters, 10**9
    else:
        warm, final, checkpoint = 20000, 70000, 1000
    seconds = {arm: float("inf") for arm in ("dagma", "ev", "nv")}
    shd = {}
    for _ in range(2):
        for arm in seconds:
            started = time.perf_counter()
            W = fit(arm, sem.X, warm, final, checkpoint)
            seconds[arm] = min(seconds[arm], time.perf_counter() - started)
            shd[arm] = count_accuracy(sem.W, W)["shd"]
    label = f"4×{iters}" if budget == "fixed" else "official"
    return (f"| {d} | ER{degree} | {label} | {seconds['dagma']:.2f} | "
            f"{seconds['ev'] / seconds['dagma']:.2f} | {seconds['nv'] / seconds['dagma']:.2f} | "
            f"{shd['dagma']:.0f} | {shd['ev']:.0f} | {shd['nv']:.0f} |")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="small graphs and a short fixed budget only (smoke run)")
    args = parser.parse_args(argv)
    try:
        import dagma  # noqa: F401
    except ImportError:
        raise SystemExit("colide benchmark needs dagma: pip install 'regzoo[peers]'") from None
    torch.set_num_threads(1)
    print(f"{machine_line()}\n")
    print("| d | graph | budget | DAGMA s | CoLiDE-EV / DAGMA | CoLiDE-NV / DAGMA "
          "| SHD DAGMA | SHD EV | SHD NV |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    if args.quick:
        cases = [(10, 2, "fixed", 500), (20, 4, "fixed", 500)]
    else:
        cases = [(10, 2, "fixed", 2000), (20, 4, "fixed", 2000), (50, 4, "fixed", 2000),
                 (100, 4, "fixed", 500), (20, 2, "official", 0), (50, 4, "official", 0)]
    with threadpool_limits(1):
        for d, degree, budget, iters in cases:
            print(compare(d, degree, budget, iters), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
