"""Digits assets benchmark: Fréchet distance against scipy, and the DCGANs' quality over seeds.

1. ``frechet_distance`` (symmetric eigendecompositions, float64) against the usual direct
   computation with ``scipy.linalg.sqrtm(Σ_a Σ_b)`` on the oracle's 256-dimensional features of
   2000 real digits: the two values and the time of each (median of 5).
2. The quality gate of ``digit_dcgan``: for GAN seeds 0–4, trained on all ten classes and on
   0–4 only (GIFD's out-of-distribution prior), the Fréchet distance of 2000 EMA samples to the
   test split's digits of those classes and the range of the class shares, as the oracle labels
   them. The reference row is the distance between the training and test splits themselves.
   The gate in ``tests/generative/test_quality_gate.py`` (class shares, FD bound) is set from
   these runs. Building the ten GANs takes about 15 minutes on one core the first time
   (cached afterwards).

Run: ``python benchmarks/digit_assets.py [--quick]`` (``--quick``: seed 0 only).

Measured 2026-12-07 (2 shared cores, one thread): FD 26.788090 both ways (|difference| 2e-12),
regzoo 51 ms, scipy 483 ms (9.5× faster). Train/test split FD 9.39.

=======  ======================  ================================================
classes  FD over seeds 0–4        class shares over seeds 0–4
=======  ======================  ================================================
0–9      29.33–30.92              0.071–0.138 each
0–4      32.73–34.07              0.157–0.217 each; 5.9–6.9 % labelled 5–9
=======  ======================  ================================================

A build takes 60–130 s on one core (the oracle 6 s, test accuracy 0.995).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import scipy.linalg
import torch

from regzoo.data.classification import load_digits
from regzoo.generative.assets import digit_dcgan, digit_oracle
from regzoo.metrics import frechet_distance
from regzoo.train.timing import machine_line


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The direct formula with ``sqrtm(Σ_a Σ_b)`` (real part), as FID implementations do."""
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cross = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * cross))


def _median_seconds(call, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="GAN seed 0 only")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(machine_line())
    oracle = digit_oracle()
    data = load_digits(0)
    gan = digit_dcgan()
    with torch.no_grad():
        real = oracle.features(torch.cat([data.x_train, data.x_test])[:2000])
        fake = oracle.features(gan.generator_ema.sample(
            2000, generator=torch.Generator().manual_seed(1)))
    ours = frechet_distance(real, fake)
    direct = scipy_frechet(real.double().numpy(), fake.double().numpy())
    t_ours = _median_seconds(lambda: frechet_distance(real, fake))
    t_direct = _median_seconds(lambda: scipy_frechet(real.double().numpy(),
                                                     fake.double().numpy()))
    print(f"frechet_distance: regzoo {ours:.6f} in {t_ours * 1e3:.1f} ms, scipy sqrtm "
          f"{direct:.6f} in {t_direct * 1e3:.1f} ms (ratio scipy/regzoo "
          f"{t_direct / t_ours:.2f}x, |difference| {abs(ours - direct):.2e})")
    with torch.no_grad():
        split_fd = frechet_distance(oracle.features(data.x_train), oracle.features(data.x_test))
    print(f"reference: FD between the digits' training and test splits {split_fd:.2f}")
    print("classes    seed   FD to test split   class shares (min–max of the trained classes)")
    for classes in (tuple(range(10)), tuple(range(5))):
        for seed in (0,) if args.quick else range(5):
            gan = digit_dcgan(classes, seed=seed)
            shares = [gan.class_shares[c] for c in classes]
            outside = sum(gan.class_shares) - sum(shares)
            print(f"{classes[0]}–{classes[-1]}        {seed}      {gan.fd_test:7.2f}           "
                  f"{min(shares):.3f}–{max(shares):.3f} (other classes {outside:.3f})",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
