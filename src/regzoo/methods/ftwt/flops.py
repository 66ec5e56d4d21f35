r"""FTWT's FLOPs (multiply–accumulate) counter over the executed chain of layers.

Exact counting (default): a convolution with kernel volume K, P output positions and G groups
costs Σ_g (active outputs in g) × (active inputs in g) × K × P, the active inputs being the
previous masked block's kept filters (a Linear layer: K = P = 1, inputs repeated over the
flattened positions), plus each predictor's linear map. ``counting="official"``: masked
convolutions only, active outputs × ⌊active inputs / G⌋ × K × P, predictors and Linear layers
left out of the numerator; the denominator is always the dense network's exact count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from regzoo.methods.ftwt.masks import MaskedBlock


@dataclass(frozen=True)
class MacsCount:
    """Per-example multiply–accumulates of a batch and the dense network's count."""

    per_example: torch.Tensor
    dense: float

    @property
    def reduction(self) -> float:
        """1 − mean MACs / dense MACs (the paper's "FLOPs reduction")."""
        return 1.0 - float(self.per_example.mean()) / self.dense


def count_along_chain(
    events: list[tuple[nn.Module, torch.Tensor | None, tuple[int, ...]]],
    batch: int,
    counting: str,
    dense: bool,
    device: torch.device,
) -> torch.Tensor:
    """Per-example MACs along the executed chain of Conv/Linear layers and masked blocks."""
    total = torch.zeros(batch, dtype=torch.float64, device=device)
    stream: torch.Tensor | None = None
    for module, mask, out_shape in events:
        layer = module.layer if isinstance(module, MaskedBlock) else module
        if isinstance(layer, nn.Linear):
            c_in, c_out, groups, kernel = layer.in_features, layer.out_features, 1, 1
            positions = math.prod(out_shape[1:-1]) if len(out_shape) > 2 else 1
        else:
            c_in, c_out, groups = layer.in_channels, layer.out_channels, layer.groups
            kernel, positions = math.prod(layer.kernel_size), math.prod(out_shape[2:])
        ones_in = torch.ones(batch, c_in, dtype=torch.float64, device=device)
        active_in = ones_in
        if stream is not None and not dense:
            if c_in % stream.shape[1]:
                raise ValueError(
                    f"cannot follow channels into {type(layer).__name__} with {c_in} inputs "
                    f"after a masked block of {stream.shape[1]} filters; the MAC counter needs a "
                    "chain of layers without skip connections"
                )
            active_in = stream.repeat_interleave(c_in // stream.shape[1], dim=1)
        masked = isinstance(module, MaskedBlock)
        active_out = (
            mask.to(torch.float64)
            if masked and not dense
            else torch.ones(batch, c_out, dtype=torch.float64, device=device)
        )
        if counting == "official" and not dense:
            if masked:
                total += (
                    active_out.sum(1)
                    * torch.floor(active_in.sum(1) / groups)
                    * (kernel * positions)
                )
        else:
            ins = active_in.reshape(batch, groups, -1).sum(2)
            outs = active_out.reshape(batch, groups, -1).sum(2)
            total += (ins * outs).sum(1) * (kernel * positions)
            if masked and not dense and module.forced is None:
                total += module.predictor.macs()
        stream = active_out if masked else None
    return total
