r"""Binary-mask mode of the sparse-update layer: a learned 0/1 mask over a frozen weight.

Each wrapped layer keeps its pretrained weight W frozen (out × in for a linear layer; the
kernel out × in/groups × k… for a convolution) and learns a real score tensor M of the same
shape. The layer uses

.. math::

    W_{\text{eff}} = W \odot B, \qquad B = \mathbb{1}[M > \tau],

so the update is ΔW = W ⊙ B − W = −W ⊙ (1 − B): a weight is either kept or zeroed, never
changed in value. B is a step function, so training uses the straight-through estimator of
Mallya et al. (Piggyback, 2018) that Regularized Mask Tuning adopts (Zheng et al., ICCV 2023,
arXiv 2307.15049, §3.1): the backward pass treats the binariser as the identity,

.. math::

    \frac{\partial L}{\partial M} := \frac{\partial L}{\partial B}
        = \frac{\partial L}{\partial W_{\text{eff}}} \odot W .

Initialisation (official ``modules/masklayers.py``): ``"ones"`` fills M with ``scale`` (1e-2), so
with the threshold τ = 5e-3 every B starts at 1 and the wrapped model equals the pretrained one
exactly; ``"uniform"`` draws M ~ U(0, scale), which masks the entries that start at or below τ.
The binariser is strict: M = τ gives B = 0 (the official code zeroes ``M.le(τ)``). Biases are
never masked. Convolutions (``nn.Conv1d/2d/3d``, :class:`BinaryMaskConv`) are masked the same
way: the official ViT masks its patch-embedding convolution (``ElementWiseConv2d`` in
``modules/visiontransformer.py``), its ResNet every convolution.

Cost: the mask scores double the memory of the wrapped weights (Adam state adds two more
copies); the forward pass adds one elementwise product per wrapped weight and runs a single
matrix product (not base + update). :meth:`BinaryMaskLinear.merge` writes W ⊙ B into the base
layer, so a merged or removed model runs at the plain model's cost. :func:`apply_binary_masks`
wraps the layers; :class:`BinaryMaskHandle` adds the masked fraction and a bit-packed
save/load of the binary masks (the official checkpoints store masks as bits).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from regzoo.adapters.base import (
    AdapterHandle,
    AdapterLayer,
    find_targets,
    is_linear_like,
    select_layers,
    wrap,
)
from regzoo.core.checks import check_choice, check_range

MASK_INITS: tuple[str, ...] = ("ones", "uniform")


class _BinarizeSTE(torch.autograd.Function):
    """B = 1[M > τ] forward; identity backward (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, threshold: float) -> torch.Tensor:
        return (scores > threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def binarize(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """``1[scores > threshold]`` in the scores' dtype, with a straight-through gradient."""
    return _BinarizeSTE.apply(scores, threshold)


class BinaryMaskLinear(AdapterLayer):
    """A frozen linear layer whose weight is used as W ⊙ 1[M > τ]; only M is trained.

    Args:
        base: the pretrained ``nn.Linear`` (or transformers ``Conv1D``); frozen.
        init: ``"ones"`` (M = scale everywhere, the official default) or ``"uniform"``
            (M ~ U(0, scale)).
        scale: the initial score (or the upper end of the uniform draw), 1e-2 officially.
        threshold: τ; B = 1[M > τ], 5e-3 officially.
        generator: random source of the ``"uniform"`` initialisation.
    """

    def __init__(self, base: nn.Module, *, init: str = "ones", scale: float = 1e-2,
                 threshold: float = 5e-3, generator: torch.Generator | None = None) -> None:
        super().__init__(base)
        self.init = check_choice("init", init, MASK_INITS)
        self.scale = check_range("scale", scale, 0.0, low_inclusive=False)
        self.threshold = check_range("threshold", threshold)
        weight = self.weight_matrix()
        scores = torch.full(weight.shape, self.scale, dtype=weight.dtype, device=weight.device)
        if init == "uniform":
            draw = torch.rand(weight.shape, generator=generator, dtype=weight.dtype,
                              device="cpu" if generator is None else generator.device)
            scores = (draw * self.scale).to(weight.device)
        self.scores = nn.Parameter(scores)
        self._pruned: torch.Tensor | None = None

    def binary_mask(self) -> torch.Tensor:
        """B = 1[M > τ] (out × in), differentiable in M through the straight-through estimator."""
        return binarize(self.scores, self.threshold)

    def masked_weight(self) -> torch.Tensor:
        """W ⊙ B (out × in), the weight the layer computes with."""
        return self.weight_matrix() * self.binary_mask()

    def delta_weight(self) -> torch.Tensor:
        """ΔW = W ⊙ B − W = −W ⊙ (1 − B) (out × in)."""
        return self.masked_weight() - self.weight_matrix()

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.delta_weight().t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        if self.transposed:
            # GPT-2's Conv1D computes addmm(bias, x, W_stored); keep its operation order.
            stored = self.base.weight * self.binary_mask().t()
            flat = torch.addmm(self.base.bias, x.reshape(-1, x.shape[-1]), stored)
            return flat.view(*x.shape[:-1], stored.shape[1])
        return F.linear(x, self.masked_weight(), self.base.bias)

    def merge(self) -> None:
        """Write W ⊙ B into the base weight, keeping the zeroed values so unmerge is exact."""
        if not self.merged:
            with torch.no_grad():
                mask = self.binary_mask()
                weight = self.weight_matrix()
                self._pruned = weight * (1 - mask)
                self.set_weight_matrix(weight * mask)
            self.merged = True

    def unmerge(self) -> None:
        """Put the zeroed weights back (exact: each entry is W + 0 or 0 + W)."""
        if self.merged:
            with torch.no_grad():
                self.set_weight_matrix(self.weight_matrix() + self._pruned)
            self._pruned = None
            self.merged = False

    def extra_repr(self) -> str:
        return (f"{super().extra_repr()}, init={self.init!r}, scale={self.scale}, "
                f"threshold={self.threshold}")


CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class BinaryMaskConv(BinaryMaskLinear):
    """A frozen ``nn.Conv1d/2d/3d`` whose kernel is used as W ⊙ 1[M > τ]; only M is trained.

    Same options and straight-through scores as :class:`BinaryMaskLinear`; the kernel keeps its
    (out, in/groups, *kernel) shape, and the convolution runs once with the masked kernel.
    """

    @classmethod
    def check_base(cls, base: nn.Module) -> None:
        if not isinstance(base, CONVOLUTIONS):
            raise TypeError(f"BinaryMaskConv wraps nn.Conv1d/2d/3d, got {type(base).__name__}")

    @property
    def in_features(self) -> int:
        return self.base.in_channels

    @property
    def out_features(self) -> int:
        return self.base.out_channels

    def adapter_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base._conv_forward(x, self.delta_weight(), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        return self.base._conv_forward(x, self.masked_weight(), self.base.bias)


def is_maskable(module: nn.Module) -> bool:
    """A linear-like layer or an ``nn.Conv1d/2d/3d``: what binary masks can wrap."""
    return is_linear_like(module) or isinstance(module, CONVOLUTIONS)


def find_mask_targets(model: nn.Module, target_modules: Sequence[str] | str | None = None
                      ) -> list[tuple[str, nn.Module]]:
    """The layers to mask, as (qualified name, module), in model order.

    ``None`` selects every linear-like layer (convolutions only when named, so the default
    matches the other adapters); a name or glob may select linear layers and convolutions.
    """
    if target_modules is None:
        return find_targets(model, None)
    return select_layers(
        model, target_modules, accepts=is_maskable, kinds="linear or convolution layers",
        refusal=lambda name, module: (
            f"target_modules: {name!r} is a {type(module).__name__}; binary masks wrap "
            "nn.Linear, transformers' Conv1D and nn.Conv1d/2d/3d"))


class BinaryMaskHandle(AdapterHandle):
    """Handle of a model whose target weights carry binary masks (:func:`apply_binary_masks`)."""

    layers: dict[str, BinaryMaskLinear]

    def mask_scores(self) -> list[nn.Parameter]:
        """The real scores M of every wrapped layer, in layer order (what the optimiser trains)."""
        self._check_live()
        return [layer.scores for layer in self.layers.values()]

    def binary_masks(self) -> dict[str, torch.Tensor]:
        """Each layer's current 0/1 mask B (the weight's shape), detached, as ``bool``."""
        self._check_live()
        return {name: layer.scores.detach() > layer.threshold
                for name, layer in self.layers.items()}

    def masked_count(self) -> tuple[int, int]:
        """(number of weights with M ≤ τ, number of masked-able weights)."""
        masks = self.binary_masks().values()
        return (sum(int((~m).sum()) for m in masks), sum(m.numel() for m in masks))

    def masked_fraction(self) -> float:
        """Share of the wrapped weights that are zeroed: #{M ≤ τ} / #M over all layers."""
        zeroed, total = self.masked_count()
        return zeroed / total

    def mask_l2(self, groups: Sequence[Sequence[str]] = ()) -> torch.Tensor:
        """Σ ‖M‖₂, the non-squared L2 norm of each layer's flattened scores.

        Layers named together in one of ``groups`` share one norm, of their scores
        concatenated (one fused q/k/v weight, as the official CLIP ViT has).
        """
        self._check_live()
        grouped = {name for group in groups for name in group}
        norms = [torch.cat([self.layers[name].scores.flatten() for name in group]).norm(2)
                 for group in groups]
        norms += [layer.scores.flatten().norm(2) for name, layer in self.layers.items()
                  if name not in grouped]
        return torch.stack(norms).sum()

    def packed_masks(self) -> dict[str, torch.Tensor]:
        """The binary masks packed 8 per byte (``uint8``, row-major), keyed by layer name."""
        return {name: torch.from_numpy(np.packbits(mask.cpu().numpy().ravel()))
                for name, mask in self.binary_masks().items()}

    def load_packed_masks(self, packed: dict[str, torch.Tensor]) -> None:
        """Set the scores from :meth:`packed_masks` output: kept → ``scale``, zeroed → 0.

        The binary masks round-trip exactly; the real scores do not (only B is stored).
        """
        self._check_live()
        if set(packed) != set(self.layers):
            raise ValueError(f"packed: layer names {sorted(packed)} differ from the masked "
                             f"layers {sorted(self.layers)}")
        with torch.no_grad():
            for name, layer in self.layers.items():
                count = layer.scores.numel()
                bits = np.unpackbits(packed[name].cpu().numpy().astype(np.uint8), count=count)
                if bits.size != count:
                    raise ValueError(f"packed[{name!r}] holds {bits.size} bits, the layer has "
                                     f"{count} weights")
                keep = torch.from_numpy(bits.astype(bool)).view_as(layer.scores)
                layer.scores.copy_(torch.where(keep.to(layer.scores.device),
                                               layer.scale, 0.0))


def apply_binary_masks(model: nn.Module, *, target_modules: Sequence[str] | str | None = None,
                       init: str = "ones", scale: float = 1e-2, threshold: float = 5e-3,
                       generator: torch.Generator | None = None,
                       modules_to_save: Sequence[str] | str = (),
                       handle_cls: type[BinaryMaskHandle] = BinaryMaskHandle,
                       **handle_kwargs: object) -> BinaryMaskHandle:
    """Wrap the target layers of ``model`` in binary-mask layers, freeze the rest.

    Linear layers get a :class:`BinaryMaskLinear`, convolutions a :class:`BinaryMaskConv`.

    Args:
        model: any module; targets keep their names.
        target_modules: peft-style names or globs (:func:`find_mask_targets`); ``None`` masks
            every linear layer.
        init, scale, threshold, generator: see :class:`BinaryMaskLinear`. With ``"ones"``,
            ``scale`` must exceed ``threshold`` so that training starts from the pretrained model.
        modules_to_save: modules trained in full alongside the masks (a new head).
        handle_cls, handle_kwargs: the handle class to build (a method's subclass) and its
            extra arguments.
    """
    check_choice("init", init, MASK_INITS)
    scale = check_range("scale", scale, 0.0, low_inclusive=False)
    threshold = check_range("threshold", threshold)
    if init == "ones" and scale <= threshold:
        raise ValueError(f"scale ({scale}) must exceed threshold ({threshold}) with init='ones', "
                         "or every weight starts masked; raise scale or lower threshold")
    targets = find_mask_targets(model, target_modules)

    def make_layer(name: str, module: nn.Module) -> BinaryMaskLinear:
        layer_cls = BinaryMaskConv if isinstance(module, CONVOLUTIONS) else BinaryMaskLinear
        return layer_cls(module, init=init, scale=scale, threshold=threshold,
                         generator=generator)

    return wrap(model, targets, make_layer, modules_to_save=modules_to_save,
                handle_cls=handle_cls, **handle_kwargs)
