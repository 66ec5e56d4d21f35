"""Pieces several reproductions share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
