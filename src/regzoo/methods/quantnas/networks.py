"""The QuantNAS super-resolution supernet, its argmax discretisation and the final network.

Layout (the official ``SearchArch`` shrunk to the spec's CPU search space, §5): a fixed
(unsearched) 8-bit LSQ conv3×3 head maps the image to C channels; ``body_cells`` residual cells,
each a chain of ``body_layers`` searched layers wrapped in :class:`~.ops.ADQ` (or a plain
residual); a global skip from the head's output over the body; a searched upsampling layer
C → s² channels and a pixel shuffle ×s. Every searched layer is a
:class:`~.ops.MixedQuantOp` in the supernet and a :class:`~.ops.QuantConv` at its chosen
(op, bits) in the final network; a genotype is the tuple of those choices, cells first, the
upsampling layer last. ``image_skip=True`` adds the bilinearly upsampled input to the output
(a global residual the official net does not have: the body then learns the missing detail
only, which short CPU runs need to get past interpolation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.methods.quantnas.ops import ADQ, PRIMITIVES, MixedQuantOp, QuantConv, check_bit_list
from regzoo.methods.quantnas.quantizers import check_bits

DEFAULT_OPS = ("conv1x1", "conv3x3", "conv5x5", "conv3x3_g2")
"""The spec's CPU search space (§5): simple convs at 1/3/5 and the 2-group conv3×3."""
HEAD_BITS = 8
"""The official support convs stay 8-bit LSQ convs in every mode (Corrections)."""

Genotype = tuple[tuple[str, int], ...]


def _check_structure(
    channels: int, body_cells: int, body_layers: int, scale: int, in_channels: int
) -> None:
    for name, value, low in (
        ("channels", channels, 1),
        ("body_cells", body_cells, 0),
        ("body_layers", body_layers, 1),
        ("scale", scale, 1),
        ("in_channels", in_channels, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")


def _super_resolve(
    x: torch.Tensor,
    head: nn.Module,
    cells: Sequence[Callable],
    adqs: nn.ModuleList,
    upsample: Callable,
    scale: int,
    in_channels: int,
    image_skip: bool,
) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(
            f"x must be an LR batch (N, {in_channels}, H, W), got "
            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}"
        )
    features = head(x)
    y = features
    for cell, adq in zip(cells, adqs):
        y = adq(y, cell)
    out = F.pixel_shuffle(upsample(y + features), scale)
    if image_skip:
        out = out + F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    return out


class QuantNASSuperNet(nn.Module):
    """The searchable SR net: architecture logits α (one vector per searched layer) + weights.

    Args:
        ops: candidate operations of the body layers; ``upsample_ops`` those of the upsampling
            layer (default: ``ops`` without ``"skip"``).
        bits: candidate bit-widths (official configs: [4, 8]).
        channels, body_cells, body_layers, scale, in_channels: the layout (module docstring).
        adq: ADQ around each cell (``False``: the official ``skip_mode``).
        image_skip: add the bilinearly upsampled input to the output (module docstring).
        mode, noise, detach_noisy, direct_form, train_steps: of every
            :class:`~.ops.MixedQuantOp`.

    ``forward(x, probs=None)``: ``probs`` is one probability vector per searched layer
    (default: the softmax of α). α starts at 0 (uniform p), as in the official controller.
    """

    def __init__(
        self,
        *,
        ops: Sequence[str] = DEFAULT_OPS,
        bits: Sequence[int] = (4, 8),
        channels: int = 16,
        body_cells: int = 2,
        body_layers: int = 2,
        scale: int = 2,
        upsample_ops: Sequence[str] | None = None,
        adq: bool = True,
        image_skip: bool = False,
        mode: str = "noise",
        noise: str = "gaussian",
        detach_noisy: bool = False,
        direct_form: str = "shared",
        train_steps: bool = True,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        _check_structure(channels, body_cells, body_layers, scale, in_channels)
        self.bits = check_bit_list("bits", bits)
        self.scale, self.in_channels, self.channels = scale, in_channels, channels
        if upsample_ops is None:
            upsample_ops = tuple(op for op in ops if PRIMITIVES.get(op, 0) is not None)
        options = {
            "mode": mode,
            "noise": noise,
            "detach_noisy": detach_noisy,
            "direct_form": direct_form,
            "train_steps": train_steps,
        }
        self.head = QuantConv(in_channels, channels, "conv3x3", HEAD_BITS, train_steps=train_steps)
        self.cells = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        MixedQuantOp(channels, channels, ops, self.bits, **options)
                        for _ in range(body_layers)
                    ]
                )
                for _ in range(body_cells)
            ]
        )
        self.adqs = nn.ModuleList([ADQ(channels, enabled=adq) for _ in range(body_cells)])
        self.upsample = MixedQuantOp(
            channels, in_channels * scale**2, upsample_ops, self.bits, **options
        )
        self.alphas = nn.ParameterList(
            [nn.Parameter(torch.zeros(layer.num_choices)) for layer in self.searched_layers()]
        )
        self.structure = {
            "channels": channels,
            "body_cells": body_cells,
            "body_layers": body_layers,
            "scale": scale,
            "adq": adq,
            "image_skip": image_skip,
            "in_channels": in_channels,
        }
        self.image_skip = image_skip

    def searched_layers(self) -> list[MixedQuantOp]:
        """Every :class:`MixedQuantOp`, cells first, the upsampling layer last."""
        return [layer for cell in self.cells for layer in cell] + [self.upsample]

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture logits α."""
        return list(self.alphas)

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter but α (convs, LSQ steps, ADQ)."""
        arch = {id(p) for p in self.alphas}
        return [p for p in self.parameters() if id(p) not in arch]

    def probabilities(self) -> list[torch.Tensor]:
        """p_l = softmax(α_l) for every searched layer."""
        return [torch.softmax(a, dim=0) for a in self.alphas]

    def one_hot(self) -> list[torch.Tensor]:
        """The argmax (op, bit) of every layer as a one-hot probability vector."""
        return [F.one_hot(a.detach().argmax(), a.numel()).to(a.dtype) for a in self.alphas]

    def check_probs(self, probs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        probs = list(probs)
        layers = self.searched_layers()
        if len(probs) != len(layers):
            raise ValueError(
                f"probs must hold one vector per searched layer ({len(layers)}), got {len(probs)}"
            )
        for layer, p in zip(layers, probs):
            layer.check_probs(p)
        return probs

    def forward(self, x: torch.Tensor, probs: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        probs = self.probabilities() if probs is None else self.check_probs(probs)
        body = probs[:-1]
        cells = []
        for c, cell in enumerate(self.cells):
            chunk = body[c * len(cell) : (c + 1) * len(cell)]

            def run(
                z: torch.Tensor, cell: nn.ModuleList = cell, chunk: list[torch.Tensor] = chunk
            ) -> torch.Tensor:
                for layer, p in zip(cell, chunk):
                    z = layer(z, p)
                return z

            cells.append(run)
        return _super_resolve(
            x,
            self.head,
            cells,
            self.adqs,
            lambda z: self.upsample(z, probs[-1]),
            self.scale,
            self.in_channels,
            self.image_skip,
        )

    def expected_bitops(
        self, probs: Sequence[torch.Tensor], height: int, width: int
    ) -> torch.Tensor:
        """Σ over searched layers of Σ_{o,b} p(o,b)·FLOPs(o)·b on an (height, width) LR input."""
        probs = self.check_probs(probs)
        return sum(
            layer.expected_bitops(p, height, width)
            for layer, p in zip(self.searched_layers(), probs)
        )

    def genotype(self) -> Genotype:
        """The argmax (op, bits) of every searched layer (ties: the first, i.e. the lower index)."""
        out = []
        for layer, alpha in zip(self.searched_layers(), self.alphas):
            index = int(alpha.detach().argmax())
            out.append((layer.ops[index // len(layer.bits)], layer.bits[index % len(layer.bits)]))
        return tuple(out)

    def discretize(self, *, train_steps: bool = True) -> QuantNASNet:
        """A fresh :class:`QuantNASNet` of :meth:`genotype` (to train from scratch)."""
        return QuantNASNet(self.genotype(), train_steps=train_steps, **self.structure).to(
            self.alphas[0].device
        )


class QuantNASNet(nn.Module):
    """The final (discrete) network of a genotype: every layer one op at one bit-width.

    A genotype of ``body_cells · body_layers + 1`` pairs ``(op, bits)`` (bits 32: full
    precision). A uniform fixed net is ``(("conv3x3", b),) * n``.
    """

    def __init__(
        self,
        genotype: Sequence[tuple[str, int]],
        *,
        channels: int = 16,
        body_cells: int = 2,
        body_layers: int = 2,
        scale: int = 2,
        adq: bool = True,
        image_skip: bool = False,
        in_channels: int = 1,
        train_steps: bool = True,
    ) -> None:
        super().__init__()
        _check_structure(channels, body_cells, body_layers, scale, in_channels)
        genotype = tuple((op, bits) for op, bits in genotype)
        n = body_cells * body_layers + 1
        if len(genotype) != n:
            raise ValueError(
                f"genotype must have {n} (op, bits) pairs ({body_cells} cells × "
                f"{body_layers} layers + the upsampling layer), got {len(genotype)}"
            )
        for _, bits in genotype:
            check_bits("genotype bits", bits, allow_full=True)
        self.genotype = genotype
        self.scale, self.in_channels, self.image_skip = scale, in_channels, image_skip
        full = all(b == 32 for _, b in genotype)
        self.head = QuantConv(
            in_channels, channels, "conv3x3", 32 if full else HEAD_BITS, train_steps=train_steps
        )
        layers = iter(genotype)
        self.cells = nn.ModuleList(
            [
                nn.Sequential(
                    *[
                        QuantConv(channels, channels, *next(layers), train_steps=train_steps)
                        for _ in range(body_layers)
                    ]
                )
                for _ in range(body_cells)
            ]
        )
        self.adqs = nn.ModuleList([ADQ(channels, enabled=adq) for _ in range(body_cells)])
        self.upsample = QuantConv(
            channels, in_channels * scale**2, *next(layers), train_steps=train_steps
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _super_resolve(
            x,
            self.head,
            list(self.cells),
            self.adqs,
            self.upsample,
            self.scale,
            self.in_channels,
            self.image_skip,
        )

    def bitops(self, height: int, width: int) -> float:
        """Σ MACs·b² over every conv (head included) on an (height, width) LR input."""
        convs = [self.head, *[c for cell in self.cells for c in cell], self.upsample]
        return float(sum(c.bitops(height, width) for c in convs))
