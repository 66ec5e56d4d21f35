r"""Weight Compander (WC): every Linear/Conv weight is used as a bounded, odd function of a raw one.

Cakaj, Mehnert, Yang. "Weight Compander: A Simple Weight Reparameterization for Regularization",
IJCNN 2023, arXiv 2306.16993. No official code was released; this follows the paper's §III.

Each weight tensor W of a ``nn.Linear`` / ``nn.Conv{1,2,3}d`` layer (not biases, not norm
layers) is stored as a raw parameter V and used in the forward pass as the effective weight

.. math::

    W = \Psi(V) = a \cdot \arctan(V / b), \qquad a, b > 0 \quad \text{(paper eq. 1)}

so |W| < aπ/2 (large weights are compressed) while the slope a·b/(b² + V²) keeps small weights
moving away from zero ("companding"). Initialisation (§III-A): V₀ = b·tan(W₀/a) from the layer's
usual initial W₀, so the wrapped network starts equal to the plain one (needs |W₀| < aπ/2).

Weight decay (§III): in the *fixed* variant it acts on the effective weights Ψ(V); in the
*learned* variant (§III-B: a and b trained by backpropagation, per layer — "fine" — or one pair
for the network — "coarse") it acts on V and never on a, b. Here both go through
:meth:`WeightCompander.penalty` = ½ Σ‖Ψ(V)‖² (fixed) or ½ Σ‖V‖² (learned): add
``weight_decay * handle.penalty()`` to the loss and build the optimiser from
:meth:`WeightCompander.param_groups`, which exempts V, a and b from the optimiser's own decay (for
SGD, coupled weight decay is exactly the gradient of ½·wd·‖θ‖², so this is the paper's recipe).

Defaults and their sources: a = b = 0.7, the most frequent pair of the paper's Table I (no
universal pair exists; the paper grid-searches a, b ∈ {0.5, 0.6, …, 1.0}, exposed as
:data:`PAPER_GRID`); learned variant started at a = 0.5, b = 1.0 (§III-B, best starting values),
kept positive as a = softplus(ρ_a), b = softplus(ρ_b) (the paper does not say how; softplus keeps
gradients alive near zero). Other companders the paper tried (§IV-D), as ``compander=``:
``"arsinh"`` a·arsinh(V/b) (unbounded) and ``"erf"`` a·erf(V/b) (bound a).

Implemented with ``torch.nn.utils.parametrize``; :meth:`WeightCompander.merge` writes Ψ(V) into
plain layers (zero inference cost), :meth:`WeightCompander.unmerge` wraps them again. Cost: one
elementwise function of every weight per forward and backward (the paper reports 7–14 % slower
training); differentiable; any device.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from regzoo.core.checks import check_choice, check_range
from regzoo.core.kinds import mark_transform_parameters
from regzoo.registry import Default, register

LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
PAPER_GRID: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""The values the paper grid-searches for a and for b (§IV, Table I)."""


@dataclass(frozen=True)
class Compander:
    """A compander g with Ψ(v) = a·g(v/b), its inverse, and the bound of |g| (inf if none)."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]
    bound: float


COMPANDERS: dict[str, Compander] = {
    "arctan": Compander(torch.atan, torch.tan, math.pi / 2),
    "arsinh": Compander(torch.asinh, torch.sinh, math.inf),
    "erf": Compander(torch.erf, torch.erfinv, 1.0),
}


def _softplus_inverse(value: float) -> float:
    return value + math.log(-math.expm1(-value))


class _Shape(nn.Module):
    """The pair (a, b): fixed buffers, or trainable through softplus of raw parameters."""

    def __init__(self, a: float, b: float, learn: bool) -> None:
        super().__init__()
        self.learn = learn
        if learn:
            self.raw_a = nn.Parameter(torch.tensor(_softplus_inverse(a)))
            self.raw_b = nn.Parameter(torch.tensor(_softplus_inverse(b)))
        else:
            self.register_buffer("fixed_a", torch.tensor(a))
            self.register_buffer("fixed_b", torch.tensor(b))

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.learn:
            return F.softplus(self.raw_a), F.softplus(self.raw_b)
        return self.fixed_a, self.fixed_b


class _Compand(nn.Module):
    """The parametrisation W = a·g(V/b); ``right_inverse`` gives V = b·g⁻¹(W/a)."""

    def __init__(self, compander: Compander, shape: _Shape) -> None:
        super().__init__()
        self.compander = compander
        self.shape = shape

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        a, b = self.shape()
        return a.to(raw.dtype) * self.compander.forward(raw / b.to(raw.dtype))

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        a, b = (t.detach().to(weight.dtype) for t in self.shape())
        limit = a * self.compander.bound
        largest = weight.detach().abs().max()
        if bool(largest >= limit):
            raise ValueError(
                f"a weight of magnitude {float(largest):.4g} cannot be represented: the compander "
                f"is bounded by a·{self.compander.bound:.4g} = {float(limit):.4g}; raise a "
                "(or start from smaller weights)"
            )
        return b * self.compander.inverse(weight / a)


def _eligible(model: nn.Module, layer_types: tuple[type[nn.Module], ...]
              ) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, layer_types) and (parametrize.is_parametrized(m, "weight")
                                               or isinstance(getattr(m, "weight", None),
                                                             nn.Parameter))]


@register(
    "weight_compander",
    kind="transform",
    declares={
        "every_layer_of_type": "it companders every layer of the given module types, not named "
            "layers",
    },
    summary="Every Linear/Conv weight used as W = a·arctan(V/b) of a raw V: bounded, steep near 0; "
    "fixed or learned (a, b); folded into plain layers after training.",
    equation="W = Ψ(V) = a·arctan(V/b), V₀ = b·tan(W₀/a); weight decay on Ψ(V) (fixed) or on V "
    "(learned a, b = softplus(ρ))",
    defaults=(
        Default("a", None, "None: 0.7 fixed, the most frequent value of the paper's Table I "
                "(grid 0.5…1.0); 0.5 as the learned variant's start (paper §III-B)"),
        Default("b", None, "None: 0.7 fixed, the most frequent value of the paper's Table I "
                "(grid 0.5…1.0); 1.0 as the learned variant's start (paper §III-B)"),
        Default("compander", "arctan", "paper eq. 1 (arsinh and erf: §IV-D)"),
    ),
    variants=("fixed (a, b)", "learned per layer ('fine')", "learned shared ('coarse')",
              "arsinh / erf companders"),
)
class WeightCompander:
    """Handle of a model whose Linear/Conv weights are companded; build it with :meth:`apply`."""

    def __init__(self, model: nn.Module, layers: list[tuple[str, nn.Module]],
                 shapes: list[_Shape], compander: str, learn: bool) -> None:
        self.model = model
        self.layers = layers
        self.shapes = shapes
        self.compander = compander
        self.learn = learn
        self.merged = False
        self._removed = False

    @classmethod
    def apply(
        cls,
        model: nn.Module,
        *,
        a: float | None = None,
        b: float | None = None,
        learn: bool = False,
        share: str = "layer",
        compander: str = "arctan",
        target_modules: Sequence[type[nn.Module]] = LAYER_TYPES,
    ) -> WeightCompander:
        """Compand the weights of every ``target_modules`` layer of ``model`` in place.

        Args:
            model: any module; its eligible layers keep their names and stay in place.
            a, b: the compander's scale and width (default 0.7 and 0.7 fixed, 0.5 and 1.0 as
                the learned variant's start).
            learn: train a and b with the weights (paper §III-B).
            share: ``"layer"`` (one pair per layer, the paper's better "fine" variant) or
                ``"network"`` (one pair for all layers, "coarse"); only matters when learned.
            compander: ``"arctan"`` (paper eq. 1), ``"arsinh"`` or ``"erf"``.
            target_modules: layer types whose ``weight`` is companded.
        """
        check_choice("compander", compander, tuple(COMPANDERS))
        check_choice("share", share, ("layer", "network"))
        a = check_range("a", 0.5 if learn and a is None else 0.7 if a is None else a, 0.0,
                        low_inclusive=False)
        b = check_range("b", 1.0 if learn and b is None else 0.7 if b is None else b, 0.0,
                        low_inclusive=False)
        layers = _eligible(model, tuple(target_modules))
        if not layers:
            raise ValueError(f"model has no layer of type {[t.__name__ for t in target_modules]} "
                             "with a weight parameter: nothing to compand")
        if any(parametrize.is_parametrized(m, "weight") for _, m in layers):
            raise ValueError("some target weights are already parametrized (is a compander "
                             "applied already?); call remove() on the earlier handle first")
        reference = next(iter(layers))[1].weight

        def new_shape() -> _Shape:  # a, b (ρ_a, ρ_b) in the weights' dtype: float64 stays exact
            return _Shape(a, b, learn).to(device=reference.device, dtype=reference.dtype)

        shared = new_shape()
        shapes = [shared if share == "network" else new_shape() for _ in layers]
        handle = cls(model, layers, shapes, compander, learn)
        mark_transform_parameters(handle.shape_parameters(), "weight_compander")
        handle._wrap()
        return handle

    def _wrap(self) -> None:
        companded: list[nn.Module] = []
        try:
            for (_, layer), shape in zip(self.layers, self.shapes):
                parametrize.register_parametrization(
                    layer, "weight", _Compand(COMPANDERS[self.compander], shape))
                companded.append(layer)
        except ValueError:
            for layer in companded:
                parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
            raise

    def _check_usable(self, merged_ok: bool = True) -> None:
        if self._removed:
            raise RuntimeError("this compander was removed; apply a new one")
        if self.merged and not merged_ok:
            raise RuntimeError("the compander is merged (plain layers): call unmerge() first")

    def raw_weights(self) -> Iterator[nn.Parameter]:
        """The raw parameters V (one per companded layer)."""
        self._check_usable(merged_ok=False)
        for _, layer in self.layers:
            yield layer.parametrizations.weight.original

    def shape_parameters(self) -> list[nn.Parameter]:
        """The raw ρ_a, ρ_b of the learned variant (empty when a, b are fixed)."""
        unique = {id(s): s for s in self.shapes}.values()
        return list(itertools.chain.from_iterable(s.parameters() for s in unique))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the model: WC trains the whole network.

        The raw V and the learned ρ_a, ρ_b live in the layers' parametrisations, hence in
        ``model.parameters()``.
        """
        return list(self.model.parameters())

    def shapes_now(self) -> list[tuple[float, float]]:
        """The current (a, b) of each companded layer."""
        return [tuple(round(float(t.detach()), 6) for t in shape())  # type: ignore[misc]
                for shape in self.shapes]

    def penalty(self) -> torch.Tensor:
        """½ Σ‖Ψ(V)‖² (fixed variant) or ½ Σ‖V‖² (learned): multiply by the weight decay."""
        self._check_usable(merged_ok=False)
        tensors = ([layer.weight for _, layer in self.layers] if not self.learn
                   else list(self.raw_weights()))
        return 0.5 * sum(t.square().sum() for t in tensors)  # type: ignore[return-value]

    def param_groups(self, weight_decay: float,
                     shape_lr: float | None = None) -> list[dict[str, object]]:
        """Optimiser groups: V, ρ_a, ρ_b without the optimiser's decay; everything else with it.

        The companded weights' decay comes from ``weight_decay * penalty()`` in the loss.
        ``shape_lr`` gives ρ_a, ρ_b their own learning rate (default: the optimiser's). The
        paper does not say; on a 512-wide MLP with SGD lr 0.05 and momentum 0.9 we measured a
        collapse with the shared rate (a → 0.04, chance accuracy) and none at a tenth of it.
        """
        check_range("weight_decay", weight_decay, 0.0)
        shape = self.shape_parameters()
        exempt = {id(p) for p in self.raw_weights()} | {id(p) for p in shape}
        rest = [p for p in self.model.parameters() if id(p) not in exempt]
        groups: list[dict[str, object]] = [{"params": list(self.raw_weights()),
                                            "weight_decay": 0.0}]
        if shape:
            group: dict[str, object] = {"params": shape, "weight_decay": 0.0}
            if shape_lr is not None:
                group["lr"] = check_range("shape_lr", shape_lr, 0.0, low_inclusive=False)
            groups.append(group)
        if rest:
            groups.append({"params": rest, "weight_decay": weight_decay})
        return groups

    def merge(self) -> None:
        """Write Ψ(V) into each layer's plain ``weight`` and drop the parametrisation."""
        self._check_usable()
        if self.merged:
            return
        for _, layer in self.layers:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
        self.merged = True

    def unmerge(self) -> None:
        """Wrap the plain weights again, V = b·g⁻¹(W/a) with the current (a, b)."""
        self._check_usable()
        if not self.merged:
            return
        self._wrap()
        self.merged = False

    def remove(self) -> None:
        """Leave plain layers holding Ψ(V) (the original module types) and retire the handle."""
        self.merge()
        self._removed = True
