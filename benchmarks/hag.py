"""HAG benchmark: epoch time of plain, gated, routed and control training, as ratios.

One process, one thread, epochs interleaved by ``regzoo.train.time_steps``; ratios to the plain
MLP's epoch are the figures to quote. Gradient routing runs two forward/backward passes per
batch, so the ideal routed / plain ratio is ≈ 2; the one-pass control (gates in their own param
group) and the joint gates should sit near 1. Setting: the reproduction's noisy digits (300
training images, 256 inputs, MLP 256-256-128-10, batch 32) and its mnist1d + 3 noise channels
(1000 signals) with the tiny ViT. Run: ``python benchmarks/hag.py [--quick]`` or ``regzoo bench
hag``.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from regzoo.data.batches import TensorBatches
from regzoo.repro.hag import HAGReproConfig, build, load_setting
from regzoo.train import time_steps
from regzoo.train.timing import machine_line

MLP_ARMS = ("plain", "gates_joint", "gates_routed", "gates_routed_sum", "gates_control")
VIT_ARMS = ("vit_plain", "vit_routed")


def epoch_steps(config: HAGReproConfig, setting: str, arms: tuple[str, ...]) -> dict:
    data = load_setting(config, setting, 0)
    batches = TensorBatches(
        data.data.x_train, data.data.y_train, config.batch_size, seed=0, num_replicas=1, rank=0
    )
    steps = {}
    for arm in arms:
        model, _, router = build(config, arm, data, 0, torch.device("cpu"))

        def epoch(model=model, router=router) -> None:
            for x, y, _ in batches:
                router.step(lambda x=x, y=y: F.cross_entropy(model(x), y))

        steps[arm] = epoch
    return steps


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 3 if args.quick else 10
    config = HAGReproConfig()
    print(f"{machine_line()}\n")
    print(
        "| setting | plain ms/epoch | gates joint / plain | routed / plain | routed (sum) / "
        "plain | control / plain |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for setting in ("digits", "mnist1d"):
        t = time_steps(epoch_steps(config, setting, MLP_ARMS), repeats=repeats, inner=1, warmup=1)
        print(
            f"| {setting} MLP | {t['plain'] * 1e3:.1f} | "
            + " | ".join(f"{t[a] / t['plain']:.2f}" for a in MLP_ARMS[1:])
            + " |"
        )
    t = time_steps(epoch_steps(config, "mnist1d", VIT_ARMS), repeats=repeats, inner=1, warmup=1)
    print(
        f"\n| tiny ViT (mnist1d) | plain ms/epoch {t['vit_plain'] * 1e3:.1f} | gated + routed "
        f"/ plain {t['vit_routed'] / t['vit_plain']:.2f} |"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
