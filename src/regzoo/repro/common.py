"""Pieces several reproductions share."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_positive_int, check_range
from regzoo.data.batches import TensorBatches
from regzoo.data.transfer import Task
from regzoo.metrics import accuracy, predict_logits
from regzoo.models.small import MLP
from regzoo.train.loop import fit


class IndexedCrossEntropy(nn.Module):
    """Cross-entropy (optionally label-smoothed) with the criterion signature.

    ``forward(logits, target, index)`` ignores ``index``, so a baseline arm plugs in where ELR
    or PS-KD does.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                index: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)


def pretrain_mlp(task: Task, *, seed: int, hidden: Sequence[int] = (256, 256), epochs: int = 60,
                 lr: float = 1e-3, batch_size: int = 64, device: str | torch.device | None = None,
                 progress: bool = False) -> tuple[MLP, float]:
    """An MLP trained with Adam on ``task``'s training split; returns it and its test accuracy.

    The pretrained starting point of the fine-tuning reproductions (SORSA's spec anchor: an
    MLP 64-256-256-10 on the digits, test accuracy ≈ 0.97). Deterministic given ``seed``
    (initialisation and batch order) on a given device.
    """
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    check_range("lr", lr, 0.0, low_inclusive=False)
    torch.manual_seed(seed)
    model = MLP(task.num_features, task.num_classes, hidden=hidden).to(device or "cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    batches = TensorBatches(task.x_train, task.y_train, batch_size, seed=seed)

    def step(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        x, y, _ = batch
        return loss_fn(net(x), y)

    fit(model, batches, step, optimizer, epochs=epochs, distribute=False, progress=progress,
        desc="pretrain")
    model.eval()
    return model, accuracy(predict_logits(model, task.x_test), task.y_test)
