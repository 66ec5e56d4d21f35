"""An MLP and a small CNN, the models of the CPU-scale reproductions.

Both expose ``features(x)`` (the penultimate representation) and ``head`` (the last linear
layer), which penalties on features or on the classifier head use.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from regzoo.core.checks import check_positive_int, check_range


class MLP(nn.Module):
    """``in → hidden[0] → … → hidden[-1] → out`` with ReLU, inputs flattened.

    The ELR reproduction uses ``MLP(64, 10, hidden=(256, 256))`` (spec §5).
    """

    def __init__(self, in_features: int, num_classes: int,
                 hidden: Sequence[int] = (256, 256), dropout: float = 0.0) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("num_classes", num_classes)
        if not hidden:
            raise ValueError("hidden must list at least one layer width, e.g. (256, 256)")
        check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, check_positive_int("hidden width", h)), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, shape (B, hidden[-1])."""
        return self.body(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CNN(nn.Module):
    """Conv blocks (3×3 or width-3 kernels, BatchNorm, ReLU, max-pool 2) then a linear head.

    Args:
        in_shape: ``(H, W)`` for images (digits: (8, 8)) or ``(L,)`` for 1-D signals (mnist1d:
            (40,)); flat inputs are reshaped to it with one input channel.
        num_classes: number of outputs.
        channels: output channels of each block; each block halves the spatial size.
    """

    def __init__(self, in_shape: Sequence[int], num_classes: int,
                 channels: Sequence[int] = (32, 64)) -> None:
        super().__init__()
        if len(in_shape) not in (1, 2):
            raise ValueError(f"in_shape must be (H, W) or (L,), got {tuple(in_shape)}")
        self.in_shape = tuple(int(s) for s in in_shape)
        conv = nn.Conv2d if len(in_shape) == 2 else nn.Conv1d
        norm = nn.BatchNorm2d if len(in_shape) == 2 else nn.BatchNorm1d
        pool = nn.MaxPool2d if len(in_shape) == 2 else nn.MaxPool1d
        layers: list[nn.Module] = []
        width = 1
        for c in channels:
            layers += [conv(width, c, 3, padding=1), norm(c), nn.ReLU(), pool(2)]
            width = check_positive_int("channels", c)
        self.body = nn.Sequential(*layers, nn.Flatten())
        if any(s < 2 ** len(channels) for s in self.in_shape):
            raise ValueError(f"in_shape {self.in_shape} is too small for {len(channels)} "
                             f"pooling blocks (each halves it): use fewer channels entries")
        self.body.eval()  # the size probe must not touch BatchNorm's running statistics
        with torch.no_grad():
            flat = self.body(torch.zeros(1, 1, *self.in_shape)).shape[1]
        self.body.train()
        self.head = nn.Linear(flat, check_positive_int("num_classes", num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened output of the last conv block."""
        return self.body(x.reshape(x.shape[0], 1, *self.in_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
