"""Classification data padded with pure-noise inputs: where feature selection can matter.

* :func:`noisy_digits`: scikit-learn's digits (64 pixels / 16, in [0, 1]) followed by
  ``noise_features`` columns of N(0, σ²) noise (default 192 at σ = 0.3, the scale of the
  pixels' spread), so three quarters of the 256 inputs carry nothing; a small stratified
  training set (default 300) and the rest for testing (HAG spec §5).
* :func:`noisy_mnist1d`: mnist1d signals (length 40, standardised) as channel 0 of a
  (C, 40) signal whose other ``noise_channels`` channels are N(0, 1) noise.

The noise is drawn from a CPU generator seeded by ``seed``, the same seed that draws the split,
so a seed is the same data on any machine. ``real`` marks the informative inputs of the
flattened features (``x.flatten(1)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from regzoo.core.checks import check_positive_int, check_range
from regzoo.data.classification import ClassificationData, load_digits, standardize

DIGITS_TOTAL = 1797
MNIST1D_TOTAL = 5000


@lru_cache(maxsize=1)
def _mnist1d_raw() -> tuple[np.ndarray, np.ndarray]:
    """mnist1d's canonical 5000 signals, generated offline once per process (seconds)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = MNIST1D_TOTAL
    raw = make_dataset(args)
    x = np.concatenate([raw["x"], raw["x_test"]]).astype(np.float32)
    y = np.concatenate([raw["y"], raw["y_test"]]).astype(np.int64)
    return x, y


@dataclass(frozen=True)
class NoisyFeatures:
    """A split whose inputs are real features plus noise; ``real[i]`` is True for real input i."""

    data: ClassificationData
    real: torch.Tensor
    shape: tuple[int, ...]
    """The per-example input shape: ``(features,)`` or ``(channels, length)``."""


def _noise(shape: tuple[int, ...], std: float, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator) * std


def noisy_digits(
    seed: int = 0, *, num_train: int = 300, noise_features: int = 192, noise_std: float = 0.3
) -> NoisyFeatures:
    """Digits with ``noise_features`` N(0, ``noise_std``²) columns appended; see the module."""
    check_positive_int("num_train", num_train, minimum=10)
    if num_train > DIGITS_TOTAL - 10:
        raise ValueError(
            f"num_train must leave at least 10 test images of {DIGITS_TOTAL}, got {num_train}"
        )
    check_positive_int("noise_features", noise_features, minimum=0)
    check_range("noise_std", noise_std, 0.0, low_inclusive=False)
    base = load_digits(seed=seed, test_fraction=1 - num_train / DIGITS_TOTAL)
    generator = torch.Generator().manual_seed(seed)
    x_train = torch.cat(
        [base.x_train, _noise((base.x_train.shape[0], noise_features), noise_std, generator)], dim=1
    )
    x_test = torch.cat(
        [base.x_test, _noise((base.x_test.shape[0], noise_features), noise_std, generator)], dim=1
    )
    real = torch.cat(
        [
            torch.ones(base.num_features, dtype=torch.bool),
            torch.zeros(noise_features, dtype=torch.bool),
        ]
    )
    data = ClassificationData(
        name="digits+noise",
        x_train=x_train,
        y_train=base.y_train,
        x_test=x_test,
        y_test=base.y_test,
        num_classes=10,
        y_train_clean=base.y_train,
    )
    return NoisyFeatures(data, real, (x_train.shape[1],))


def noisy_mnist1d(
    seed: int = 0,
    *,
    num_train: int = 1000,
    num_test: int = 1000,
    noise_channels: int = 3,
    noise_std: float = 1.0,
) -> NoisyFeatures:
    """mnist1d as channel 0 of (1 + ``noise_channels``, 40) signals; see the module.

    ``num_train`` and ``num_test`` examples are drawn from mnist1d's canonical 5000 (the
    generator's default seed, as :func:`regzoo.data.load_mnist1d`) by a stratified split seeded
    by ``seed``; each signal position is standardised with the training split's statistics.
    The generated signals are cached per process.
    """
    from sklearn.model_selection import train_test_split

    check_positive_int("num_train", num_train, minimum=10)
    check_positive_int("num_test", num_test, minimum=10)
    if num_train + num_test > MNIST1D_TOTAL:
        raise ValueError(
            f"num_train + num_test must be at most 5000 (mnist1d's size), got "
            f"{num_train + num_test}"
        )
    check_positive_int("noise_channels", noise_channels, minimum=0)
    check_range("noise_std", noise_std, 0.0, low_inclusive=False)
    x, y = _mnist1d_raw()
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, train_size=num_train, test_size=num_test, stratify=y, random_state=seed
    )
    x_train, x_test = standardize(torch.as_tensor(x_tr), torch.as_tensor(x_te))
    y_train, y_test = torch.as_tensor(y_tr), torch.as_tensor(y_te)
    generator = torch.Generator().manual_seed(seed)
    length = x_train.shape[1]

    def stack(x: torch.Tensor) -> torch.Tensor:
        noise = _noise((x.shape[0], noise_channels, length), noise_std, generator)
        return torch.cat([x[:, None, :], noise], dim=1)

    real = torch.zeros(1 + noise_channels, length, dtype=torch.bool)
    real[0] = True
    data = ClassificationData(
        name="mnist1d+noise",
        x_train=stack(x_train),
        y_train=y_train,
        x_test=stack(x_test),
        y_test=y_test,
        num_classes=10,
        y_train_clean=y_train,
    )
    return NoisyFeatures(data, real.flatten(), (1 + noise_channels, length))
