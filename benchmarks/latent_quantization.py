"""Latent quantisation benchmark: the quantised models' steps over their unquantised baselines.

One process, one thread, steps interleaved round-robin by ``regzoo.train.time_steps`` (through
the reproduction's ``timing``, so the benchmark times exactly what the full run trains); the
ratios are the figures to quote, absolute times are noise on a shared machine.

1. A QLAE step (MLP 1024-256-256-8, scalar quantiser, element-wise clip, AdamW groups, batch
   128) over an AE step (same MLPs, continuous latent, Adam).
2. A QLInfoWGAN-GP period (five critic steps with the gradient penalty's double backward, then
   one generator step; codebook latents and quantised head, batch 64) over an InfoWGAN-GP
   period (uniform latents, continuous head).
3. The metrics' cost at the two data sizes the issue names, 768 (mini-dSprites) and 3072 (with
   orientation) images, n_z = 2 × factors: InfoMEC on discrete codes (exact mutual information)
   and on continuous latents (KSG, k = 10), and DCI (gradient-boosted trees), as ratios to
   InfoMEC on 768 discrete codes; the latents are the sources plus noise, so every latent is
   active and informative (the metrics' worst case for pruning).

The peer comparison of the shared quantiser layers (``vector-quantize-pytorch``'s
``VectorQuantize`` and ``FSQ``) is in ``benchmarks/gigatok.py``.

Run: ``python benchmarks/latent_quantization.py [--quick]`` or
``regzoo bench latent_quantization``.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

import numpy as np
import torch

from regzoo.data.factors import mini_dsprites
from regzoo.methods.latent_quantization import dci, infomec
from regzoo.repro.latent_quantization import REPRODUCTION, LatentQuantizationReproConfig
from regzoo.train.timing import machine_line


def metric_costs(quick: bool) -> list[tuple[str, int, float]]:
    """(metric, N, seconds) of InfoMEC (discrete and continuous) and DCI at N = 768 and 3072."""
    rows = []
    for orientation in (False, True):
        sources = mini_dsprites(orientation=orientation).factors.numpy()
        rng = np.random.default_rng(0)
        if quick:  # a random eighth keeps every factor value
            sources = sources[rng.permutation(len(sources))[: len(sources) // 8]]
        dims = 2 * sources.shape[1]
        continuous = (np.repeat(sources, 2, axis=1)
                      + rng.normal(scale=0.5, size=(len(sources), dims)))
        codes = np.rint(continuous).astype(np.int64)
        runs = (("InfoMEC, discrete codes", partial(infomec, sources, codes, discrete=True)),
                ("InfoMEC, continuous (KSG)", partial(infomec, sources, continuous,
                                                      discrete=False)),
                ("DCI", partial(dci, sources, continuous)))
        for name, run in runs:
            started = time.perf_counter()
            run()
            rows.append((name, len(sources), time.perf_counter() - started))
    return rows


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
    rows = metric_costs(args.quick)
    base = rows[0][2]
    print("\n| metric | N images | time / InfoMEC on the first N's discrete codes |")
    print("|---|---:|---:|")
    for name, n, seconds in rows:
        print(f"| {name} | {n} | {seconds / base:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
