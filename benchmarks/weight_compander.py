"""Weight Compander benchmark: training-step time with WC vs plain, and after folding.

One process, one thread, steps interleaved by ``regzoo.train.time_steps``; ratios are the figures
to quote (design.md §7). The paper reports 7-14 % slower training and no inference cost after
folding. Run: ``python benchmarks/weight_compander.py [--quick]`` or ``regzoo bench
weight_compander``.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.data import load_digits
from regzoo.methods.weight_compander import WeightCompander
from regzoo.models import CNN, MLP
from regzoo.train import time_steps
from regzoo.train.timing import machine_line


def build(kind: str, variant: str) -> nn.Module:
    torch.manual_seed(0)
    model = MLP(64, 10, hidden=(512, 512)) if kind == "MLP" else CNN((8, 8), 10)
    if variant != "plain":
        handle = WeightCompander.apply(model, learn=variant == "learned")
        if variant == "folded":
            handle.merge()
    return model


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 5 if args.quick else 30
    data = load_digits(seed=0)
    print(f"{machine_line()}\n")
    print("| model | batch | plain µs | WC fixed / plain | WC learned / plain | folded / plain |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in ("MLP", "CNN"):
        for batch in (64, 128):
            x, y = data.x_train[:batch], data.y_train[:batch]
            steps = {}
            for variant in ("plain", "fixed", "learned", "folded"):
                model = build(kind, variant)
                optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

                def step(model: nn.Module = model, optimizer=optimizer, x=x, y=y) -> None:
                    optimizer.zero_grad(set_to_none=True)
                    F.cross_entropy(model(x), y).backward()
                    optimizer.step()

                steps[variant] = step
            t = time_steps(steps, repeats=repeats, inner=3)
            print(f"| {kind} | {batch} | {t['plain'] * 1e6:.0f} | {t['fixed'] / t['plain']:.3f} "
                  f"| {t['learned'] / t['plain']:.3f} | {t['folded'] / t['plain']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
