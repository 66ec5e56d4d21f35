"""Latent quantisation benchmark: the quantised models' steps over their unquantised baselines.

One process, one thread, steps interleaved round-robin by ``regzoo.train.time_steps`` (through
the reproduction's ``timing``, so the benchmark times exactly what the full run trains); the
ratios are the figures to quote, absolute times are noise on a shared machine.

1. A QLAE step (MLP 1024-256-256-8, scalar quantiser, element-wise clip, AdamW groups, batch
   128) over an AE step (same MLPs, continuous latent, Adam).
2. A QLInfoWGAN-GP period (five critic steps with the gradient penalty's double backward, then
   one generator step; codebook latents and quantised head, batch 64) over an InfoWGAN-GP
   period (uniform latents, continuous head).

The peer comparison of the shared quantiser layers (``vector-quantize-pytorch``'s
``VectorQuantize`` and ``FSQ``) is in ``benchmarks/gigatok.py``.

Run: ``python benchmarks/latent_quantization.py [--quick]`` or
``regzoo bench latent_quantization``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from regzoo.repro.latent_quantization import REPRODUCTION, LatentQuantizationReproConfig
from regzoo.train.timing import machine_line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models: a smoke run")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    config = (LatentQuantizationReproConfig.tiny() if args.quick
              else LatentQuantizationReproConfig.full())
    print(f"{machine_line()}{', --quick' if args.quick else ''}")
    t = REPRODUCTION.timing(config, torch.device("cpu"))
    print("\n| quantised | baseline | quantised ms | baseline ms | ratio |")
    print("|---|---|---:|---:|---:|")
    print(f"| QLAE step | AE step | {t['qlae_step_seconds'] * 1e3:.2f} | "
          f"{t['ae_step_seconds'] * 1e3:.2f} | {t['qlae_over_ae']:.3f} |")
    print(f"| QLInfoWGAN-GP period | InfoWGAN-GP period | "
          f"{t['qlinfowgan_period_seconds'] * 1e3:.2f} | {t['infowgan_period_seconds'] * 1e3:.2f} "
          f"| {t['qlinfowgan_over_infowgan']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
