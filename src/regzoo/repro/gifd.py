"""GIFD at CPU scale: invert a federated client's digits from its gradient (spec gifd.md §5).

Attacked model (the FL model, no batch norm, eval mode): conv 1→12 (5×5, stride 2) → sigmoid →
conv 12→12 (5×5) → sigmoid → linear 192→10 (5 854 parameters; the sigmoid CNN of DLG-style
gradient-inversion studies, whose second derivatives do not vanish), seeded by the unit's seed,
either at initialisation (``init``; the paper's setting: a seeded, untrained ResNet-18) or after
one epoch of Adam (lr 1e-3, batches of 32) on the digits' training split (``trained``).

Private data: digits 5–9 of the test split of :func:`regzoo.data.load_digits` ``(0)``, the split
the DCGAN priors were trained on, so no private digit was seen by a prior. Each seed draws
``images`` of them (a seeded permutation); at batch 4 they are grouped greedily into batches of
four distinct labels (the official driver draws distinct labels too) and ``images // 4`` batches
are attacked. The client shares g* = ∇_w CE of its batch (mean over the batch), plus, with the
``noise`` defence, i.i.d. N(0, σ²) on every entry, σ = 1e-2 (the official ``rec_mult.py``'s
value for ``defense_method: noise`` when no σ is given, l. 250; ``defense.additive_noise``'s own
default is 0.1), drawn from the seed's CPU generator: every arm and prior of a seed attacks the same
observations.

Priors (:func:`regzoo.generative.digit_dcgan`, the cached 8×8 DCGAN, EMA generator, three
stages z ∈ ℝ³² → h₁ ∈ ℝ^{64×2×2} → h₂ ∈ ℝ^{40×4×4} → image): ``ood`` trained on digits 0–4 only
(the attacked digits 5–9 are out of its distribution: the paper's OOD setting), ``in`` trained on
all ten digits.

Arms, one harness (:mod:`regzoo.methods.gifd`), the same budget of ``3 × stage_steps`` Adam
steps (lr 0.1, the per-stage ramp), 4 restarts, labels inferred from the gradient:

* ``pixel`` — :class:`~regzoo.methods.gifd.PixelInversion` (Geiping et al.: cosine + TV 1e-4,
  no image-norm term, clamped to [0, 1] after each step);
* ``pixel_notv`` (batch 1 only) — the same without TV: at this scale the gradient loss left near
  the optimum is below the official TV term, so this arm shows what the gradient alone pins down.
  The pixel arms use no prior: they run in the ``in`` settings and their records are copied to
  the matching ``ood`` settings (derived arms; the two would be identical runs);
* ``latent`` — :class:`~regzoo.methods.gifd.GIFDAttack` with one stage (the latent alone);
* ``gifd`` — GIFD over all three stages (``stage_steps`` each), relative radius ρ = 0.1.

Settings: ``{prior}_b{batch}_{defence}_{state}``, every combination of the config's tuples.
Metrics, each reconstruction paired with the private image of the same label (the batch sorted
by label, as the inferred labels are): ``psnr`` (dB, peak 1, capped at 100 dB for exact
reconstructions), ``ssim`` (Wang et al.'s index, Gaussian window σ = 1.5,
:func:`regzoo.data.hyperspectral.ssim` on the 8×8 image), ``oracle_agreement`` (the share of
reconstructions that the digits oracle :func:`regzoo.generative.digit_oracle` puts in the class
it gives the private image), ``label_accuracy`` (attacks whose inferred labels are exact),
``gradient_loss`` (the returned images' L_grad), ``gradient_norm`` (the clean observed
gradient's norm), ``best_stage`` and ``psnr_stage{k}`` (GIFD: the stage chosen by gradient
loss, and each stage's PSNR). Curves, in the plotted settings: ``psnr_curve``, the PSNR of the
restart with the lowest gradient loss every ``curve_every`` steps (not for ``pixel_notv``, whose
exact fits would flatten the plot), and a 4-image grid. A unit runs in seconds, so it keeps no
checkpoint (the runner's ``--resume`` reuses finished units).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from regzoo.data import TensorBatches, load_digits
from regzoo.data.hyperspectral import ssim
from regzoo.generative import digit_dcgan, digit_oracle
from regzoo.methods.gifd import (
    GIFDAttack,
    GIFDConfig,
    GIFDResult,
    PixelInversion,
    PixelInversionConfig,
)
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import (
    Claim,
    Reproduction,
    Unit,
    UnitEnv,
    UnitResult,
    summary_mean,
    summary_text,
)
from regzoo.train import fit, time_steps

ARMS = ("pixel", "pixel_notv", "latent", "gifd")
PRIOR_FREE = ("pixel", "pixel_notv")
"""Arms that use no generator: run once per setting group and copied to the other prior."""
TIMED = ("pixel", "latent", "gifd")
PRIORS = {"ood": tuple(range(5)), "in": tuple(range(10))}
ATTACKED = (5, 6, 7, 8, 9)
DEFENCES = ("clean", "noise")
MODEL_STATES = ("init", "trained")
DATA_SEED = 0
"""The split of the DCGAN assets' training data; the private digits come from its test part."""
HEADLINE = "ood_b1_clean_init"
SECONDARY = "in_b4_noise_init"
IMAGE_SHAPE = (1, 8, 8)
LATENT_SHAPE = (32,)


def setting_name(prior: str, batch: int, defence: str, state: str) -> str:
    """``ood_b1_clean_init`` and the like."""
    return f"{prior}_b{batch}_{defence}_{state}"


def parse_setting(setting: str) -> tuple[str, int, str, str]:
    """(prior, batch size, defence, model state) of a setting name."""
    prior, batch, defence, state = setting.split("_")
    return prior, int(batch[1:]), defence, state


@dataclasses.dataclass(frozen=True)
class GIFDReproConfig(ReproConfig):
    """Settings of the GIFD reproduction; presets ``tiny``, ``quick`` and ``full``.

    ``full`` attacks 20 private images per seed and setting (100 per setting over 5 seeds), not
    the issue's 50. A unit is one vectorised search over all its images' restarts, and its cost
    grows with the images: measured with one thread on a busy 2-core machine, a GIFD unit of
    600 steps takes ≈ 9 s of CPU at 20 images and ≈ 18 s at 50 (pixel ≈ 6 s and 12 s), so the
    220 units of ``full`` (16 settings; the pixel arms run in half of them, ``pixel_notv`` at
    batch 1 only) take ≈ 15 minutes on 2 cores at 20 images and ≈ 30 at 50. ``quick`` attacks
    10 images with the FL model at initialisation only (22 units, ≈ 2 minutes).
    """

    positive_fields = ("images", "stage_steps", "restarts", "lr", "radius", "noise_sigma",
                       "gan_steps", "curve_every", "grid_images", "train_batch", "train_lr")

    priors: tuple[str, ...] = ("ood", "in")
    batch_sizes: tuple[int, ...] = (1, 4)
    defences: tuple[str, ...] = DEFENCES
    model_states: tuple[str, ...] = MODEL_STATES
    arms: tuple[str, ...] = ARMS
    images: int = 20
    stage_steps: int = 200
    restarts: int = 4
    lr: float = 0.1
    radius: float = 0.1
    noise_sigma: float = 1e-2
    gan_steps: int = 4000
    curve_every: int = 20
    grid_images: int = 4
    train_batch: int = 32
    train_lr: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, allowed in (("priors", tuple(PRIORS)), ("defences", DEFENCES),
                              ("model_states", MODEL_STATES), ("arms", ARMS)):
            values = getattr(self, name)
            if not values or any(v not in allowed for v in values) or \
                    len(set(values)) != len(values):
                raise ValueError(f"{name} must be distinct values from {allowed}, got {values}")
        if not self.batch_sizes or any(b not in (1, 2, 3, 4, 5) for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be in 1..5 (batches of distinct digits 5–9), "
                             f"got {self.batch_sizes}")
        if not {"latent", "gifd"} <= set(self.arms):
            raise ValueError("arms must include 'latent' and 'gifd', the two sides of the claim")
        if HEADLINE not in self.settings():
            raise ValueError(f"the headline setting {HEADLINE} needs priors ∋ 'ood', "
                             "batch_sizes ∋ 1, defences ∋ 'clean' and model_states ∋ 'init'")
        if self.images < max(self.batch_sizes):
            raise ValueError(f"images ({self.images}) must be >= the largest batch size")

    @classmethod
    def tiny(cls) -> GIFDReproConfig:
        return cls(seeds=(0,), model_states=("init",), images=4, stage_steps=4, restarts=2,
                   gan_steps=30, curve_every=2, grid_images=2)

    @classmethod
    def quick(cls) -> GIFDReproConfig:
        """One seed, 10 images, the FL model at initialisation only (≤ 2 minutes)."""
        return cls(seeds=(0,), model_states=("init",), images=10)

    @classmethod
    def full(cls) -> GIFDReproConfig:
        return cls(seeds=(0, 1, 2, 3, 4), images=20)

    def settings(self) -> list[str]:
        """Every setting of the config, in a stable order."""
        return [setting_name(p, b, d, s) for s in self.model_states for d in self.defences
                for b in self.batch_sizes for p in self.priors]

    @property
    def pixel_prior(self) -> str:
        """The prior whose settings run the prior-free pixel arm (copied to the others)."""
        return "in" if "in" in self.priors else self.priors[0]

    def plotted(self) -> list[str]:
        """The settings with curves and an image grid: both claims' and their other prior's."""
        wanted = [setting_name(p, b, d, "init") for p in ("in", "ood")
                  for b, d in ((1, "clean"), (4, "noise"))]
        return [s for s in wanted if s in self.settings()]


def fl_model(seed: int, state: str, device: torch.device,
             config: GIFDReproConfig) -> nn.Module:
    """The attacked network, seeded, on ``device``, in eval mode (trained one epoch if asked)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(1, 12, 5, 2, 2), nn.Sigmoid(),
                              nn.Conv2d(12, 12, 5, 1, 2), nn.Sigmoid(),
                              nn.Flatten(), nn.Linear(192, 10))
    model = model.to(device)
    if state == "trained":
        data = load_digits(DATA_SEED)

        def step(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
            x, y, _ = batch
            return F.cross_entropy(net(x), y)

        fit(model, TensorBatches(data.x_train.reshape(-1, *IMAGE_SHAPE), data.y_train,
                                 config.train_batch, seed=seed),
            step, torch.optim.Adam(model.parameters(), lr=config.train_lr), epochs=1,
            distribute=False, progress=False)
    return model.eval()


def private_batches(seed: int, batch: int, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``images // batch`` private batches (A × B × 1 × 8 × 8, labels A × B, sorted per batch).

    Digits 5–9 of the priors' held-out split in a seeded order, grouped greedily into batches
    of distinct labels.
    """
    data = load_digits(DATA_SEED)
    pool = torch.nonzero(torch.isin(data.y_test, torch.tensor(ATTACKED))).squeeze(1)
    order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))]
    chosen: list[list[int]] = []
    current: list[int] = []
    for index in order.tolist():
        if int(data.y_test[index]) in {int(data.y_test[i]) for i in current}:
            continue
        current.append(index)
        if len(current) == batch:
            chosen.append(sorted(current, key=lambda i: int(data.y_test[i])))
            current = []
            if len(chosen) == images // batch:
                break
    picked = torch.tensor(chosen)
    return data.x_test[picked].reshape(*picked.shape, *IMAGE_SHAPE), data.y_test[picked]


def observed_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float,
                       seed: int) -> tuple[list[list[torch.Tensor]], float]:
    """One shared gradient per private batch, with N(0, σ²) noise from the seed's generator.

    Also returns the clean gradients' mean norm, to compare with the noise's σ·√(parameters).
    """
    noise = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    observations, norms = [], []
    for xa, ya in zip(x.to(device), y.to(device)):
        grads = torch.autograd.grad(F.cross_entropy(model(xa), ya), model.parameters())
        norms.append(float(torch.sqrt(sum(g.pow(2).sum() for g in grads))))
        if sigma > 0:
            grads = tuple(g + sigma * torch.randn(g.shape, generator=noise).to(device)
                          for g in grads)
        observations.append([g.detach() for g in grads])
    return observations, float(np.mean(norms))


def make_attack(arm: str, config: GIFDReproConfig, model: nn.Module,
                stages: Sequence[nn.Module]) -> GIFDAttack | PixelInversion:
    """The arm's attack with the reproduction's budget (``3 × stage_steps`` steps each)."""
    budget = 3 * config.stage_steps
    if arm in PRIOR_FREE:
        return PixelInversion(model, IMAGE_SHAPE, config=PixelInversionConfig(
            steps=budget, lr=config.lr, restarts=config.restarts,
            **({"tv": 0.0} if arm == "pixel_notv" else {})))
    if arm == "latent":
        return GIFDAttack(model, stages, LATENT_SHAPE, config=GIFDConfig(
            steps=budget, lr=config.lr, restarts=config.restarts, num_stages=1))
    return GIFDAttack(model, stages, LATENT_SHAPE, config=GIFDConfig(
        steps=config.stage_steps, lr=config.lr, restarts=config.restarts, radii=config.radius))


def psnr(truth: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """PSNR in dB (peak 1) of each image (N × …) against its truth, capped at 100 dB.

    The cap (an MSE floor of 1e-10) keeps exact reconstructions finite.
    """
    mse = (truth - images).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


class _CurveRecorder:
    """The callback: PSNR of each attack's lowest-gradient-loss restart every ``every`` steps."""

    def __init__(self, truth: torch.Tensor, every: int) -> None:
        self.truth, self.every = truth.flatten(0, 1), every
        self.values: list[float] = []

    def __call__(self, step: int, images: torch.Tensor, matching: torch.Tensor) -> None:
        if (step + 1) % self.every:
            return
        scores = torch.where(torch.isfinite(matching), matching, torch.inf)
        best = images[torch.arange(images.shape[0]), scores.argmin(1)].clamp(0, 1)
        self.values.append(float(psnr(self.truth, best.flatten(0, 1).cpu()).mean()))


def unit_metrics(results: list[GIFDResult], truth: torch.Tensor, labels: torch.Tensor,
                 oracle: nn.Module) -> dict[str, float]:
    """PSNR, SSIM, oracle agreement, label accuracy and GIFD's stage choice of one unit."""
    images = torch.stack([r.images for r in results]).cpu()
    flat_truth, flat_images = truth.flatten(0, 1), images.flatten(0, 1)
    device = next(oracle.parameters()).device
    with torch.no_grad():
        agree = (oracle(flat_images.to(device)).argmax(1)
                 == oracle(flat_truth.to(device)).argmax(1)).float().mean()
    similarity = [ssim(t.permute(1, 2, 0).numpy(), r.permute(1, 2, 0).numpy())
                  for t, r in zip(flat_truth, flat_images)]
    metrics = {
        "psnr": float(psnr(flat_truth, flat_images).mean()),
        "ssim": float(np.mean(similarity)),
        "oracle_agreement": float(agree),
        "label_accuracy": float(np.mean([bool((r.labels.cpu() == y).all())
                                         for r, y in zip(results, labels)])),
        "best_stage": float(np.mean([r.best_stage for r in results])),
        "gradient_loss": float(np.mean([r.stage_scores[r.best_stage] for r in results])),
    }
    for k in range(results[0].stage_images.shape[0]):
        stage = torch.stack([r.stage_images[k] for r in results]).cpu().flatten(0, 1)
        metrics[f"psnr_stage{k}"] = float(psnr(flat_truth, stage).mean())
    return metrics


class GIFDReproduction(Reproduction):
    """GIFD vs latent-only and pixel-space inversion, in and out of the prior's distribution."""

    slug = "gifd"
    config_type = GIFDReproConfig
    title = "GIFD: A Generative Gradient Inversion Method with Feature Domain Optimization"
    plot_curves = (("psnr_curve", "PSNR (dB), best restart"),)
    arm_labels = {"gifd": "GIFD (3 stages)", "latent": "latent only",
                  "pixel": "pixel space (Geiping)", "pixel_notv": "pixel space, no TV"}
    table_metrics = ("psnr", "ssim", "oracle_agreement", "label_accuracy", "gradient_loss",
                     "best_stage", "psnr_stage0", "psnr_stage1", "psnr_stage2", "gradient_norm")
    extra_row_label = "truth, then each arm"
    unit_axes = ("seeds", "priors", "batch_sizes", "defences", "model_states", "arms")

    def units(self, config: GIFDReproConfig) -> list[Unit]:
        units = []
        for seed in config.seeds:
            for setting in config.settings():
                prior, batch, _, _ = parse_setting(setting)
                units += [Unit(setting, arm, seed) for arm in config.arms
                          if (arm not in PRIOR_FREE or prior == config.pixel_prior)
                          and (arm != "pixel_notv" or batch == 1)]
        return units

    def derived_arms(self, config: GIFDReproConfig,
                     records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """The pixel arms of the other priors' settings: copies (they use no prior)."""
        copies = []
        for record in records:
            if record["arm"] not in PRIOR_FREE:
                continue
            _, batch, defence, state = parse_setting(record["setting"])
            copies += [{**record, "setting": setting_name(prior, batch, defence, state)}
                       for prior in config.priors if prior != config.pixel_prior]
        return copies

    def curve_x(self, config: GIFDReproConfig,
                setting: str) -> tuple[str, Sequence[float] | None, str]:
        points = 3 * config.stage_steps // config.curve_every
        return "Adam step", [config.curve_every * (i + 1) for i in range(points)], "linear"

    def run_unit(self, config: GIFDReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        prior, batch, defence, state = parse_setting(unit.setting)
        device = env.device
        model = fl_model(unit.seed, state, device, config)
        x, y = private_batches(unit.seed, batch, config.images)
        sigma = config.noise_sigma if defence == "noise" else 0.0
        observations, gradient_norm = observed_gradients(model, x, y, sigma, unit.seed)
        stages: Sequence[nn.Module] = ()
        if unit.arm not in PRIOR_FREE:
            generator = digit_dcgan(PRIORS[prior], steps=config.gan_steps).generator_ema
            stages = generator.to(device).stages
        plotted = unit.setting in config.plotted()
        # pixel_notv's exact fits (PSNR at its 100 dB cap) would flatten the others' curves.
        recorder = _CurveRecorder(x, config.curve_every) \
            if plotted and unit.arm != "pixel_notv" else None
        results = make_attack(unit.arm, config, model, stages).invert_many(
            observations, batch_size=batch, seed=unit.seed, progress=env.progress,
            callback=recorder)
        metrics = unit_metrics(results, x, y, digit_oracle().to(device))
        metrics["gradient_norm"] = gradient_norm
        curves: dict[str, list[float]] = {}
        if plotted:
            shown = config.grid_images
            images = torch.stack([r.images for r in results]).cpu().flatten(0, 1)
            curves = {"grid_truth": x.flatten(0, 1)[:shown].flatten().tolist(),
                      "grid_images": images[:shown].flatten().tolist()}
            if recorder is not None:
                curves["psnr_curve"] = recorder.values
        return UnitResult(metrics=metrics, curves=curves)

    def claim(self, config: GIFDReproConfig) -> Claim:
        return Claim(
            statement="Out of distribution (a DCGAN prior trained on digits 0–4 attacking "
            "digits 5–9; batch 1, no defence, the FL model at initialisation), GIFD "
            "reconstructs with at least 1 dB more PSNR than latent-only search at the same "
            "iteration budget (paper: searching the feature domains beats latent-space GAN "
            "inversion, most clearly out of distribution).",
            metric="psnr", setting=HEADLINE, method="gifd", baseline="latent", margin=1.0)

    def secondary_claims(self, config: GIFDReproConfig) -> list[Claim]:
        if SECONDARY not in config.settings() or "pixel" not in config.arms:
            return []
        return [Claim(
            statement="At batch 4 with gradient noise σ = 1e-2 (in-distribution prior, FL "
            "model at initialisation), GIFD reconstructs with at least the PSNR of pixel-space "
            "inversion (paper: GIFD stays ahead of Geiping et al. under defences and at larger "
            "batches).",
            metric="psnr", setting=SECONDARY, method="gifd", baseline="pixel", margin=0.0)]

    def draw_extra_row(self, ax: Any, setting: str, result: dict[str, Any]) -> bool:
        """The first seed's reconstructions: truth, then one row per arm."""
        records = [r for r in result["metrics"]["per_seed"] if r["setting"] == setting
                   and "grid_images" in r.get("curves", {})]
        if not records:
            return False
        seed = min(r["seed"] for r in records)
        by_arm = {r["arm"]: r["curves"] for r in records if r["seed"] == seed}
        arms = [a for a in ARMS if a in by_arm]
        first = by_arm[arms[0]]
        rows = [np.asarray(first["grid_truth"])] + [np.asarray(by_arm[a]["grid_images"])
                                                     for a in arms]
        shown = len(rows[0]) // 64
        grid = np.full((len(rows) * 9 - 1, shown * 9 - 1), np.nan)  # NaN: blank separators
        for r, row in enumerate(rows):
            for c, image in enumerate(row.reshape(shown, 8, 8)):
                grid[r * 9:r * 9 + 8, c * 9:c * 9 + 8] = image
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks([r * 9 + 3.5 for r in range(len(rows))],
                      ["truth", *(self.arm_labels[a].split(" (")[0] for a in arms)], fontsize=7)
        ax.set_xticks([])
        ax.set_title(f"seed {seed}", fontsize=8)
        return True

    def timing(self, config: GIFDReproConfig, device: torch.device) -> dict[str, Any]:
        """Seconds per Adam step of each arm (one image, 4 restarts) vs a plain SGD step."""
        model = fl_model(0, "init", device, config)
        x, y = private_batches(0, 1, 1)
        observations, _ = observed_gradients(model, x, y, 0.0, 0)
        stages = digit_dcgan(PRIORS["in"], steps=config.gan_steps).generator_ema.to(device).stages
        steps = 3 * min(config.stage_steps, 10)
        short = dataclasses.replace(config, stage_steps=steps // 3)
        attacks = {arm: make_attack(arm, short, model, stages) for arm in TIMED}
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        xa, ya = x[0].to(device), y[0].to(device)

        def plain() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(xa), ya).backward()
            optimizer.step()

        calls = {"plain": plain, **{arm: functools.partial(attack.invert, observations[0])
                                    for arm, attack in attacks.items()}}
        seconds = time_steps(calls, repeats=3, inner=1, warmup=1, device=device)
        out: dict[str, Any] = {"restarts": config.restarts, "steps_per_call": steps,
                               "plain_step_seconds": seconds["plain"]}
        for arm in TIMED:
            per_step = seconds[arm] / steps
            out[f"{arm}_step_seconds"] = per_step
            out[f"{arm}_over_plain"] = per_step / seconds["plain"]
        out["gifd_over_pixel"] = out["gifd_step_seconds"] / out["pixel_step_seconds"]
        return out

    def note(self, config: GIFDReproConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        text = functools.partial(summary_text, aggregate)
        settings = config.settings()
        rows = [f"{setting}: " + ", ".join(
            f"{a} {text(setting, a, 'psnr', '.1f')}" for a in ARMS
            if summary_mean(aggregate, setting, a, "psnr") is not None) for setting in settings]
        batch_one = [s for s in settings if parse_setting(s)[1] == 1]
        pixel = "; ".join(
            f"{s}: GIFD {text(s, 'gifd', 'psnr', '.1f')}, pixel {text(s, 'pixel', 'psnr', '.1f')}"
            f" (gradient loss {text(s, 'pixel', 'gradient_loss', '.1e')}), pixel without TV "
            f"{text(s, 'pixel_notv', 'psnr', '.1f')} (gradient loss "
            f"{text(s, 'pixel_notv', 'gradient_loss', '.1e')})" for s in batch_one)
        stages = "; ".join(f"{s} {text(s, 'gifd', 'best_stage', '.2f')}"
                           for s in (HEADLINE, SECONDARY) if s in settings)
        parameters = sum(p.numel() for p in fl_model(0, "init", torch.device("cpu"),
                                                     config).parameters())
        clean = {state: setting_name(config.priors[0], 1, "clean", state)
                 for state in config.model_states}
        norms = "; ".join(f"{state} {text(name, 'gifd', 'gradient_norm', '.2f')}"
                          for state, name in clean.items())
        label_rates = [summary_mean(aggregate, s, a, "label_accuracy") for s in settings
                       for a in ARMS]
        worst_labels = min((r for r in label_rates if r is not None), default=math.nan)
        others = "/".join(p for p in config.priors if p != config.pixel_prior) or "–"
        verdict = claim["verdict"].replace("_", " ")
        return (
            "PSNR in dB (mean ± SE over seeds) per setting and arm: " + "; ".join(rows) + ". "
            f"Headline ({HEADLINE}, GIFD − latent-only ≥ 1 dB): {verdict}"
            + (f" ({claim['reason']})" if claim.get("reason") else "") + ". "
            "GIFD returns the stage with the lowest gradient loss (0 = latent, 2 = h₂); mean "
            f"stage: {stages}; psnr_stage0–2 in the tables give each stage's PSNR. "
            "Pixel-space inversion was expected to be competitive at batch 1 on 8×8 images "
            f"(64 unknowns against a {parameters}-entry gradient). Measured at batch 1 — "
            f"{pixel}. Without TV the pixel search can fit the gradient exactly; the official "
            "TV weight 1e-4, shared by every arm, weighs more than the gradient loss left "
            "near the optimum at this scale, so it decides where the pixel search stops. "
            f"The noise defence adds N(0, σ²) with σ = {config.noise_sigma:g} to each of the "
            f"{parameters} entries (a noise vector of norm "
            f"{config.noise_sigma * math.sqrt(parameters):.2f}), against a clean batch-1 "
            f"gradient of norm {norms} (model state: mean ± SE). What differs from the paper: "
            "an 8×8 digits DCGAN with three stages instead of StyleGAN2/BigGAN (8/13 stages), "
            f"a {parameters}-parameter sigmoid CNN instead of ResNet-18, "
            f"{3 * config.stage_steps} steps per arm ({config.stage_steps} per GIFD stage) "
            f"instead of 1000 per stage, relative l1 radii ρ = {config.radius:g} of ‖h_k‖₁ "
            "(fixed before the runs, not tuned on them) instead of absolute ones, "
            f"{config.images} private images per seed and setting, labels inferred from the "
            f"gradient (the lowest mean label_accuracy of any setting and arm: "
            f"{worst_labels:.2f}); the pixel arms' "
            f"{others} rows are copies of their {config.pixel_prior} rows (they use no prior)."
        )


REPRODUCTION = GIFDReproduction()
