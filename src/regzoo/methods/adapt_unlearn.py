r"""Adapt-then-Unlearn: remove a class from a pretrained GAN by repelling it from adapted copies.

Tiwari, Prakash, Mishra, Kumar, Rathore, Dhawan ... "Adapt then Unlearn: Exploring Parameter
Space Semantics for Unlearning in Generative Adversarial Networks", TMLR 2025. Official code
(MIT per its README badge, read only): github.com/atriguha/Adapt_Unlearn,
``Negative_Adaptation/EWC_ADAPT_MNIST`` (stage 1) and
``Unlearning/Unlearning_MNIST/train_different_losses.py`` (stage 2).

No training data is needed: the user flags generated samples that show the unwanted class (here
an oracle classifier does, :func:`split_by_oracle`).

**Stage 1, negative adaptation (§3.1).** M copies of the pretrained generator θ_G are adapted
to the few negatives with the GAN losses plus elastic weight consolidation, so they move
towards the unwanted class without collapsing:

.. math::

    L_{EWC}(\theta) = \tfrac{\lambda}{2} \textstyle\sum_k F_k\,(\theta_k - \theta_{G,k})^2,
    \qquad F_k = \tfrac{1}{B} \textstyle\sum_{i=1}^{B}
    \big(\partial D(G_{\theta_G}(z_i)) / \partial\theta_k\big)^2 ,

the Fisher diagonal from the discriminator's logit on B = 32 generated samples
(:func:`fisher_diagonal`; official ``estimate_fisher``, per-sample squared gradients).

**Stage 2, unlearning (§3.2).** From θ_G, the GAN is trained on positives (generated samples
without the class) with a repulsion R(θ) added to the generator's loss, pushing θ away from the
adapted θ_N⁽¹⁾…θ_N⁽ᴹ⁾ (:class:`ParameterRepulsion`). With P parameter tensors,

.. math::

    d(\theta) = \frac{1}{2MP} \sum_{k=1}^{P} \sum_{m=1}^{M}
        \operatorname{mean}\big((\theta_k - \theta^{(m)}_{N,k})^2\big), \qquad
    R_{NL2} = -\gamma d, \quad R_{EL2} = 100\, e^{-\gamma d}, \quad R_{IL2} = \gamma / d .

EL2 is the default (the paper's ablation: best sample quality). NL2 is unbounded below.

Departures from the official code, each an option:

* ``normalize="official"``: the code computes ``value / P / 2 * M`` (operator precedence), i.e.
  M/(2P) instead of 1/(2MP): the same distance times M². Default ``"mean"``, the paper's intent.
* ``gamma_unit="initial"`` measures d in units of d(θ_G), the distance at the start of stage 2
  (the paper's "auto-scaled γ": γ becomes scale-free, γ·d starts at γ). The code's
  ``--scale_repel_loss`` is not an auto-scale: it divides d by 10^(number of digits of ⌊d⌋), a
  constant 10 for 0 < d < 10, i.e. a fixed γ = 0.1 for NL2/EL2 under ``gamma_unit="absolute"``.
* λ_EWC = 5e8 (official) fits StyleGAN2's Fisher, whose entries are tiny. Our generator's Fisher
  has another scale, so :class:`AdaptUnlearnConfig` takes ``ewc_strength`` κ and sets
  λ = κ / mean(F): the EWC pull then has the same size relative to the Fisher on any model.
* The official stages restore the pretraining Adam state and use StyleGAN2's lazy R1 (γ = 10
  every 16 steps) and path-length regulariser; our DCGAN has neither stored optimizer state nor
  a mapping network: fresh Adam with the pretraining's learning rate and betas, R1 every
  ``r1_every`` steps (the DCGAN's own recipe), no path length.
* The official stage 1 starts G from the EMA generator and stage 2 from the raw one while its
  anchors are the adapted EMA generators: kept (``unlearn`` takes whichever the caller passes).

Cost: the repulsion adds one pass over the parameters per generator step (O(M·|θ|)), next to a
GAN step; stage 1 costs M short fine-tunings.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_choice, check_positive_int, check_range, check_tensor
from regzoo.registry import Default, register
from regzoo.train.loop import History, fit

KINDS = ("nl2", "el2", "il2")
EL2_SCALE = 100.0
"""The factor of the official EL2 term (``100 * torch.exp(...)``)."""


def _named_parameters(model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(model, nn.Module):
        return dict(model.named_parameters())
    return dict(model)


def parameter_distance(model: nn.Module | Mapping[str, torch.Tensor],
                       anchors: Sequence[Mapping[str, torch.Tensor]],
                       normalize: str = "mean") -> torch.Tensor:
    """d(θ) between ``model``'s parameters and the ``anchors`` (module docstring, §3.2).

    ``normalize="mean"``: Σ_k Σ_m mean((θ_k − θ_N,k^m)²) / (2MP); ``"official"``: the same sum
    times M/(2P). Differentiable in ``model``'s parameters; the anchors are constants.
    """
    check_choice("normalize", normalize, ("mean", "official"))
    params = _named_parameters(model)
    if not anchors:
        raise ValueError("anchors is empty: pass the adapted models' parameters (M ≥ 1)")
    total = None
    for m, anchor in enumerate(anchors):
        missing = sorted(set(params) - set(anchor))
        if missing:
            raise ValueError(f"anchors[{m}] lacks the parameters {missing[:3]}...: anchors must "
                             "be state dicts of the same architecture as the model")
        for name, value in params.items():
            target = anchor[name].to(device=value.device, dtype=value.dtype)
            if target.shape != value.shape:
                raise ValueError(f"anchors[{m}][{name!r}] has shape {tuple(target.shape)}, the "
                                 f"model's is {tuple(value.shape)}")
            term = (value - target).square().mean()
            total = term if total is None else total + term
    assert total is not None
    count_m, count_p = len(anchors), len(params)
    scale = 1 / (2 * count_m * count_p) if normalize == "mean" else count_m / (2 * count_p)
    return total * scale


class ParameterRepulsion(nn.Module):
    """R(θ): the repulsion from adapted parameters, a penalty ``repulsion(model) -> scalar``.

    Args:
        anchors: the adapted generators' parameters θ_N⁽ᵐ⁾ (state dicts; copied, frozen).
        kind: ``"nl2"`` (−γd), ``"el2"`` (100·exp(−γd)) or ``"il2"`` (γ/d).
        gamma: γ ≥ 0; 0 turns the term into a constant (zero gradient).
        normalize: ``"mean"`` or ``"official"`` (see :func:`parameter_distance`).
        gamma_unit: ``"absolute"`` (d as is) or ``"initial"``: d divided by d(``reference``).
        reference: θ_G, needed by ``gamma_unit="initial"``.
    """

    needs_higher_order_grad = False
    batch_coupled = False

    def __init__(self, anchors: Sequence[Mapping[str, torch.Tensor]], *, kind: str = "el2",
                 gamma: float = 1.0, normalize: str = "mean", gamma_unit: str = "absolute",
                 reference: nn.Module | Mapping[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.kind = check_choice("kind", kind, KINDS)
        self.gamma = check_range("gamma", gamma, 0.0)
        self.normalize = check_choice("normalize", normalize, ("mean", "official"))
        self.gamma_unit = check_choice("gamma_unit", gamma_unit, ("absolute", "initial"))
        if not anchors:
            raise ValueError("anchors is empty: pass the adapted models' parameters (M ≥ 1)")
        self.anchors = [{k: v.detach().clone() for k, v in a.items()} for a in anchors]
        # Σ_m ‖θ − A_m‖² = M‖θ − Ā‖² + Σ_m ‖A_m − Ā‖²: one subtraction per tensor, whatever M.
        self.centre = {k: torch.stack([a[k] for a in self.anchors]).mean(0)
                       for k in self.anchors[0]}
        self.spread = {k: sum(float((a[k] - c).double().square().sum()) for a in self.anchors)
                       for k, c in self.centre.items()}
        unit = 1.0
        if gamma_unit == "initial":
            if reference is None:
                raise ValueError("gamma_unit='initial' needs reference= (θ_G, the pretrained "
                                 "generator) to measure d in units of d(θ_G)")
            with torch.no_grad():
                unit = float(parameter_distance(reference, self.anchors, normalize))
            if not unit > 0:
                raise ValueError("the reference equals every anchor (d(θ_G) = 0): the adapted "
                                 "models did not move; adapt longer or with a weaker EWC")
        self.unit = unit

    def distance(self, model: nn.Module) -> torch.Tensor:
        """d(θ) in the chosen unit (:func:`parameter_distance`, through the anchors' mean)."""
        params = _named_parameters(model)
        if set(params) != set(self.centre):
            raise ValueError(f"model's parameters {sorted(set(params) ^ set(self.centre))[:3]} "
                             "do not match the anchors'; anchors must come from the same "
                             "architecture")
        count_m, count_p = len(self.anchors), len(params)
        total = sum((count_m * (value - self.centre[name].to(value)).square().sum()
                     + self.spread[name]) / value.numel() for name, value in params.items())
        scale = 1 / (2 * count_m * count_p) if self.normalize == "mean" else count_m / (2 * count_p)
        return total * scale / self.unit

    def forward(self, model: nn.Module) -> torch.Tensor:
        d = self.distance(model)
        if self.kind == "nl2":
            return -self.gamma * d
        if self.kind == "el2":
            return EL2_SCALE * torch.exp(-self.gamma * d)
        if not bool(d > 0):
            raise FloatingPointError("IL2 repulsion γ/d at d = 0: the generator sits on an "
                                     "anchor; start from θ_G, not an adapted model")
        return self.gamma / d

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, gamma={self.gamma}, M={len(self.anchors)}, "
                f"normalize={self.normalize}, gamma_unit={self.gamma_unit}")


def fisher_diagonal(generator: nn.Module, discriminator: nn.Module, *, samples: int = 32,
                    latent_dim: int, names: Sequence[str] | None = None,
                    rng: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """F_k = mean_i (∂D(G(z_i))/∂θ_k)² over ``samples`` latents (official ``estimate_fisher``).

    ``names`` restricts it to some of the generator's parameters (official: the synthesis
    convolutions, i.e. all of a DCGAN's generator; default all). ``rng`` draws the latents.
    """
    check_positive_int("samples", samples)
    params = dict(generator.named_parameters())
    chosen = list(params) if names is None else list(names)
    unknown = sorted(set(chosen) - set(params))
    if unknown:
        raise ValueError(f"names {unknown} are not parameters of the generator; its parameters: "
                         f"{list(params)}")
    device = next(generator.parameters()).device
    z = torch.randn(samples, latent_dim, generator=rng).to(device)
    squares = {n: torch.zeros_like(params[n]) for n in chosen}
    for i in range(samples):
        logit = discriminator(generator(z[i:i + 1])).sum()
        grads = torch.autograd.grad(logit, [params[n] for n in chosen], allow_unused=True)
        for n, g in zip(chosen, grads):
            if g is not None:
                squares[n] += g.detach().square()
    return {n: s / samples for n, s in squares.items()}


class ElasticWeightConsolidation(nn.Module):
    """(λ/2) Σ_k F_k (θ_k − θ*_k)², a penalty ``ewc(model) -> scalar`` (Kirkpatrick et al. 2017)."""

    needs_higher_order_grad = False
    batch_coupled = False

    def __init__(self, fisher: Mapping[str, torch.Tensor],
                 reference: Mapping[str, torch.Tensor], strength: float) -> None:
        super().__init__()
        self.strength = check_range("strength", strength, 0.0)
        missing = sorted(set(fisher) - set(reference))
        if missing:
            raise ValueError(f"reference lacks the Fisher's parameters {missing[:3]}")
        self.fisher = {k: v.detach().clone() for k, v in fisher.items()}
        self.reference = {k: reference[k].detach().clone() for k in fisher}

    def forward(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        total = sum((self.fisher[k].to(params[k]) * (params[k] - self.reference[k].to(params[k]))
                     .square()).sum() for k in self.fisher)
        return self.strength / 2 * total


def split_by_oracle(images: torch.Tensor, oracle: Callable[[torch.Tensor], torch.Tensor],
                    unwanted: int, *, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(negatives, positives): ``images`` the oracle labels ``unwanted``, and the rest."""
    check_tensor("images", images, floating=True, finite=True)
    with torch.no_grad():
        labels = torch.cat([oracle(images[i:i + batch_size]).argmax(1)
                            for i in range(0, images.shape[0], batch_size)])
    flagged = labels == unwanted
    return images[flagged], images[~flagged]


@dataclass(frozen=True)
class GANStage:
    """One GAN fine-tuning stage: optimiser steps and the DCGAN's training recipe.

    The EMA decay 0.99 (half-life ≈ 69 steps) is short against a stage of a few hundred steps,
    as StyleGAN2's (half-life 10k images, ≈ 300 steps at batch 32) is against the official
    2000–5000 iterations; with the pretraining's 0.999 the EMA of a 300-step stage would still
    hold 74 % of the starting weights.
    """

    steps: int
    batch_size: int = 16
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    r1_gamma: float = 1.0
    ema_decay: float = 0.99
    steps_per_epoch: int = 50

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        check_range("lr", self.lr, 0.0, low_inclusive=False)
        check_range("r1_gamma", self.r1_gamma, 0.0)
        check_range("ema_decay", self.ema_decay, 0.0, 1.0, high_inclusive=False)
        check_positive_int("steps_per_epoch", self.steps_per_epoch)
        if self.steps % self.steps_per_epoch:
            raise ValueError(f"steps ({self.steps}) must be a multiple of steps_per_epoch "
                             f"({self.steps_per_epoch}), the checkpoint interval")


class _Draws:
    """``steps_per_epoch`` minibatches per epoch drawn with replacement, seeded by (seed, epoch)."""

    def __init__(self, images: torch.Tensor, batch_size: int, steps_per_epoch: int,
                 seed: int) -> None:
        self.images, self.batch_size = images, batch_size
        self.steps_per_epoch, self.seed, self.epoch = steps_per_epoch, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.steps_per_epoch

    def __iter__(self):  # type: ignore[no-untyped-def]
        rng = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        for _ in range(self.steps_per_epoch):
            index = torch.randint(self.images.shape[0], (self.batch_size,), generator=rng)
            z_seed = torch.randint(2**62, (1,), generator=rng)
            yield self.images[index], z_seed


@dataclass
class StageResult:
    """A trained stage: the generator, its EMA, the discriminator and the loop's history."""

    generator: nn.Module
    generator_ema: nn.Module
    discriminator: nn.Module
    history: History


def train_gan_stage(generator: nn.Module, discriminator: nn.Module, images: torch.Tensor,
                    stage: GANStage, *, latent_dim: int,
                    penalty: Callable[[nn.Module], torch.Tensor] | None = None,
                    evaluate: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
                    seed: int = 0, checkpoint_path: str | os.PathLike[str] | None = None,
                    resume: bool = False, progress: bool | None = None,
                    desc: str = "gan") -> StageResult:
    """Fine-tune copies of (``generator``, ``discriminator``) on ``images`` for ``stage.steps``.

    Each step: a discriminator step (non-saturating loss, R1 on real images), then a generator
    step on softplus(−D(G(z))) + ``penalty(G)`` (EWC in stage 1, the repulsion in stage 2),
    then the EMA update. Built on :func:`regzoo.train.fit` (checkpoint every
    ``stage.steps_per_epoch`` steps, exact resume: a finished stage resumes without training).
    ``evaluate(generator_ema, epoch)`` adds metrics to the history every epoch. The inputs are
    not modified; the copies live on ``images``' device.
    """
    check_tensor("images", images, floating=True, finite=True)
    if images.shape[0] == 0:
        raise ValueError("images is empty: no sample to train on")
    device = images.device
    g = copy.deepcopy(generator).to(device).train()
    d = copy.deepcopy(discriminator).to(device).train()
    g.requires_grad_(True)
    d.requires_grad_(True)
    average = copy.deepcopy(g).requires_grad_(False)
    opt_g = torch.optim.Adam(g.parameters(), lr=stage.lr, betas=stage.betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=stage.lr, betas=stage.betas)

    def step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        real, z_seed = batch
        rng = torch.Generator().manual_seed(int(z_seed))
        z_d = torch.randn(real.shape[0], latent_dim, generator=rng).to(device)
        z_g = torch.randn(real.shape[0], latent_dim, generator=rng).to(device)
        d.requires_grad_(True)
        real = real.reshape(real.shape[0], 1, *real.shape[-2:]) if real.ndim == 3 else real
        real = real.detach().requires_grad_(stage.r1_gamma > 0)
        real_logit = d(real)
        loss_d = (F.softplus(-real_logit).mean()
                  + F.softplus(d(model(z_d).detach())).mean())
        if stage.r1_gamma > 0:
            (grad,) = torch.autograd.grad(real_logit.sum(), real, create_graph=True)
            loss_d = loss_d + stage.r1_gamma / 2 * grad.square().flatten(1).sum(1).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        d.requires_grad_(False)
        loss_g = F.softplus(-d(model(z_g))).mean()
        if penalty is not None:
            loss_g = loss_g + penalty(model)
        return loss_g

    def after_step() -> None:
        with torch.no_grad():
            for avg, new in zip(average.parameters(), g.parameters(), strict=True):
                avg.lerp_(new, 1.0 - stage.ema_decay)

    def evaluate_ema(model: nn.Module, epoch: int) -> Mapping[str, float]:
        assert evaluate is not None
        average.eval()
        return evaluate(average, epoch)

    batches = _Draws(images, stage.batch_size, stage.steps_per_epoch, seed)
    history = fit(g, batches, step, opt_g, epochs=stage.steps // stage.steps_per_epoch,
                  state={"discriminator": d, "d_optimizer": opt_d, "generator_ema": average},
                  evaluate=None if evaluate is None else evaluate_ema,
                  after_step=after_step, checkpoint_path=checkpoint_path, resume=resume,
                  distribute=False, progress=progress, desc=desc)
    d.requires_grad_(True)
    return StageResult(g.eval(), average.eval(), d.eval(), history)


@dataclass(frozen=True)
class AdaptUnlearnConfig:
    """Both stages of Adapt-then-Unlearn (defaults: module docstring and the card)."""

    num_adapted: int = 5
    adapt: GANStage = field(default_factory=lambda: GANStage(steps=500))
    unlearn: GANStage = field(default_factory=lambda: GANStage(steps=1000))
    kind: str = "el2"
    gamma: float = 1.0
    gamma_unit: str = "absolute"
    normalize: str = "mean"
    fisher_samples: int = 32
    ewc_strength: float | None = None
    lambda_ewc: float = 5e8

    def __post_init__(self) -> None:
        check_positive_int("num_adapted", self.num_adapted)
        check_choice("kind", self.kind, KINDS)
        check_range("gamma", self.gamma, 0.0)
        check_choice("gamma_unit", self.gamma_unit, ("absolute", "initial"))
        check_choice("normalize", self.normalize, ("mean", "official"))
        check_positive_int("fisher_samples", self.fisher_samples)
        if self.ewc_strength is not None:
            check_range("ewc_strength", self.ewc_strength, 0.0)
        check_range("lambda_ewc", self.lambda_ewc, 0.0)

    def ewc_lambda(self, fisher: Mapping[str, torch.Tensor]) -> float:
        """λ: κ / mean(F) with ``ewc_strength`` κ, else the absolute ``lambda_ewc``."""
        if self.ewc_strength is None:
            return self.lambda_ewc
        values = torch.cat([f.flatten() for f in fisher.values()])
        mean = float(values.mean())
        if not mean > 0:
            raise ValueError("the Fisher is zero: the discriminator's logit does not depend on "
                             "the generator's parameters; check the models")
        return self.ewc_strength / mean


@dataclass
class AdaptUnlearnResult:
    """The unlearned generator (EMA: sample from it), the adapted anchors and both histories."""

    generator: nn.Module
    generator_ema: nn.Module
    discriminator: nn.Module
    adapted: list[dict[str, torch.Tensor]]
    lambda_ewc: float
    repulsion: ParameterRepulsion
    history: History
    adapt_histories: list[History]


def adapt_negatives(generator_ema: nn.Module, discriminator: nn.Module, negatives: torch.Tensor,
                    config: AdaptUnlearnConfig, *, latent_dim: int, seed: int = 0,
                    checkpoint_dir: str | os.PathLike[str] | None = None, resume: bool = False,
                    progress: bool | None = None) -> tuple[list[dict[str, torch.Tensor]], float,
                                                           list[History]]:
    """Stage 1: M EWC-regularised adaptations to ``negatives`` (seeds ``seed``…``seed + M − 1``).

    Returns the adapted EMA generators' parameters, λ and the histories.
    """
    if negatives.shape[0] == 0:
        raise ValueError("negatives is empty: the oracle flagged no sample of the unwanted "
                         "class; draw more samples or check the class index")
    device = negatives.device
    g0 = generator_ema.to(device)
    fisher = fisher_diagonal(g0, discriminator.to(device), samples=config.fisher_samples,
                             latent_dim=latent_dim, rng=torch.Generator().manual_seed(seed))
    strength = config.ewc_lambda(fisher)
    ewc = ElasticWeightConsolidation(fisher, dict(g0.named_parameters()), strength)
    adapted, histories = [], []
    for m in range(config.num_adapted):
        path = None if checkpoint_dir is None else Path(checkpoint_dir) / f"adapt_{m}.pt"
        result = train_gan_stage(g0, discriminator, negatives, config.adapt,
                                 latent_dim=latent_dim, penalty=ewc, seed=seed + m,
                                 checkpoint_path=path, resume=resume, progress=progress,
                                 desc=f"adapt {m + 1}/{config.num_adapted}")
        adapted.append({k: v.detach().clone()
                        for k, v in result.generator_ema.named_parameters()})
        histories.append(result.history)
    return adapted, strength, histories


@register(
    "adapt_unlearn",
    kind="procedure",
    declares={
        "owns_loss": "a GAN procedure: its adversarial, EWC and repulsion losses are the method",
    },
    summary="Unlearn a class of a pretrained GAN without its data: adapt copies to a few "
    "flagged samples (EWC), then fine-tune on the rest while repelling the parameters from "
    "the adapted copies.",
    equation="d(θ) = Σ_k Σ_m mean((θ_k − θ_N,k^m)²)/(2MP); R = −γd (NL2), 100·exp(−γd) (EL2), "
    "γ/d (IL2); stage 1: GAN loss + (λ/2)ΣF(θ−θ_G)²",
    defaults=(
        Default("kind", "el2", "paper §4 ablation (best quality)"),
        Default("gamma", 1.0, "official --gamma (MNIST)"),
        Default("normalize", "mean", "paper (official code: M/(2P), see docstring)"),
        Default("num_adapted", 5, "official AFHQ/MNIST checkpoint lists (M)"),
        Default("fisher_samples", 32, "official stylegan2_ewc.py l. 142 (estimate_fisher "
                "sample_size=32; the function's own default is 1)"),
        Default("lambda_ewc", 5e8, "official model.py lamda (StyleGAN2's Fisher scale)"),
        Default("negative_draws", 200, "official stylegan2_ewc.py l. 538 (FeedbackData_neg "
                "tot_samples=200; the class default is 5000)"),
        Default("positive_draws", 5000, "official train_different_losses.py l. 686 "
                "(FeedbackData_pos tot_samples)"),
    ),
    variants=("NL2 / EL2 / IL2 repulsion", "γ absolute or in units of d(θ_G)",
              "official M/(2P) normalisation", "extrapolation θ_G − α(θ_N − θ_G) baseline"),
)
def adapt_then_unlearn(generator: nn.Module, generator_ema: nn.Module, discriminator: nn.Module,
                       negatives: torch.Tensor, positives: torch.Tensor,
                       config: AdaptUnlearnConfig | None = None, *, latent_dim: int,
                       seed: int = 0, checkpoint_dir: str | os.PathLike[str] | None = None,
                       resume: bool = False, progress: bool | None = None
                       ) -> AdaptUnlearnResult:
    """Both stages: adapt M copies to ``negatives``, then unlearn on ``positives``.

    Stage 1 starts from ``generator_ema`` and stage 2 from ``generator`` (the raw weights), as
    the official code does; the anchors are the adapted EMA generators. With ``checkpoint_dir``
    each stage checkpoints, so a resumed run skips finished adaptations and continues the rest.
    """
    config = config or AdaptUnlearnConfig()
    if positives.shape[0] == 0:
        raise ValueError("positives is empty: every sample was flagged; check the oracle")
    adapted, strength, adapt_histories = adapt_negatives(
        generator_ema, discriminator, negatives, config, latent_dim=latent_dim, seed=seed,
        checkpoint_dir=checkpoint_dir, resume=resume, progress=progress)
    repulsion = ParameterRepulsion(adapted, kind=config.kind, gamma=config.gamma,
                                   normalize=config.normalize, gamma_unit=config.gamma_unit,
                                   reference=generator)
    path = None if checkpoint_dir is None else Path(checkpoint_dir) / "unlearn.pt"
    result = train_gan_stage(generator, discriminator, positives, config.unlearn,
                             latent_dim=latent_dim, penalty=repulsion, seed=seed + 10_000,
                             checkpoint_path=path, resume=resume, progress=progress,
                             desc="unlearn")
    return AdaptUnlearnResult(result.generator, result.generator_ema, result.discriminator,
                              adapted, strength, repulsion, result.history, adapt_histories)


def extrapolate(generator: nn.Module, adapted: Sequence[Mapping[str, torch.Tensor]],
                alpha: float) -> nn.Module:
    """The baseline θ_G − α(θ̄_N − θ_G), θ̄_N the mean of the adapted parameters (paper §4)."""
    if not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite, got {alpha}")
    if not adapted:
        raise ValueError("adapted is empty: pass the adapted models' parameters")
    out = copy.deepcopy(generator)
    with torch.no_grad():
        for name, param in out.named_parameters():
            mean = torch.stack([a[name].to(param) for a in adapted]).mean(0)
            param.sub_(alpha * (mean - param))
    return out


def state_of(model: nn.Module) -> dict[str, Any]:
    """Detached copies of ``model``'s parameters (the form anchors take)."""
    return {k: v.detach().clone() for k, v in model.named_parameters()}
