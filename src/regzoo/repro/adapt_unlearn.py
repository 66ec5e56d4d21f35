"""Adapt-then-Unlearn at CPU scale: remove the digit 8 from a pretrained digits DCGAN.

Setting ``digits_unlearn_8``. The pretrained GAN is the cached ``digit_dcgan`` asset (all ten
digits, :mod:`regzoo.generative`); the oracle is the cached ``digit_oracle`` (test accuracy
0.995), used only to label and to measure. Per seed s, as the official MNIST scripts do: the
user's feedback is the oracle's split of ``negative_draws`` = 200 EMA-generator samples (the
≈ 20 labelled 8 are the negatives) and of ``positive_draws`` = 5000 more (the ≈ 4500 others are
the positives). Stage 1 adapts M copies to the negatives (seeds s…s+M−1; EWC strength κ = 0.01,
i.e. λ = κ / mean Fisher; 300 steps) and is cached as an asset per seed, shared by the arms.

Arms (every stage-2 arm: 500 generator steps, batch 16, Adam 2e-4, β = (0.5, 0.999), R1 1,
EMA 0.99, from the raw pretrained generator):

* ``pretrained``: the EMA generator as it is;
* ``finetune``: stage 2 on the positives without repulsion, its learning rate chosen on the
  validation seed among ``finetune_lrs`` (the same tuning budget as each repulsion's γ);
* ``extrapolate_<α>``: θ_G − α(θ̄_N − θ_G), α ∈ {0.5, 1, 2} (the paper's parameter-space
  baseline);
* ``nl2``, ``el2``, ``il2``: stage 2 with that repulsion, γ in units of d(θ_G)
  (``gamma_unit="initial"``) chosen on the validation seed among the kind's grid;
* derived ``best_variant``: the repulsion kind chosen on the validation seed; derived
  ``paper_goal``: the constants of the paper's claim (2 % eights, FD ratio 1.2).

Choice on the validation seed (``validation_seed``, never a reported seed): among the
candidates whose FD ratio is at most ``fd_budget`` = 1.2, the lowest share of 8; when none is
within the budget, the lowest FD ratio. Metrics of the EMA generator on ``samples`` = 2000
draws: ``share_unwanted`` (oracle-labelled 8), the share of every class, ``fd`` (Fréchet
distance in the oracle's features between the draws not labelled 8 and every real digit that is
not an 8) and ``fd_ratio`` (fd over the pretrained generator's on the same latents). Curve: the
share of 8 on 500 draws after every 50 stage-2 steps.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from regzoo import assets
from regzoo.data.classification import load_digits
from regzoo.generative.assets import DCGAN_DEFAULTS, DigitGAN, digit_dcgan, digit_oracle
from regzoo.methods.adapt_unlearn import (
    KINDS,
    AdaptUnlearnConfig,
    GANStage,
    ParameterRepulsion,
    adapt_negatives,
    extrapolate,
    split_by_oracle,
    train_gan_stage,
)
from regzoo.metrics import class_histogram, frechet_distance
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import (
    Claim,
    Reproduction,
    Unit,
    UnitEnv,
    UnitResult,
    shared_once,
    summary_mean,
    summary_text,
)
from regzoo.train import time_steps

SETTING = "digits_unlearn_8"
ALPHAS = (0.5, 1.0, 2.0)
ARMS = ("pretrained", "finetune", *(f"extrapolate_{a:g}" for a in ALPHAS), *KINDS)
LATENT_DIM = DCGAN_DEFAULTS["latent_dim"]
CURVE_SAMPLES = 500


@dataclasses.dataclass(frozen=True)
class AdaptUnlearnReproConfig(ReproConfig):
    """Settings of the Adapt-then-Unlearn reproduction; presets ``tiny``, ``quick``, ``full``."""

    positive_fields = ("num_adapted", "adapt_steps", "unlearn_steps", "steps_per_epoch",
                       "negative_draws", "positive_draws", "samples", "lr")

    arms: tuple[str, ...] = ARMS
    unwanted: int = 8
    num_adapted: int = 5
    adapt_steps: int = 300
    unlearn_steps: int = 500
    steps_per_epoch: int = 50
    lr: float = 2e-4
    ewc_strength: float = 0.01
    negative_draws: int = 200
    positive_draws: int = 5000
    samples: int = 2000
    validation_seed: int = 100
    fd_budget: float = 1.2
    finetune_lrs: tuple[float, ...] = (1e-4, 2e-4, 5e-4, 1e-3)
    nl2_gammas: tuple[float, ...] = (0.001, 0.003, 0.01, 0.03)
    el2_gammas: tuple[float, ...] = (0.3, 1.0, 2.0, 3.0)
    il2_gammas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or "finetune" not in self.arms or not set(KINDS) & set(self.arms):
            raise ValueError(f"arms must be a subset of {ARMS} with 'finetune' and at least one "
                             f"repulsion kind, got {self.arms}")
        if not 0 <= self.unwanted <= 9:
            raise ValueError(f"unwanted must be a digit 0–9, got {self.unwanted}")
        if self.validation_seed in self.seeds:
            raise ValueError(f"validation_seed {self.validation_seed} is also a reported seed; "
                             "choose γ on a seed that is not reported")
        for name in ("finetune_lrs", "nl2_gammas", "el2_gammas", "il2_gammas"):
            values = getattr(self, name)
            if not values or any(not v > 0 for v in values):
                raise ValueError(f"{name} must list positive values, got {values}")
        for name in ("adapt_steps", "unlearn_steps"):
            if getattr(self, name) % self.steps_per_epoch:
                raise ValueError(f"{name} must be a multiple of steps_per_epoch "
                                 f"({self.steps_per_epoch})")

    @classmethod
    def tiny(cls) -> AdaptUnlearnReproConfig:
        return cls(seeds=(0,), num_adapted=1, adapt_steps=20, unlearn_steps=20,
                   steps_per_epoch=10, negative_draws=200, positive_draws=300, samples=300,
                   finetune_lrs=(2e-4,), nl2_gammas=(0.01,), el2_gammas=(1.0,),
                   il2_gammas=(1.0,))

    @classmethod
    def quick(cls) -> AdaptUnlearnReproConfig:
        return cls(seeds=(0, 1, 2), num_adapted=3)

    @classmethod
    def full(cls) -> AdaptUnlearnReproConfig:
        return cls(seeds=(0, 1, 2, 3, 4), num_adapted=5)

    def gammas(self, kind: str) -> tuple[float, ...]:
        """The γ grid of repulsion ``kind`` (in units of d(θ_G))."""
        return getattr(self, f"{kind}_gammas")

    def stage(self, steps: int, lr: float | None = None) -> GANStage:
        """A GAN stage of ``steps`` with this config's recipe."""
        return GANStage(steps=steps, lr=self.lr if lr is None else lr,
                        steps_per_epoch=self.steps_per_epoch)


def _feedback(gan: DigitGAN, oracle: nn.Module, config: AdaptUnlearnReproConfig,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The oracle's split of the seed's generated feedback: (negatives, positives)."""
    rng = torch.Generator().manual_seed(seed)
    pool_negative = gan.generator_ema.sample(config.negative_draws, generator=rng)
    pool_positive = gan.generator_ema.sample(config.positive_draws, generator=rng)
    negatives, _ = split_by_oracle(pool_negative, oracle, config.unwanted)
    _, positives = split_by_oracle(pool_positive, oracle, config.unwanted)
    if negatives.shape[0] == 0:
        raise ValueError(f"seed {seed}: none of the {config.negative_draws} negative_draws was "
                         f"labelled {config.unwanted}; raise negative_draws")
    return negatives, positives


def _anchors(gan: DigitGAN, oracle: nn.Module, config: AdaptUnlearnReproConfig,
             seed: int) -> dict[str, Any]:
    """Stage 1 of ``seed`` (the M adapted EMA generators), cached as an asset on the CPU."""
    settings = {"seed": seed, "unwanted": config.unwanted, "num_adapted": config.num_adapted,
                "adapt_steps": config.adapt_steps, "steps_per_epoch": config.steps_per_epoch,
                "lr": config.lr, "ewc_strength": config.ewc_strength,
                "negative_draws": config.negative_draws, "dcgan": DCGAN_DEFAULTS}

    def build() -> dict[str, Any]:
        negatives, _ = _feedback(gan, oracle, config, seed)
        method = AdaptUnlearnConfig(num_adapted=config.num_adapted,
                                    adapt=config.stage(config.adapt_steps),
                                    ewc_strength=config.ewc_strength)
        adapted, strength, _ = adapt_negatives(gan.generator_ema, gan.discriminator, negatives,
                                               method, latent_dim=LATENT_DIM, seed=seed,
                                               progress=False)
        return {"adapted": adapted, "lambda_ewc": strength, "negatives": negatives.shape[0]}

    return assets.cached("adapt_unlearn_anchors", settings, build,
                         code=("regzoo.repro.adapt_unlearn",))


@torch.no_grad()
def _measure(generator: nn.Module, oracle: nn.Module, reference: torch.Tensor,
             config: AdaptUnlearnReproConfig, seed: int) -> dict[str, float]:
    """Share of the unwanted class, class shares and FD of ``samples`` draws (fixed latents)."""
    generator = generator.to("cpu").eval()
    images = generator.sample(config.samples,
                              generator=torch.Generator().manual_seed(10_007 * seed + 1))
    labels = oracle(images).argmax(1)
    kept = images[labels != config.unwanted]
    shares = class_histogram(labels, 10).tolist()
    fd = (frechet_distance(oracle.features(kept), reference) if kept.shape[0] > 1
          else math.nan)
    return {"share_unwanted": shares[config.unwanted], "fd": fd,
            **{f"share_{c}": s for c, s in enumerate(shares)}}


def _reference_features(oracle: nn.Module, unwanted: int) -> torch.Tensor:
    """The oracle's features of every real digit that is not ``unwanted`` (train and test)."""
    data = load_digits(0)
    x = torch.cat([data.x_train, data.x_test])
    y = torch.cat([data.y_train, data.y_test])
    with torch.no_grad():
        return oracle.features(x[y != unwanted])


def _choose(candidates: dict[str, dict[str, float]], budget: float) -> str:
    """Lowest share of the class among FD ratios within ``budget``; else the lowest FD ratio."""
    feasible = {k: v for k, v in candidates.items() if v["fd_ratio"] <= budget}
    if feasible:
        return min(feasible, key=lambda k: (feasible[k]["share_unwanted"], k))
    return min(candidates, key=lambda k: (candidates[k]["fd_ratio"], k))


class AdaptUnlearnReproduction(Reproduction):
    """Adapt-then-Unlearn vs fine-tuning on positives and parameter extrapolation (digit 8)."""

    slug = "adapt_unlearn"
    config_type = AdaptUnlearnReproConfig
    title = "Adapt then Unlearn: unlearning a digit from a pretrained GAN"
    plot_curves = (("share_unwanted", "share labelled 8 (500 draws)"),)
    arm_labels = {"pretrained": "pretrained G", "finetune": "fine-tune on positives",
                  **{f"extrapolate_{a:g}": f"extrapolation α = {a:g}" for a in ALPHAS},
                  "nl2": "NL2 repulsion", "el2": "EL2 repulsion", "il2": "IL2 repulsion",
                  "best_variant": "best repulsion (validation)",
                  "paper_goal": "paper's goal (2 %, FD × 1.2)"}
    table_metrics = ("share_unwanted", "fd", "fd_ratio", "gamma", "negatives")
    extra_row_label = "share of 8 vs FD ratio"
    unit_axes = ("seeds", "arms")

    def units(self, config: AdaptUnlearnReproConfig) -> list[Unit]:
        return [Unit(SETTING, arm, seed) for arm in config.arms for seed in config.seeds]

    def claim(self, config: AdaptUnlearnReproConfig) -> Claim:
        return Claim(
            statement=f"The best repulsion (chosen on a validation seed) leaves at least 2 "
            f"points fewer generated {config.unwanted}s than fine-tuning on the positives alone "
            "with the same steps and tuning budget (paper Table 1: MNIST class unlearning, "
            "repulsion vs fine-tuning without it).",
            metric="share_unwanted", setting=SETTING, method="best_variant",
            baseline="finetune", margin=0.02, higher_is_better=False)

    def secondary_claims(self, config: AdaptUnlearnReproConfig) -> list[Claim]:
        claims = [
            Claim(statement=f"The best repulsion generates at most 2 % {config.unwanted}s "
                  "(paper: near 0–1 % from ≈ 10 %).", metric="share_unwanted", setting=SETTING,
                  method="best_variant", baseline="paper_goal", margin=0.0,
                  higher_is_better=False),
            Claim(statement="The best repulsion keeps the Fréchet distance within 1.2× the "
                  "pretrained generator's (paper: small FID change).", metric="fd_ratio",
                  setting=SETTING, method="best_variant", baseline="paper_goal", margin=0.0,
                  higher_is_better=False),
        ]
        if "extrapolate_1" in config.arms:
            claims.append(Claim(
                statement="The best repulsion keeps a lower FD ratio than the extrapolation "
                "θ_G − (θ_N − θ_G) (paper: extrapolation unlearns but degrades quality).",
                metric="fd_ratio", setting=SETTING, method="best_variant",
                baseline="extrapolate_1", margin=0.0, higher_is_better=False))
        return claims

    def _validation(self, config: AdaptUnlearnReproConfig, gan: DigitGAN, oracle: nn.Module,
                    reference: torch.Tensor, device: torch.device) -> dict[str, Any]:
        """The choice of fine-tuning lr, each kind's γ and the best kind, on the validation seed."""
        seed = config.validation_seed
        _, positives = _feedback(gan, oracle, config, seed)
        adapted = _anchors(gan, oracle, config, seed)["adapted"]
        base_fd = _measure(gan.generator_ema, oracle, reference, config, seed)["fd"]

        def score(penalty: nn.Module | None, lr: float) -> dict[str, float]:
            result = train_gan_stage(gan.generator, gan.discriminator, positives.to(device),
                                     config.stage(config.unlearn_steps, lr),
                                     latent_dim=LATENT_DIM, penalty=penalty, seed=seed + 10_000,
                                     progress=False)
            measured = _measure(result.generator_ema, oracle, reference, config, seed)
            return {"share_unwanted": measured["share_unwanted"],
                    "fd_ratio": measured["fd"] / base_fd}

        sweep: dict[str, dict[str, dict[str, float]]] = {
            "finetune": {f"{lr:g}": score(None, lr) for lr in config.finetune_lrs}}
        for kind in (k for k in KINDS if k in config.arms):
            sweep[kind] = {f"{g:g}": score(ParameterRepulsion(
                adapted, kind=kind, gamma=g, gamma_unit="initial",
                reference=gan.generator).to(device), config.lr) for g in config.gammas(kind)}
        chosen = {arm: _choose(candidates, config.fd_budget) for arm, candidates in sweep.items()}
        best_kind = _choose({kind: sweep[kind][chosen[kind]] for kind in KINDS if kind in sweep},
                            config.fd_budget)
        return {"sweep": sweep, "chosen": chosen, "best_kind": best_kind}

    def run_unit(self, config: AdaptUnlearnReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        device = env.device
        gan, oracle = digit_dcgan(), digit_oracle()
        reference = _reference_features(oracle, config.unwanted)
        validation = shared_once(env.workdir, "validation_choice", lambda: self._validation(
            config, gan, oracle, reference, device))
        base = _measure(gan.generator_ema, oracle, reference, config, unit.seed)
        metrics: dict[str, float] = {"best_kind_index": float(KINDS.index(
            validation["best_kind"]))}
        curves: dict[str, list[float]] = {}
        if unit.arm == "pretrained":
            generator = gan.generator_ema
        elif unit.arm.startswith("extrapolate_"):
            anchors = _anchors(gan, oracle, config, unit.seed)
            generator = extrapolate(gan.generator, anchors["adapted"],
                                    float(unit.arm.split("_")[1]))
            metrics["negatives"] = float(anchors["negatives"])
        else:
            _, positives = _feedback(gan, oracle, config, unit.seed)
            penalty, lr = None, float(validation["chosen"]["finetune"])
            if unit.arm in KINDS:
                anchors = _anchors(gan, oracle, config, unit.seed)
                gamma = float(validation["chosen"][unit.arm])
                penalty = ParameterRepulsion(anchors["adapted"], kind=unit.arm, gamma=gamma,
                                             gamma_unit="initial", reference=gan.generator)
                penalty, lr = penalty.to(device), config.lr
                metrics.update(gamma=gamma, negatives=float(anchors["negatives"]))
            else:
                metrics["lr"] = lr

            def evaluate(model: nn.Module, epoch: int) -> dict[str, float]:
                draws = model.sample(CURVE_SAMPLES,
                                     generator=torch.Generator().manual_seed(unit.seed))
                with torch.no_grad():
                    labels = oracle(draws.cpu()).argmax(1)
                return {"share_unwanted": float((labels == config.unwanted).float().mean())}

            result = train_gan_stage(gan.generator, gan.discriminator, positives.to(device),
                                     config.stage(config.unlearn_steps, lr),
                                     latent_dim=LATENT_DIM, penalty=penalty, evaluate=evaluate,
                                     seed=unit.seed + 10_000,
                                     checkpoint_path=env.checkpoint_path, resume=env.resume,
                                     progress=env.progress, desc=unit.id)
            generator = result.generator_ema
            curves["share_unwanted"] = result.history.curve("share_unwanted")
            metrics["positives"] = float(positives.shape[0])
        measured = _measure(copy.deepcopy(generator), oracle, reference, config, unit.seed)
        metrics.update(measured, fd_ratio=measured["fd"] / base["fd"])
        for arm, candidates in validation["sweep"].items():
            for value, scores in candidates.items():
                for name, number in scores.items():
                    metrics[f"val_{arm}_{value}_{name}"] = number
        return UnitResult(metrics=metrics, curves=curves)

    def derived_arms(self, config: AdaptUnlearnReproConfig,
                     records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """``best_variant`` (the validation seed's best kind) and ``paper_goal`` (constants)."""
        derived = []
        for record in records:
            best = KINDS[int(record["metrics"]["best_kind_index"])]
            if record["arm"] == best:
                derived.append({**record, "arm": "best_variant"})
        for seed in sorted({r["seed"] for r in records}):
            derived.append({"setting": SETTING, "arm": "paper_goal", "seed": seed,
                            "metrics": {"share_unwanted": 0.02, "fd_ratio": config.fd_budget},
                            "curves": {}})
        return derived

    def curve_x(self, config: AdaptUnlearnReproConfig, setting: str
                ) -> tuple[str, Sequence[float] | None, str]:
        steps = [config.steps_per_epoch * (e + 1)
                 for e in range(config.unlearn_steps // config.steps_per_epoch)]
        return "stage-2 generator step", steps, "linear"

    def draw_extra_row(self, ax: Any, setting: str, result: dict[str, Any]) -> bool:
        """Each arm's mean share of 8 against its mean FD ratio: the unlearning trade-off."""
        arms = result["metrics"]["aggregate"].get(setting, {})
        drawn = False
        for arm, label in self.arm_labels.items():
            summary = arms.get(arm, {})
            if "share_unwanted" in summary and "fd_ratio" in summary:
                ax.scatter(summary["fd_ratio"]["mean"], summary["share_unwanted"]["mean"],
                           label=label, s=18)
                drawn = True
        if drawn:
            ax.set_xlabel("FD ratio to the pretrained G")
            ax.set_xscale("log")
        return drawn

    def timing(self, config: AdaptUnlearnReproConfig, device: torch.device) -> dict[str, Any]:
        """A stage-2 generator step with EL2 repulsion (M anchors) vs without, side by side."""
        torch.manual_seed(0)
        from regzoo.generative.dcgan import DigitDiscriminator, DigitGenerator

        generator, discriminator = DigitGenerator().to(device), DigitDiscriminator().to(device)
        anchors = [{k: v + 0.01 * torch.randn_like(v) for k, v in generator.named_parameters()}
                   for _ in range(config.num_adapted)]
        repulsion = ParameterRepulsion(anchors, kind="el2", gamma=1.0).to(device)
        optimizer = torch.optim.Adam(generator.parameters(), lr=1e-4)
        z = torch.randn(16, LATENT_DIM, device=device)

        def step(with_repulsion: bool) -> None:
            loss = torch.nn.functional.softplus(-discriminator(generator(z))).mean()
            if with_repulsion:
                loss = loss + repulsion(generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        seconds = time_steps({"plain": functools.partial(step, False),
                              "repulsion": functools.partial(step, True)}, device=device)
        return {"batch_size": 16, "anchors": config.num_adapted,
                "plain_step_seconds": seconds["plain"],
                "repulsion_step_seconds": seconds["repulsion"],
                "repulsion_over_plain": seconds["repulsion"] / seconds["plain"]}

    def note(self, config: AdaptUnlearnReproConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        mean = functools.partial(summary_mean, aggregate, SETTING)
        text = functools.partial(summary_text, aggregate, SETTING)
        rows = [f"{self.arm_labels[arm]} {text(arm, 'share_unwanted')} eights at FD ratio "
                f"{text(arm, 'fd_ratio')}" for arm in (*config.arms, "best_variant")
                if mean(arm, "share_unwanted") is not None]
        best_index = mean("best_variant", "best_kind_index")
        best = KINDS[int(best_index)] if best_index is not None else "?"
        sweep = []
        for arm in ("finetune", *KINDS):
            values = (config.finetune_lrs if arm == "finetune" else config.gammas(arm))
            cells = []
            for value in values:
                share = mean(arm, f"val_{arm}_{value:g}_share_unwanted")
                ratio = mean(arm, f"val_{arm}_{value:g}_fd_ratio")
                if share is not None and ratio is not None:
                    cells.append(f"{value:g}: {share:.3f} at {ratio:.2f}")
            if cells:
                name = "lr" if arm == "finetune" else "γ·d(θ_G)⁻¹"
                sweep.append(f"{arm} ({name}) " + ", ".join(cells))
        return (
            "Mean ± SE over the reported seeds (share of generated 8s; FD ratio to the "
            "pretrained generator on the same latents): " + "; ".join(rows) + ". "
            f"Validation seed {config.validation_seed} (share of 8 at FD ratio): "
            + "; ".join(sweep) + f"; best kind: {best}. "
            "Scale: an 8×8 digits DCGAN (50k parameters) instead of StyleGAN2 on MNIST; M = "
            f"{config.num_adapted} adapted copies of {config.adapt_steps} steps with EWC "
            f"strength κ = {config.ewc_strength} (λ = κ / mean Fisher), stage 2 of "
            f"{config.unlearn_steps} steps. A 1-seed pilot before this code found the repulsion "
            "trading sample quality for unlearning much like the extrapolation does, and EL2/IL2 "
            "acting like plain fine-tuning at large γ (their gradients vanish a few d(θ_G) away "
            "from the anchors)."
        )


REPRODUCTION = AdaptUnlearnReproduction()
