"""A dense digits CNN (conv 32-64-64) trained once per split seed, cached by :mod:`regzoo.assets`.

FTWT (:mod:`regzoo.methods.ftwt`) fine-tunes a *pretrained* dense network with masks; its
reproduction (:mod:`regzoo.repro.ftwt`) starts every arm of a seed from this asset.

- :func:`digits_splits` ``(seed)``: scikit-learn's digits (pixels / 16) split by
  :func:`regzoo.data.classification.load_digits` ``(seed)`` into 1198 training and 599 test
  images, then a stratified ``val_fraction`` of the training images (drawn by the same seed) held
  out for validation: 958 / 240 / 599 by default.
- ``digits_cnn`` (asset): :class:`regzoo.models.small.CNN` ``((8, 8), 10, channels)`` — per block
  conv 3×3, BatchNorm, ReLU, max-pool 2 (8×8 → 4×4 → 2×2 → 1×1), then a linear head — trained
  with Adam on the training part of ``digits_splits(seed)``; the payload records validation and
  test accuracy. Building takes about half a minute on one core and prints its cost; later runs
  load it from the cache.

``dense_digit_cnn(**config)`` returns the cached network (CPU, eval mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo import assets
from regzoo.core.checks import check_range
from regzoo.data.batches import TensorBatches
from regzoo.data.classification import load_digits
from regzoo.models.small import CNN
from regzoo.train.loop import fit


@dataclass(frozen=True)
class DigitsSplits:
    """Flat digits (B, 64) in [0, 1] and labels: train / validation / test (CPU tensors)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def digits_splits(seed: int, val_fraction: float = 0.2) -> DigitsSplits:
    """``load_digits(seed)`` with a stratified ``val_fraction`` of its training part held out."""
    from sklearn.model_selection import train_test_split

    check_range("val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    data = load_digits(seed)
    index = torch.arange(data.y_train.shape[0]).numpy()
    train, val = train_test_split(
        index, test_size=val_fraction, stratify=data.y_train.numpy(), random_state=seed
    )
    train, val = torch.as_tensor(train), torch.as_tensor(val)
    return DigitsSplits(
        data.x_train[train],
        data.y_train[train],
        data.x_train[val],
        data.y_train[val],
        data.x_test,
        data.y_test,
    )


def build_cnn(channels: tuple[int, ...]) -> CNN:
    """The digits CNN ``CNN((8, 8), 10, channels)`` (draws its init from the global generator)."""
    return CNN((8, 8), 10, channels=channels)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in eval mode."""
    model.eval()
    return float((model(x).argmax(1) == y).double().mean())


def _build(config: Mapping[str, Any]) -> assets.Payload:
    splits = digits_splits(config["seed"], config["val_fraction"])
    torch.manual_seed(config["seed"])
    model = build_cnn(tuple(config["channels"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])

    def step(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y, _ = batch
        return F.cross_entropy(net(x), y)

    fit(
        model,
        TensorBatches(splits.x_train, splits.y_train, config["batch_size"], seed=config["seed"]),
        step,
        optimizer,
        epochs=config["epochs"],
        distribute=False,
        progress=False,
        desc="digits_cnn",
    )
    return {
        "state_dict": model.state_dict(),
        "channels": list(config["channels"]),
        "val_accuracy": accuracy(model, splits.x_val, splits.y_val),
        "test_accuracy": accuracy(model, splits.x_test, splits.y_test),
    }


def load_cnn(payload: assets.Payload) -> CNN:
    """The network of a ``digits_cnn`` payload (CPU, eval mode; draws no random numbers)."""
    with torch.random.fork_rng(devices=[]):
        model = build_cnn(tuple(int(c) for c in payload["channels"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval()


assets.register(
    assets.Asset(
        name="digits_cnn",
        summary="dense digits CNN (conv 32-64-64 with BatchNorm, ReLU, max-pool; linear head) "
        "trained with Adam on the training part of digits_splits(seed) (FTWT's dense model)",
        defaults={
            "seed": 0,
            "channels": (32, 64, 64),
            "epochs": 30,
            "lr": 3e-3,
            "batch_size": 32,
            "val_fraction": 0.2,
        },
        build=_build,
        check=load_cnn,
    )
)


def dense_digit_cnn(**config: Any) -> CNN:
    """The cached dense CNN (built on first use); ``config`` overrides the asset's defaults."""
    return load_cnn(assets.get("digits_cnn", config))


def dense_accuracy(**config: Any) -> dict[str, float]:
    """The cached CNN's validation and test accuracy (recorded at build)."""
    payload = assets.get("digits_cnn", config)
    return {"val": float(payload["val_accuracy"]), "test": float(payload["test_accuracy"])}
