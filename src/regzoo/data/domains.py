"""Multi-domain datasets built offline from scikit-learn's digits, DomainBed-style.

* :func:`digits_cmnist`: Colored MNIST (Arjovsky et al. 2019; the IRM/Fishr/HGP scripts) on the
  8×8 digits. Binary label ``1[digit < 5]`` flipped with probability ``label_noise``; a colour
  equal to the label flipped with probability ``e`` per environment (0.2 and 0.1 for training,
  0.9 for testing), so colour predicts the label well in training and badly at test while the
  shape predicts it with accuracy ``1 − label_noise`` everywhere; the image is put in the colour's
  channel of two (the other zeroed) and flattened to 128 features. 500 images are held out for
  the test environment; the rest are enlarged with ``n_aug`` copies shifted by one pixel with
  Gaussian pixel noise, shuffled and split equally into the training environments.
* :func:`digits_domains`: RotatedMNIST-like domains: disjoint parts of the digits, upsampled to
  16×16 and rotated by each domain's angle (10 classes).
* :func:`leave_one_domain_out` and :func:`training_domain_validation`: DomainBed's protocol —
  train on all domains but one, test on it, and select models on a held-out fraction of the
  training domains (the "training-domain validation" model selection).

Every generator is deterministic given ``seed``; tensors are float32 features and labels int64
(multi-class) or float32 0/1 (binary, one logit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from regzoo.core.checks import check_positive_int, check_range


@dataclass(frozen=True)
class Domain:
    """One domain (environment): its name, features ``x`` and labels ``y``."""

    name: str
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class DomainSuite:
    """Training domains, test domains and the label space (``num_classes=1``: binary)."""

    name: str
    train: tuple[Domain, ...]
    test: tuple[Domain, ...]
    num_classes: int

    @property
    def num_features(self) -> int:
        """Features per example."""
        return int(self.train[0].x.shape[1])


def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return bunch.images.astype(np.float64) / 16.0, bunch.target.astype(np.int64)


def _shift(images: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Shift each image by (dy, dx) pixels with zero fill."""
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    for i, (a, b) in enumerate(zip(dy, dx)):
        src = images[i, max(0, -a):h - max(0, a), max(0, -b):w - max(0, b)]
        out[i, max(0, a):max(0, a) + src.shape[0], max(0, b):max(0, b) + src.shape[1]] = src
    return out


def _colour_environment(name: str, images: np.ndarray, digits: np.ndarray, flip: float,
                        label_noise: float, rng: np.random.Generator) -> Domain:
    labels = (digits < 5).astype(np.int64) ^ (rng.random(len(digits)) < label_noise)
    colours = labels ^ (rng.random(len(digits)) < flip)
    coloured = np.zeros((len(images), 2, *images.shape[1:]))
    coloured[np.arange(len(images)), colours] = images
    return Domain(name, torch.as_tensor(coloured.reshape(len(images), -1), dtype=torch.float32),
                  torch.as_tensor(labels, dtype=torch.float32))


def digits_cmnist(seed: int, *, label_noise: float = 0.25,
                  train_flips: Sequence[float] = (0.2, 0.1), test_flip: float = 0.9,
                  n_test: int = 500, n_aug: int = 1, noise_std: float = 0.05) -> DomainSuite:
    """Colored MNIST on the 8×8 digits (module docstring); binary labels, 128 features.

    Args:
        seed: draws the test hold-out, the augmentation, the environment split and the flips.
        label_noise: probability of flipping the shape label (IRM's 0.25).
        train_flips: colour-flip probability of each training environment (IRM's 0.2, 0.1).
        test_flip: colour-flip probability of the test environment (IRM's 0.9).
        n_test: images held out for the test environment.
        n_aug: shifted, noisy copies added per training image (0: none).
        noise_std: standard deviation of the copies' pixel noise (pixels in [0, 1]).
    """
    check_positive_int("seed", seed, minimum=0)
    check_range("label_noise", label_noise, 0.0, 0.5)
    check_range("test_flip", test_flip, 0.0, 1.0)
    if len(train_flips) < 1:
        raise ValueError("train_flips is empty; give one colour-flip probability per training "
                         "environment, e.g. (0.2, 0.1)")
    for e, flip in enumerate(train_flips):
        check_range(f"train_flips[{e}]", flip, 0.0, 1.0)
    check_positive_int("n_test", n_test)
    check_positive_int("n_aug", n_aug, minimum=0)
    check_range("noise_std", noise_std, 0.0)
    images, digits = _raw_digits()
    if n_test > len(digits) - 2 * len(train_flips):
        raise ValueError(f"n_test={n_test} leaves too few of the {len(digits)} digits for "
                         f"{len(train_flips)} training environments; use a smaller n_test")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits))
    test_idx, train_idx = order[:n_test], order[n_test:]
    train_images, train_digits = [images[train_idx]], [digits[train_idx]]
    for _ in range(n_aug):
        moves = np.array([(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0)])
        dy, dx = moves[rng.integers(len(moves), size=len(train_idx))].T
        noisy = _shift(images[train_idx], dy, dx) + rng.normal(0, noise_std,
                                                               (len(train_idx), 8, 8))
        train_images.append(np.clip(noisy, 0.0, 1.0))
        train_digits.append(digits[train_idx])
    pool_x, pool_y = np.concatenate(train_images), np.concatenate(train_digits)
    shuffled = rng.permutation(len(pool_y))
    parts = np.array_split(shuffled, len(train_flips))
    train = tuple(_colour_environment(f"flip{flip:g}", pool_x[p], pool_y[p], flip, label_noise,
                                      rng) for p, flip in zip(parts, train_flips))
    test = (_colour_environment(f"flip{test_flip:g}", images[test_idx], digits[test_idx],
                                test_flip, label_noise, rng),)
    return DomainSuite("digits_cmnist", train, test, num_classes=1)


def digits_domains(seed: int, *, angles: Sequence[float] = (0.0, 15.0, 30.0, 45.0),
                   upsample: int = 2) -> tuple[Domain, ...]:
    """Rotated-digits domains: disjoint random parts of the digits, one rotation angle each.

    Images are upsampled ``upsample``× (bilinear) and rotated about their centre (bilinear,
    zero fill), as RotatedMNIST rotates MNIST; features are flattened, labels the 10 digits.
    """
    from scipy import ndimage

    check_positive_int("seed", seed, minimum=0)
    check_positive_int("upsample", upsample)
    if len(angles) < 2:
        raise ValueError(f"angles must give at least 2 domains, got {tuple(angles)}")
    images, digits = _raw_digits()
    rng = np.random.default_rng(seed)
    domains = []
    for angle, part in zip(angles, np.array_split(rng.permutation(len(digits)), len(angles))):
        angle = float(angle)
        big = ndimage.zoom(images[part], (1, upsample, upsample), order=1)
        turned = ndimage.rotate(big, angle, axes=(1, 2), reshape=False, order=1)
        domains.append(Domain(f"rot{angle:g}", torch.as_tensor(
            np.clip(turned, 0.0, 1.0).reshape(len(part), -1), dtype=torch.float32),
            torch.as_tensor(digits[part])))
    return tuple(domains)


def leave_one_domain_out(domains: Sequence[Domain], test_index: int,
                         name: str = "domains") -> DomainSuite:
    """Train on every domain but ``domains[test_index]``, test on that one (10-class)."""
    if len(domains) < 3:
        raise ValueError(f"leave-one-domain-out needs at least 3 domains (2 to train), got "
                         f"{len(domains)}")
    if not 0 <= test_index < len(domains):
        raise ValueError(f"test_index must lie in [0, {len(domains) - 1}], got {test_index}")
    train = tuple(d for i, d in enumerate(domains) if i != test_index)
    classes = int(max(int(d.y.max()) for d in domains)) + 1
    return DomainSuite(f"{name}-{domains[test_index].name}", train, (domains[test_index],),
                       classes)


def training_domain_validation(domains: Sequence[Domain], seed: int, fraction: float = 0.2
                               ) -> tuple[tuple[Domain, ...], tuple[Domain, ...]]:
    """Split each training domain into (train, validation) parts, DomainBed's 80/20 default.

    Model selection by the validation parts' pooled accuracy is DomainBed's "training-domain
    validation": it never looks at the test domain.
    """
    check_range("fraction", fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    rng = np.random.default_rng(seed)
    fit, val = [], []
    for d in domains:
        order = torch.as_tensor(rng.permutation(len(d)))
        n_val = round(fraction * len(d))
        if n_val < 1 or n_val >= len(d):
            raise ValueError(f"domain {d.name!r} has {len(d)} examples, too few to hold out "
                             f"fraction={fraction}; use a larger domain or another fraction")
        fit.append(Domain(d.name, d.x[order[n_val:]], d.y[order[n_val:]]))
        val.append(Domain(d.name, d.x[order[:n_val]], d.y[order[:n_val]]))
    return tuple(fit), tuple(val)
