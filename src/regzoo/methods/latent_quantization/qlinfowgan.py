r"""QLInfoWGAN-GP: an InfoWGAN-GP whose latent is drawn from per-dimension scalar codebooks.

Hsu, Dorrell, Whittington, Wu, Finn. "Disentanglement via Latent Quantization", NeurIPS 2023,
arXiv 2305.18378 (§3–4, the latent-reconstructing model family; official code
kylehkhsu/latent_quantization: ``models/info_gan.py``, ``models/quantized_info_gan.py``,
``encoders/critic.py``, ``latents/quantized.py``, ``scripts/train_gan.py``,
``configs/train_gan.yaml``, ``configs/model_partial/{info_gan,quantized_info_gan}.yaml``).

A generator G maps a latent z to an image; a critic network shares one trunk φ between a
Wasserstein value D(x) = wᵀφ(x) + b and a latent head ẑ(x) = q(Hφ(x) + c) that reconstructs
the generator's latent from its image (InfoGAN's mutual-information term, as a regression).
In QLInfoWGAN-GP, z is drawn uniformly from the per-dimension codebooks V_j of
:class:`regzoo.quantizers.ScalarQuantizer` and q snaps the head's output to them (straight-
through); in the InfoWGAN-GP baseline z ~ U[0, 1)^{n_z} and q is the identity. With weight
decay on every weight, a code that spends one dimension on one factor is again the cheapest.

Losses (as the official ``batched_encoder_loss``/``batched_generator_loss``; the penalty is
Gulrajani et al., "Improved Training of Wasserstein GANs", 2017, eq. 3), means over a batch;
x real, z drawn as above, x̃ = G(z) = σ(logits), ε ~ U[0, 1) per example,
x̂ = ε x + (1 − ε) x̃; z_c = Hφ(x̃) + c the head's continuous output, z_q its code:

.. math::

    L_{\text{info}} &= \operatorname{mean}_j (\hat z_j(\tilde x) - z_j)^2, \qquad
    L_{\text{GP}} = (\lVert \nabla_{\hat x} D(\hat x) \rVert_2 - 1)^2, \\
    L_D &= λ_v (D(\tilde x) - D(x)) + λ_{GP} L_{\text{GP}} + λ_I L_{\text{info}}
           + λ_q L_q + λ_c L_c, \\
    L_G &= -λ_v D(\tilde x) + λ_I L_{\text{info}} + λ_q L_q + λ_c L_c,

L_q = mean_j (sg(z_c,j) − z_q,j)², L_c = mean_j (z_c,j − sg(z_q,j))² (QLAE's pair, on the
fake images; absent for the continuous latent), the gradient norm over all pixels of one image
(Gulrajani et al. 2017, eq. 3). The critic (trunk, value and latent heads) steps on L_D every
iteration; the generator and the codebooks step on L_G every ``generator_period``-th iteration,
after that iteration's critic step. So the info loss trains the latent head (and trunk) in the
critic step and the generator (through D's trunk, which it does not update) and the codebook
values (through the sampled z, a differentiable pick of V_j, both as the generator's input and
as the regression target) in the generator step; L_q moves the codebooks (generator step
only), L_c the latent head in the critic step and, through the fake images, the generator in
the generator step.

Defaults (official ``train_gan.yaml`` and the model configs): λ_v = 1, λ_GP = 10, λ_I = 200,
λ_q = λ_c = 0.01, n_v = 10 (linspace(−0.5, 0.5), trainable), generator period 5 (five critic
steps per generator step), batch 64, Adam with lr 2·10⁻⁴, β = (0, 0.9); the weights of both
networks get element-wise gradient clipping at 1 then decoupled weight decay λ_wd (AdamW),
biases and codebook values plain Adam. λ_wd = 10⁻³ for QLInfoWGAN-GP (the released sweep
``train_gan.yaml`` and ``params/quantized_info_gan/*.yaml``), 10⁻⁴ for InfoWGAN-GP
(``model_partial/info_gan.yaml``, the only setting the code ships for it). The representation
evaluated by InfoMEC is the latent head on the *real* images (the official ``train_gan.py``
``evaluate`` encodes the validation images and scores ``z_hat``): codes for QLInfoWGAN-GP,
continuous head outputs for InfoWGAN-GP.

Architecture: MLPs at mini-dSprites scale, the official family in dense form. The critic is
the official ``CriticEncoder`` shape (one trunk → features; a linear value head and a linear
latent head on the same features), here a 1024 → 256 → 256 ReLU trunk; the generator is the
mirror MLP n_z → 256 → 256 → 1024 with sigmoid output (the official ``image``/``style_image``
conv decoders and 12-conv encoder are far beyond a CPU budget, and the QLAE arms of the same
reproduction use the same MLPs). No normalisation layer, as WGAN-GP requires of the critic.

Cost: a critic step is two critic forwards (real and fake), a generator forward without graph
and a double backward for the penalty (about 3× a plain critic step); a generator step one
generator and one critic forward and backward. The quantised latent adds an n_z × n_v
distance and a gather per example: negligible.

Departures from the official code, and why:

- In the critic step the fake images are generated without a graph and z is detached: the
  official code differentiates through G and the codebook pick there too, but only the
  critic's parameters are updated in that step, so the update is the same and the generator's
  backward is saved.
- Training runs in one process (``fit(distribute=False)``): the penalty's double backward is
  not supported by DDP's reducer.
- Random draws (z, ε) come from a CPU generator seeded by ``config.seed`` and checkpointed,
  so a run is the same on any device and resumes exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.compose import LossBreakdown
from regzoo.data.batches import TensorBatches
from regzoo.methods.latent_quantization.qlae import check_images
from regzoo.models.small import MLP
from regzoo.quantizers import ScalarQuantizer
from regzoo.train.loop import History, fit

GAN_LATENTS = ("quantized", "continuous")


@dataclasses.dataclass
class CriticOutput:
    """The critic's value, the latent head's continuous output, its code and the latent terms."""

    value: torch.Tensor
    z_continuous: torch.Tensor
    z_hat: torch.Tensor
    representation: torch.Tensor
    terms: dict[str, torch.Tensor]


class InfoWGAN(nn.Module):
    """Generator and critic with a latent-reconstruction head over flattened images.

    Args:
        input_dim: n_x, pixels per image (images are flattened; outputs lie in [0, 1]).
        num_latents: n_z (twice the number of factors in the paper).
        latent: ``"quantized"`` (QLInfoWGAN-GP) or ``"continuous"`` (InfoWGAN-GP, z ~ U[0, 1)).
        hidden: hidden widths of the critic's trunk (the generator mirrors them).
        num_values: n_v of the scalar codebooks.
    """

    def __init__(self, input_dim: int, num_latents: int, *, latent: str = "quantized",
                 hidden: Sequence[int] = (256, 256), num_values: int = 10) -> None:
        super().__init__()
        if latent not in GAN_LATENTS:
            raise ValueError(f"latent must be one of {GAN_LATENTS}, got {latent!r}")
        if not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(f"input_dim must be a positive integer, got {input_dim!r}")
        if not isinstance(num_latents, int) or num_latents < 1:
            raise ValueError(f"num_latents must be a positive integer, got {num_latents!r}")
        self.input_dim, self.num_latents, self.latent = input_dim, num_latents, latent
        self.encoder = MLP(input_dim, num_latents, hidden=tuple(hidden))
        self.critic = nn.Linear(tuple(hidden)[-1], 1)
        self.generator = MLP(num_latents, input_dim, hidden=tuple(reversed(tuple(hidden))))
        self.quantizer = (ScalarQuantizer(num_latents, num_values) if latent == "quantized"
                          else None)

    @property
    def discrete(self) -> bool:
        """True when :attr:`CriticOutput.representation` holds code indices."""
        return self.quantizer is not None

    def critic_parameters(self) -> list[nn.Parameter]:
        """The critic's trunk, value head and latent head (stepped on L_D)."""
        return list(self.encoder.parameters()) + list(self.critic.parameters())

    def generator_parameters(self) -> list[nn.Parameter]:
        """The generator and the codebook values (stepped on L_G)."""
        extra = list(self.quantizer.parameters()) if self.quantizer is not None else []
        return list(self.generator.parameters()) + extra

    def _flat(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor")
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.input_dim:
            raise ValueError(f"{name} has {flat.shape[1]} values per example, the model "
                             f"expects input_dim={self.input_dim}")
        return flat

    def value(self, x: torch.Tensor) -> torch.Tensor:
        """D(x), shape (B,)."""
        return self.critic(self.encoder.features(self._flat(x, "x"))).squeeze(-1)

    def forward(self, x: torch.Tensor) -> CriticOutput:
        """The critic on images ``x``: value, latent reconstruction and its terms."""
        features = self.encoder.features(self._flat(x, "x"))
        value = self.critic(features).squeeze(-1)
        z_c = self.encoder.head(features)
        if self.quantizer is None:
            return CriticOutput(value, z_c, z_c, z_c, {})
        quantized = self.quantizer(z_c)
        terms = {"quantization": quantized.quantization_loss,
                 "commitment": quantized.commitment_loss}
        return CriticOutput(value, z_c, quantized.z_hat, quantized.indices, terms)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` latents: a uniform pick per dimension from its codebook, or U[0, 1)^{n_z}.

        Indices and uniforms are drawn on the CPU (``generator``) and moved to the model's
        device; a codebook pick is differentiable in the codebook values.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        device = self.critic.weight.device
        if self.quantizer is None:
            return torch.rand(n, self.num_latents, generator=generator).to(device)
        books = self.quantizer.codebooks()
        index = torch.randint(books.shape[1], (n, self.num_latents), generator=generator)
        return torch.gather(books.expand(n, -1, -1), 2, index.to(device).unsqueeze(-1)
                            ).squeeze(-1)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Images σ(G(z)) in [0, 1], flattened (B, n_x)."""
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.num_latents:
            raise ValueError(f"z must be (B, num_latents={self.num_latents}), got "
                             f"{tuple(z.shape) if isinstance(z, torch.Tensor) else type(z)}")
        if not bool(torch.isfinite(z.detach()).all()):
            raise ValueError("z contains NaN or infinite values")
        return torch.sigmoid(self.generator(z))


def gradient_penalty(value: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """mean_b (‖∇_x D(x̂_b)‖₂ − 1)², x̂ = ε x + (1 − ε) x̃ (WGAN-GP, eq. 3), with a graph.

    ``value`` maps (B, …) inputs to (B,) values; ``epsilon`` is (B,) in [0, 1]; the norm runs
    over all of an example's entries.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    if epsilon.shape != real.shape[:1]:
        raise ValueError(f"epsilon must be (B,) = ({real.shape[0]},), got "
                         f"{tuple(epsilon.shape)}")
    eps = epsilon.reshape(-1, *([1] * (real.ndim - 1))).to(real.dtype)
    mixed = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    scores = value(mixed)
    if scores.shape != real.shape[:1]:
        raise ValueError(f"value must return one score per example (B,), got "
                         f"{tuple(scores.shape)}")
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return (grad.reshape(grad.shape[0], -1).norm(dim=1) - 1).pow(2).mean()


@dataclasses.dataclass(frozen=True)
class InfoWGANConfig:
    """Training options of :func:`fit_qlinfowgan` (defaults: module docstring).

    ``epochs`` count passes over the images; every batch is one critic step.
    """

    epochs: int = 100
    batch_size: int = 64
    lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)
    weight_decay: float = 1e-3
    clip: float | None = 1.0
    generator_period: int = 5
    value_weight: float = 1.0
    gradient_penalty_weight: float = 10.0
    info_weight: float = 200.0
    quantization_weight: float = 0.01
    commitment_weight: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "generator_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "weight_decay", "value_weight", "gradient_penalty_weight",
                     "info_weight", "quantization_weight", "commitment_weight"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value!r}")
        if self.lr == 0:
            raise ValueError("lr must be positive")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {self.betas}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be positive or None (no clipping), got {self.clip}")


def critic_loss(model: InfoWGAN, real: torch.Tensor, z: torch.Tensor, epsilon: torch.Tensor,
                config: InfoWGANConfig) -> LossBreakdown:
    """L_D for one batch (module docstring); the fakes are generated without a graph."""
    real = model._flat(real, "real")
    with torch.no_grad():
        fake = model.generate(z)
    out_fake, out_real = model(fake), model(real)
    parts = {"value": config.value_weight * (out_fake.value - out_real.value).mean(),
             "gradient_penalty": config.gradient_penalty_weight
             * gradient_penalty(model.value, real, fake, epsilon),
             "info": config.info_weight * F.mse_loss(out_fake.z_hat, z.detach())}
    weights = {"value": config.value_weight, "gradient_penalty": config.gradient_penalty_weight,
               "info": config.info_weight}
    _add_latent_terms(parts, weights, out_fake.terms, config)
    return LossBreakdown(torch.stack(list(parts.values())).sum(), parts, weights)


def generator_loss(model: InfoWGAN, z: torch.Tensor, config: InfoWGANConfig) -> LossBreakdown:
    """L_G for latents ``z`` (keep ``z`` differentiable in the codebooks, as sampled)."""
    out = model(model.generate(z))
    parts = {"value": -config.value_weight * out.value.mean(),
             "info": config.info_weight * F.mse_loss(out.z_hat, z)}
    weights = {"value": config.value_weight, "info": config.info_weight}
    _add_latent_terms(parts, weights, out.terms, config)
    return LossBreakdown(torch.stack(list(parts.values())).sum(), parts, weights)


def _add_latent_terms(parts: dict[str, torch.Tensor], weights: dict[str, float],
                      terms: dict[str, torch.Tensor], config: InfoWGANConfig) -> None:
    for name, weight in (("quantization", config.quantization_weight),
                         ("commitment", config.commitment_weight)):
        if name in terms:
            parts[name] = weight * terms[name]
            weights[name] = weight


def infowgan_param_groups(parameters: Sequence[tuple[str, nn.Parameter]],
                          weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups of named parameters: ``*.weight`` decayed, the rest not.

    The rest is the biases and the codebook values; the first group is the one whose gradients
    are value-clipped.
    """
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number ≥ 0, got {weight_decay}")
    weights = [p for name, p in parameters if name.endswith("weight")]
    rest = [p for name, p in parameters if not name.endswith("weight")]
    return [{"params": weights, "weight_decay": weight_decay, "name": "weights"},
            {"params": rest, "weight_decay": 0.0, "name": "biases_and_codebooks"}]


def build_optimizers(model: InfoWGAN, config: InfoWGANConfig
                     ) -> tuple[torch.optim.AdamW, torch.optim.AdamW]:
    """The critic's and the generator's AdamW (official ``construct_optimizer``)."""
    named = dict(model.named_parameters())
    critic = [(n, p) for n, p in named.items() if n.startswith(("encoder.", "critic."))]
    gen = [(n, p) for n, p in named.items() if n.startswith(("generator.", "quantizer."))]
    make = lambda params: torch.optim.AdamW(  # noqa: E731
        infowgan_param_groups(params, config.weight_decay), lr=config.lr,
        betas=tuple(config.betas))
    return make(critic), make(gen)


class _GANState:
    """Critic-step counter and the CPU generator of z and ε (checkpointed with the run)."""

    def __init__(self, seed: int) -> None:
        self.steps = 0
        self.rng = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.rng.set_state(state["rng"])


@dataclasses.dataclass
class InfoWGANResult:
    """The trained GAN, the loop's per-epoch history (critic loss) and generator steps taken."""

    model: InfoWGAN
    history: History
    generator_steps: int


def fit_qlinfowgan(model: InfoWGAN, images: torch.Tensor, *,
                   config: InfoWGANConfig | None = None,
                   evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None,
                   eval_every: int = 1, checkpoint_path: str | None = None,
                   checkpoint_every: int = 1, resume: bool = False,
                   progress: bool | None = None,
                   log: Callable[[dict[str, float]], None] | None = None) -> InfoWGANResult:
    """Train ``model`` on ``images`` (values in [0, 1]) as (QL)InfoWGAN-GP.

    Built on :func:`regzoo.train.fit`: each batch is a critic step on L_D (``fit``'s
    optimiser); every ``generator_period``-th critic step is followed by a generator step on
    L_G (its optimiser, the step counter and the random state are checkpointed through
    ``fit(state=...)``, so a resumed run continues exactly). Weight gradients of each network
    are clipped element-wise to [−``clip``, ``clip``] before its optimiser steps.

    Args:
        model: an :class:`InfoWGAN` (``latent`` picks QLInfoWGAN-GP or InfoWGAN-GP).
        images: (N, …) images in [0, 1] on the device to train on.
        config: :class:`InfoWGANConfig`.
        evaluate, eval_every: metrics of the model every ``eval_every`` epochs.
        checkpoint_path, checkpoint_every, resume, progress, log: as :func:`regzoo.train.fit`.
    """
    config = config or InfoWGANConfig()
    if not isinstance(config, InfoWGANConfig):
        raise TypeError(f"config must be an InfoWGANConfig, got {type(config).__name__}")
    if not isinstance(model, InfoWGAN):
        raise TypeError(f"model must be an InfoWGAN, got {type(model).__name__}")
    check_images(images, model.input_dim, "the generator's range")
    critic_opt, generator_opt = build_optimizers(model, config)
    critic_clipped = critic_opt.param_groups[0]["params"]
    generator_clipped = generator_opt.param_groups[0]["params"]
    state = _GANState(config.seed)

    def clip(params: list[nn.Parameter]) -> None:
        if config.clip is not None:
            torch.nn.utils.clip_grad_value_(params, config.clip)

    def critic_step(net: nn.Module, batch: Any) -> LossBreakdown:
        real = batch[0]
        z = model.sample_latents(real.shape[0], state.rng).detach()
        epsilon = torch.rand(real.shape[0], generator=state.rng).to(real.device)
        return critic_loss(model, real, z, epsilon, config)

    def maybe_generator_step() -> None:
        state.steps += 1
        if state.steps % config.generator_period:
            return
        generator_opt.zero_grad(set_to_none=True)
        loss = generator_loss(model, model.sample_latents(config.batch_size, state.rng), config)
        if not bool(torch.isfinite(loss.total.detach())):
            raise FloatingPointError(f"the generator loss is {float(loss.total)} at critic "
                                     f"step {state.steps}; lower the learning rate")
        loss.total.backward()
        clip(generator_clipped)
        generator_opt.step()

    labels = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
    batches = TensorBatches(images, labels, config.batch_size, seed=config.seed)
    history = fit(model, batches, critic_step, critic_opt, epochs=config.epochs,
                  evaluate=evaluate, eval_every=eval_every,
                  state={"generator_optimizer": generator_opt, "gan": state},
                  after_backward=lambda _: clip(critic_clipped), after_step=maybe_generator_step,
                  checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every,
                  resume=resume, distribute=False, progress=progress, desc="qlinfowgan",
                  log=log)
    return InfoWGANResult(model=model, history=history,
                          generator_steps=state.steps // config.generator_period)


@torch.no_grad()
def encode_real(model: InfoWGAN, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The latent head on real images: codes (indices) or continuous outputs (InfoMEC input)."""
    was_training = model.training
    model.eval()
    parts = [model(chunk).representation for chunk in images.split(batch_size)]
    model.train(was_training)
    return torch.cat(parts)
