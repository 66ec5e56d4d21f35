"""Adapt-then-Unlearn benchmark: a stage-2 generator step with repulsion vs without.

The repulsion adds one pass over the generator's parameters per anchor (O(M·|θ|)); the step
it is compared with is the plain non-saturating generator step of the same DCGAN (50k
parameters, batch 16), both interleaved in one process by ``regzoo.train.time_steps``. The
issue's target is ≤ 1.10×. No peer library implements the method (the official code is
StyleGAN2-only, with CUDA ops), so there is no peer arm.

Run: ``python benchmarks/adapt_unlearn.py [--anchors M]`` or ``regzoo bench adapt_unlearn``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import torch

from regzoo.repro.adapt_unlearn import AdaptUnlearnReproConfig, AdaptUnlearnReproduction
from regzoo.train.timing import machine_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anchors", type=int, nargs="+", default=[1, 3, 5],
                        help="numbers of adapted models M to time")
    parser.add_argument("--quick", action="store_true", help="M = 5 only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(machine_line())
    for count in [5] if args.quick else args.anchors:
        config = dataclasses.replace(AdaptUnlearnReproConfig.full(), num_adapted=count)
        timing = AdaptUnlearnReproduction().timing(config, torch.device("cpu"))
        print(f"M = {count}: plain {timing['plain_step_seconds'] * 1e3:.2f} ms, repulsion "
              f"{timing['repulsion_step_seconds'] * 1e3:.2f} ms, ratio "
              f"{timing['repulsion_over_plain']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
