"""Solver-heuristics regularisation benchmark: regzoo's solver vs torchdiffeq and torchode.

1. Solver parity and speed on the same dynamics and tolerances: regzoo dopri5 vs torchdiffeq
   0.2.5 dopri5 (same controller constants: NFE and accepted steps must agree) and regzoo
   Tsit5 vs torchode 1.0.1 Tsit5 (torchode's integral controller; the whole batch is one
   torchode sample, so both take one step sequence). Forward+backward time ratio (interleaved
   medians; > 1: regzoo slower); the issue's goal is ≤ 1.2× torchdiffeq.
2. Regulariser overhead: a solve + ERNODE / SRNODE / combined penalty + backward vs the plain
   solve + backward on the same model, with the function evaluations counted (R_E and R_S add
   none; R_S adds two norms per step over the stored sixth stage).
3. Task A arms (the reproduction's circles model): time per training iteration relative to the
   unregularised arm, and the training NFE, over a short run from the same initialisation.

One process, one thread. Run ``python benchmarks/nde_solver_reg.py [--quick]`` or
``regzoo bench nde_solver_reg``.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from regzoo.methods.nde_solver_reg import SolverHeuristicsPenalty, solve
from regzoo.train.timing import machine_line, time_steps


class Counted(nn.Module):
    """An MLP vector field that counts its calls."""

    def __init__(self, dim: int, hidden: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden),
                                 nn.Tanh(), nn.Linear(hidden, dim))
        self.calls = 0
        self.accepted = 0

    def forward(self, t, y):
        self.calls += 1
        return self.net(y)

    def callback_accept_step(self, *args):
        self.accepted += 1


def stiffen(func: Counted) -> None:
    """Scale the field's weights so that a solve at tolerance 1e-6 takes about 14 steps."""
    with torch.no_grad():
        func.net[0].weight.mul_(2.0)
        func.net[-1].weight.mul_(20.0)


def problems(quick: bool):
    sizes = [(3, 32, 256)] if quick else [(3, 32, 256), (3, 32, 1024), (64, 100, 128)]
    for dim, hidden, batch in sizes:
        g = torch.Generator().manual_seed(dim + batch)
        func = Counted(dim, hidden, seed=dim)
        stiffen(func)
        yield f"MLP {dim}-{hidden}, batch {batch}", func, torch.randn(batch, dim, generator=g)


def ours(func, y0, method, tol):
    return solve(func, y0, torch.tensor([0.0, 1.0]), rtol=tol, atol=tol, method=method)


def peer_dopri5(func, y0, tol):
    import torchdiffeq

    return torchdiffeq.odeint(func, y0, torch.tensor([0.0, 1.0]), rtol=tol, atol=tol,
                              method="dopri5")


def peer_tsit5(func, y0, tol):
    import torchode

    shape = y0.shape
    term = torchode.ODETerm(lambda t, y: func(t, y.reshape(shape)).reshape(1, -1))
    solver = torchode.AutoDiffAdjoint(torchode.Tsit5(term=term),
                                      torchode.IntegralController(atol=tol, rtol=tol, term=term))
    sol = solver.solve(torchode.InitialValueProblem(y0=y0.reshape(1, -1),
                                                    t_eval=torch.tensor([[0.0, 1.0]])))
    return sol


def fwd_bwd(run):
    def step():
        out = run()
        out.pow(2).sum().backward()
    return step


def parity_rows(quick: bool, tol: float, repeats: int) -> list[str]:
    rows = []
    for name, func, y0 in problems(quick):
        func.calls = func.accepted = 0
        ours_trace = ours(func, y0, "dopri5", tol).trace
        func.calls = func.accepted = 0
        peer_dopri5(func, y0, tol)
        td = (func.calls, func.accepted)
        func.calls = 0
        ts = ours(func, y0, "tsit5", tol).trace
        to = peer_tsit5(func, y0, tol)
        to_nfe, to_acc = int(to.stats["n_f_evals"]), int(to.stats["n_accepted"])
        times = time_steps({
            "ours_dopri5": fwd_bwd(lambda f=func, y=y0: ours(f, y, "dopri5", tol).ys[-1]),
            "torchdiffeq": fwd_bwd(lambda f=func, y=y0: peer_dopri5(f, y, tol)[-1]),
            "ours_tsit5": fwd_bwd(lambda f=func, y=y0: ours(f, y, "tsit5", tol).ys[-1]),
            "torchode": fwd_bwd(lambda f=func, y=y0: peer_tsit5(f, y, tol).ys[0, -1]),
        }, repeats=repeats, inner=1, warmup=1)
        rows.append(
            f"| {name} | {ours_trace.nfe} / {td[0]} | {ours_trace.n_accepted} / {td[1]} | "
            f"{times['ours_dopri5'] / times['torchdiffeq']:.2f} | {ts.nfe} / {to_nfe} | "
            f"{ts.n_accepted} / {to_acc} | {times['ours_tsit5'] / times['torchode']:.2f} |")
    return rows


def overhead_rows(tol: float, repeats: int) -> list[str]:
    func = Counted(3, 32, seed=0)
    stiffen(func)
    y0 = torch.randn(256, 3, generator=torch.Generator().manual_seed(0))
    steps, nfes = {}, {}
    for reg in ("none", "error", "stiffness", "both"):
        penalty = None if reg == "none" else SolverHeuristicsPenalty(reg)

        def step(penalty=penalty):
            sol = ours(func, y0, "dopri5", tol)
            loss = sol.ys[-1].pow(2).mean()
            (loss if penalty is None else loss + penalty(sol.trace)).backward()
        func.calls = 0
        step()
        nfes[reg] = func.calls
        steps[reg] = step
    times = time_steps(steps, repeats=repeats, inner=1, warmup=1)
    return [f"| {reg} | {nfes[reg]} | {nfes[reg] - nfes['none']} | "
            f"{times[reg] / times['none']:.3f} |" for reg in ("error", "stiffness", "both")]


def arm_rows(iterations: int, passes: int) -> list[str]:
    import dataclasses

    from regzoo.repro.nde_solver_reg import NdeSolverRegConfig, train_arm

    config = dataclasses.replace(NdeSolverRegConfig(), steps=iterations, eval_every=iterations)
    lambdas = {"ernode": 1.0, "srnode": 1.0, "combined": 1.0, "ernode_mean": 10.0,
               "ernode_dt": 1.0}
    train_arm(dataclasses.replace(config, steps=2, eval_every=2), "circles", "unreg", 0, 0.0,
              torch.device("cpu"))  # warm-up, so the first timed arm is not penalised
    best: dict[str, float] = {}
    metrics: dict[str, dict] = {}
    for _ in range(passes):  # the fastest of the passes, arms interleaved, against machine noise
        for arm in config.arms:
            metrics[arm] = train_arm(config, "circles", arm, 0, lambdas.get(arm, 0.0),
                                     torch.device("cpu"))["metrics"]
            per_it = metrics[arm]["train_seconds"] / iterations
            best[arm] = min(best.get(arm, float("inf")), per_it)
    return [f"| {arm} | {metrics[arm]['train_nfe']:.1f} | {metrics[arm]['test_nfe']:.0f} | "
            f"{best[arm] * 1e3:.1f} | {best[arm] / best['unreg']:.2f} |" for arm in config.arms]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one problem, few repeats")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import torchdiffeq
    import torchode

    tol = 1e-6
    repeats = 3 if args.quick else 7
    print(f"torchdiffeq {torchdiffeq.__version__}, torchode {torchode.__version__}, "
          f"{machine_line()}; rtol = atol = {tol:g}, t ∈ [0, 1]")
    print("\n1. Solvers (ours / peer; time = ours ÷ peer, forward + backward)\n")
    print("| problem | dopri5 NFE | dopri5 accepted | time vs torchdiffeq | Tsit5 NFE | "
          "Tsit5 accepted | time vs torchode |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in parity_rows(args.quick, tol, repeats):
        print(row, flush=True)
    print("\n2. Regulariser overhead (dopri5, MLP 3-32, batch 256; time ÷ plain solve + "
          "backward)\n")
    print("| regulariser | NFE | extra NFE | time ratio |")
    print("|---|---:|---:|---:|")
    for row in overhead_rows(tol, repeats):
        print(row, flush=True)
    iterations = 10 if args.quick else 40
    print(f"\n3. Task A arms, {iterations} training iterations from seed 0's initialisation "
          "(λ₀ = 1, 10 for the mean ablation; training loop only; ratio ÷ unregularised)\n")
    print("| arm | mean training NFE | test NFE | ms / iteration | ratio |")
    print("|---|---:|---:|---:|---:|")
    for row in arm_rows(iterations, 1 if args.quick else 2):
        print(row, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
