"""DR-Tune benchmark: training step over the plain fine-tuning step, and the amortised SVD.

One process, one thread, steps interleaved by ``regzoo.train.time_steps``; ratios are the figures
to quote (design.md §7). Goal from issue 21: the DR-Tune step ≤ 1.5× the fine-tuning step (one
extra no-grad forward of the frozen encoder, the head on K extra rows, the class shift, and a
D×D SVD every 10 steps). The second table times the semantic calibration of a K = 2048 queue
with and without the rotation at D = 64 and D = 2048: the rotation's share, and its cost
amortised over 10 steps as the official code runs it. No peer installs (the official code needs
torchvision and ImageNet checkpoints). Run: ``python benchmarks/dr_tune.py [--quick]`` or
``regzoo bench dr_tune``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.methods.dr_tune import DRTune, init_head, semantic_calibration
from regzoo.models.pretrained import DigitEncoder
from regzoo.train import time_steps
from regzoo.train.timing import machine_line


def training_steps(batch: int, queue: int, channels: tuple[int, int]
                   ) -> dict[str, Callable[[], None]]:
    """The fine-tuning step and DR-Tune's step on the same encoder, head and batch."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 64, generator=g)
    y = torch.randint(0, 5, (batch,), generator=g)
    steps = {}
    for name in ("fine-tuning", "DR-Tune"):
        torch.manual_seed(0)
        encoder = DigitEncoder(channels)
        head = init_head(nn.Linear(encoder.width, 5), generator=torch.Generator().manual_seed(0))
        dr = DRTune(encoder, copy.deepcopy(encoder), head, 5, queue_size=queue)
        dr.warm_up([(x, y)])
        optimizer = torch.optim.SGD(dr.param_groups(0.01, 0.1), momentum=0.9, nesterov=True)

        def step(dr: DRTune = dr, optimizer: torch.optim.Optimizer = optimizer,
                 plain: bool = name == "fine-tuning") -> None:
            features = dr.encoder(x)
            loss = (F.cross_entropy(dr.head(features), y) if plain
                    else dr.loss(features, x, y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        steps[name] = step
    return steps


def calibration_steps(width: int, queue: int, classes: int) -> dict[str, Callable[[], None]]:
    """Calibration of a (queue × width) queue with and without the Procrustes rotation."""
    g = torch.Generator().manual_seed(0)
    pretrained = torch.randn(queue, width, generator=g)
    downstream = torch.randn(queue, width, generator=g)
    labels = torch.randint(0, classes, (queue,), generator=g)
    weights = torch.randn(classes, width, generator=g)
    return {name: (lambda rotate=rotate: semantic_calibration(
        pretrained, downstream, labels, weights, 1.0, rotate=rotate))
        for name, rotate in (("shift only", False), ("rotation + shift", True))}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 5 if args.quick else 20
    print(f"{machine_line()}\n")
    print("| encoder | batch B | queue K | fine-tuning step (ms) | DR-Tune / fine-tuning | "
          "goal | met |")
    print("|---|---:|---:|---:|---:|---:|:---:|")
    for channels, batch, queue in (((32, 64), 16, 128), ((32, 64), 64, 2048),
                                   ((64, 256), 64, 2048)):
        t = time_steps(training_steps(batch, queue, channels), repeats=repeats, inner=10,
                       warmup=10)
        ratio = t["DR-Tune"] / t["fine-tuning"]
        print(f"| conv {channels[0]}-{channels[1]} (D = {channels[1]}) | {batch} | {queue} | "
              f"{t['fine-tuning'] * 1e3:.2f} | {ratio:.2f} | ≤ 1.5 | "
              f"{'yes' if ratio <= 1.5 else 'no'} |")
    print("\n| D | K | rotation + shift / shift only | amortised over 10 steps / shift only |")
    print("|---:|---:|---:|---:|")
    for width in (64, 2048):
        big = width > 512
        t = time_steps(calibration_steps(width, 2048, 10), repeats=3 if big else repeats,
                       inner=1 if big else 5, warmup=1)
        ratio = t["rotation + shift"] / t["shift only"]
        amortised = (t["rotation + shift"] + 9 * t["shift only"]) / (10 * t["shift only"])
        print(f"| {width} | 2048 | {ratio:.1f} | {amortised:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
