r"""FTWT's masks: ground truth by activation mass or uniform fraction, predictor, masked block.

The rules and the predictor are those of the package docstring (:mod:`regzoo.methods.ftwt`):
filter scores a_k = max |o_k| over positions, shares â = a / Σa, the mass rule (S_k − τ ≤ δ, the
filter crossing τ dropped, or kept with ``crossing="keep"``), the uniform rule (⌊τ·C⌋ lowest and
the dead filters dropped), the straight-through binariser, the pooled linear predictor, and
:class:`MaskedBlock` (Conv/Linear → BatchNorm → activation, output ⊙ mask).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_choice, check_range

MODES = ("decoupled", "joint")
GT_TYPES = ("mass", "uniform")
CROSSING = ("drop", "keep")
PREDICTOR_INITS = ("dense", "random")
COUNTING = ("exact", "official")
DELTA = 1e-5
"""The official tolerance δ of the ground-truth rules."""
DENSE_BIAS = 1.0
"""Predictor bias of ``predictor_init="dense"`` (zero weights): σ(1) ≈ 0.73 > ½, every mask on."""

CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LAYER_TYPES: tuple[type[nn.Module], ...] = (*CONV_TYPES, nn.Linear)
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)

MaskRule = Callable[[torch.Tensor], torch.Tensor]
"""A forced mask: the block's output (B, C, ...) → a {0, 1} mask (B, C)."""


def check_threshold(threshold: object) -> float:
    """τ as a float, or a clear error unless it is a real number in (0, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(
            f"threshold must be a real number in (0, 1], got {type(threshold).__name__} "
            f"{threshold!r}"
        )
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(
            f"threshold must lie in (0, 1] (the kept share of activation mass, or the dropped "
            f"fraction with gt_type='uniform'), got {threshold}; e.g. threshold=0.9"
        )
    return float(threshold)


def filter_scores(output: torch.Tensor) -> torch.Tensor:
    """a_k = max over positions of |o_k|: (B, C, ...) → (B, C) (a (B, C) output is its |o|)."""
    if output.ndim < 2:
        raise ValueError(f"output must have shape (B, C, ...), got {tuple(output.shape)}")
    return output.detach().abs().flatten(2).amax(2) if output.ndim > 2 else output.detach().abs()


def mass_ground_truth(
    output: torch.Tensor, threshold: float, *, crossing: str = "drop"
) -> torch.Tensor:
    """The mass rule's {0, 1} mask (B, C) of a block output (B, C, ...) (module docstring).

    ``crossing="drop"`` keeps filter k when S_k − τ ≤ δ (official); ``"keep"`` when
    S_{k−1} < τ − δ, i.e. also the filter whose share crosses τ. τ = 1 keeps â_k > δ.
    """
    threshold = check_threshold(threshold)
    check_choice("crossing", crossing, CROSSING)
    scores = filter_scores(output)
    total = scores.sum(1, keepdim=True)
    share = torch.where(total > 0, scores / total.clamp_min(torch.finfo(scores.dtype).tiny), 0.0)
    if threshold == 1.0:
        return (share > DELTA).to(output.dtype)
    ordered, order = torch.sort(share, dim=1, descending=True, stable=True)
    cumulative = torch.cumsum(ordered, dim=1)
    if crossing == "drop":
        kept = cumulative - threshold <= DELTA
    else:
        kept = (cumulative - ordered) - threshold < -DELTA
    mask = torch.zeros_like(share, dtype=torch.bool).scatter(1, order, kept)
    return (mask & (total > 0)).to(output.dtype)


def uniform_ground_truth(output: torch.Tensor, fraction: float) -> torch.Tensor:
    """The uniform rule's {0, 1} mask (B, C): drop the ⌊fraction·C⌋ lowest scores and dead ones."""
    fraction = check_threshold(fraction)
    scores = filter_scores(output)
    keep = scores > DELTA
    dropped = int(fraction * scores.shape[1])
    if dropped:
        lowest = torch.sort(scores, dim=1, stable=True).indices[:, :dropped]
        keep = keep.scatter(1, lowest, False)
    return keep.to(output.dtype)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, probabilities: torch.Tensor, threshold: float) -> torch.Tensor:
        return (probabilities > threshold).to(probabilities.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def straight_through_binarize(probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """1[p > threshold] in the forward pass, the identity in the backward pass (official STE)."""
    if not isinstance(probabilities, torch.Tensor) or not probabilities.is_floating_point():
        raise TypeError("probabilities must be a floating-point tensor")
    return _StraightThrough.apply(probabilities, check_range("threshold", threshold, 0.0, 1.0))


class MaskPredictor(nn.Module):
    """Adaptive average pool to d^n, optional softmax, linear C_in·d^n → C (official 1×1 conv)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        spatial_dims: int,
        *,
        pool: int = 1,
        softmax: bool = True,
        init: str = "dense",
    ) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.pool = pool
        self.softmax = softmax
        self.linear = nn.Linear(in_channels * pool**spatial_dims, out_channels)
        if init == "dense":
            with torch.no_grad():
                self.linear.weight.zero_()
                self.linear.bias.fill_(DENSE_BIAS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial_dims:
            pooling = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)
            x = pooling[self.spatial_dims - 1](x, self.pool)
        x = x.flatten(1)
        if self.softmax:
            x = torch.softmax(x, dim=1)
        return self.linear(x)

    def macs(self) -> int:
        """Multiply–accumulates of one prediction (the linear map; pooling adds not counted)."""
        return self.linear.in_features * self.linear.out_features


@dataclass
class BlockRecord:
    """What a masked block saw in its last forward pass (detached except ``logits``)."""

    logits: torch.Tensor | None
    ground_truth: torch.Tensor
    mask: torch.Tensor
    output_shape: tuple[int, ...]


class MaskedBlock(nn.Module):
    """Conv/Linear → optional BatchNorm → optional activation, its output masked per input."""

    def __init__(
        self,
        layer: nn.Module,
        norm: nn.Module | None,
        activation: nn.Module | None,
        predictor: MaskPredictor,
        *,
        threshold: float,
        gt_type: str,
        crossing: str,
        mode: str,
        straight_through: bool,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.norm = norm
        self.activation = activation
        self.predictor = predictor
        self.threshold = threshold
        self.gt_type = gt_type
        self.crossing = crossing
        self.mode = mode
        self.straight_through = straight_through
        self.forced: MaskRule | None = None
        self.last: BlockRecord | None = None

    def ground_truth(self, output: torch.Tensor) -> torch.Tensor:
        """m* of an unmasked block output (B, C, ...)."""
        if self.gt_type == "mass":
            return mass_ground_truth(output, self.threshold, crossing=self.crossing)
        return uniform_ground_truth(output, self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, nn.Linear) and x.ndim != 2:
            raise ValueError(
                f"a masked Linear block takes (B, features) inputs, got shape "
                f"{tuple(x.shape)}; flatten the input first"
            )
        out = self.layer(x)
        if self.norm is not None:
            out = self.norm(out)
        if self.activation is not None:
            out = self.activation(out)
        with torch.no_grad():
            truth = self.ground_truth(out)
        if self.forced is not None:
            logits = None
            with torch.no_grad():
                mask = self.forced(out.detach()).to(out.dtype)
        else:
            logits = self.predictor(x.detach() if self.mode == "decoupled" else x)
            if self.straight_through:
                mask = straight_through_binarize(torch.sigmoid(logits))
            else:
                mask = (logits.detach() > 0).to(out.dtype)
        self.last = BlockRecord(logits, truth, mask.detach(), tuple(out.shape))
        return out * mask.reshape(*mask.shape, *([1] * (out.ndim - 2)))

    def extra_repr(self) -> str:
        return (
            f"threshold={self.threshold}, gt_type={self.gt_type!r}, "
            f"crossing={self.crossing!r}, mode={self.mode!r}"
        )
