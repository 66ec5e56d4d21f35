"""PER benchmark: training-step time with the soft-equivariance penalty vs the plain step.

One process, one thread, steps interleaved by ``regzoo.train.time_steps``; ratios are the figures
to quote (design.md §7). Rows: the modified-inertia tensor network of the reproduction (4
regularised layers, 3 active types of 4) and the D4-on-digits network (3 layers, 3 types).
Columns: ``PER / plain`` (the penalty as one sparse quadratic form ``½ θᵀ Q θ``, the library's
path); ``per-layer / plain`` (the same value as a sum over layers and types of projections,
the official code's structure, here with our sparse block projectors); ``hard / plain`` (linear
layers parametrised as ``P W``, the EMLP-like λ → ∞ limit). The official implementation (jax,
objax, emlp) does not install here, so there is no peer column. Run:
``python benchmarks/soft_equivariance.py [--quick]`` or ``regzoo bench soft_equivariance``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.methods.soft_equivariance import SoftEquivariance, make_hard_equivariant
from regzoo.repro.soft_equivariance import (
    SoftEquivarianceConfig,
    TensorNet,
    d4_net,
    d4_projectors,
    inertia_groups,
    lift_inertia_inputs,
    modified_inertia,
    tensor_projectors,
)
from regzoo.train import time_steps
from regzoo.train.timing import machine_line


def _steps(build: Callable[[], tuple[nn.Module, list[nn.Linear], dict]], x: torch.Tensor,
           y: torch.Tensor) -> dict[str, Callable[[], None]]:
    steps = {}
    for variant in ("plain", "per", "per_layer", "hard"):
        torch.manual_seed(0)
        model, linears, projectors = build()
        names = list(projectors)
        strengths = {n: 0.0 if i == 0 and len(names) == 4 else 1.0 for i, n in enumerate(names)}
        penalty = SoftEquivariance(linears, projectors, strengths)
        if variant == "hard":
            make_hard_equivariant(linears, projectors[names[-1]])
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

        def step(model: nn.Module = model, penalty: SoftEquivariance = penalty,
                 optimizer: torch.optim.Optimizer = optimizer, variant: str = variant) -> None:
            loss = F.mse_loss(model(x), y)
            if variant == "per":
                loss = loss + penalty()
            elif variant == "per_layer":
                lam = penalty.strength()
                loss = loss + sum(lam[n] * v for n, v in penalty.values().items() if lam[n])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        steps[variant] = step
    return steps


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    repeats = 5 if args.quick else 20
    config = SoftEquivarianceConfig()
    print(f"{machine_line()}\n")
    print("| network | batch | #params | plain ms | PER / plain | per-layer / plain | "
          "hard / plain |")
    print("|---|---:|---:|---:|---:|---:|---:|")

    def inertia() -> tuple[nn.Module, list[nn.Linear], dict]:
        net = TensorNet(config.channels, config.blocks)
        return net, net.linears(), tensor_projectors(net, inertia_groups())

    def digits() -> tuple[nn.Module, list[nn.Linear], dict]:
        net = d4_net(config.b_copies)
        return net, [m for m in net if isinstance(m, nn.Linear)], d4_projectors(config.b_copies)

    cases = [("inertia tensor net", inertia, b) for b in ((256,) if args.quick else (256, 1024))]
    cases += [("D4 digits net", digits, b) for b in ((200,) if args.quick else (200, 1000))]
    for label, build, batch in cases:
        if build is inertia:
            x, y = modified_inertia(batch, seed=0)
            x = lift_inertia_inputs(x)
        else:
            x, y = torch.rand(batch, 64), torch.randn(batch, 1)
        params = sum(p.numel() for p in build()[0].parameters())
        t = time_steps(_steps(build, x, y), repeats=repeats, inner=3)
        print(f"| {label} | {batch} | {params} | {t['plain'] * 1e3:.2f} | "
              f"{t['per'] / t['plain']:.2f} | {t['per_layer'] / t['plain']:.2f} | "
              f"{t['hard'] / t['plain']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
