"""More is Better benchmark: eigenframework solver vs nested bisection vs Monte-Carlo simulation.

One process, one thread. Figures to quote are ratios and operation counts (design.md §7):

1. Solver time per (n, k, δ) point: our single Brent root in log γ (:func:`rf_risk`) against the
   official code's approach — an outer bisection on log κ around an inner bisection on γ, each
   200 steps (re-created from the spec's description, in numpy, not copied) — on the same
   points, with the largest difference of their predictions.
2. The cost of the same accuracy by Monte Carlo: trials needed for a 1 % standard error of the
   simulated test MSE (from the measured spread over trials) times the time per trial.
3. Simulator throughput: one eigendecomposition for all ridges against one linear solve per
   ridge (identical results), in trials per second.

Run: ``python benchmarks/more_is_better.py [--quick]`` or ``regzoo bench more_is_better``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np
import torch

from regzoo.methods.more_is_better import powerlaw_task, rf_risk, simulate_rf
from regzoo.train.timing import machine_line


def nested_bisection_risk(lam: np.ndarray, v2: np.ndarray, n: float, k: float, ridge: float,
                          noise: float, steps: int = 200) -> float:
    """The official solver's scheme: for each κ bisect γ on (A), then bisect log κ on (B)."""

    def gamma_of(kappa: float) -> float:
        lo, hi = -15.0, 15.0  # log10 γ, the official bracket
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            value = np.sum(lam / (lam + 10**mid)) + ridge / kappa - n
            lo, hi = (mid, hi) if value > 0 else (lo, mid)
        return 10 ** (0.5 * (lo + hi))

    lo, hi = -15.0, 15.0  # log10 κ
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        gamma = gamma_of(10**mid)
        value = np.sum(lam / (lam + gamma)) + k * 10**mid / gamma - k
        lo, hi = (lo, mid) if value > 0 else (mid, hi)
    kappa = 10 ** (0.5 * (lo + hi))
    gamma = gamma_of(kappa)
    learn = lam / (lam + gamma)
    z, q = learn.sum(), (learn**2).sum()
    omega = 1 / (1 - (q * (k - 2 * z) + z**2) / (n * (k - q)))
    coeff = (1 - learn) - kappa * k * learn / ((lam + gamma) * (k - q))
    return float(omega * (coeff @ v2 + noise))


def direct_solve_trial(lam: np.ndarray, v: np.ndarray, n: int, k: int, ridges: np.ndarray,
                       noise: float, gen: torch.Generator) -> np.ndarray:
    """One RF trial fitted with one dense solve per ridge (the plain way)."""
    lam_t, v_t = torch.from_numpy(lam), torch.from_numpy(v)
    x = torch.randn(n, lam.size, generator=gen, dtype=torch.float64)
    y = x @ v_t + math.sqrt(noise) * torch.randn(n, generator=gen, dtype=torch.float64)
    w = torch.randn(k, lam.size, generator=gen, dtype=torch.float64) / math.sqrt(k)
    feats = (x * lam_t.sqrt()) @ w.T
    gram = feats @ feats.T
    out = []
    for ridge in ridges:
        alpha = torch.linalg.solve(gram + ridge * torch.eye(n, dtype=torch.float64), y)
        beta = lam_t.sqrt() * (w.T @ (feats.T @ alpha))
        out.append(float(((beta - v_t) ** 2).sum()) + noise)
    return np.array(out)


def seconds(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    modes = 1000 if args.quick else 2000
    repeats = 3 if args.quick else 7
    noise = 0.5
    lam, v = powerlaw_task(modes, 1.5, 1.5)
    v2 = v**2
    print(f"{machine_line()}; task: M = {modes}, α = β = 1.5, "
          f"σ² = {noise}\n")

    print("## Solver per (n, k, δ) point\n")
    print("| n | k | δ | Brent µs | nested bisection µs | bisection / Brent | |Δ risk| / risk |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, k, ridge in ((256, 64, 1e-2), (256, 256, 1e-3), (256, 1024, 1.0)):
        ours = seconds(lambda n=n, k=k, r=ridge: rf_risk(lam, v, n, k, r, noise), repeats)
        theirs = seconds(lambda n=n, k=k, r=ridge: nested_bisection_risk(lam, v2, n, k, r, noise),
                         1)
        a = rf_risk(lam, v, n, k, ridge, noise).test_mse
        b = nested_bisection_risk(lam, v2, n, k, ridge, noise)
        print(f"| {n} | {k} | {ridge:g} | {ours * 1e6:.0f} | {theirs * 1e6:.0f} | "
              f"{theirs / ours:.0f}× | {abs(a - b) / a:.1e} |")

    print("\n## Same accuracy by Monte Carlo (1 % standard error of the test MSE)\n")
    print("| n | k | δ | theory µs | trial ms | std/mean over trials | trials for 1 % | "
          "Monte Carlo / theory |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    trials = 8 if args.quick else 20
    for n, k, ridge in ((256, 64, 1e-2), (256, 256, 1e-3), (256, 1024, 1.0)):
        ridges = np.array([ridge])
        theory = seconds(lambda n=n, k=k, r=ridge: rf_risk(lam, v, n, k, r, noise), repeats)
        started = time.perf_counter()
        sim = simulate_rf(lam, v, n, k, ridges, noise=noise, trials=trials, seed=0)
        trial = (time.perf_counter() - started) / trials
        values = sim.test_mse[:, 0, 0, 0]
        spread = float(values.std(ddof=1) / values.mean())
        needed = max(1, math.ceil((spread / 0.01) ** 2))
        print(f"| {n} | {k} | {ridge:g} | {theory * 1e6:.0f} | {trial * 1e3:.1f} | "
              f"{spread:.3f} | {needed} | {needed * trial / theory:.0f}× |")

    print("\n## Simulator: one eigh for all ridges vs one solve per ridge\n")
    print("| n | k | ridges | eigh trials/s | solve trials/s | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n, k, count in ((256, 256, 16), (256, 1024, 31), (512, 512, 31)):
        ridges = np.logspace(-3, 2, count)
        eigh = seconds(lambda n=n, k=k, r=ridges: simulate_rf(lam, v, n, k, r, noise=noise,
                                                              trials=1, seed=1), repeats)
        gen = torch.Generator().manual_seed(1)
        solve = seconds(lambda n=n, k=k, r=ridges, g=gen: direct_solve_trial(lam, v, n, k, r,
                                                                             noise, g), repeats)
        print(f"| {n} | {k} | {count} | {1 / eigh:.1f} | {1 / solve:.1f} | "
              f"{solve / eigh:.2f}× |")
    # Same draw, both fits: the results must agree (a check, not a timing).
    sim = simulate_rf(lam, v, 64, 32, np.array([0.1, 1.0]), noise=noise, trials=1, seed=5)
    gen = torch.Generator().manual_seed(5)
    direct = direct_solve_trial(lam, v, 64, 32, np.array([0.1, 1.0]), noise, gen)
    print(f"\nmax |eigh − solve| on one shared draw: "
          f"{np.max(np.abs(sim.test_mse[0, 0, 0] - direct)):.1e}")


if __name__ == "__main__":
    main(sys.argv[1:])
