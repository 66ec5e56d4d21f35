r"""QLAE: an autoencoder with a per-dimension scalar-quantised latent and strong weight decay.

Hsu, Dorrell, Whittington, Wu, Finn. "Disentanglement via Latent Quantization", NeurIPS 2023,
arXiv 2305.18378 (§3; official code kylehkhsu/latent_quantization: ``models/quantized_ae.py``,
``models/ae.py``, ``configs/train_ae.yaml``, ``configs/model_partial/*.yaml``).

The encoder's n_z outputs are each snapped to the nearest of n_v learnable values of their own
codebook (:class:`regzoo.quantizers.ScalarQuantizer`, straight-through), and the decoder sees
only the quantised code. With strong weight decay on the networks' weights, a code that uses
each dimension for one factor is the cheapest way to reconstruct: disentanglement by
construction. The loss, per example and averaged over the batch (eq. 2),

.. math::

    L = \mathrm{BCE}(\hat x_{\text{logits}}, x) + λ_q \operatorname{mean}_j
        (\operatorname{sg}(z_{c,j}) - z_{q,j})^2 + λ_c \operatorname{mean}_j
        (z_{c,j} - \operatorname{sg}(z_{q,j}))^2,

BCE the mean over pixels, λ_q = λ_c = 0.01 (0.001 in the official dSprites config), n_v = 10.
The optimiser (``construct_optimizer``): every *weight* of encoder and decoder gets AdamW
(lr 1e-3, decoupled decay λ_wd = 0.1) after element-wise clipping of its gradient to [−1, 1]
(``optax.clip(1.0)``, a value clip, not a norm clip); biases and the codebooks get plain Adam
(no clip, no decay). Batch 128, constant lr.

Baselines and ablations (``latent=``, the paper's Table 3 and §5): ``"continuous"`` (the plain
AE; no decay in the official ``ae`` configs), ``"gaussian"`` (β-VAE: diagonal Gaussian
posterior, loss BCE + (n_z / n_x)·β·mean_j KL_j so that the KL is summed against a summed
reconstruction, β = 4), ``"global"`` (one codebook shared by every dimension),
``"frozen"`` (codebook values fixed at their linspace), ``"vector"`` (VQ-VAE: n_z vectors of
``vq_dim`` entries, Euclidean VQ over ``vq_codes`` codes, λ_q = 1, λ_c = 0.25, no decay); the
no-weight-decay ablation is ``weight_decay=0``.

Architecture: the spec's MLP (n_x → 256 → 256 → n_z, ReLU, and the mirror image), not the
official conv/style decoders: 32×32 binary sprites need no convolutional prior for the ordering
the paper reports, and an MLP step costs a few milliseconds on one CPU core (10 000 steps per
run). Cost over the AE: one n_z × n_v distance per example and two n_z-element MSEs.
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
from regzoo.models.small import MLP
from regzoo.quantizers import ScalarQuantizer, VectorQuantizer
from regzoo.registry import Default, register
from regzoo.train.distributed import DistributedContext, unwrap_model
from regzoo.train.loop import History, fit

LATENTS = ("quantized", "global", "frozen", "vector", "continuous", "gaussian")
DISCRETE_LATENTS = ("quantized", "global", "frozen", "vector")


@dataclasses.dataclass
class AutoencoderOutput:
    """Decoder logits, the representation to evaluate (codes or means) and the latent terms."""

    logits: torch.Tensor
    representation: torch.Tensor
    terms: dict[str, torch.Tensor]


class LatentAutoencoder(nn.Module):
    """MLP encoder → latent (:data:`LATENTS`) → MLP decoder over flattened images.

    Args:
        input_dim: n_x, pixels per image (inputs are flattened).
        num_latents: n_z (twice the number of factors in the paper).
        latent: which latent space (module docstring).
        hidden: hidden widths of the encoder (the decoder mirrors them).
        num_values: n_v of the scalar codebooks.
        vq_codes, vq_dim: codebook size and vector size of the ``"vector"`` ablation.
    """

    def __init__(self, input_dim: int, num_latents: int, *, latent: str = "quantized",
                 hidden: Sequence[int] = (256, 256), num_values: int = 10,
                 vq_codes: int = 64, vq_dim: int = 8) -> None:
        super().__init__()
        if latent not in LATENTS:
            raise ValueError(f"latent must be one of {LATENTS}, got {latent!r}")
        if not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(f"input_dim must be a positive integer, got {input_dim!r}")
        if not isinstance(num_latents, int) or num_latents < 1:
            raise ValueError(f"num_latents must be a positive integer, got {num_latents!r}")
        self.input_dim, self.num_latents, self.latent = input_dim, num_latents, latent
        pre = {"gaussian": 2 * num_latents, "vector": num_latents * vq_dim}.get(latent,
                                                                               num_latents)
        post = num_latents * vq_dim if latent == "vector" else num_latents
        self.encoder = MLP(input_dim, pre, hidden=tuple(hidden))
        self.decoder = MLP(post, input_dim, hidden=tuple(reversed(tuple(hidden))))
        self.quantizer: nn.Module | None = None
        if latent in ("quantized", "global", "frozen"):
            self.quantizer = ScalarQuantizer(num_latents, num_values, shared=latent == "global",
                                             trainable=latent != "frozen")
        elif latent == "vector":
            self.quantizer = VectorQuantizer(vq_codes, vq_dim, beta=1.0,
                                             estimator="straight_through", metric="euclidean")
        self.vq_dim = vq_dim

    @property
    def discrete(self) -> bool:
        """True when :attr:`AutoencoderOutput.representation` holds code indices."""
        return self.latent in DISCRETE_LATENTS

    def forward(self, x: torch.Tensor) -> AutoencoderOutput:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.input_dim:
            raise ValueError(f"x has {flat.shape[1]} values per example, the model expects "
                             f"input_dim={self.input_dim}")
        pre = self.encoder(flat)
        terms: dict[str, torch.Tensor] = {}
        if self.latent == "continuous":
            z, representation = pre, pre
        elif self.latent == "gaussian":
            mu, log_var = pre.chunk(2, dim=-1)
            z = mu + torch.randn_like(mu) * (0.5 * log_var).exp() if self.training else mu
            terms["kl"] = 0.5 * (mu.pow(2) + log_var.exp() - 1 - log_var).mean(-1).mean()
            representation = mu
        else:
            vectors = (pre.reshape(pre.shape[0], self.num_latents, self.vq_dim)
                       if self.latent == "vector" else pre)
            quantized = self.quantizer(vectors)
            z = quantized.z_hat.reshape(pre.shape[0], -1)
            terms["quantization"] = quantized.quantization_loss
            terms["commitment"] = quantized.commitment_loss
            representation = quantized.indices
        return AutoencoderOutput(self.decoder(z), representation, terms)


def qlae_loss(model: LatentAutoencoder, x: torch.Tensor, *, quantization_weight: float = 0.01,
              commitment_weight: float = 0.01, beta: float = 4.0,
              net: nn.Module | None = None) -> LossBreakdown:
    """Pixel BCE (mean) plus the latent's weighted terms (module docstring) for one batch.

    ``net`` runs the forward when given: ``model`` wrapped in DDP, whose forward its gradient
    averaging needs (the wrapper does not expose ``model``'s attributes, hence both).
    """
    out = (net or model)(x)
    target = x.reshape(x.shape[0], -1)
    parts = {"bce": F.binary_cross_entropy_with_logits(out.logits, target)}
    weights = {"bce": 1.0}
    if "kl" in out.terms:
        weights["kl"] = model.num_latents / model.input_dim * beta
    if "quantization" in out.terms:
        weights["quantization"] = quantization_weight
        weights["commitment"] = commitment_weight
    for name, value in out.terms.items():
        parts[name] = weights[name] * value
    return LossBreakdown(total=torch.stack(list(parts.values())).sum(), parts=parts,
                         weights=weights)


def qlae_param_groups(model: LatentAutoencoder, weight_decay: float = 0.1
                      ) -> list[dict[str, Any]]:
    """Two AdamW groups: encoder/decoder weights with ``weight_decay``, everything else none.

    AdamW with zero decay is Adam, so one optimiser reproduces the official two-optimiser
    split. The first group is the one whose gradients are value-clipped (:func:`fit_qlae`).
    """
    if not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number ≥ 0, got {weight_decay}")
    networks = list(model.encoder.named_parameters()) + list(model.decoder.named_parameters())
    weights = [p for name, p in networks if name.endswith("weight")]
    chosen = {id(p) for p in weights}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    return [{"params": weights, "weight_decay": weight_decay, "name": "weights"},
            {"params": rest, "weight_decay": 0.0, "name": "biases_and_codebooks"}]


@dataclasses.dataclass(frozen=True)
class QLAEConfig:
    """Training options of :func:`fit_qlae`.

    Defaults from the official ``train_ae.yaml`` and ``quantized_ae.yaml``; ``weight_decay=0``
    is the no-decay ablation.
    """

    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    clip: float | None = 1.0
    quantization_weight: float = 0.01
    commitment_weight: float = 0.01
    beta: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "weight_decay", "quantization_weight", "commitment_weight", "beta"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value!r}")
        if self.lr == 0:
            raise ValueError("lr must be positive")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be positive or None (no clipping), got {self.clip}")


@dataclasses.dataclass
class QLAEResult:
    """The trained autoencoder and the loop's per-epoch history."""

    model: LatentAutoencoder
    history: History


def check_images(images: torch.Tensor, input_dim: int, why: str) -> None:
    """Refuse anything but N ≥ 1 finite float images of ``input_dim`` values in [0, 1]."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError("images must be a floating tensor with values in [0, 1]")
    if images.shape[0] == 0 or images[0].numel() != input_dim:
        raise ValueError(f"images must be (N, …) with {input_dim} values per image and "
                         f"N ≥ 1, got shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()) or images.min() < 0 or images.max() > 1:
        raise ValueError(f"images must be finite with values in [0, 1] ({why})")


@register(
    "latent_quantization",
    kind="procedure",
    declares={
        "owns_loss": "its reconstruction and quantisation losses are the method",
    },
    summary="Autoencode through a per-dimension scalar-quantised latent (learnable 10-value "
    "codebooks, straight-through) with strong weight decay on the networks' weights, so that "
    "each latent dimension captures one factor (QLAE); the same latent in an InfoWGAN-GP "
    "(QLInfoWGAN-GP).",
    equation="L = BCE(x̂, x) + λ_q·mean_j(sg(z_c,j) − z_q,j)² + λ_c·mean_j(z_c,j − sg(z_q,j))², "
    "z_q,j = V_j[argmin_m |z_c,j − V_j[m]|]; weights: clip(±1) then AdamW(decay λ_wd)",
    defaults=(
        Default("num_values", 10, "official quantized_ae.yaml num_values_per_latent"),
        Default("quantization_weight", 0.01, "official quantized_ae.yaml (dSprites: 0.001)"),
        Default("commitment_weight", 0.01, "official quantized_ae.yaml (dSprites: 0.001)"),
        Default("weight_decay", 0.1, "official quantized_ae.yaml l2 (AdamW; MPI3D: 0.001)"),
        Default("clip", 1.0, "official train_ae.yaml optim.clip (element-wise optax.clip)"),
        Default("lr", 1e-3, "official train_ae.yaml"),
        Default("batch_size", 128, "official train_ae.yaml"),
        Default("beta", 4.0, "β of the β-VAE baseline (issue 17)"),
        Default("InfoWGANConfig.gradient_penalty_weight", 10.0,
                "QLInfoWGAN-GP (qlinfowgan.py): official model_partial/*_gan.yaml gradient"),
        Default("InfoWGANConfig.info_weight", 200.0,
                "QLInfoWGAN-GP: official quantized_info_gan.yaml latent"),
        Default("InfoWGANConfig.generator_period", 5,
                "QLInfoWGAN-GP: official train_gan.yaml generator_step_period"),
        Default("InfoWGANConfig.weight_decay", 1e-3,
                "QLInfoWGAN-GP: official train_gan.yaml sweep l2 (InfoWGAN-GP: 1e-4, "
                "info_gan.yaml)"),
        Default("InfoWGANConfig.lr", 2e-4,
                "QLInfoWGAN-GP: official train_gan.yaml, Adam β = (0, 0.9), batch 64"),
    ),
    variants=("latent='quantized' (QLAE)", "weight_decay=0 (ablation)",
              "latent='global' (one shared codebook)", "latent='frozen' (fixed values)",
              "latent='vector' (VQ-VAE)", "latent='continuous' (AE)",
              "latent='gaussian' (β-VAE)",
              "qlinfowgan.fit_qlinfowgan, InfoWGAN(latent='quantized') (QLInfoWGAN-GP: "
              "WGAN-GP + InfoGAN latent regression, codebook latents, quantised head)",
              "qlinfowgan.fit_qlinfowgan, InfoWGAN(latent='continuous') (InfoWGAN-GP)"),
)
def fit_qlae(model: LatentAutoencoder, images: torch.Tensor, *,
             config: QLAEConfig | None = None, labels: torch.Tensor | None = None,
             evaluate: Callable[[nn.Module, int], dict[str, float]] | None = None,
             eval_every: int = 1, checkpoint_path: str | None = None,
             checkpoint_every: int = 1, resume: bool = False, progress: bool | None = None,
             log: Callable[[dict[str, float]], None] | None = None,
             context: DistributedContext | None = None) -> QLAEResult:
    """Train ``model`` to reconstruct ``images`` (values in [0, 1]) with the QLAE recipe.

    Built on :func:`regzoo.train.fit` (checkpoints with exact resume; DDP across the ranks of
    ``context``, each rank on its shard of every epoch's permutation).
    Weight gradients are clipped to [−``clip``, ``clip``] element-wise after every backward,
    then one AdamW steps both groups of :func:`qlae_param_groups`.

    Args:
        model: a :class:`LatentAutoencoder` (its ``latent`` picks QLAE or a baseline).
        images: (N, …) images in [0, 1] on the device to train on.
        config: :class:`QLAEConfig`.
        labels: optional (N,) integer labels carried in the batches (unused by the loss).
        evaluate, eval_every: metrics of the model every ``eval_every`` epochs.
        checkpoint_path, checkpoint_every, resume: as :func:`regzoo.train.fit` (an epoch of
            768 images is 6 steps: checkpoint every few dozen epochs, not every one).
        context: the process context from :func:`regzoo.train.init_distributed` under
            torchrun (default: one process on the model's device).
    """
    config = config or QLAEConfig()
    if not isinstance(model, LatentAutoencoder):
        raise TypeError(f"model must be a LatentAutoencoder, got {type(model).__name__}")
    check_images(images, model.input_dim, "pixel BCE targets")
    labels = (torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
              if labels is None else labels)
    groups = qlae_param_groups(model, config.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=config.lr)
    clipped = groups[0]["params"]

    def step(net: nn.Module, batch: Any) -> LossBreakdown:
        return qlae_loss(unwrap_model(net), batch[0], net=net,
                         quantization_weight=config.quantization_weight,
                         commitment_weight=config.commitment_weight, beta=config.beta)

    def clip_weights(_: nn.Module) -> None:
        if config.clip is not None:
            torch.nn.utils.clip_grad_value_(clipped, config.clip)

    batches = TensorBatches(images, labels, config.batch_size, seed=config.seed)
    history = fit(model, batches, step, optimizer, epochs=config.epochs, evaluate=evaluate,
                  eval_every=eval_every, after_backward=clip_weights,
                  checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every,
                  resume=resume, progress=progress, context=context,
                  desc="qlae", log=log)
    return QLAEResult(model=model, history=history)


@torch.no_grad()
def encode(model: LatentAutoencoder, images: torch.Tensor, batch_size: int = 1024
           ) -> torch.Tensor:
    """The representation of every image (code indices, or latent means), in eval mode."""
    was_training = model.training
    model.eval()
    parts = [model(chunk).representation for chunk in images.split(batch_size)]
    model.train(was_training)
    return torch.cat(parts)
