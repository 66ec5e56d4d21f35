"""GIFD benchmark: step time of the three arms, and the l1-ball projection (spec gifd.md §7).

One process, one thread, calls interleaved round-robin by ``regzoo.train.time_steps``; the
ratios are the figures to quote, absolute times are noise on a shared machine (design.md §7).

1. **Search step** of each arm of :mod:`regzoo.methods.gifd` — ``pixel`` (PixelInversion),
   ``latent`` (GIFDAttack, one stage) and ``gifd`` (three stages) — on the reproduction's FL
   model (5 854-parameter sigmoid CNN) and the digits DCGAN's architecture (untrained weights:
   the cost does not depend on them), 4 restarts, batch 1 and batch 4, for 1 and 10 observed
   gradients searched at once; against a plain training step (forward, backward, SGD) of the FL
   model on one batch. A call is a whole search of ``steps`` steps, so per-call set-up (label
   inference, the vectorised objective) is included and divided by the steps; the last column
   divides GIFD's step by the restarts searched at once (4 × observations).
2. **l1-ball projection** (:func:`regzoo.methods.gifd.project_l1_ball`, batched sort-based)
   against two direct computations on the same rows: a sort-based projection of one row at a
   time (how the official code calls its ``project_onto_l1_ball``, once per restart) and the
   soft threshold found by bisection (60 halvings, float64). Before timing, the three are
   checked to agree (max |diff| ≤ 1e-5).

Run: ``python benchmarks/gifd.py [--quick]`` or ``regzoo bench gifd [--quick]``.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.generative import DigitGenerator
from regzoo.methods.gifd import (
    GIFDAttack,
    GIFDConfig,
    PixelInversion,
    PixelInversionConfig,
    project_l1_ball,
)
from regzoo.train import time_steps
from regzoo.train.timing import machine_line

TOL = 1e-5
RESTARTS = 4


def fl_model() -> nn.Module:
    """The reproduction's attacked network (regzoo.repro.gifd.fl_model at initialisation)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 12, 5, 2, 2), nn.Sigmoid(), nn.Conv2d(12, 12, 5, 1, 2),
                         nn.Sigmoid(), nn.Flatten(), nn.Linear(192, 10)).eval()


def row_by_row(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Sort-based projection (Duchi et al. 2008) of one row at a time."""
    out = []
    for row in x:
        if float(row.abs().sum()) <= radius:
            out.append(row)
            continue
        magnitude = torch.sort(row.abs(), descending=True).values
        cumulative = magnitude.cumsum(0)
        ranks = torch.arange(1, row.numel() + 1, dtype=row.dtype)
        count = int(torch.nonzero(magnitude * ranks > cumulative - radius).max()) + 1
        theta = (cumulative[count - 1] - radius) / count
        out.append(torch.sign(row) * (row.abs() - theta).clamp_min(0))
    return torch.stack(out)


def bisection(x: torch.Tensor, radius: float, halvings: int = 60) -> torch.Tensor:
    """The soft threshold θ of Σ max(|v| − θ, 0) = r by bisection, all rows at once (float64)."""
    v = x.double()
    inside = v.abs().sum(1) <= radius
    low = torch.zeros(v.shape[0], dtype=torch.float64)
    high = v.abs().amax(1)
    for _ in range(halvings):
        theta = (low + high) / 2
        above = (v.abs() - theta[:, None]).clamp_min(0).sum(1) > radius
        low = torch.where(above, theta, low)
        high = torch.where(above, high, theta)
    projected = torch.sign(v) * (v.abs() - ((low + high) / 2)[:, None]).clamp_min(0)
    return torch.where(inside[:, None], v, projected).to(x.dtype)


def projection_table(quick: bool) -> list[str]:
    lines = ["| rows × size | batched µs | row-by-row µs | bisection µs | row-by-row/batched "
             "| bisection/batched |", "|---|---:|---:|---:|---:|---:|"]
    g = torch.Generator().manual_seed(0)
    # The digits DCGAN's features h₁ (64·2·2) and h₂ (40·4·4), for 4 and 40 trials.
    for rows, size in ((4, 256), (40, 256), (4, 640), (40, 640)):
        x = torch.randn(rows, size, generator=g)
        radius = 0.1 * float(x.abs().sum(1).mean())
        ours = project_l1_ball(x, radius)
        for name, other in (("row-by-row", row_by_row(x, radius)),
                            ("bisection", bisection(x, radius))):
            worst = float((ours - other).abs().max())
            if worst > TOL:
                raise SystemExit(f"FAIL: project_l1_ball and the {name} projection disagree "
                                 f"({rows}×{size}: max |diff| = {worst:.3g})")
        repeats, inner = (5, 5) if quick else (30, 20)
        s = time_steps({"batched": lambda x=x, r=radius: project_l1_ball(x, r),
                        "rows": lambda x=x, r=radius: row_by_row(x, r),
                        "bisection": lambda x=x, r=radius: bisection(x, r)},
                       repeats=repeats, inner=inner, warmup=3)
        lines.append(f"| {rows} × {size} | {s['batched'] * 1e6:.0f} | {s['rows'] * 1e6:.0f} | "
                     f"{s['bisection'] * 1e6:.0f} | {s['rows'] / s['batched']:.1f} | "
                     f"{s['bisection'] / s['batched']:.1f} |")
    return lines


def search_table(quick: bool) -> list[str]:
    model = fl_model()
    torch.manual_seed(1)
    generator = DigitGenerator().eval()
    steps = 15 if quick else 60
    lines = ["| batch | observations | plain step µs | pixel µs/step | latent µs/step | "
             "GIFD µs/step | pixel/plain | latent/plain | GIFD/plain | GIFD/pixel | "
             "GIFD per restart/plain |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    attacks = {
        "pixel": PixelInversion(model, (1, 8, 8), config=PixelInversionConfig(
            steps=steps, restarts=RESTARTS)),
        "latent": GIFDAttack(model, generator.stages, (32,), config=GIFDConfig(
            steps=steps, num_stages=1, restarts=RESTARTS)),
        "gifd": GIFDAttack(model, generator.stages, (32,), config=GIFDConfig(
            steps=steps // 3, restarts=RESTARTS)),
    }
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    for batch in (1, 4):
        for count in (1, 10):
            g = torch.Generator().manual_seed(batch)
            x = generator.sample(batch * count, generator=g).view(count, batch, 1, 8, 8)
            y = torch.stack([torch.randperm(10, generator=g)[:batch] for _ in range(count)])
            observations = [[t.detach() for t in torch.autograd.grad(
                F.cross_entropy(model(xa), ya), model.parameters())] for xa, ya in zip(x, y)]

            def plain(xa: torch.Tensor = x[0], ya: torch.Tensor = y[0]) -> None:
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(xa), ya).backward()
                optimizer.step()

            calls = {"plain": plain}
            for arm, attack in attacks.items():
                calls[arm] = (lambda a=attack, o=observations, y=y: a.invert_many(o, y))
            repeats = 2 if quick else 5
            s = time_steps(calls, repeats=repeats, inner=1, warmup=1)
            per = {arm: s[arm] / (3 * (steps // 3) if arm == "gifd" else steps)
                   for arm in attacks}
            lines.append(
                f"| {batch} | {count} | {s['plain'] * 1e6:.0f} | {per['pixel'] * 1e6:.0f} | "
                f"{per['latent'] * 1e6:.0f} | {per['gifd'] * 1e6:.0f} | "
                f"{per['pixel'] / s['plain']:.1f} | {per['latent'] / s['plain']:.1f} | "
                f"{per['gifd'] / s['plain']:.1f} | {per['gifd'] / per['pixel']:.2f} | "
                f"{per['gifd'] / (RESTARTS * count) / s['plain']:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    print(f"{machine_line()}{', --quick' if args.quick else ''}")
    projection = projection_table(args.quick)  # raises SystemExit on FAIL
    print(f"\n## l1-ball projection (agreement of all three ≤ {TOL:g}: PASS)\n")
    print("\n".join(projection))
    print("\n## Search step, 4 restarts per observed gradient (a call = a whole search, "
          "divided by its steps)\n")
    print("\n".join(search_table(args.quick)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
