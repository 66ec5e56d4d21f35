r"""GIFD and its two baselines, three searches of one harness (:mod:`.search`).

They minimise the same objective J (gradient cosine + TV + image norm) with the same optimiser,
schedule, restarts and scoring, and differ only in what is searched:

* :class:`PixelInversion` (Geiping et al., NeurIPS 2020, "Inverting gradients"): the image
  itself, drawn from N(0, I) and clamped to the image range after every step.
* :class:`GIFDAttack` with one stage (``GIFDConfig(num_stages=1)``): the latent z of the
  generator G (GIAS's first phase, or "latent-only" search), projected after every step onto
  the sphere of its starting norm.
* :class:`GIFDAttack` with K stages: latent first, then the input h_k of generator stage k for
  k = 1 … K−1, each started from the previous solution pushed one stage forward and held in an
  l1 ball around it.

Their hyperparameters live in frozen dataclasses validated when built (:class:`GIFDConfig`,
:class:`PixelInversionConfig`). Dual use: see :mod:`regzoo.methods.gifd`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from regzoo.core.checks import check_choice, check_positive_int, check_range
from regzoo.methods.gifd.search import _FeatureSpace, _GradientInversion, _PixelSpace, _Space
from regzoo.registry import Default, register

RADIUS_MODES = ("relative", "absolute")


def _per_stage(name: str, value: object, count: int) -> tuple[Any, ...]:
    """``value`` as ``count`` values: a scalar repeats, a sequence must have ``count`` entries."""
    if not isinstance(value, (tuple, list)):
        return (value,) * count
    if len(value) != count:
        raise ValueError(f"{name} has {len(value)} entries but {count} are needed (one per "
                         "stage searched" + (", the latent excluded)" if name == "radii" else ")"))
    return tuple(value)


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def _check_image_range(value: object) -> None:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"image_range must be a pair (low, high), got {value!r}")
    low = check_range("image_range[0]", value[0])
    high = check_range("image_range[1]", value[1])
    if not low < high:
        raise ValueError(f"image_range must have low < high, got {value!r}")


def _check_steps_lr(steps: object, lr: object) -> None:
    for i, s in enumerate(steps if isinstance(steps, (tuple, list)) else (steps,)):
        check_positive_int(f"steps[{i}]" if isinstance(steps, (tuple, list)) else "steps", s)
    for i, rate in enumerate(lr if isinstance(lr, (tuple, list)) else (lr,)):
        check_range(f"lr[{i}]" if isinstance(lr, (tuple, list)) else "lr", rate, 0.0,
                    low_inclusive=False)


@dataclass(frozen=True)
class GIFDConfig:
    """Hyperparameters of :class:`GIFDAttack` (defaults: paper and official configs).

    Args:
        steps: Adam steps per stage, one number for every stage or one per stage (official
            ``steps`` 1000 per layer).
        lr: Adam's peak learning rate, one or one per stage (official ``lr_io`` 0.1).
        radii: l1-ball radius of stages 1 … K−1 (stage 0, the latent, has none), one or one
            per such stage; ``inf`` leaves a stage unconstrained. Relative by default.
        radius_mode: ``"relative"`` — sample i's radius is ρ_k·‖h_k,i‖₁ (ρ_k = ``radii``) of
            the feature at the stage's start; ``"absolute"`` — ``radii`` are l1 units
            (official ``max_radius_gen_out``, 1000 … 8000, tuned to StyleGAN2/BigGAN features).
        num_stages: K, the stages searched (``None``: every stage of the generator; 1: the
            latent alone).
        restarts: independent starts per attack; the one with the lowest gradient loss is kept
            (official ``restarts`` 4).
        tv: weight of the total variation (official ``total_variation`` 1e-4).
        image_norm: weight of ‖x‖₂/(HW) (official ``image_norm`` 1e-6).
        latent_free: keep z trainable after stage 0 (official StyleGAN2 branch; its latent is
            held in the stage's l1 ball around its stage-start value and on its sphere), or fix
            it (official BigGAN branch, and the paper's Fig. 2: the latent, then each
            intermediate feature in turn; later stages search h_k only).
        spherical: project z onto the sphere of its starting norm after each step in which it
            is trained (official ``SphericalOptimizer``).
        image_range: the valid pixel range; images are clamped to it before scoring.
    """

    steps: int | tuple[int, ...] = 1000
    lr: float | tuple[float, ...] = 0.1
    radii: float | tuple[float, ...] = 0.1
    radius_mode: str = "relative"
    num_stages: int | None = None
    restarts: int = 4
    tv: float = 1e-4
    image_norm: float = 1e-6
    latent_free: bool = False
    spherical: bool = True
    image_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _check_steps_lr(self.steps, self.lr)
        for i, r in enumerate(self.radii if isinstance(self.radii, (tuple, list))
                              else (self.radii,)):
            name = f"radii[{i}]" if isinstance(self.radii, (tuple, list)) else "radii"
            if r != math.inf:
                check_range(name, r, 0.0)
        check_choice("radius_mode", self.radius_mode, RADIUS_MODES)
        if self.num_stages is not None:
            check_positive_int("num_stages", self.num_stages)
        check_positive_int("restarts", self.restarts)
        check_range("tv", self.tv, 0.0)
        check_range("image_norm", self.image_norm, 0.0)
        _check_bool("latent_free", self.latent_free)
        _check_bool("spherical", self.spherical)
        _check_image_range(self.image_range)
        if self.num_stages is not None:
            self.plan(self.num_stages)

    def plan(self, available: int) -> list[tuple[int, float, float | None]]:
        """``(steps, lr, radius)`` of each stage searched (radius ``None`` for the latent).

        ``available`` is the generator's stage count; K = ``num_stages`` or all of them.
        """
        stages = self.num_stages if self.num_stages is not None else available
        if stages > available:
            raise ValueError(f"num_stages={stages} exceeds the generator's {available} stages; "
                             f"pass num_stages <= {available}")
        steps = _per_stage("steps", self.steps, stages)
        lrs = _per_stage("lr", self.lr, stages)
        radii = _per_stage("radii", self.radii, stages - 1)
        return [(int(steps[k]), float(lrs[k]), None if k == 0 else float(radii[k - 1]))
                for k in range(stages)]


@dataclass(frozen=True)
class PixelInversionConfig:
    """Hyperparameters of :class:`PixelInversion` (official ``configs_gan_free.yml``, Geiping).

    Args:
        steps: Adam steps (the harness's lr ramp over them).
        lr: Adam's peak learning rate (official 0.1).
        restarts: independent starts (official 4).
        tv: weight of the total variation (official 1e-4).
        image_norm: weight of ‖x‖₂/(HW) (0: the official Geiping run has none).
        image_range: the valid pixel range; every step ends with a clamp to it.
    """

    steps: int = 1000
    lr: float = 0.1
    restarts: int = 4
    tv: float = 1e-4
    image_norm: float = 0.0
    image_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if isinstance(self.steps, (tuple, list)) or isinstance(self.lr, (tuple, list)):
            raise TypeError("steps and lr of a pixel inversion are single numbers (one stage)")
        _check_steps_lr(self.steps, self.lr)
        check_positive_int("restarts", self.restarts)
        check_range("tv", self.tv, 0.0)
        check_range("image_norm", self.image_norm, 0.0)
        _check_image_range(self.image_range)


class PixelInversion(_GradientInversion):
    """Gradient inversion in pixel space (Geiping et al. 2020): the baseline GIFD compares with.

    Args:
        model: the attacked network (eval mode if it has batch norm or dropout).
        image_shape: (C, H, W) of one input image.
        config: steps, lr, restarts and the regularisers (:class:`PixelInversionConfig`).

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> x, y = torch.rand(1, 1, 2, 2), torch.tensor([2])
    >>> loss = torch.nn.functional.cross_entropy(net(x), y)
    >>> g = torch.autograd.grad(loss, net.parameters())
    >>> attack = PixelInversion(net, (1, 2, 2), config=PixelInversionConfig(steps=50, restarts=2))
    >>> result = attack.invert(g)
    >>> result.images.shape, result.labels.tolist(), len(result.stage_scores)
    (torch.Size([1, 1, 2, 2]), [2], 1)
    """

    def __init__(self, model: nn.Module, image_shape: Sequence[int], *,
                 config: PixelInversionConfig | None = None) -> None:
        config = PixelInversionConfig() if config is None else config
        if not isinstance(config, PixelInversionConfig):
            raise TypeError(f"config must be a PixelInversionConfig, got {type(config).__name__}")
        if not isinstance(image_shape, (tuple, list)) or not image_shape:
            raise ValueError(f"image_shape must be a tuple such as (1, 8, 8), got {image_shape!r}")
        self.image_shape = tuple(check_positive_int("image_shape", int(s)) for s in image_shape)
        self.model = self._check_model(model)
        self.config = config
        self.restarts, self.tv, self.image_norm = config.restarts, config.tv, config.image_norm
        self.image_range = config.image_range
        self.plan = [(config.steps, config.lr, None)]

    def _space(self, trials: int, batch: int, generator: torch.Generator) -> _Space:
        x = torch.randn((trials, batch, *self.image_shape), generator=generator)
        return _PixelSpace(x.to(self.device), self.image_range)

    def _settings(self) -> dict[str, Any]:
        return {"kind": "pixel", "restarts": self.restarts, "tv": self.tv,
                "image_norm": self.image_norm, "image_range": list(self.image_range),
                "image_shape": list(self.image_shape)}

    def _weights(self) -> list[torch.Tensor]:
        return []


@register(
    "gifd",
    kind="procedure",
    declares={
        "owns_loss": "a gradient-inversion attack: its loss is the gradient-matching objective",
    },
    summary="Gradient inversion over a GAN's feature domains: match the shared gradient by "
            "searching the latent, then each intermediate feature in an l1 ball around the "
            "previous solution; keep the stage with the lowest gradient loss.",
    equation="min_{h_k: ‖h_k − G_k(h*_{k−1})‖₁ ≤ r_k} 1 − cos(∇_w CE(f_w(G_{k..L}(h_k)), y), g*) "
             "+ 1e-4·TV + 1e-6·‖x‖/HW;  x̂ = G_{k*..L}(h*_{k*}), k* = argmin_k L_grad",
    defaults=(
        Default("steps", 1000, "official configs_biggan.yml / configs_stylegan2.yml (steps: "
                "1000 per layer)"),
        Default("lr", 0.1, "official configs (lr_io: 0.1 per layer)"),
        Default("lr schedule", "0.5 − 0.5cos(π·min(1, (1 − t)/0.75)) · min(1, t/0.05) per stage",
                "official reconstruction_algorithms.py get_lr"),
        Default("restarts", 4, "official configs (restarts: 4)"),
        Default("tv", 1e-4, "official configs (total_variation: 0.0001)"),
        Default("image_norm", 1e-6, "official configs (image_norm: 0.000001)"),
        Default("radius_mode", "relative", "regzoo: the official radii are absolute l1 units "
                "(max_radius_gen_out 1000 … 8000) tuned to StyleGAN2/BigGAN features"),
        Default("radii", 0.1, "regzoo: ρ of the relative radius ρ·‖h_k‖₁ (spec gifd.md §5 grid "
                "0.05 / 0.1 / 0.2)"),
        Default("num_stages", None, "None: every stage of the generator (official end_layer)"),
        Default("latent_free", False, "official BigGAN branch and the paper's Fig. 2 (the latent, "
                "then each intermediate feature in turn); the StyleGAN2 branch keeps z free"),
        Default("spherical", True, "official SphericalOptimizer on the latent"),
        Default("gradient loss", "one global cosine over all parameters", "official "
                "cost_fn 'sim_cmpr0', indices 'def', weights 'equal'"),
        Default("labels", "inferred from the last linear layer's gradient", "official "
                "infer_label (iDLG)"),
    ),
    variants=("GIFD (K = every generator stage, default)",
              "latent-only search (num_stages=1; GIAS's first phase)",
              "pixel-space inversion (PixelInversion; Geiping et al.)",
              "relative (default) or absolute l1 radii (radius_mode)",
              "latent fixed after stage 0 (default, BigGAN branch) or free (latent_free=True, "
              "StyleGAN2 branch)"),
)
class GIFDAttack(_GradientInversion):
    """GIFD: search the latent, then the generator's intermediate features, stage by stage.

    Args:
        model: the attacked network (eval mode if it has batch norm or dropout).
        stages: the generator as a sequence of modules G_1 … G_L (stage k maps h_k to
            h_{k+1}; stage 0 takes the latent, the last returns the image), e.g.
            ``DigitGenerator.stages``.
        latent_shape: the shape of one latent z, e.g. ``(32,)``.
        config: the search's hyperparameters (:class:`GIFDConfig`).

    >>> from regzoo.generative import DigitGenerator
    >>> torch.manual_seed(0) and None
    >>> generator = DigitGenerator(latent_dim=4, widths=(4, 2)).eval()
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    >>> x, y = generator.sample(1), torch.tensor([1])
    >>> loss = torch.nn.functional.cross_entropy(net(x), y)
    >>> g = torch.autograd.grad(loss, net.parameters())
    >>> attack = GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(steps=20, restarts=2))
    >>> result = attack.invert(g)
    >>> result.images.shape, len(result.stage_scores), result.labels.tolist()
    (torch.Size([1, 1, 8, 8]), 3, [1])
    """

    def __init__(self, model: nn.Module, stages: Sequence[nn.Module],
                 latent_shape: Sequence[int], *, config: GIFDConfig | None = None) -> None:
        config = GIFDConfig() if config is None else config
        if not isinstance(config, GIFDConfig):
            raise TypeError(f"config must be a GIFDConfig, got {type(config).__name__}")
        if isinstance(stages, nn.Module) and not isinstance(stages, nn.ModuleList):
            raise TypeError("stages must be a sequence of modules (e.g. generator.stages), got a "
                            f"single {type(stages).__name__}")
        if not isinstance(stages, (Sequence, nn.ModuleList)) or len(stages) == 0:
            raise ValueError("stages is empty; pass the generator's stages, e.g. "
                             "DigitGenerator.stages (latent → features → image)")
        for i, module in enumerate(stages):
            if not isinstance(module, nn.Module):
                raise TypeError(f"stages[{i}] must be a torch.nn.Module, got "
                                f"{type(module).__name__}")
        if not isinstance(latent_shape, (tuple, list)) or not latent_shape:
            raise ValueError(f"latent_shape must be a tuple such as (32,), got {latent_shape!r}")
        latent = tuple(check_positive_int("latent_shape", s) for s in latent_shape)
        plan = config.plan(len(stages))
        model = self._check_model(model)
        device = next(model.parameters()).device
        for i, module in enumerate(stages):
            if any(p.device != device for p in module.parameters()):
                raise ValueError(f"stages[{i}] is not on the model's device {device}; move the "
                                 "generator with .to(device)")
        self.model, self.stages, self.latent_shape = model, list(stages), latent
        self.config, self.plan = config, plan
        self.restarts, self.tv, self.image_norm = config.restarts, config.tv, config.image_norm
        self.image_range = config.image_range

    def _space(self, trials: int, batch: int, generator: torch.Generator) -> _Space:
        z = torch.randn((trials * batch, *self.latent_shape), generator=generator)
        return _FeatureSpace(self.stages, z.to(self.device), trials, batch, self.plan,
                             self.config.radius_mode == "relative", self.config.latent_free,
                             self.config.spherical)

    def _settings(self) -> dict[str, Any]:
        c = self.config
        return {"kind": "gifd", "restarts": c.restarts, "tv": c.tv, "image_norm": c.image_norm,
                "image_range": list(c.image_range), "radius_mode": c.radius_mode,
                "latent_free": c.latent_free, "spherical": c.spherical,
                "latent_shape": list(self.latent_shape)}

    def _weights(self) -> list[torch.Tensor]:
        return [p for module in self.stages for p in module.parameters()]
