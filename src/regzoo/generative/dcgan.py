r"""A small DCGAN on 8×8 digits: the pretrained generator of Adapt-then-Unlearn and GIFD.

Both papers start from a pretrained GAN (StyleGAN2, BigGAN) that cannot be downloaded here; this
is the CPU-scale stand-in, trained once and cached by :mod:`regzoo.generative.assets`.

Generator (50 089 parameters), exposed stage by stage for GIFD's layer-wise search:

    z ∈ ℝ³² ──stage 0: Linear, ReLU──▶ h₁ ∈ ℝ^{64×2×2} ──stage 1: ConvT 4/2, ReLU──▶
    h₂ ∈ ℝ^{40×4×4} ──stage 2: ConvT 4/2, sigmoid──▶ x ∈ [0, 1]^{1×8×8}

No normalisation layers: the output is a deterministic function of the input to each stage, so
a search over an intermediate feature (GIFD) and an exponential moving average of the weights
(the EMA generator both papers sample from) need no batch statistics.

Discriminator: two stride-2 3×3 convolutions and a linear logit, every layer with spectral
normalisation (Miyato et al. 2018), LeakyReLU 0.2.

Training (:func:`train_dcgan`): the non-saturating loss of Goodfellow et al. (2014),

.. math::

    L_D = \operatorname{softplus}(-D(x)) + \operatorname{softplus}(D(G(z)))
          + \tfrac{\gamma}{2}\,\lVert\nabla_x D(x)\rVert^2, \qquad
    L_G = \operatorname{softplus}(-D(G(z))),

with the R1 penalty (Mescheder et al. 2018; γ = 1 here) on real images, Adam (lr 2e-4,
β = (0.5, 0.999), the DCGAN recipe) and the EMA of G with decay 0.999 after every step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from regzoo.core.checks import check_positive_int, check_range, check_tensor
from regzoo.core.progress import progress_bar

IMAGE_SHAPE = (1, 8, 8)


class DigitGenerator(nn.Module):
    """``z (B × latent_dim) → image (B × 1 × 8 × 8)`` in [0, 1], as three :attr:`stages`.

    ``generator(z) == stages[2](stages[1](stages[0](z)))``; :meth:`from_stage` runs the stages
    after a given intermediate feature (GIFD optimises h₁ or h₂ directly).
    """

    def __init__(self, latent_dim: int = 32, widths: tuple[int, int] = (64, 40)) -> None:
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        first, second = (check_positive_int("widths", w) for w in widths)
        self.widths = (first, second)
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Linear(latent_dim, first * 4), nn.ReLU(),
                          nn.Unflatten(1, (first, 2, 2))),
            nn.Sequential(nn.ConvTranspose2d(first, second, 4, 2, 1), nn.ReLU()),
            nn.Sequential(nn.ConvTranspose2d(second, 1, 4, 2, 1), nn.Sigmoid()),
        ])

    def feature_shapes(self) -> list[tuple[int, ...]]:
        """The shape of one sample's input to each stage: z, h₁, h₂."""
        return [(self.latent_dim,), (self.widths[0], 2, 2), (self.widths[1], 4, 4)]

    def from_stage(self, index: int, feature: torch.Tensor) -> torch.Tensor:
        """Run stages ``index, index + 1, …`` on ``feature`` (the input of stage ``index``)."""
        if not 0 <= index < len(self.stages):
            raise ValueError(f"index must be a stage in [0, {len(self.stages)}), got {index}")
        for stage in self.stages[index:]:
            feature = stage(feature)
        return feature

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (batch, {self.latent_dim}), got "
                             f"{tuple(z.shape)}")
        return self.from_stage(0, z)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images from z ~ N(0, I) drawn with ``generator`` (CPU), without gradients.

        The latents are drawn on the CPU and moved: a seed means the same images on any device.
        """
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator).to(device)
        with torch.no_grad():
            return self(z)


class DigitDiscriminator(nn.Module):
    """``image (B × 1 × 8 × 8) → logit (B)``, spectrally normalised."""

    def __init__(self, widths: tuple[int, int] = (32, 64)) -> None:
        super().__init__()
        first, second = (check_positive_int("widths", w) for w in widths)
        self.body = nn.Sequential(
            spectral_norm(nn.Conv2d(1, first, 3, 2, 1)), nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(first, second, 3, 2, 1)), nn.LeakyReLU(0.2),
            nn.Flatten(), spectral_norm(nn.Linear(second * 4, 1)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(-1, *IMAGE_SHAPE)).squeeze(1)


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, decay: float) -> None:
    """``average ← decay · average + (1 − decay) · model``, parameter by parameter."""
    for avg, new in zip(average.parameters(), model.parameters(), strict=True):
        avg.lerp_(new, 1.0 - decay)


@dataclass
class GANTraining:
    """What :func:`train_dcgan` returns: G, its EMA, D, and per-step losses every 100 steps."""

    generator: DigitGenerator
    generator_ema: DigitGenerator
    discriminator: DigitDiscriminator
    history: list[dict[str, float]] = field(default_factory=list)


@torch.enable_grad()
def train_dcgan(images: torch.Tensor, *, steps: int = 6000, batch_size: int = 64,
                lr: float = 2e-4, r1_gamma: float = 1.0, ema_decay: float = 0.999,
                latent_dim: int = 32, seed: int = 0, device: str | torch.device = "cpu",
                progress: bool | None = None) -> GANTraining:
    """Train a :class:`DigitGenerator`/:class:`DigitDiscriminator` pair on ``images``.

    Args:
        images: real images in [0, 1], shape (N, 64) or (N, 1, 8, 8), N ≥ ``batch_size``.
        steps: optimiser steps of each network (one D step, then one G step).
        batch_size, lr: minibatch size and Adam learning rate (β = (0.5, 0.999)).
        r1_gamma: weight γ of the R1 gradient penalty on real images (0 turns it off).
        ema_decay: decay of the generator's exponential moving average.
        seed: seeds initialisation, minibatches and latents (deterministic on one device).
        progress: a bar over the steps (``None``: only on a terminal).

    Trains with autograd on even when called under ``torch.no_grad()`` (e.g. a cold asset cache
    hit from inside an evaluation block).
    """
    check_tensor("images", images, floating=True, finite=True)
    real = images.reshape(images.shape[0], -1)
    if real.shape[1] != 64:
        raise ValueError(f"images must be 8×8 digits (64 values each), got shape "
                         f"{tuple(images.shape)}")
    if float(real.min()) < 0 or float(real.max()) > 1:
        raise ValueError("images must lie in [0, 1] (load_digits(scale='unit') gives that)")
    check_positive_int("steps", steps)
    check_positive_int("batch_size", batch_size)
    if real.shape[0] < batch_size:
        raise ValueError(f"images has {real.shape[0]} rows, fewer than batch_size={batch_size}")
    check_range("lr", lr, 0.0, low_inclusive=False)
    check_range("r1_gamma", r1_gamma, 0.0)
    check_range("ema_decay", ema_decay, 0.0, 1.0, high_inclusive=False)
    torch.manual_seed(seed)
    generator = DigitGenerator(latent_dim).to(device)
    discriminator = DigitDiscriminator().to(device)
    average = copy.deepcopy(generator).requires_grad_(False)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    draws = torch.Generator().manual_seed(seed)
    real = real.reshape(-1, *IMAGE_SHAPE).to(device)
    history: list[dict[str, float]] = []
    for step in progress_bar(range(steps), desc="dcgan", progress=progress):
        index = torch.randint(real.shape[0], (batch_size,), generator=draws)
        x = real[index.to(device)].requires_grad_(r1_gamma > 0)
        z = torch.randn(batch_size, latent_dim, generator=draws).to(device)
        real_logit = discriminator(x)
        fake_logit = discriminator(generator(z).detach())
        loss_d = F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
        if r1_gamma > 0:
            (grad,) = torch.autograd.grad(real_logit.sum(), x, create_graph=True)
            loss_d = loss_d + r1_gamma / 2 * grad.square().sum(dim=(1, 2, 3)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        z = torch.randn(batch_size, latent_dim, generator=draws).to(device)
        loss_g = F.softplus(-discriminator(generator(z))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        ema_update(average, generator, ema_decay)
        if step % 100 == 0 or step + 1 == steps:
            history.append({"step": step, "loss_d": float(loss_d.detach()),
                            "loss_g": float(loss_g.detach())})
    return GANTraining(generator.eval(), average.eval(), discriminator.eval(), history)
