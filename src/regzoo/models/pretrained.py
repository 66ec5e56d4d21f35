"""A small CNN pretrained on a drifted source domain, cached by :mod:`regzoo.assets`.

The DR-Tune reproduction (:mod:`regzoo.repro.dr_tune`) fine-tunes a pretrained encoder on
digits 5–9. Its starting point must be pretrained on something else, so that fine-tuning has to
move it (the semantic drift DR-Tune calibrates for): here digits 0–4 of scikit-learn's digits in
a shifted domain, contrast-inverted (x ↦ 1 − x) and rotated by 90°.

- :class:`DigitEncoder`: conv 3×3 (1 → c₁), BatchNorm, ReLU, max-pool 2, conv 3×3 (c₁ → c₂),
  BatchNorm, ReLU, global average pool → D = c₂ features (64 by default; the spec's encoder).
- ``drifted_digits_cnn`` (asset): the encoder and a throw-away linear head trained with Adam on
  the shifted training split of digits 0–4 of :func:`regzoo.data.load_digits` ``(seed)``; the
  payload records the shifted source test accuracy. Building takes a few seconds on one core and
  prints its cost; later runs load it from the cache.

``drifted_encoder(**config)`` returns the cached encoder (CPU, eval mode).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo import assets
from regzoo.core.checks import check_positive_int
from regzoo.data.batches import TensorBatches
from regzoo.data.classification import load_digits
from regzoo.train.loop import fit

SOURCE_CLASSES = (0, 1, 2, 3, 4)
"""The digits the source task has (the target task of the reproduction has 5–9)."""


class DigitEncoder(nn.Module):
    """Two conv blocks and a global average pool: 8×8 digits (flat or not) → (B, channels[-1])."""

    def __init__(self, channels: Sequence[int] = (32, 64)) -> None:
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"channels must give two widths (c1, c2), got {tuple(channels)}")
        c1, c2 = (check_positive_int("channels", int(c)) for c in channels)
        self.width = c2
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(x.shape[0], 1, 8, 8))


def drift(x: torch.Tensor) -> torch.Tensor:
    """The source domain's shift of flat 8×8 digits in [0, 1]: inverted, rotated by 90°."""
    images = 1.0 - x.reshape(-1, 8, 8)
    return torch.rot90(images, 1, dims=(1, 2)).reshape(x.shape[0], 64)


def source_task(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shifted digits 0–4: ``(x_train, y_train, x_test, y_test)`` of ``load_digits(seed)``."""
    data = load_digits(seed)
    keep_train = data.y_train < len(SOURCE_CLASSES)
    keep_test = data.y_test < len(SOURCE_CLASSES)
    return (drift(data.x_train[keep_train]), data.y_train[keep_train],
            drift(data.x_test[keep_test]), data.y_test[keep_test])


def _build(config: Mapping[str, Any]) -> assets.Payload:
    x_train, y_train, x_test, y_test = source_task(config["seed"])
    torch.manual_seed(config["seed"])
    encoder = DigitEncoder(tuple(config["channels"]))
    model = nn.Sequential(encoder, nn.Linear(encoder.width, len(SOURCE_CLASSES)))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])

    def step(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y, _ = batch
        return F.cross_entropy(net(x), y)

    fit(model, TensorBatches(x_train, y_train, config["batch_size"], seed=config["seed"]),
        step, optimizer, epochs=config["epochs"], distribute=False, progress=False,
        desc="drifted_digits_cnn")
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    return {"encoder_state_dict": encoder.state_dict(), "channels": list(config["channels"]),
            "source_test_accuracy": accuracy}


def load_encoder(payload: assets.Payload) -> DigitEncoder:
    """The encoder of a ``drifted_digits_cnn`` payload (CPU, eval mode; draws no random numbers)."""
    with torch.random.fork_rng(devices=[]):
        encoder = DigitEncoder(tuple(int(c) for c in payload["channels"]))
    encoder.load_state_dict(payload["encoder_state_dict"])
    return encoder.eval()


assets.register(assets.Asset(
    name="drifted_digits_cnn",
    summary="CNN encoder (conv 32-64, global average pool, D = 64) pretrained with Adam on "
            "digits 0-4 inverted and rotated by 90° (DR-Tune's drifted source)",
    defaults={"seed": 0, "channels": (32, 64), "epochs": 30, "lr": 3e-3, "batch_size": 32},
    build=_build,
    check=load_encoder,
))


def drifted_encoder(**config: Any) -> DigitEncoder:
    """The cached pretrained encoder (built on first use, seconds); ``config`` overrides."""
    return load_encoder(assets.get("drifted_digits_cnn", config))


def source_accuracy(**config: Any) -> float:
    """The pretrained encoder's test accuracy on its shifted source task (recorded at build)."""
    return float(assets.get("drifted_digits_cnn", config)["source_test_accuracy"])
