"""Small real and procedural classification datasets, split and scaled deterministically.

* ``load_digits``: scikit-learn's bundled 8×8 handwritten digits (1797 images, 10 classes),
  pixel values 0–16 scaled to [0, 1] as in the ELR reproduction plan, stratified split by seed.
* ``load_mnist1d``: the ``mnist1d`` generator (Greydanus, 2020) run offline through
  ``make_dataset(get_dataset_args())`` — never its download path — giving 4000/1000 examples of
  40-dimensional signals in 10 classes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from regzoo.core.checks import check_choice, check_positive_int, check_range


@dataclass(frozen=True)
class ClassificationData:
    """A train/test split as float32 features and int64 labels (CPU tensors).

    ``y_train_clean`` keeps the original training labels when ``y_train`` has been corrupted
    (see :func:`regzoo.data.label_noise`); otherwise both are the same tensor.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    y_train_clean: torch.Tensor

    @property
    def num_features(self) -> int:
        """Number of input features per example (after flattening)."""
        return int(self.x_train[0].numel())

    def with_train_labels(self, labels: torch.Tensor) -> ClassificationData:
        """A copy whose training labels are ``labels``; the clean labels are kept."""
        if labels.shape != self.y_train.shape:
            raise ValueError(
                f"labels must have shape {tuple(self.y_train.shape)}, got {tuple(labels.shape)}"
            )
        return replace(self, y_train=labels.to(torch.int64))


def standardize(
    x_train: torch.Tensor, x_test: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardise both splits with the training split's per-feature mean and std."""
    mean = x_train.mean(dim=0, keepdim=True)
    std = x_train.std(dim=0, keepdim=True).clamp_min(eps)
    return (x_train - mean) / std, (x_test - mean) / std


def _split(
    name: str, x: np.ndarray, y: np.ndarray, seed: int, test_fraction: float, scale: str
) -> ClassificationData:
    from sklearn.model_selection import train_test_split

    check_range("test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False,
                high_inclusive=False)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    x_train = torch.as_tensor(x_tr, dtype=torch.float32)
    x_test = torch.as_tensor(x_te, dtype=torch.float32)
    if scale == "standard":
        x_train, x_test = standardize(x_train, x_test)
    y_train = torch.as_tensor(y_tr, dtype=torch.int64)
    return ClassificationData(
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=torch.as_tensor(y_te, dtype=torch.int64),
        num_classes=int(y.max()) + 1,
        y_train_clean=y_train,
    )


def load_digits(
    seed: int = 0, test_fraction: float = 1 / 3, scale: str = "unit"
) -> ClassificationData:
    """Digits with a stratified train/test split drawn by ``seed``.

    Args:
        seed: seed of the split (same seed, same split).
        test_fraction: share of the 1797 images held out (default 1/3: 1198 train / 599 test).
        scale: ``"unit"`` divides pixels by 16 (values in [0, 1]); ``"standard"`` standardises
            each pixel with the training split's statistics.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    check_choice("scale", scale, ("unit", "standard"))
    bunch = sklearn_digits()
    x = bunch.data.astype(np.float32)
    if scale == "unit":
        x = x / 16.0
    return _split("digits", x, bunch.target.astype(np.int64), seed, test_fraction, scale)


def load_mnist1d(
    seed: int = 0, num_samples: int = 5000, test_fraction: float = 0.2, scale: str = "standard"
) -> ClassificationData:
    """mnist1d generated offline (``num_samples`` signals of length 40), split by ``seed``.

    The generator's own seed stays at its default, so the examples are the canonical mnist1d
    ones; ``seed`` only draws the split.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    check_choice("scale", scale, ("unit", "standard"))
    check_positive_int("num_samples", num_samples, minimum=20)
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    raw = make_dataset(args)
    x = np.concatenate([raw["x"], raw["x_test"]]).astype(np.float32)
    y = np.concatenate([raw["y"], raw["y_test"]]).astype(np.int64)
    if scale == "unit":
        x = (x - x.min()) / (x.max() - x.min())
    return _split("mnist1d", x, y, seed, test_fraction, scale)
