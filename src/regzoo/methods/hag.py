r"""Hard-attention gates (HAG, a.k.a. feature-selection gates) with gradient routing.

Roffo, Biffi, Salvagnini, Cherubini. "Hard-Attention Gates with Gradient Routing for Endoscopic
Image Computing", MICCAI 2024 (published as "Feature Selection Gates with Gradient Routing ..."),
arXiv 2407.04400. Official code: github.com/cosmoimd/feature-selection-gates (no licence file:
read, not reused).

A learnable, input-independent gate per channel multiplies a feature map (after CNN blocks, on
the input features, or on a ViT block's residual branches in place of LayerScale). Gradient
routing (GR) trains the gates with an optimiser of their own on a forward/backward pass of their
own, then the backbone on a fresh pass that sees the updated gates, on every batch.

Gate (paper §II-A): for a feature map h with K channels, raw weights θ ∈ R^K,

.. math::

    f_k = \sigma(\theta_k) = 1 / (1 + e^{-\theta_k}), \qquad h' = F \odot h

broadcast over batch, space and tokens: (B, K), (B, K, H, W) and (B, N, K) (``channel_dim``).
θ is drawn with ``xavier_normal_`` (gain = calculate_gain('sigmoid') = 1) on a 1×K tensor, i.e.
θ ~ N(0, 2/(1 + K)), so every gate starts near 0.5 (official ``multi_stream_nets.py``). In a ViT
block the gates replace LayerScale: x ← x + Attn(LN(x)) ⊙ F₁, x ← x + MLP(LN(x)) ⊙ F₂
(:class:`GatedViTBlock`; our own pre-LN block, since timm needs torchvision).

Gradient routing (paper §II-B, official ``runners/trainer.py``), per batch:

.. math::

    \theta_{att} \leftarrow \mathrm{Adam}_{att}(\theta_{att},
        \mathrm{clip}_{128}\nabla_{\theta_{att}} L(x; \theta_{att}, \theta_{main})), \qquad
    \theta_{main} \leftarrow \mathrm{Adam}_{main}(\theta_{main},
        \mathrm{clip}_{10}\nabla_{\theta_{main}} L(x; \theta_{att}', \theta_{main}))

(:func:`gradient_routing`, built on :class:`regzoo.train.routing.GradientRouter`).
Non-finite gradient entries are set to 0 after clipping.

Defaults and sources: gate lr 0.01, backbone lr 1e-4, clips 128 (gate pass) / 10 (backbone
pass): the official ViT CIFAR-100 config (its ResNet config uses gate lr 3e-4, backbone lr
2e-4, clips 8 / 8); Adam for both; init ``"xavier"`` (official code); ``hard=False``.

Paper vs official code, each a tested option:

* The name says *hard* attention, but the paper's equation and the code use the soft sigmoid
  above, with no sparsity term in the loss (``penalty()`` is 0). ``hard=True`` gives the literal
  reading: forward the binary gate 1[θ > 0] (= 1[σ(θ) > ½]), backward the sigmoid's gradient
  (straight-through).
* The paper describes the two passes as independent (``accumulate=False``, the default). The
  code never clears gradients between them, so each clipping acts on all parameters and the
  backbone steps on c₁·(c₀·g₀ + g₁): the clipped sum of both passes' gradients
  (``accumulate=True``, with c₀, c₁ the clip factors; the plain sum when neither clip binds).
  Under the official AMP GradScaler the first pass unscales only the gate gradients and clips
  while the backbone's are still scaled by the loss scale S, so in the code c₀ ≈ 128/(S·‖g₀‖)
  and the backbone effectively steps on c₁·(128·g₀/‖g₀‖ + g₁) — pass 0's backbone gradient
  normalised to norm ≈ 128/S, i.e. nearly dropped. That scaled form depends on the scaler's
  running scale and is documented, not offered; ``accumulate=True`` is the fp32 behaviour.
* The official trainer's scheduler (one cosine decay per batch for the backbone; gate lr
  constant) and its 5 warm-up epochs (stored, never used) are left to the caller's loop.

As a regzoo transform, :meth:`HardAttentionGates.apply` gates named sites of any model
(``add_gates`` is the same call) and by default keeps the network's function: the initial gate
values are divided out of the gated Linear/Conv layer (``keep_function=True``, as every transform
here starts equal to the plain network). The paper inserts gates at σ(θ₀) ≈ 0.5 into a freshly
built network: ``keep_function=False``, which the reproduction uses.
:meth:`HardAttentionGates.merge` folds the gates into the adjacent layer (rows and bias for a
gate on a layer's output, columns for a gate on its input) and :func:`fold_gates` does the same
for :class:`GatedViTBlock`.

Cost: K parameters and one broadcast multiply per site (negligible); gradient routing runs two
forward/backward passes per batch, ≈ 2× a plain step; nothing at inference once folded.

In a loop of your own:

>>> import torch
>>> import torch.nn.functional as F
>>> from regzoo.models.small import MLP
>>> model = MLP(20, 3, hidden=(16,))
>>> gates = add_gates(model, keep_function=False)  # the input of every Linear layer
>>> router = gradient_routing(model, lr=1e-3, gate_lr=1e-2)
>>> x, y = torch.randn(8, 20), torch.randint(0, 3, (8,))
>>> losses = router.step(lambda: F.cross_entropy(model(x), y))  # gate pass, backbone pass
>>> len(losses)
2
>>> gates.remove()  # gates folded into the Linear layers, plain modules again
>>> sorted({type(m).__name__ for m in model.modules()})
['Linear', 'MLP', 'ReLU', 'Sequential']
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_positive_int, check_range
from regzoo.core.kinds import mark_transform_parameters
from regzoo.registry import Default, register
from regzoo.train.routing import GradientRouter, RoutedGroup

CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
FOLDABLE: tuple[type[nn.Module], ...] = (nn.Linear, *CONV_TYPES)
WHERE = ("input", "output")


def _check_init(init: str | float) -> str | float:
    if isinstance(init, str):
        if init != "xavier":
            raise ValueError(f"init must be 'xavier' or a number (the constant θ₀), got {init!r}")
        return init
    if isinstance(init, bool) or not isinstance(init, (int, float)) or math.isnan(init):
        raise TypeError(f"init must be 'xavier' or a number (the constant θ₀), got {init!r}")
    return float(init)


class FeatureGate(nn.Module):
    """K gates σ(θ) multiplying the channels of a feature map (paper §II-A).

    Args:
        num_features: K, the number of gated channels.
        channel_dim: the dimension of the input holding the K channels: 1 for (B, K) and
            (B, K, H, W) maps, -1 for (B, N, K) tokens.
        init: ``"xavier"`` (θ ~ N(0, 2/(1 + K)), the official ``xavier_normal_`` on a 1×K
            tensor) or a number, the constant θ₀ of every gate (0 gives gates of exactly ½).
        hard: forward the binary gate 1[θ > 0] with the sigmoid's gradient (straight-through).
        generator: CPU generator for the xavier draw (default: the global CPU generator), so a
            seed gives the same gates on any device.
    """

    def __init__(
        self,
        num_features: int,
        *,
        channel_dim: int = 1,
        init: str | float = "xavier",
        hard: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("num_features", num_features)
        if isinstance(channel_dim, bool) or not isinstance(channel_dim, int):
            raise TypeError(f"channel_dim must be an int, got {channel_dim!r}")
        init = _check_init(init)
        if not isinstance(hard, bool):
            raise TypeError(f"hard must be a bool, got {hard!r}")
        dtype = dtype or torch.get_default_dtype()
        if init == "xavier":
            theta = torch.empty(1, num_features, dtype=torch.float64)
            std = math.sqrt(2.0 / (1 + num_features))  # gain 1, fan_in K, fan_out 1
            theta.normal_(0.0, std, generator=generator)
        else:
            theta = torch.full((1, num_features), float(init), dtype=torch.float64)
        self.theta = nn.Parameter(theta.to(device=device, dtype=dtype))
        self.num_features = num_features
        self.channel_dim = channel_dim
        self.hard = hard

    def value(self) -> torch.Tensor:
        """The K gate values, shape (K,): σ(θ), or 1[θ > 0] with σ's gradient when hard."""
        soft = torch.sigmoid(self.theta[0])
        if not self.hard:
            return soft
        return (self.theta[0] > 0).to(soft.dtype) + (soft - soft.detach())

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        dim = self.channel_dim
        if not -h.ndim <= dim < h.ndim or h.shape[dim] != self.num_features:
            raise ValueError(
                f"the gate expects {self.num_features} channels in dimension "
                f"{dim}, got an input of shape {tuple(h.shape)}; check the site "
                "and channel_dim (1 for (B, K, ...), -1 for (B, N, K))"
            )
        shape = [1] * h.ndim
        shape[dim] = self.num_features
        return h * self.value().to(h.dtype).view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, channel_dim={self.channel_dim}, hard={self.hard}"


class GatedLayer(nn.Module):
    """A module with a :class:`FeatureGate` on its input or its output (``where``)."""

    def __init__(self, layer: nn.Module, gate: FeatureGate, where: str) -> None:
        super().__init__()
        self.layer = layer
        self.gate = gate
        self.where = where

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.where == "input":
            return self.layer(self.gate(x))
        return self.gate(self.layer(x))


def _width(layer: nn.Module, where: str) -> tuple[int, int] | None:
    """(K, channel_dim) of ``layer``'s input or output, or None when it cannot be told."""
    if isinstance(layer, nn.Linear):
        return (layer.in_features if where == "input" else layer.out_features), -1
    if isinstance(layer, CONV_TYPES):
        return (layer.in_channels if where == "input" else layer.out_channels), 1
    if where == "output":
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            return layer.num_features, 1
        if isinstance(layer, nn.LayerNorm) and len(layer.normalized_shape) == 1:
            return layer.normalized_shape[0], -1
        last = [m for m in layer.modules() if m is not layer and _width(m, "output")]
        if last:
            return _width(last[-1], "output")
    return None


def _scale_(layer: nn.Module, where: str, factor: torch.Tensor) -> None:
    """Multiply ``layer``'s weights by ``factor`` per gated channel (fold or unfold a gate)."""
    if not isinstance(layer, FOLDABLE):
        raise ValueError(
            f"a gate on the {where} of a {type(layer).__name__} cannot be folded: "
            "folding needs a Linear or Conv layer on the gated side; gate that "
            "layer instead, or use keep_function=False and do not merge"
        )
    if isinstance(layer, CONV_TYPES) and layer.groups != 1 and where == "input":
        raise ValueError(
            f"a gate on the input of a grouped convolution (groups={layer.groups}) "
            "cannot be folded; gate its output instead"
        )
    factor = factor.detach().to(layer.weight.dtype)
    with torch.no_grad():
        if where == "input":
            shape = [1, -1] + [1] * (layer.weight.ndim - 2)
            layer.weight.mul_(factor.view(shape))
        else:
            shape = [-1] + [1] * (layer.weight.ndim - 1)
            layer.weight.mul_(factor.view(shape))
            if layer.bias is not None:
                layer.bias.mul_(factor)


def _parse_site(site: object) -> tuple[str, str]:
    if not isinstance(site, str):
        raise TypeError(f"each site must be a module name (str), got {site!r}")
    name, _, where = site.partition(":")
    where = where or "output"
    if where not in WHERE:
        raise ValueError(f"site {site!r}: the suffix must be ':input' or ':output', got {where!r}")
    if not name:
        raise ValueError(
            f"site {site!r} names no module; give a submodule's name, e.g. 'layer1' or 'fc1:input'"
        )
    return name, where


def _resolve_sites(
    model: nn.Module, sites: Sequence[str] | None
) -> list[tuple[str, str, nn.Module]]:
    modules = dict(model.named_modules())
    if sites is None:
        found = [
            (n, "input", m)
            for n, m in modules.items()
            if n
            and isinstance(m, FOLDABLE)
            and not isinstance(modules.get(n.rpartition(".")[0]), GatedLayer)
        ]
        if not found:
            raise ValueError(
                "model has no Linear or Conv layer to gate; name the sites, e.g. "
                "sites=['layer1', 'fc1:input']"
            )
        return found
    if isinstance(sites, str) or not isinstance(sites, Sequence) or not sites:
        raise ValueError(f"sites must be a non-empty list of module names, got {sites!r}")
    resolved = []
    for site in sites:
        name, where = _parse_site(site)
        if name not in modules:
            known = [n for n in modules if n][:30]
            raise ValueError(
                f"unknown gate site {site!r}: the model has no module {name!r}; "
                f"its modules are {known}"
            )
        module = modules[name]
        if isinstance(module, (GatedLayer, FeatureGate)) or isinstance(
            modules.get(name.rpartition(".")[0]), GatedLayer
        ):
            raise ValueError(
                f"site {site!r} is already gated; call remove() on the earlier handle first"
            )
        resolved.append((name, where, module))
    if len({(n, w) for n, w, _ in resolved}) != len(resolved) or len(
        {n for n, _, _ in resolved}
    ) != len(resolved):
        raise ValueError(f"sites must name each module once, got {list(sites)}")
    return resolved


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


@register(
    "hag",
    kind="transform",
    declares={
        "trains_backbone": "the backbone trains with the gates (trainable_parameters() is the "
            "whole model); after an adapter only the gates train",
    },
    summary="Per-channel gates σ(θ) on chosen sites (inputs, CNN blocks, ViT residual branches "
    "in place of LayerScale), trained by gradient routing: a gate pass with its own Adam, then "
    "a backbone pass on a fresh forward; folded into the adjacent layer after training.",
    equation="h' = σ(θ) ⊙ h, θ ~ N(0, 2/(1+K)); per batch θ_att ← Adam_att(clip₁₂₈ ∇θ_att L), "
    "then θ_main ← Adam_main(clip₁₀ ∇θ_main L) on a fresh forward",
    defaults=(
        Default(
            "sites",
            None,
            "None: the input of every Linear/Conv layer (the reproduction's "
            "placement: input features and hidden layers); the paper gates ResNet "
            "layer1…layer4, the pooled embedding and the first FC layer",
        ),
        Default("init", "xavier", "official code: xavier_normal_ (gain 1) on a 1×K tensor"),
        Default(
            "hard",
            False,
            "paper eq. and official code: the soft sigmoid; True is the "
            "straight-through binary gate the name suggests",
        ),
        Default(
            "keep_function",
            True,
            "regzoo transform convention (applying keeps the "
            "network's function); the paper inserts gates at σ(θ₀) ≈ ½ into a network "
            "built from scratch: keep_function=False",
        ),
        Default(
            "gradient_routing.gate_lr",
            0.01,
            "official ViT CIFAR-100 config (gr_ofs_lr; ResNet config 3e-4)",
        ),
        Default("gradient_routing.lr", 1e-4, "official ViT CIFAR-100 config (ResNet 2e-4)"),
        Default(
            "gradient_routing.gate_clip", 128.0, "official ViT config (clip_gr_grad; ResNet 8)"
        ),
        Default("gradient_routing.clip", 10.0, "official ViT config (clip_grad; ResNet 8)"),
        Default(
            "gradient_routing.accumulate",
            False,
            "paper §II-B: independent passes; the official code keeps the gradients (True)",
        ),
    ),
    variants=(
        "soft sigmoid gates (paper eq., code)",
        "hard straight-through gates",
        "gradient routing, independent passes (paper)",
        "gradient routing, accumulated gradients (official code)",
        "gates trained jointly in the backbone's optimiser (no routing)",
        "gated pre-LN ViT block (gates replace LayerScale)",
    ),
)
class HardAttentionGates:
    """Handle of a model with :class:`FeatureGate` sites; build it with :meth:`apply`."""

    def __init__(
        self, model: nn.Module, sites: list[tuple[str, str, nn.Module]], gates: list[FeatureGate]
    ) -> None:
        self.model = model
        self.sites = [(name, where) for name, where, _ in sites]
        self.layers = [layer for _, _, layer in sites]
        self.gates = gates
        self.merged = False
        self._removed = False

    @classmethod
    def apply(
        cls,
        model: nn.Module,
        *,
        sites: Sequence[str] | None = None,
        init: str | float = "xavier",
        hard: bool = False,
        keep_function: bool = True,
        generator: torch.Generator | None = None,
    ) -> HardAttentionGates:
        """Put a :class:`FeatureGate` on each site of ``model``, in place.

        Args:
            model: any module; each gated submodule is wrapped in a :class:`GatedLayer` under
                the same name (its parameters move to ``<name>.layer.*``).
            sites: module names; ``"name"`` or ``"name:output"`` gates the module's output,
                ``"name:input"`` its input. The width K is read from the module (Linear, Conv,
                BatchNorm, LayerNorm, or the last of these inside a block). ``None``: the
                input of every Linear and Conv layer.
            init: ``"xavier"`` (official) or a constant θ₀ for every gate.
            hard: straight-through binary gates (see the module docstring).
            keep_function: divide the initial gate values out of each gated Linear/Conv layer
                so the model's outputs are unchanged (``False``: the paper's insertion).
            generator: CPU generator for the gates' initial draw.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        init = _check_init(init)
        for flag, value in (("hard", hard), ("keep_function", keep_function)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be a bool, got {value!r}")
        if hard and keep_function:
            raise ValueError(
                "hard gates start at 0 or 1, so keep_function=True cannot divide "
                "them out; pass keep_function=False with hard=True"
            )
        resolved = _resolve_sites(model, sites)
        widths = []
        for name, where, module in resolved:
            width = _width(module, where)
            if width is None:
                raise ValueError(
                    f"cannot tell the width of the {where} of site {name!r} "
                    f"({type(module).__name__}); gate a Linear, Conv, BatchNorm "
                    "or LayerNorm, or a block containing one"
                )
            if keep_function and not isinstance(module, FOLDABLE):
                raise ValueError(
                    f"site {name!r} ({type(module).__name__}) has no Linear/Conv "
                    "layer to divide the initial gates out of; gate a Linear/Conv "
                    "layer or pass keep_function=False"
                )
            widths.append(width)
        gates = []
        for (name, where, module), (k, dim) in zip(resolved, widths):
            reference = next(module.parameters(), None)
            gate = FeatureGate(
                k,
                channel_dim=dim,
                init=init,
                hard=hard,
                generator=generator,
                device=None if reference is None else reference.device,
                dtype=None if reference is None else reference.dtype,
            )
            mark_transform_parameters(gate.parameters(), "hag")
            if keep_function:
                _scale_(module, where, 1.0 / gate.value().detach())
            _set_submodule(model, name, GatedLayer(module, gate, where))
            gates.append(gate)
        return cls(model, resolved, gates)

    def _check_usable(self, merged_ok: bool = True) -> None:
        if self._removed:
            raise RuntimeError("these gates were removed; apply new ones")
        if self.merged and not merged_ok:
            raise RuntimeError("the gates are merged into the layers: call unmerge() first")

    def gate_parameters(self) -> list[nn.Parameter]:
        """The gates' θ, one (1, K) tensor per site."""
        self._check_usable(merged_ok=False)
        return [g.theta for g in self.gates]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the model except the gates'."""
        gates = {id(p) for g in self.gates for p in g.parameters()}
        return [p for p in self.model.parameters() if id(p) not in gates]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the model: the backbone trains with the gates."""
        return list(self.model.parameters())

    def penalty(self) -> torch.Tensor:
        """0: neither the paper nor the code adds a sparsity term (module docstring)."""
        reference = next(self.model.parameters())
        return torch.zeros((), dtype=reference.dtype, device=reference.device)

    def gate_values(self) -> dict[str, torch.Tensor]:
        """Each site's current gate values (detached), keyed ``"name:where"``."""
        self._check_usable(merged_ok=False)
        return {
            f"{name}:{where}": g.value().detach()
            for (name, where), g in zip(self.sites, self.gates)
        }

    def param_groups(self, lr: float, gate_lr: float) -> list[dict[str, Any]]:
        """Two optimiser groups for one-pass training: backbone at ``lr``, gates at ``gate_lr``.

        The "gates in their own group" control: the gates' own learning rate without routing.
        """
        check_range("lr", lr, 0.0, low_inclusive=False)
        check_range("gate_lr", gate_lr, 0.0, low_inclusive=False)
        return [
            {"params": self.backbone_parameters(), "lr": lr},
            {"params": self.gate_parameters(), "lr": gate_lr},
        ]

    def merge(self) -> None:
        """Fold every gate into its Linear/Conv layer and put the plain layer back in place."""
        self._check_usable()
        if self.merged:
            return
        for (name, where), layer, gate in zip(self.sites, self.layers, self.gates):
            _scale_(layer, where, gate.value().detach())
            _set_submodule(self.model, name, layer)
        self.merged = True

    def unmerge(self) -> None:
        """Put the gates back (their last values), dividing them out of the layers again."""
        self._check_usable()
        if not self.merged:
            return
        for (name, _), gate in zip(self.sites, self.gates):
            values = gate.value().detach()
            if bool((values == 0).any()):
                raise ValueError(
                    f"site {name!r} has gates at exactly 0 (folded to zero "
                    "weights), which cannot be divided out again"
                )
        for (name, where), layer, gate in zip(self.sites, self.layers, self.gates):
            _scale_(layer, where, 1.0 / gate.value().detach())
            _set_submodule(self.model, name, GatedLayer(layer, gate, where))
        self.merged = False

    def remove(self) -> None:
        """Leave the plain layers holding the folded gates and retire the handle."""
        self.merge()
        self._removed = True


add_gates = HardAttentionGates.apply
"""``add_gates(model, sites=...)``: the same call as :meth:`HardAttentionGates.apply`."""


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """θ of every :class:`FeatureGate` in ``model`` (sites and gated ViT blocks alike)."""
    return [m.theta for m in model.modules() if isinstance(m, FeatureGate)]


def gradient_routing(
    model: nn.Module,
    *,
    lr: float = 1e-4,
    gate_lr: float = 0.01,
    accumulate: bool = False,
    clip: float | None = 10.0,
    gate_clip: float | None = 128.0,
    optimizer: type[torch.optim.Optimizer] = torch.optim.Adam,
    zero_nonfinite: bool = True,
) -> GradientRouter:
    """The paper's gradient routing for ``model``: a gate pass, then a backbone pass.

    Args:
        model: a model holding :class:`FeatureGate` modules (from :func:`add_gates` or
            :class:`GatedViTBlock`); the other parameters are the backbone.
        lr, gate_lr: learning rates of the backbone's and the gates' optimisers.
        accumulate: ``False`` clears gradients between the passes (paper); ``True`` keeps
            them, so the backbone steps on the clipped sum of both (official code).
        clip, gate_clip: gradient-norm clips of the backbone pass and the gate pass (None:
            no clipping).
        optimizer: the optimiser class of both groups (Adam in the paper).
        zero_nonfinite: set non-finite gradient entries to 0 after clipping (official code).

    Returns:
        a :class:`~regzoo.train.routing.GradientRouter`; per batch call
        ``router.step(lambda: loss_fn(model(x), y))``.
    """
    check_range("lr", lr, 0.0, low_inclusive=False)
    check_range("gate_lr", gate_lr, 0.0, low_inclusive=False)
    gates = gate_parameters(model)
    if not gates:
        raise ValueError("model has no FeatureGate; add gates first (add_gates or GatedViTBlock)")
    ids = {id(p) for p in gates}
    backbone = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    if not backbone:
        raise ValueError("model has no backbone parameter to train besides the gates")
    return GradientRouter(
        [
            RoutedGroup("gates", gates, optimizer(gates, lr=gate_lr), gate_clip),
            RoutedGroup("backbone", backbone, optimizer(backbone, lr=lr), clip),
        ],
        accumulate=accumulate,
        zero_nonfinite=zero_nonfinite,
    )


class GatedViTBlock(nn.Module):
    """Pre-LN transformer block whose residual branches are gated in place of LayerScale.

    ``x ← x + Attn(norm1(x)) ⊙ σ(θ₁)``, ``x ← x + linear2(GELU(linear1(norm2(x)))) ⊙ σ(θ₂)`` on
    (B, N, dim) tokens. Submodule names follow ``nn.TransformerEncoderLayer`` (``self_attn``,
    ``linear1``, ``linear2``, ``norm1``, ``norm2``), so its weights load into this block;
    ``gates=False`` is the plain pre-LN block (no LayerScale, as timm's ViT-T).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        *,
        gates: bool = True,
        init: str | float = "xavier",
        hard: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        check_positive_int("dim", dim)
        check_positive_int("num_heads", num_heads)
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        hidden = check_positive_int("hidden width (dim * mlp_ratio)", int(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.gate_attn: nn.Module = (
            FeatureGate(dim, channel_dim=-1, init=init, hard=hard, generator=generator)
            if gates
            else nn.Identity()
        )
        self.gate_mlp: nn.Module = (
            FeatureGate(dim, channel_dim=-1, init=init, hard=hard, generator=generator)
            if gates
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.gate_attn(self.self_attn(h, h, h, need_weights=False)[0])
        return x + self.gate_mlp(self.linear2(F.gelu(self.linear1(self.norm2(x)))))

    def fold_gates(self) -> None:
        """Fold the gates into ``self_attn.out_proj`` and ``linear2``; the gates become identity."""
        for gate_name, layer in (
            ("gate_attn", self.self_attn.out_proj),
            ("gate_mlp", self.linear2),
        ):
            gate = getattr(self, gate_name)
            if isinstance(gate, FeatureGate):
                _scale_(layer, "output", gate.value().detach())
                setattr(self, gate_name, nn.Identity())


def fold_gates(model: nn.Module) -> nn.Module:
    """Fold every gate of ``model`` into its adjacent layer, in place; returns ``model``.

    Gated ViT blocks fold into their output projections; :class:`GatedLayer` sites into their
    Linear/Conv layer, which takes the site's place. For a model gated with
    :meth:`HardAttentionGates.apply`, prefer the handle's ``merge()`` (it can ``unmerge()``).
    """
    for name, module in list(model.named_modules()):
        if isinstance(module, GatedViTBlock):
            module.fold_gates()
        elif isinstance(module, GatedLayer):
            _scale_(module.layer, module.where, module.gate.value().detach())
            _set_submodule(model, name, module.layer)
    return model


class GatedViT(nn.Module):
    """A small ViT for 1-D multichannel signals, with gated (or plain) pre-LN blocks.

    Input (B, C, L) or flat (B, C·L): non-overlapping patches of ``patch`` positions over all
    channels become tokens (a Linear C·patch → dim), plus learned position embeddings; ``depth``
    :class:`GatedViTBlock`; final LayerNorm, mean over tokens, linear head.
    """

    def __init__(
        self,
        in_channels: int,
        length: int,
        num_classes: int,
        *,
        patch: int = 4,
        dim: int = 32,
        depth: int = 2,
        num_heads: int = 2,
        mlp_ratio: float = 2.0,
        gates: bool = True,
        init: str | float = "xavier",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("length", length),
            ("num_classes", num_classes),
            ("patch", patch),
            ("depth", depth),
        ):
            check_positive_int(name, value)
        if length % patch:
            raise ValueError(f"length={length} must be a multiple of patch={patch}")
        self.in_channels, self.length, self.patch = in_channels, length, patch
        self.embed = nn.Linear(in_channels * patch, dim)
        self.position = nn.Parameter(
            torch.randn(1, length // patch, dim, generator=generator) * 0.02
        )
        self.blocks = nn.Sequential(
            *[
                GatedViTBlock(
                    dim, num_heads, mlp_ratio, gates=gates, init=init, generator=generator
                )
                for _ in range(depth)
            ]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = x.reshape(b, self.in_channels, self.length // self.patch, self.patch)
        tokens = self.embed(x.permute(0, 2, 1, 3).reshape(b, self.length // self.patch, -1))
        h = self.blocks(tokens + self.position)
        return self.head(self.norm(h).mean(dim=1))
