"""CoLiDE benchmark: wall time and SHD of regzoo's CoLiDE-EV/NV vs DAGMA (PyPI ``dagma``).

Same data (seeded linear SEM, heteroscedastic Gaussian noise, ER graphs, n = 1000), same path
(T = 4, s = (1, .9, .8, .7), lr 3e-4) and two budgets:

* ``fixed``: 4 stages × ``iters`` Adam iterations with the convergence test disabled
  (checkpoint > budget), so both solvers run exactly the same number of iterations: the ratio
  is the per-iteration cost;
* ``official``: the official budget (2·10⁴ warm, 7·10⁴ final iterations) with the relative-
  objective stopping test of both codes (skipped with ``--quick``): wall time to a solution and
  its SHD after the same post-processing (threshold 0.3, then acyclic).

Each fit is timed three times, interleaved, and the median kept. One process, one thread;
the time is the process's CPU time (on one thread it is the compute time, and a shared machine
disturbs it much less than wall time; the DAGMA column is its wall time, for scale). Ratios
below 1 mean regzoo is faster.

A second table puts the time of one iteration (fixed budget, fit time / iterations) against
the floor of any solver of this method: one LU factorisation of a d×d matrix (LAPACK getrf)
plus one d×d product; the gradient needs every entry of (sI − W∘W)⁻¹, so the inverse used
(LAPACK gesv against the identity, as regzoo does) plus the product is listed as the floor of
this algorithm. Run: ``python benchmarks/colide.py
[--quick]`` or ``regzoo bench colide``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time

import numpy as np
import torch
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from regzoo.data.sem import count_accuracy, simulate_linear_sem
from regzoo.methods.colide import CoLiDE, to_dag
from regzoo.methods.colide.solver import LapackInverse
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


def compare(d: int, degree: int, budget: str, iters: int) -> tuple[str, dict[str, float]]:
    """One row of the ratio table, and the median seconds of each arm."""
    sem = simulate_linear_sem(d, 1000, degree * d, variance="nv", seed=0)
    if budget == "fixed":
        warm, final, checkpoint = iters, iters, 10**9
    else:
        warm, final, checkpoint = 20000, 70000, 1000
    times: dict[str, list[float]] = {arm: [] for arm in ("dagma", "ev", "nv")}
    walls = []
    shd = {}
    for _ in range(3):
        for arm, runs in times.items():
            started, cpu = time.perf_counter(), time.process_time()
            W = fit(arm, sem.X, warm, final, checkpoint)
            runs.append(time.process_time() - cpu)
            if arm == "dagma":
                walls.append(time.perf_counter() - started)
            shd[arm] = count_accuracy(sem.W, W)["shd"]
    seconds = {arm: statistics.median(runs) for arm, runs in times.items()}
    label = f"4×{iters}" if budget == "fixed" else "official"
    row = (f"| {d} | ER{degree} | {label} | {statistics.median(walls):.2f} | "
           f"{seconds['ev'] / seconds['dagma']:.2f} | {seconds['nv'] / seconds['dagma']:.2f} | "
           f"{shd['dagma']:.0f} | {shd['ev']:.0f} | {shd['nv']:.0f} |")
    return row, seconds


def _median_us(call, repeats: int) -> float:
    """Median over 5 rounds of the mean CPU time of ``repeats`` calls, in µs."""
    rounds = []
    for _ in range(5):
        started = time.process_time()
        for _ in range(repeats):
            call()
        rounds.append((time.process_time() - started) / repeats * 1e6)
    return statistics.median(rounds)


def floor_row(d: int, iters: int, seconds: dict[str, float]) -> str:
    """Per-iteration CPU time of each solver against one LU + one product (µs, this machine)."""
    rng = np.random.default_rng(0)
    W = rng.normal(size=(d, d)) * (0.5 / np.sqrt(d))
    A = np.eye(d) - W * W
    repeats = max(100, 20_000_000 // d**3)
    lu = _median_us(lambda: lapack.dgetrf(A), repeats)
    product = _median_us(lambda: A @ W, repeats)
    invert = LapackInverse(d)
    inverse = _median_us(lambda: invert(W, 1.0), repeats)
    per_iter = {arm: seconds[arm] / (4 * iters) * 1e6 for arm in seconds}
    floor = lu + product
    return (f"| {d} | {lu:.0f} | {product:.0f} | {floor:.0f} | {inverse + product:.0f} | "
            f"{per_iter['ev']:.0f} ({per_iter['ev'] / floor:.1f}×) | "
            f"{per_iter['nv']:.0f} ({per_iter['nv'] / floor:.1f}×) | "
            f"{per_iter['dagma']:.0f} ({per_iter['dagma'] / floor:.1f}×) |")


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
    floors = []
    with threadpool_limits(1):
        for d, degree, budget, iters in cases:
            row, seconds = compare(d, degree, budget, iters)
            print(row, flush=True)
            if budget == "fixed":
                floors.append(floor_row(d, iters, seconds))
        print("\nPer iteration, CPU µs (× the floor LU + product), fixed budget, same process:\n")
        print("| d | LU (getrf) | d×d product | floor | inverse + product | CoLiDE-EV "
              "| CoLiDE-NV | DAGMA |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in floors:
            print(row, flush=True)

if __name__ == "__main__":
    main(sys.argv[1:])
