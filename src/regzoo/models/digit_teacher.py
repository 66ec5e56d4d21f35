"""GigaTok's frozen "pretrained visual encoder" at digits scale, cached by :mod:`regzoo.assets`.

GigaTok aligns a tokenizer's decoder features with the patch features of a frozen DINOv2-B
(:mod:`regzoo.methods.gigatok`). Nothing can be downloaded here, so the stand-in is a small CNN
trained beforehand as a supervised digit classifier: its "semantics" are the ten class labels,
not the self-supervised image semantics of DINOv2. Its random-init twin is the control teacher
(same architecture and feature grid, no training), which separates "aligning to semantics" from
"aligning to any fixed convolutional feature".

- :class:`PatchTeacher`: conv 3×3 (1 → c₁), ReLU, max-pool 2, conv 3×3 (c₁ → c₂), ReLU on
  8×8 digits → a 4×4 grid of c₂-dimensional patch features (16 tokens of dim 64 by default; the
  spec's teacher); :meth:`PatchTeacher.forward` classifies from their average (the training
  head), :meth:`PatchTeacher.patch_features` returns the ``(B, 16, c₂)`` tokens.
- ``gigatok_digit_teacher`` (asset): the teacher trained with Adam on the training split of
  :func:`regzoo.data.classification.load_digits` ``(seed)`` (pixels in [0, 1]); the payload
  records its test accuracy. It is a different network, trained separately, from the
  ``digit_oracle`` that measures generated digits (:mod:`regzoo.generative.assets`), so the
  generation metrics never read the teacher's own feature space. Building takes a few seconds
  on one core; later runs load it from the cache.

``digit_teacher(**config)`` returns the cached trained teacher (CPU, eval mode, frozen);
``random_teacher(seed)`` the untrained control.
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


class PatchTeacher(nn.Module):
    """Two conv blocks on 8×8 digits: a 4×4 grid of patch features and a linear class head."""

    def __init__(self, channels: Sequence[int] = (32, 64), num_classes: int = 10) -> None:
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"channels must give two widths (c1, c2), got {tuple(channels)}")
        c1, c2 = (check_positive_int("channels", int(c)) for c in channels)
        self.width = c2
        self.body = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(c2, check_positive_int("num_classes", num_classes))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, c₂, 4, 4)`` features of digits given flat ``(B, 64)`` or as ``(B, 1, 8, 8)``."""
        return self.body(x.reshape(x.shape[0], 1, 8, 8))

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 16 patch tokens ``(B, 16, c₂)`` in row-major grid order."""
        return self.feature_map(x).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feature_map(x).mean((2, 3)))


def freeze(teacher: PatchTeacher) -> PatchTeacher:
    """Evaluation mode and no gradients: the teacher is never trained by the tokenizer."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _build(config: Mapping[str, Any]) -> assets.Payload:
    data = load_digits(config["seed"])
    torch.manual_seed(config["seed"])
    model = PatchTeacher(tuple(config["channels"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])

    def step(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y, _ = batch
        return F.cross_entropy(net(x), y)

    fit(model, TensorBatches(data.x_train, data.y_train, config["batch_size"],
                             seed=config["seed"]),
        step, optimizer, epochs=config["epochs"], distribute=False, progress=False,
        desc="gigatok_digit_teacher")
    model.eval()
    with torch.no_grad():
        accuracy = float((model(data.x_test).argmax(1) == data.y_test).float().mean())
    return {"state_dict": model.state_dict(), "channels": list(config["channels"]),
            "test_accuracy": accuracy}


def load_teacher(payload: assets.Payload) -> PatchTeacher:
    """The frozen teacher of a payload (CPU, eval mode; draws no random numbers)."""
    with torch.random.fork_rng(devices=[]):
        teacher = PatchTeacher(tuple(int(c) for c in payload["channels"]))
    teacher.load_state_dict(payload["state_dict"])
    return freeze(teacher)


assets.register(assets.Asset(
    name="gigatok_digit_teacher",
    summary="CNN conv 32-64 (4x4 grid of 64-d patch features) trained with Adam as a digit "
            "classifier on the training split: GigaTok's frozen semantic teacher at digits "
            "scale (not the metrics oracle)",
    defaults={"seed": 0, "channels": (32, 64), "epochs": 30, "lr": 1e-3, "batch_size": 64},
    build=_build,
    check=load_teacher,
))


def digit_teacher(**config: Any) -> PatchTeacher:
    """The cached trained teacher (built on first use, seconds); ``config`` overrides."""
    return load_teacher(assets.get("gigatok_digit_teacher", config))


def teacher_accuracy(**config: Any) -> float:
    """The trained teacher's test accuracy (recorded at build)."""
    return float(assets.get("gigatok_digit_teacher", config)["test_accuracy"])


def random_teacher(seed: int, channels: Sequence[int] = (32, 64)) -> PatchTeacher:
    """The control: the same architecture at PyTorch's default init drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        teacher = PatchTeacher(channels)
    return freeze(teacher)
