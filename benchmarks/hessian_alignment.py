"""Hessian-alignment benchmark: training-step time of each penalty over the plain ERM step.

One process, one thread, steps interleaved by ``regzoo.train.time_steps`` (design.md §7). Each
step is forward of the featurizer on every domain's batch, the mean domain loss plus the penalty,
backward and an Adam update. Goals from issue 7: HGP ≤ 3× the ERM step; Hutchinson with S probes
≤ (1 + S)× (each probe costs at most one extra backward). The spec measured HGP ≈ 1.6× ERM on
its CMNIST run. Run: ``python benchmarks/hessian_alignment.py [--quick]`` or ``regzoo bench
hessian_alignment``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.methods.hessian_alignment import CORAL, Fishr, HessianAlignment, IRMv1, VREx
from regzoo.models import MLP
from regzoo.train import time_steps
from regzoo.train.timing import machine_line


def penalties(head: nn.Module, probes: tuple[int, ...]) -> dict[str, nn.Module | None]:
    """Every penalty of the comparison, ERM first (no penalty)."""
    out: dict[str, nn.Module | None] = {"ERM": None, "IRMv1": IRMv1(head), "V-REx": VREx(head),
                                        "CORAL": CORAL(), "Fishr": Fishr(head),
                                        "HGP": HessianAlignment(head, "hgp")}
    for s in probes:
        out[f"Hutchinson S={s}"] = HessianAlignment(
            head, "hutchinson", probes=s, generator=torch.Generator().manual_seed(0))
    return out


def make_step(model: MLP, optimizer: torch.optim.Optimizer, xs: list[torch.Tensor],
              ys: list[torch.Tensor], penalty: nn.Module | None) -> Callable[[], None]:
    """One training step: mean domain loss (+ penalty), backward, Adam update."""
    def step() -> None:
        features = [model.features(x) for x in xs]
        loss = torch.stack([F.cross_entropy(model.head(f), y)
                            for f, y in zip(features, ys)]).mean()
        if penalty is not None:
            loss = loss + penalty(features, ys)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and settings")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 5 if args.quick else 20
    probes = (1, 10) if args.quick else (1, 10, 50)
    settings = [(3, 64, 256, 10)] if args.quick else [(3, 64, 256, 10), (2, 1297, 64, 10),
                                                       (3, 32, 512, 65)]
    print(f"{machine_line()}\n")
    for domains, batch, width, classes in settings:
        gen = torch.Generator().manual_seed(0)
        xs = [torch.randn(batch, 128, generator=gen) for _ in range(domains)]
        ys = [torch.randint(0, classes, (batch,), generator=gen) for _ in range(domains)]
        steps = {}
        torch.manual_seed(0)
        model = MLP(128, classes, hidden=(width, width))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        for name, penalty in penalties(model.head, probes).items():
            steps[name] = make_step(model, optimizer, xs, ys, penalty)
        t = time_steps(steps, repeats=repeats, inner=3, warmup=2)
        print(f"{domains} domains × batch {batch}, MLP 128-{width}-{width}-{classes} "
              f"(head {width * classes + classes} parameters); ERM step "
              f"{t['ERM'] * 1e3:.2f} ms\n")
        print("| penalty | step / ERM step | goal | met |")
        print("|---|---:|---:|:---:|")
        for name, seconds in t.items():
            if name == "ERM":
                continue
            goal = (1 + int(name.split("=")[1]) if name.startswith("Hutchinson")
                    else 3.0 if name == "HGP" else None)
            ratio = seconds / t["ERM"]
            met = "" if goal is None else ("yes" if ratio <= goal else "no")
            print(f"| {name} | {ratio:.2f} | {'' if goal is None else f'≤ {goal:g}'} | {met} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
