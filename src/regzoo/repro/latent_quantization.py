"""QLAE at CPU scale: does per-dimension latent quantisation disentangle mini-dSprites?

The paper's data sets (Shapes3D, MPI3D, Falcor3D, Isaac3D) are downloads; the stand-in is
:func:`regzoo.data.factors.mini_dsprites`: the full factorial of shape (3) × scale (4) × x (8)
× y (8), 768 binary 32×32 images, every one in the training set and in the evaluation (as the
paper trains and evaluates on the whole data set). n_z = 2 × 4 factors = 8 latents (the
official ``twice_sources``).

Arms (:mod:`regzoo.methods.latent_quantization.qlae`; the same MLP 1024-256-256-8 and mirror
decoder, Adam(W) lr 1e-3, batch 128, ``steps`` steps):

- ``ae``: continuous latent, no weight decay (the official AE configs);
- ``qlae``: 10-value scalar codebooks, λ_q = λ_c = 0.01 (the paper's main configs; the official
  dSprites config has 0.001), AdamW decay 0.1 on the weights after element-wise clipping at 1;
- ``qlae_no_wd`` (decay 0), ``qlae_global`` (one shared codebook), ``qlae_frozen`` (fixed
  codebook values), ``qlae_vq`` (VQ-VAE: 8 vectors of 8 entries, 64 codes, λ_q = 1, λ_c = 0.25,
  no decay): the ablations the paper singles out;
- ``beta_vae``: diagonal Gaussian, β = 4, no decay;
- ``infowgan_gp`` and ``qlinfowgan_gp``: the latent-reconstructing pair
  (:mod:`regzoo.methods.latent_quantization.qlinfowgan`): an MLP generator 8-256-256-1024 and
  an MLP critic 1024-256-256 with a value head and a latent head, WGAN-GP (λ_GP = 10) with the
  InfoGAN latent regression (λ_I = 200), five critic steps per generator step, batch 64, Adam
  lr 2·10⁻⁴, β = (0, 0.9), clip 1 and AdamW decay on the weights (10⁻⁴ for InfoWGAN-GP, whose
  latent is U[0, 1)^8; 10⁻³ for QLInfoWGAN-GP, whose latent is drawn from the 10-value
  codebooks and whose head is quantised, λ_q = λ_c = 0.01), ``gan_steps`` critic steps.

Metrics on all 768 images (eval mode; codes for quantised arms, means for the AE/VAE, the
latent head on the real images for the GANs, as the official ``train_gan.py``): InfoM,
InfoC, InfoE (:func:`regzoo.methods.latent_quantization.infomec`, the official definitions),
DCI (gradient-boosted importances, 80/20 split), pixel BCE, active latents; the curve is the
training loss per epoch (the critic loss for the GANs). The extra plot row shows the NMI
matrices (sources × latents, seed mean) of every arm side by side.

Claims (issue 17, fixed before any full run): headline — QLAE's InfoM exceeds the AE's by at
least 0.10 (paired seeds); secondary — QLAE's reconstruction BCE is within 10 % of the AE's
(log BCE, margin −ln 1.1), removing weight decay loses most of the gain (a derived arm at the
per-seed midpoint of QLAE's and the AE's InfoM must be ≥ ``qlae_no_wd``'s, margin 0), QLAE's
InfoM ≥ the global-codebook and the VQ ablations' (margin 0), QLAE's InfoE ≥ the AE's (margin
0); QLInfoWGAN-GP's InfoM ≥ InfoWGAN-GP's (margin 0, fixed with the GAN arms before their full
run). Research before this reproduction measured AE InfoM ≈ 0.40 at 3 000 steps and had no
finished QLAE run: there is no anchor for the gain.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from regzoo.data.factors import mini_dsprites
from regzoo.methods.latent_quantization.infomec import dci, infomec
from regzoo.methods.latent_quantization.qlae import (
    LatentAutoencoder,
    QLAEConfig,
    encode,
    fit_qlae,
    qlae_loss,
    qlae_param_groups,
)
from regzoo.methods.latent_quantization.qlinfowgan import (
    InfoWGAN,
    InfoWGANConfig,
    build_optimizers,
    critic_loss,
    encode_real,
    fit_qlinfowgan,
    generator_loss,
)
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import (
    Claim,
    Reproduction,
    Unit,
    UnitEnv,
    UnitResult,
    summary_text,
)
from regzoo.train.timing import time_steps

SETTING = "dsprites"
ARMS = ("ae", "qlae", "qlae_no_wd", "qlae_global", "qlae_frozen", "qlae_vq", "beta_vae",
        "infowgan_gp", "qlinfowgan_gp")
GAN_ARMS = ("infowgan_gp", "qlinfowgan_gp")
GAN_STEPS = 6000
"""Critic steps of a GAN arm in ``--full``: 500 epochs of 12 batches. Pilots (seeds 0–4, one
thread on a shared 2-core machine) took 67–152 s per run with its evaluation, 1 047 s for the
10 units of the two GAN arms: ≈ 17.5 core-minutes of the 25 allowed."""
LATENT_OF_ARM = {"ae": "continuous", "qlae": "quantized", "qlae_no_wd": "quantized",
                 "qlae_global": "global", "qlae_frozen": "frozen", "qlae_vq": "vector",
                 "beta_vae": "gaussian"}
DECAYED_ARMS = ("qlae", "qlae_global", "qlae_frozen")
"""Arms with the paper's weight decay (the no-decay ablation, VQ-VAE, AE and β-VAE have none)."""
GAN_LATENT_OF_ARM = {"infowgan_gp": "continuous", "qlinfowgan_gp": "quantized"}


@dataclasses.dataclass(frozen=True)
class LatentQuantizationReproConfig(ReproConfig):
    """Settings of the QLAE reproduction; presets ``tiny``, ``quick`` and ``full``."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    arms: tuple[str, ...] = ARMS
    steps: int = 10_000
    batch_size: int = 128
    hidden: tuple[int, ...] = (256, 256)
    num_values: int = 10
    lr: float = 1e-3
    weight_decay: float = 0.1
    clip: float = 1.0
    quantization_weight: float = 0.01
    commitment_weight: float = 0.01
    vq_quantization_weight: float = 1.0
    vq_commitment_weight: float = 0.25
    vq_codes: int = 64
    vq_dim: int = 8
    beta: float = 4.0
    image_size: int = 32
    dci_train_fraction: float = 0.8
    gan_steps: int = GAN_STEPS
    """Critic steps of the GAN arms (a generator step follows every ``generator_period``-th)."""
    gan_batch_size: int = 64
    gan_lr: float = 2e-4
    gan_betas: tuple[float, float] = (0.0, 0.9)
    infowgan_weight_decay: float = 1e-4
    qlinfowgan_weight_decay: float = 1e-3
    gradient_penalty_weight: float = 10.0
    info_weight: float = 200.0
    generator_period: int = 5
    eval_samples: int | None = None
    """Images the metrics are computed on (a seeded subsample; None: all of them)."""
    positive_fields = ("steps", "batch_size", "num_values", "lr", "clip", "vq_codes", "vq_dim",
                       "image_size", "gan_steps", "gan_batch_size", "gan_lr",
                       "generator_period")

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not {"ae", "qlae"} <= set(self.arms):
            raise ValueError(f"arms must be a subset of {ARMS} including 'ae' and 'qlae' (the "
                             f"claim), got {self.arms}")
        if self.eval_samples is not None and self.eval_samples < 10:
            raise ValueError(f"eval_samples must be ≥ 10 or None, got {self.eval_samples}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must list positive widths, got {self.hidden}")

    @classmethod
    def tiny(cls) -> LatentQuantizationReproConfig:
        return cls(seeds=(0,), arms=("ae", "qlae", "qlae_no_wd", *GAN_ARMS), steps=12,
                   gan_steps=10, hidden=(16,), image_size=16, eval_samples=96)

    @classmethod
    def quick(cls) -> LatentQuantizationReproConfig:
        return cls(seeds=(0, 1), arms=("ae", "qlae", "qlae_no_wd"), steps=2000)

    @classmethod
    def full(cls) -> LatentQuantizationReproConfig:
        return cls()


def build_arm(config: LatentQuantizationReproConfig, arm: str, input_dim: int,
              num_latents: int) -> tuple[LatentAutoencoder, QLAEConfig]:
    """The arm's autoencoder and training options (module docstring)."""
    model = LatentAutoencoder(input_dim, num_latents, latent=LATENT_OF_ARM[arm],
                              hidden=config.hidden, num_values=config.num_values,
                              vq_codes=config.vq_codes, vq_dim=config.vq_dim)
    vq = arm == "qlae_vq"
    options = QLAEConfig(
        epochs=1, batch_size=config.batch_size, lr=config.lr,
        weight_decay=config.weight_decay if arm in DECAYED_ARMS else 0.0,
        clip=config.clip if arm in DECAYED_ARMS else None,
        quantization_weight=config.vq_quantization_weight if vq else config.quantization_weight,
        commitment_weight=config.vq_commitment_weight if vq else config.commitment_weight,
        beta=config.beta)
    return model, options


def build_gan_arm(config: LatentQuantizationReproConfig, arm: str, input_dim: int,
                  num_latents: int) -> tuple[InfoWGAN, InfoWGANConfig]:
    """The GAN arm's model and training options (module docstring)."""
    model = InfoWGAN(input_dim, num_latents, latent=GAN_LATENT_OF_ARM[arm], hidden=config.hidden,
                     num_values=config.num_values)
    decay = (config.qlinfowgan_weight_decay if arm == "qlinfowgan_gp"
             else config.infowgan_weight_decay)
    options = InfoWGANConfig(
        epochs=1, batch_size=config.gan_batch_size, lr=config.gan_lr,
        betas=tuple(config.gan_betas), weight_decay=decay, clip=config.clip,
        generator_period=config.generator_period,
        gradient_penalty_weight=config.gradient_penalty_weight, info_weight=config.info_weight,
        quantization_weight=config.quantization_weight,
        commitment_weight=config.commitment_weight)
    return model, options


class LatentQuantizationReproduction(Reproduction):
    """QLAE vs AE, β-VAE and the paper's ablations on mini-dSprites."""

    slug = "latent_quantization"
    config_type = LatentQuantizationReproConfig
    title = "Disentanglement via Latent Quantization (QLAE)"
    plot_curves = (("train_loss", "training loss"), ("critic_loss", "critic loss (GANs)"))
    curve_scales = {"train_loss": "log"}
    arm_labels = {"ae": "AE", "qlae": "QLAE", "qlae_no_wd": "QLAE, no weight decay",
                  "qlae_global": "QLAE, global codebook", "qlae_frozen": "QLAE, frozen values",
                  "qlae_vq": "VQ-VAE", "beta_vae": "β-VAE (β = 4)",
                  "midpoint": "midpoint of QLAE and AE", "infowgan_gp": "InfoWGAN-GP",
                  "qlinfowgan_gp": "QLInfoWGAN-GP"}
    table_metrics = ("infom", "infoc", "infoe", "dci_d", "dci_c", "dci_i", "bce",
                     "active_latents")
    extra_row_label = "NMI (sources × latents), seed mean"

    def units(self, config: LatentQuantizationReproConfig) -> list[Unit]:
        return [Unit(SETTING, arm, seed) for seed in config.seeds for arm in config.arms]

    def run_unit(self, config: LatentQuantizationReproConfig, unit: Unit, env: UnitEnv
                 ) -> UnitResult:
        data = mini_dsprites(config.image_size)
        images = data.images.to(env.device)
        sources = data.factors.numpy()
        torch.manual_seed(unit.seed)
        if unit.arm in GAN_ARMS:
            return self._run_gan_unit(config, unit, env, images, sources)
        model, options = build_arm(config, unit.arm, images[0].numel(), 2 * sources.shape[1])
        steps_per_epoch = math.ceil(len(images) / config.batch_size)
        options = dataclasses.replace(options, epochs=math.ceil(config.steps / steps_per_epoch),
                                      seed=unit.seed)
        # About 20 checkpoints per run: an epoch is a few steps, a checkpoint costs many.
        result = fit_qlae(model.to(env.device), images, config=options,
                          checkpoint_path=env.checkpoint_path,
                          checkpoint_every=max(1, options.epochs // 20), resume=env.resume,
                          progress=env.progress, log=env.log)
        latents = encode(model, images).reshape(len(images), -1).cpu().numpy()
        metrics, nmi = _scores(config, unit, sources, latents, model.discrete)
        model.eval()
        with torch.no_grad():
            bce = float(qlae_loss(model, images).parts["bce"])
        metrics.update({"bce": bce, "log_bce": math.log(bce),
                        "steps": float(options.epochs * steps_per_epoch)})
        curves = {"train_loss": result.history.curve("train_loss"), "nmi": nmi}
        return UnitResult(metrics, curves)

    def _run_gan_unit(self, config: LatentQuantizationReproConfig, unit: Unit, env: UnitEnv,
                      images: torch.Tensor, sources: np.ndarray) -> UnitResult:
        model, options = build_gan_arm(config, unit.arm, images[0].numel(),
                                       2 * sources.shape[1])
        steps_per_epoch = math.ceil(len(images) / config.gan_batch_size)
        options = dataclasses.replace(
            options, epochs=math.ceil(config.gan_steps / steps_per_epoch), seed=unit.seed)
        result = fit_qlinfowgan(model.to(env.device), images, config=options,
                                checkpoint_path=env.checkpoint_path,
                                checkpoint_every=max(1, options.epochs // 20),
                                resume=env.resume, progress=env.progress, log=env.log)
        latents = encode_real(model, images).cpu().numpy()
        metrics, nmi = _scores(config, unit, sources, latents, model.discrete)
        metrics.update({"steps": float(options.epochs * steps_per_epoch),
                        "generator_steps": float(result.generator_steps)})
        return UnitResult(metrics, {"critic_loss": result.history.curve("train_loss"),
                                    "nmi": nmi})

    def derived_arms(self, config: LatentQuantizationReproConfig,
                     records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per seed, the midpoint of QLAE's and the AE's InfoM (the no-decay claim's bar)."""
        rows = {(r["arm"], r["seed"]): r for r in records if r["setting"] == SETTING}
        out = []
        for seed in config.seeds:
            if ("qlae", seed) in rows and ("ae", seed) in rows:
                mid = 0.5 * (rows[("qlae", seed)]["metrics"]["infom"]
                             + rows[("ae", seed)]["metrics"]["infom"])
                out.append({"setting": SETTING, "arm": "midpoint", "seed": seed,
                            "metrics": {"infom": mid}, "curves": {}})
        return out

    def claim(self, config: LatentQuantizationReproConfig) -> Claim:
        return Claim(
            statement="QLAE's InfoM exceeds the plain AE's by at least 0.10 (paper: QLAE has "
            "the best or near-best InfoM on four data sets; mini-dSprites here).",
            metric="infom", setting=SETTING, method="qlae", baseline="ae", margin=0.10)

    def secondary_claims(self, config: LatentQuantizationReproConfig) -> list[Claim]:
        claims = [
            Claim(statement="QLAE reconstructs within 10 % of the AE's pixel BCE (paper: "
                  "reconstruction comparable to the AE).", metric="log_bce", setting=SETTING,
                  method="qlae", baseline="ae", margin=-math.log(1.1), higher_is_better=False),
            Claim(statement="QLAE's InfoE is at least the AE's (paper: best or near-best "
                  "InfoE).", metric="infoe", setting=SETTING, method="qlae", baseline="ae",
                  margin=0.0),
        ]
        if {"infowgan_gp", "qlinfowgan_gp"} <= set(config.arms):
            claims.append(Claim(
                statement="QLInfoWGAN-GP's InfoM is at least InfoWGAN-GP's (paper: latent "
                "quantisation with weight decay also improves the InfoGAN's modularity).",
                metric="infom", setting=SETTING, method="qlinfowgan_gp",
                baseline="infowgan_gp", margin=0.0))
        if "qlae_no_wd" in config.arms:
            claims.append(Claim(
                statement="Removing weight decay loses most of QLAE's InfoM gain over the AE: "
                "the no-decay ablation's InfoM is at most the midpoint of QLAE's and the AE's "
                "(paper §5: weight decay is necessary).", metric="infom", setting=SETTING,
                method="midpoint", baseline="qlae_no_wd", margin=0.0))
        for arm, what in (("qlae_global", "one global codebook"),
                          ("qlae_vq", "vector quantisation")):
            if arm in config.arms:
                claims.append(Claim(
                    statement=f"QLAE's InfoM is at least that of {what} (paper §5: both "
                    "ablations lower InfoM).", metric="infom", setting=SETTING, method="qlae",
                    baseline=arm, margin=0.0))
        return claims

    def draw_extra_row(self, ax: Any, setting: str, result: dict[str, Any]) -> bool:
        records = [r for r in result["metrics"]["per_seed"]
                   if r["setting"] == setting and "nmi" in r.get("curves", {})]
        arms = [a for a in ARMS if any(r["arm"] == a for r in records)]
        if not arms:
            return False
        panels = []
        for arm in arms:
            matrices = [np.asarray(r["curves"]["nmi"]) for r in records if r["arm"] == arm]
            panel = np.mean(matrices, axis=0).reshape(4, -1)
            panels += [panel, np.full((4, 1), np.nan)]
        ax.imshow(np.concatenate(panels[:-1], axis=1), vmin=0, vmax=1, cmap="viridis")
        width = panels[0].shape[1] + 1
        ax.set_xticks([width * i + (width - 1) / 2 for i in range(len(arms))])
        ax.set_xticklabels([self.arm_labels[a] for a in arms], rotation=30, fontsize=6)
        ax.set_yticks(range(4))
        ax.set_yticklabels(["shape", "scale", "x", "y"], fontsize=6)
        return True

    def timing(self, config: LatentQuantizationReproConfig, device: torch.device
               ) -> dict[str, Any]:
        """A QLAE step vs an AE step, and a QLInfoWGAN-GP period vs an InfoWGAN-GP one.

        A period is ``generator_period`` critic steps and one generator step; side by side.
        """
        images = mini_dsprites(config.image_size).images[:config.batch_size].to(device)
        steps = {}
        for arm in ("ae", "qlae"):
            torch.manual_seed(0)
            model, options = build_arm(config, arm, images[0].numel(), 8)
            model.to(device)
            groups = qlae_param_groups(model, options.weight_decay)
            optimizer = torch.optim.AdamW(groups, lr=options.lr)

            def step(model: LatentAutoencoder = model, options: QLAEConfig = options,
                     optimizer: torch.optim.Optimizer = optimizer,
                     groups: list[dict[str, Any]] = groups) -> None:
                optimizer.zero_grad()
                qlae_loss(model, images, quantization_weight=options.quantization_weight,
                          commitment_weight=options.commitment_weight).total.backward()
                if options.clip is not None:
                    torch.nn.utils.clip_grad_value_(groups[0]["params"], options.clip)
                optimizer.step()

            steps[arm] = step
        gan_images = mini_dsprites(config.image_size).images[:config.gan_batch_size].to(device)
        for arm in GAN_ARMS:
            torch.manual_seed(0)
            gan, gan_options = build_gan_arm(config, arm, gan_images[0].numel(), 8)
            gan.to(device)
            critic_opt, generator_opt = build_optimizers(gan, gan_options)
            rng = torch.Generator().manual_seed(0)

            def gan_step(gan: InfoWGAN = gan, gan_options: InfoWGANConfig = gan_options,
                         critic_opt: torch.optim.Optimizer = critic_opt,
                         generator_opt: torch.optim.Optimizer = generator_opt,
                         rng: torch.Generator = rng) -> None:
                # One generator period: that many critic steps, then one generator step.
                for _ in range(gan_options.generator_period):
                    critic_opt.zero_grad()
                    z = gan.sample_latents(len(gan_images), rng).detach()
                    epsilon = torch.rand(len(gan_images), generator=rng).to(device)
                    critic_loss(gan, gan_images, z, epsilon, gan_options).total.backward()
                    torch.nn.utils.clip_grad_value_(critic_opt.param_groups[0]["params"],
                                                    gan_options.clip)
                    critic_opt.step()
                generator_opt.zero_grad()
                generator_loss(gan, gan.sample_latents(len(gan_images), rng),
                               gan_options).total.backward()
                torch.nn.utils.clip_grad_value_(generator_opt.param_groups[0]["params"],
                                                gan_options.clip)
                generator_opt.step()

            steps[arm] = gan_step
        seconds = time_steps(steps, repeats=10, inner=3, warmup=3, device=device)
        return {"ae_step_seconds": seconds["ae"], "qlae_step_seconds": seconds["qlae"],
                "qlae_over_ae": seconds["qlae"] / seconds["ae"],
                "infowgan_period_seconds": seconds["infowgan_gp"],
                "qlinfowgan_period_seconds": seconds["qlinfowgan_gp"],
                "qlinfowgan_over_infowgan": seconds["qlinfowgan_gp"] / seconds["infowgan_gp"]}

    def note(self, config: LatentQuantizationReproConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        rows = []
        for arm in config.arms:
            if arm not in aggregate.get(SETTING, {}):
                continue
            cells = ", ".join(f"{m} {summary_text(aggregate, SETTING, arm, m)}"
                              for m in ("infom", "infoc", "infoe", "dci_d", "bce",
                                        "active_latents"))
            rows.append(f"{self.arm_labels[arm]}: {cells}")
        return (
            "Measured (mean ± SE over seeds): " + "; ".join(rows) + ". "
            f"Mini-dSprites (768 images, 4 factors, n_z = 8), MLP autoencoders, {config.steps} "
            f"steps of batch {config.batch_size} (the paper trains 2·10⁵ steps with conv/style "
            "decoders on larger data). InfoMEC follows the official infomec.py (InfoE is an "
            "in-sample fit, as there); quantised arms are scored on their codes, the AE and "
            "β-VAE on their latent means. λ_q = λ_c = 0.01 from the paper's main configs (the "
            "official dSprites config uses 0.001). "
            f"GAN arms: {config.gan_steps} critic steps of batch {config.gan_batch_size}, one "
            f"generator step per {config.generator_period} (the paper: 2·10⁵ steps with the "
            "conv critic and style generator), scored on the latent head applied to the real "
            "images; they have no reconstruction, so no BCE. At this length the GANs' "
            "decoupled decay shrinks weights by only lr·λ_wd·steps = "
            f"{config.gan_lr * config.qlinfowgan_weight_decay * config.gan_steps:.1g} "
            "(QLInfoWGAN-GP), so their comparison tests the quantised latent more than the "
            "decay. No hyperparameter was tuned on these runs."
        )


def _scores(config: LatentQuantizationReproConfig, unit: Unit, sources: np.ndarray,
            latents: np.ndarray, discrete: bool) -> tuple[dict[str, float], list[float]]:
    """InfoM/C/E, DCI and active latents of one unit's representation, and its NMI matrix."""
    if config.eval_samples is not None and config.eval_samples < len(latents):
        keep = np.random.default_rng(unit.seed).choice(len(latents), config.eval_samples,
                                                       replace=False)
        sources, latents = sources[keep], latents[keep]
    scores = infomec(sources, latents, discrete=discrete, seed=unit.seed)
    disentanglement = dci(sources, latents.astype(np.float64),
                          train_fraction=config.dci_train_fraction, seed=unit.seed)
    metrics = {"infom": scores.infom, "infoc": scores.infoc, "infoe": scores.infoe,
               "dci_d": disentanglement.disentanglement,
               "dci_c": disentanglement.completeness,
               "dci_i": disentanglement.informativeness,
               "active_latents": float(scores.active.sum())}
    return metrics, scores.nmi.ravel().tolist()


REPRODUCTION = LatentQuantizationReproduction()
