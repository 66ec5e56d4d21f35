r"""CoherentGS training and its 3DGS baselines, built on :func:`regzoo.train.fit`.

Paper: Paliwal, Ye, Tsai, Khademi Kalantari, "CoherentGS: Sparse Novel View Synthesis with
Coherent 3D Gaussians", ECCV 2024, arXiv 2403.19495. Official code avinashpaliwal/CoherentGS
(read, not copied; non-commercial licence).

The method in three lines: one Gaussian per input pixel, on that pixel's ray, at a monocular
depth first aligned per view (scale, offset) by optical flow; then the depths move only through
a residual decoded by a small CNN per view (neighbouring Gaussians move together), with a TV
prior on the rendered disparity and flow consistency between the views' Gaussians.

Phase 1 (official ``train.py`` iterations 6001–7000): min_{s, b} L_flow with
z_v = s_v d̂_v + b_v, Adam (lr 1 for s, 5 for b, in LLFF depth units) with a cosine lr.
Phase 2 (official 7001–20000), for the sampled view v, with Î the render, I the image:

.. math::

    L = (1-\lambda)\, \mathrm{L1}_{ms}(\hat I, I) + \lambda\, (1 - \mathrm{SSIM}(\hat I, I))
        + w_{tv}\, \big[\gamma_t \mathrm{TV}(m_v \odot \delta_v)
        + (1-\gamma_t) \mathrm{TV}(\delta_v)\big]
        + w_{flow}\, L_{flow}

λ = 0.2; L1_ms the L1 over five 2×-pooled scales weighted 1, 1/4, 1/8, 1/16, 1/32; δ = 1/(D/(A +
1e-6) + 1) the rendered disparity; γ_t rising linearly over phase 2 (from ``tv_ramp_start``,
official 0.35, to 1); m_v the depth layers; w_tv = 5;
L_flow = Σ_{j≠i} mean |m_{i→j} ⊙ (W(X_j, F_{i→j}) − X_i)| for a random reference view i, X the
per-pixel Gaussian means. Trainables: the depth decoder (AdamW, CyclicLR triangular2 1e-6…1e-4,
step 1000), the opacity decoder (AdamW, 1e-6…1e-5, step 2000), per-Gaussian log-scales (Adam
1e-4) and rotations (1e-5), eps 1e-15. Colours stay the input pixels' (SH degree 0 here; the
official higher-order SH are the only trained colour terms), base opacity fixed by view count.
Every 100 iterations until 15000 the radii are reset from the current depth; from iteration
12000 each step renders at a random 1–4× supersampling and average-pools back (multisampling).
No densification, no pruning.

Defaults and sources: flow weight 0.1 (paper; the official code multiplies it twice, 0.01
effective: ``flow_weight_twice=True``), TV weight 5, λ 0.2, residual bounds 50 (depth, LLFF
units) and 100 (opacity logit), decoder widths by view count (official); the depth layers are
an input (official preprocessing: 5 hard layers by agglomerative clustering of disparity).

Schedule scaling. The official run has 1000 phase-1 iterations (6001–7000) and 13000 phase-2
iterations (7001–20000): multisampling starts 5000 into phase 2, radius resets stop 8000 in,
the cyclic half-periods are 1000 and 2000, and the TV ramp γ_t = iteration / 20000 runs from
0.35 to 1. Here ``iterations`` is phase 2's length and each of these is the same fraction of
it. Phase 1 keeps its own length (``phase_one_iterations``, official 1000): it renders nothing
(a flow loss on V·H·W points, about a millisecond a step), so shortening it saves nothing and
it needs the steps to converge. Depth-valued constants (the residual bound 50, the phase-1
learning rates 1 and 5) are in LLFF's depth units; ``depth_unit`` multiplies them for scenes
of another depth scale (the reproduction's choice is in its note).

Baselines (:func:`fit_gaussian_splatting`): vanilla 3DGS (free means, anisotropic scales,
rotations, opacities, SH-DC colours; Adam with 3DGS's learning rates: means 1.6e-4 → 1.6e-6 ×
scene extent, exponential decay; colours 2.5e-3; opacity 0.05; scales 5e-3; rotations 1e-3;
(1 − 0.2) L1 + 0.2 (1 − SSIM)), started from points at random depths on random input pixels
(``init="random"``: an SfM stand-in) or from CoherentGS's phase-1 depths (``init="depth"``:
per-pixel Gaussians with free 3-D motion).

Cost: a rasterisation (:mod:`.rasterizer`) plus two decoder passes over V·H·W pixels, the
flow warp and the TV; phase 1 renders nothing. Measured on one CPU thread at 32 × 32 with
3 views (``benchmarks/coherentgs.py``): a CoherentGS step costs ~8.5× a vanilla 3DGS step with
the official decoder widths (ngf 15 / 10) and ~2.5× with ngf 4 / 3 — the decoders, not the
rasteriser, dominate on a CPU (the issue's 1.2× target is not met).

Departures from the official code: no VGG perceptual term (0.05 · relu1_1, no offline
weights); a correct backward warp (the official one samples half a pixel off, so zero flow is
not the identity); SH degree 0 (RGB) so no colour is trained; non-power-of-two decoder sizes
by resizing (:class:`ImplicitDecoder`); our rasteriser (:mod:`.rasterizer`) in place of the
CUDA one, its per-pixel candidate lists refreshed every ``refresh_every`` iterations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_choice, check_positive_int, check_range
from regzoo.methods.coherentgs.model import (
    CoherentGaussians,
    FreeGaussians,
    SparseViews,
    disparity_tv,
    flow_loss,
    photometric_loss,
)
from regzoo.methods.coherentgs.rasterizer import Rendering, render_gaussians
from regzoo.registry import Default, register
from regzoo.train import fit
from regzoo.train.distributed import DistributedContext
from regzoo.train.loop import History

OFFICIAL_PHASE_TWO = 13000
"""Phase-2 iterations of the official run (7001–20000), the unit of the schedule fractions."""


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class CoherentGSConfig:
    """Hyperparameters of :func:`fit_coherentgs` (official values; module docstring).

    Args:
        iterations: phase-2 iterations (official 13000).
        phase_one_iterations: phase-1 iterations (official 1000; flow loss only, no render).
        steps_per_epoch: iterations between checkpoints (divides both phases' lengths and is a
            multiple of ``refresh_every``).
        multisample_start, reset_until: fractions of phase 2 where multisampling starts and
            radius resets stop (official 5000 / 13000 and 8000 / 13000).
        tv_ramp_start: γ_t at the start of phase 2, rising linearly to 1 (official
            iteration / 20000 from iteration 7001: 0.35).
        multisample_max: the largest supersampling factor (official 4).
        reset_every: iterations between radius resets (official 100).
        depth_unit: the scene's depth unit over LLFF's; multiplies the residual bound and the
            phase-1 learning rates.
        scale_lr, offset_lr: phase-1 Adam learning rates (official 1 and 5, LLFF units).
        decoder_lr, opacity_decoder_lr: (base, max) of the cyclic lrs (official (1e-6, 1e-4)
            and (1e-6, 1e-5)); cycle half-periods ``decoder_cycle``, ``opacity_cycle`` as
            fractions of phase 2 (official 1000 / 13000 and 2000 / 13000).
        scaling_lr, rotation_lr: per-Gaussian Adam learning rates (official 1e-4, 1e-5).
        lambda_dssim: SSIM weight (3DGS 0.2).
        tv_weight: w_tv (official 5); 0 is the ablation without TV.
        flow_weight: w_flow (paper 0.1); 0 is the ablation without flow.
        flow_weight_twice: the official code's double application (w_flow² = 0.01).
        residual: ``"decoder"`` (paper) or ``"per_pixel"`` (the ablation without decoder).
        ngf_depth, ngf_opacity: decoder widths (``None``: the official ones by view count).
        k: Gaussians composited per pixel; ``refresh_every``: iterations between candidate
            selections.
        background: RGB behind the Gaussians (official white).
        seed: seeds the view / reference / supersampling draws.
        init_seed: seeds the decoders' initialisation (a forked RNG: the caller's is untouched).
    """

    iterations: int = 13000
    phase_one_iterations: int = 1000
    steps_per_epoch: int = 100
    multisample_start: float = 5000 / OFFICIAL_PHASE_TWO
    reset_until: float = 8000 / OFFICIAL_PHASE_TWO
    tv_ramp_start: float = 7000 / 20000
    multisample_max: int = 4
    reset_every: int = 100
    depth_unit: float = 1.0
    scale_lr: float = 1.0
    offset_lr: float = 5.0
    decoder_lr: tuple[float, float] = (1e-6, 1e-4)
    opacity_decoder_lr: tuple[float, float] = (1e-6, 1e-5)
    decoder_cycle: float = 1000 / OFFICIAL_PHASE_TWO
    opacity_cycle: float = 2000 / OFFICIAL_PHASE_TWO
    scaling_lr: float = 1e-4
    rotation_lr: float = 1e-5
    lambda_dssim: float = 0.2
    tv_weight: float = 5.0
    flow_weight: float = 0.1
    flow_weight_twice: bool = False
    residual: str = "decoder"
    ngf_depth: int | None = None
    ngf_opacity: int | None = None
    k: int = 128
    refresh_every: int = 10
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seed: int = 0
    init_seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("iterations", self.iterations)
        check_positive_int("phase_one_iterations", self.phase_one_iterations)
        check_positive_int("steps_per_epoch", self.steps_per_epoch)
        check_positive_int("init_seed", self.init_seed, minimum=0)
        check_positive_int("multisample_max", self.multisample_max)
        check_positive_int("reset_every", self.reset_every)
        check_positive_int("k", self.k)
        check_positive_int("refresh_every", self.refresh_every)
        check_positive_int("seed", self.seed, minimum=0)
        for name in ("decoder_cycle", "opacity_cycle"):
            check_range(name, getattr(self, name), 0.0, 1.0, low_inclusive=False,
                        high_inclusive=False)
        for name in ("multisample_start", "reset_until", "tv_ramp_start"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        for name in ("depth_unit", "scale_lr", "offset_lr", "scaling_lr", "rotation_lr"):
            check_range(name, getattr(self, name), 0.0, low_inclusive=False)
        for name in ("decoder_lr", "opacity_decoder_lr"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"{name} must be (base, max) with 0 < base ≤ max, got "
                                 f"{getattr(self, name)}")
        check_range("lambda_dssim", self.lambda_dssim, 0.0, 1.0)
        check_range("tv_weight", self.tv_weight, 0.0)
        check_range("flow_weight", self.flow_weight, 0.0)
        _check_bool("flow_weight_twice", self.flow_weight_twice)
        check_choice("residual", self.residual, ("decoder", "per_pixel"))
        for name in ("ngf_depth", "ngf_opacity"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        for name in ("iterations", "phase_one_iterations"):
            if getattr(self, name) % self.steps_per_epoch:
                raise ValueError(f"{name} ({getattr(self, name)}) must be a multiple of "
                                 f"steps_per_epoch ({self.steps_per_epoch})")
        if self.steps_per_epoch % self.refresh_every:
            raise ValueError(f"steps_per_epoch ({self.steps_per_epoch}) must be a multiple of "
                             f"refresh_every ({self.refresh_every}) so a resume is exact")

    @property
    def effective_flow_weight(self) -> float:
        """The flow term's weight in the loss: w, or w² as the official code."""
        return self.flow_weight ** 2 if self.flow_weight_twice else self.flow_weight


@dataclass(frozen=True)
class SplattingConfig:
    """Hyperparameters of :func:`fit_gaussian_splatting` (3DGS defaults, arXiv 2308.04079).

    ``init``: ``"random"`` (vanilla 3DGS from points at uniform random depths in
    ``views.depth_bounds`` on random input pixels) or ``"depth"`` (one Gaussian per input pixel
    at CoherentGS's phase-1 depth, then free 3-D motion; ``phase_one`` holds that phase's
    settings). ``position_lr`` (start, end) is multiplied by the scene extent (1.1 × the largest
    camera distance from the cameras' centroid, as 3DGS). ``opacity``: initial opacity (3DGS
    0.1).
    """

    iterations: int = 14000
    steps_per_epoch: int = 100
    init: str = "random"
    position_lr: tuple[float, float] = (1.6e-4, 1.6e-6)
    color_lr: float = 2.5e-3
    opacity_lr: float = 0.05
    scaling_lr: float = 5e-3
    rotation_lr: float = 1e-3
    lambda_dssim: float = 0.2
    opacity: float = 0.1
    radius_mult: float = 1.2
    k: int = 128
    refresh_every: int = 10
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    phase_one: CoherentGSConfig | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("iterations", self.iterations)
        check_positive_int("steps_per_epoch", self.steps_per_epoch)
        check_positive_int("k", self.k)
        check_positive_int("refresh_every", self.refresh_every)
        check_positive_int("seed", self.seed, minimum=0)
        check_choice("init", self.init, ("random", "depth"))
        start, end = self.position_lr
        if not 0 < end <= start:
            raise ValueError(f"position_lr must be (start, end) with 0 < end ≤ start, got "
                             f"{self.position_lr}")
        for name in ("color_lr", "opacity_lr", "scaling_lr", "rotation_lr", "radius_mult"):
            check_range(name, getattr(self, name), 0.0, low_inclusive=False)
        check_range("lambda_dssim", self.lambda_dssim, 0.0, 1.0)
        check_range("opacity", self.opacity, 0.0, 1.0, low_inclusive=False,
                    high_inclusive=False)
        if self.iterations % self.steps_per_epoch:
            raise ValueError(f"iterations ({self.iterations}) must be a multiple of "
                             f"steps_per_epoch ({self.steps_per_epoch})")
        if self.steps_per_epoch % self.refresh_every:
            raise ValueError(f"steps_per_epoch ({self.steps_per_epoch}) must be a multiple of "
                             f"refresh_every ({self.refresh_every}) so a resume is exact")


@dataclass
class CoherentGSResult:
    """The result of a CoherentGS or 3DGS procedure.

    What the procedures return: the trained ``model`` (:class:`CoherentGaussians` or
    :class:`FreeGaussians`), the loop's ``history``, and the phase-1 alignment (per-view depth
    ``scales`` and ``offsets``; empty for vanilla 3DGS).
    """

    model: nn.Module
    history: History
    scales: list[float]
    offsets: list[float]


class _Draws:
    """Per-iteration random draws.

    The per-iteration draws (view, reference view, supersampling factor), deterministic in
    (seed, epoch) so a resumed run draws what the uninterrupted one did.
    """

    def __init__(self, seed: int, steps: int, views: int, factors: int) -> None:
        self.seed, self.steps, self.views, self.factors = seed, steps, views, factors
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        draws = torch.stack([torch.randint(0, self.views, (self.steps,), generator=g),
                             torch.randint(0, self.views, (self.steps,), generator=g),
                             torch.randint(1, self.factors + 1, (self.steps,), generator=g)], 1)
        yield from ((row,) for row in draws)


class _Optimizers:
    """Several optimisers stepped as one.

    Several optimisers and per-step schedulers as one object for :func:`fit`; ``active``
    picks the ones that step (phase 1 or 2).
    """

    def __init__(self, groups: Mapping[str, tuple[torch.optim.Optimizer, Any]],
                 active: Callable[[], tuple[str, ...]]) -> None:
        self.groups = dict(groups)
        self.active = active

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer, _ in self.groups.values():
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for name in self.active():
            optimizer, scheduler = self.groups[name]
            optimizer.step()
            if scheduler is not None:
                scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {name: {"optimizer": opt.state_dict(),
                       "scheduler": None if sch is None else sch.state_dict()}
                for name, (opt, sch) in self.groups.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, (opt, sch) in self.groups.items():
            opt.load_state_dict(state[name]["optimizer"])
            if sch is not None:
                sch.load_state_dict(state[name]["scheduler"])


class _Counter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("iteration", torch.zeros((), dtype=torch.int64))


class _CandidateCache:
    """Rasteriser candidate lists per (view, factor), cleared every ``every`` iterations."""

    def __init__(self, every: int) -> None:
        self.every, self.lists = every, {}

    def render(self, gaussians: tuple[torch.Tensor, ...], camera: Any, height: int, width: int,
               key: Any, iteration: int, background: tuple[float, float, float],
               k: int) -> Rendering:
        if iteration % self.every == 0:
            self.lists.clear()
        out = render_gaussians(*gaussians, camera, height, width, background=background,
                               k=k, candidates=self.lists.get(key))
        self.lists[key] = out.candidates
        return out


def _render_view(gaussians: tuple[torch.Tensor, ...], views: SparseViews,
                 cache: _CandidateCache, view: int, factor: int, iteration: int,
                 background: tuple[float, float, float], k: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render one training view.

    Render training view ``view`` at ``factor``× supersampling, pooled back: (3, H, W),
    (H, W) depth, (H, W) alpha.
    """
    h, w = views.size
    camera = views.camera_tensors[view].scaled(factor) if factor > 1 else \
        views.camera_tensors[view]
    out = cache.render(gaussians, camera, h * factor, w * factor, (view, factor), iteration,
                       background, k)
    rgb, depth, alpha = out.rgb.permute(2, 0, 1), out.depth, out.alpha
    if factor > 1:
        rgb = F.avg_pool2d(rgb[None], factor)[0]
        depth = F.avg_pool2d(depth[None, None], factor)[0, 0]
        alpha = F.avg_pool2d(alpha[None, None], factor)[0, 0]
    return rgb, depth, alpha


def phase_two_terms(model: CoherentGaussians, views: SparseViews, config: CoherentGSConfig,
                    view: int, reference: int, rgb: torch.Tensor, depth: torch.Tensor,
                    alpha: torch.Tensor, iteration: int,
                    positions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The phase-2 loss terms.

    The weighted terms of the phase-2 loss for one rendered training view:
    ``rgb`` (3, H, W), ``depth`` and ``alpha`` (H, W) its render, ``positions`` the Gaussian
    means (V, H, W, 3) the render used (computed when ``None``).
    """
    target = views.images[view].permute(2, 0, 1)
    terms = {"photometric": photometric_loss(rgb, target, lambda_dssim=config.lambda_dssim)}
    if config.tv_weight > 0:
        gamma = config.tv_ramp_start + (1.0 - config.tv_ramp_start) * iteration / config.iterations
        terms["tv"] = config.tv_weight * disparity_tv(depth, alpha, model.layers[view], gamma)
    if config.flow_weight > 0:
        flows, masks = model.flow_tables
        positions = model.positions() if positions is None else positions
        terms["flow"] = config.effective_flow_weight * flow_loss(positions, flows, masks,
                                                                 reference)
    return terms


def _device_of(views: SparseViews) -> torch.device:
    return views.images.device


def _run_fit(model: nn.Module, draws: _Draws, step: Callable, optimizers: _Optimizers,
             epochs: int, state: dict[str, Any], evaluate: Any, context: Any,
             checkpoint_path: str | None, resume: bool, progress: bool | None, log: Any,
             desc: str, after_step: Callable[[], None]) -> History:
    return fit(model, draws, step, optimizers, epochs=epochs, evaluate=evaluate, state=state,
               after_step=after_step, context=context, distribute=False,
               checkpoint_path=checkpoint_path, resume=resume, progress=progress, desc=desc,
               log=log)


def _check_views(views: object) -> SparseViews:
    if not isinstance(views, SparseViews):
        raise TypeError(f"views must be a SparseViews, got {type(views).__name__}")
    return views


@register(
    "coherentgs",
    kind="procedure",
    declares={
        "owns_loss": "its photometric, depth and flow losses on rendered views are the method",
    },
    summary="Sparse-view Gaussian splatting with one Gaussian per input pixel on its ray, "
            "depths aligned by flow, then moved by a CNN-decoded masked residual under TV and "
            "flow-consistency priors.",
    equation="z = z₀ + 50·Σ_c m_c tanh(D(γ(v)))_c / Σ_c m_c;  L = 0.8·L1_ms + 0.2·(1−SSIM) "
             "+ 5·TV(δ) + 0.1·L_flow",
    defaults=(
        Default("iterations", 13000, "official train.py (phase 2: 7001–20000)"),
        Default("phase_one_iterations", 1000, "official train.py (6001–7000)"),
        Default("tv_weight", 5.0, "official train.py smooth_coeff"),
        Default("flow_weight", 0.1, "paper; the official code applies it twice (0.01)"),
        Default("flow_weight_twice", False, "paper (official: True)"),
        Default("lambda_dssim", 0.2, "3DGS / official arguments"),
        Default("decoder_lr", (1e-6, 1e-4), "official CyclicLR triangular2"),
        Default("opacity_decoder_lr", (1e-6, 1e-5), "official CyclicLR triangular2"),
        Default("scaling_lr", 1e-4, "official arguments"),
        Default("rotation_lr", 1e-5, "official arguments"),
        Default("scale_lr", 1.0, "official monoso_optimizer"),
        Default("offset_lr", 5.0, "official monoso_optimizer"),
        Default("multisample_max", 4, "official train.py randint(1, 4)"),
        Default("reset_every", 100, "official train.py"),
        Default("residual", "decoder", "paper (implicit decoder)"),
        Default("depth_unit", 1.0, "LLFF units (the official constants)"),
        Default("k", 128, "regzoo rasteriser: Gaussians per pixel"),
    ),
    variants=("without decoder (residual='per_pixel')", "without TV (tv_weight=0)",
              "without flow (flow_weight=0)", "official double flow weight "
              "(flow_weight_twice=True)", "vanilla 3DGS (fit_gaussian_splatting, init='random')",
              "per-pixel depth init with free 3-D motion (fit_gaussian_splatting, "
              "init='depth')"),
)
def fit_coherentgs(
    views: SparseViews,
    *,
    config: CoherentGSConfig | None = None,
    evaluate: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
    context: DistributedContext | None = None,
    checkpoint_path: str | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> CoherentGSResult:
    """Train CoherentGS on ``views`` (module docstring): phase 1 then phase 2.

    Args:
        views: the :class:`SparseViews` (images, cameras, monocular depth, depth layers, flows).
        config: :class:`CoherentGSConfig`.
        evaluate: per-epoch metrics of the model (``evaluate(model, epoch)``, no gradient).
        context, checkpoint_path, resume, progress, log: as in :func:`regzoo.train.fit`
            (one process: the Gaussians are not data-parallel).
    """
    config = config or CoherentGSConfig()
    views = _check_views(views)
    device = context.device if context is not None else _device_of(views)
    model = _coherent_model(views, config).to(device)
    return _train_coherent(model, views, config, evaluate, context, checkpoint_path, resume,
                           progress, log, phase_two=True)


def _coherent_model(views: SparseViews, config: CoherentGSConfig) -> CoherentGaussians:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)
        model = CoherentGaussians(views, depth_unit=config.depth_unit, residual=config.residual,
                                  ngf_depth=config.ngf_depth, ngf_opacity=config.ngf_opacity)
    model.flow_tables = views.flow_tensor()
    return model


def _phase_one_optimizer(model: CoherentGaussians, config: CoherentGSConfig,
                         iterations: int) -> tuple[torch.optim.Optimizer, Any]:
    unit = config.depth_unit
    optimizer = torch.optim.Adam([{"params": [model.depth_scale], "lr": config.scale_lr * unit},
                                  {"params": [model.depth_offset],
                                   "lr": config.offset_lr * unit}])
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=iterations)


def _cyclic(params: list[nn.Parameter], lrs: tuple[float, float], half_period: int
            ) -> tuple[torch.optim.Optimizer, Any]:
    optimizer = torch.optim.AdamW(params, lr=lrs[0])
    return optimizer, torch.optim.lr_scheduler.CyclicLR(
        optimizer, base_lr=lrs[0], max_lr=lrs[1], mode="triangular2",
        step_size_up=max(1, half_period), cycle_momentum=False)


def _train_coherent(model: CoherentGaussians, views: SparseViews, config: CoherentGSConfig,
                    evaluate: Any, context: Any, checkpoint_path: str | None, resume: bool,
                    progress: bool | None, log: Any, *, phase_two: bool) -> CoherentGSResult:
    p1 = config.phase_one_iterations
    total = p1 + config.iterations if phase_two else p1
    t2_end = config.iterations
    groups = {"phase1": _phase_one_optimizer(model, config, p1)}
    if phase_two:
        groups["depth_decoder"] = _cyclic(model.decoder_parameters(), config.decoder_lr,
                                          round(config.decoder_cycle * config.iterations))
        groups["opacity_decoder"] = _cyclic(model.opacity_decoder_parameters(),
                                            config.opacity_decoder_lr,
                                            round(config.opacity_cycle * config.iterations))
        groups["gaussians"] = (torch.optim.Adam(
            [{"params": [model.log_scales], "lr": config.scaling_lr},
             {"params": [model.quaternions], "lr": config.rotation_lr}], eps=1e-15), None)
    counter = _Counter().to(model.phase.device)
    cache = _CandidateCache(config.refresh_every)
    flows, masks = model.flow_tables

    def active() -> tuple[str, ...]:
        if int(counter.iteration) < p1:
            return ("phase1",)
        return ("depth_decoder", "opacity_decoder", "gaussians")

    def step(net: nn.Module, batch: tuple[torch.Tensor]) -> torch.Tensor:
        t = int(counter.iteration)
        view, reference, factor = (int(x) for x in batch[0])
        if t < p1:
            return flow_loss(model.positions(), flows, masks, reference)
        if int(model.phase) == 1:
            model.start_phase_two()
        t -= p1  # the phase-2 iteration
        if t < round(config.reset_until * t2_end) and t % config.reset_every == 0:
            model.reset_scales()
        factor = factor if t >= round(config.multisample_start * t2_end) else 1
        positions = model.positions()
        rgb, depth, alpha = _render_view(model.gaussians(positions), views, cache, view, factor,
                                         t, config.background, config.k)
        terms = phase_two_terms(model, views, config, view, reference, rgb, depth, alpha, t,
                                positions)
        return sum(terms.values())

    def after_step() -> None:
        counter.iteration += 1

    steps = config.steps_per_epoch if phase_two else total
    draws = _Draws(config.seed, steps, views.num_views, config.multisample_max)
    epochs = total // steps
    history = _run_fit(model, draws, step, _Optimizers(groups, active), epochs,
                       {"counter": counter}, evaluate, context, checkpoint_path, resume,
                       progress, log, "coherentgs", after_step)
    if phase_two and int(model.phase) == 1:
        model.start_phase_two()
    return CoherentGSResult(model, history, [float(s) for s in model.depth_scale.detach()],
                            [float(b) for b in model.depth_offset.detach()])


def align_depth(views: SparseViews, config: CoherentGSConfig | None = None) -> CoherentGSResult:
    """Phase 1 alone: the monocular depth aligned by flow.

    Phase 1 alone: the per-view scale and offset of the monocular depth fitted by the flow
    loss (``config.phase_one_iterations`` Adam steps); the returned model is in phase 2 with
    z₀ = s d̂ + b (no residual trained).
    """
    config = config or CoherentGSConfig()
    views = _check_views(views)
    model = _coherent_model(views, config)
    result = _train_coherent(model, views, config, None, None, None, False, False, None,
                             phase_two=False)
    model.start_phase_two()
    return result


def _scene_extent(views: SparseViews) -> float:
    centres = torch.stack([torch.linalg.inv(c.w2c)[:3, 3] for c in views.camera_tensors])
    radius = (centres - centres.mean(0)).norm(dim=1).max()
    return 1.1 * max(float(radius), 1e-3)


def _initial_points(views: SparseViews, config: SplattingConfig
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float], list[float]]:
    from regzoo.methods.coherentgs.model import camera_center, ray_directions

    v, (h, w) = views.num_views, views.size
    dirs = torch.stack([ray_directions(c, h, w) for c in views.camera_tensors]).reshape(-1, 3)
    origins = torch.stack([camera_center(c) for c in views.camera_tensors])
    focal = torch.stack([c.intrinsics[1] for c in views.camera_tensors])
    view_of = torch.arange(v, device=dirs.device).repeat_interleave(h * w)
    colors = views.images.reshape(-1, 3)
    scales: list[float] = []
    offsets: list[float] = []
    if config.init == "random":
        if views.depth_bounds is None:
            raise ValueError("init='random' needs views.depth_bounds = (near, far) to draw "
                             "depths from")
        near, far = views.depth_bounds
        g = torch.Generator().manual_seed(config.seed)
        n = v * h * w
        pick = torch.randint(0, n, (n,), generator=g).to(dirs.device)
        depth = (near + (far - near) * torch.rand(n, generator=g, dtype=torch.float64)
                 ).to(dirs)
        dirs, view_of, colors = dirs[pick], view_of[pick], colors[pick]
    else:
        phase_one = config.phase_one or CoherentGSConfig(seed=config.seed)
        aligned = align_depth(views, phase_one)
        depth = aligned.model.z0.reshape(-1)
        scales, offsets = aligned.scales, aligned.offsets
    means = origins[view_of] + depth[:, None] * dirs
    radii = config.radius_mult * depth / (2.0 * focal[view_of])
    return means, colors, radii, scales, offsets


def fit_gaussian_splatting(
    views: SparseViews,
    *,
    config: SplattingConfig | None = None,
    evaluate: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
    context: DistributedContext | None = None,
    checkpoint_path: str | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> CoherentGSResult:
    """The 3DGS baselines (module docstring): free Gaussians, photometric loss only."""
    config = config or SplattingConfig()
    views = _check_views(views)
    device = context.device if context is not None else _device_of(views)
    means, colors, radii, scales, offsets = _initial_points(views, config)
    model = FreeGaussians(views, means, colors, radii, opacity=config.opacity).to(device)
    extent = _scene_extent(views)
    start, end = config.position_lr
    position = torch.optim.Adam([model.means], lr=start * extent, eps=1e-15)
    decay = torch.optim.lr_scheduler.LambdaLR(
        position, lambda t: math.exp(math.log(end / start) * min(t / config.iterations, 1.0)))
    rest = torch.optim.Adam([{"params": [model.sh_dc], "lr": config.color_lr},
                             {"params": [model.opacity_logits], "lr": config.opacity_lr},
                             {"params": [model.log_scales], "lr": config.scaling_lr},
                             {"params": [model.quaternions], "lr": config.rotation_lr}],
                            eps=1e-15)
    optimizers = _Optimizers({"means": (position, decay), "rest": (rest, None)},
                             lambda: ("means", "rest"))
    counter = _Counter().to(device)
    cache = _CandidateCache(config.refresh_every)

    def step(net: nn.Module, batch: tuple[torch.Tensor]) -> torch.Tensor:
        view = int(batch[0][0])
        rgb, _, _ = _render_view(model.gaussians(), views, cache, view, 1,
                                 int(counter.iteration), config.background, config.k)
        return photometric_loss(rgb, views.images[view].permute(2, 0, 1),
                                lambda_dssim=config.lambda_dssim, multiscale=False)

    def after_step() -> None:
        counter.iteration += 1

    draws = _Draws(config.seed, config.steps_per_epoch, views.num_views, 1)
    history = _run_fit(model, draws, step, optimizers, config.iterations // config.steps_per_epoch,
                       {"counter": counter}, evaluate, context, checkpoint_path, resume,
                       progress, log, "3dgs", after_step)
    return CoherentGSResult(model, history, scales, offsets)
