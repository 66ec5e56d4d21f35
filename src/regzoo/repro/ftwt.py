"""FTWT at CPU scale: dynamic channel masks on a pretrained digits CNN (spec §5).

Data: scikit-learn's digits (8×8, pixels / 16), split by the seed into 958 training, 240
validation and 599 test images (:func:`regzoo.models.digit_cnn.digits_splits`). Model: the
cached dense CNN of the seed (``digits_cnn`` asset: conv 3×3 1→32→64→64, each with BatchNorm,
ReLU and max-pool 2, linear head; Adam, 30 epochs on the training part). Every arm fine-tunes it
for the same epochs with the paper's backbone optimiser (SGD lr 1e-2, momentum 0.9, weight decay
5e-4, ×0.1 at 40.5 / 61 / 75.5 % of training: the official 81/122/151 of 200 epochs), batch 64.

Arms (setting ``digits``):

* ``dense``: the dense CNN fine-tuned, no masks.
* ``ftwt_t<100τ>`` for each τ (``ftwt_t095`` at τ = 0.95): FTWT on the three conv blocks, decoupled
  mode, mass ground truth with the official rule (the filter crossing τ dropped), pool 1 with
  softmax, the official default predictor init (PyTorch's default, ``predictor_init="random"``; no
  all-on pre-training, per the official default recipe), predictor SGD lr 0.1 momentum 0.9, mask
  loss weight 1 for the first half of the epochs and 0 after (the predictors keep stepping on their
  momentum).
* ``static_t<100τ>``: static pruning at the FTWT arm's mean FLOPs: in each block the filters with
  the largest mean activation share â (module docstring of :mod:`regzoo.methods.ftwt`) of the
  dense CNN on the training images are kept, k_ℓ of them, then the same fine-tuning.
* ``random_t<100τ>``: k_ℓ filters per block drawn uniformly at random per input (fresh draws in
  training and at test; a CPU generator seeded by the seed), the same fine-tuning.
* ``ftwt_nosoftmax_t<100τ>``, ``static_nosoftmax_t<100τ>``, ``random_nosoftmax_t<100τ>``: the same
  three with the predictor's softmax off (the official ``--softmax 0``), for secondary claims. The
  softmax squashes a pooled 32- or 64-vector to near-uniform values; in the pilot (seeds 0–2) the
  official predictor learned input-independent masks and collapsed whole blocks at τ ≤ 0.85, while
  the predictor without it learned per-input masks.

The k_ℓ of both baselines are the FTWT arm's per-block mean kept shares on the validation images,
scaled by one factor so that their MACs come closest to the FTWT arm's mean validation MACs
(predictors included): equal mean FLOPs. The FTWT unit of (variant, τ, seed) is trained once per
run (``shared_once``); the baseline units of that variant, τ and seed read its budget.

Metrics: test (and validation) accuracy; FLOPs reduction = 1 − mean MACs / dense MACs, counted
exactly (active outputs × next layer's active inputs, predictors included) and by the official
counter; mask accuracy (share of filters whose mask equals the ground truth), kept share per
block, and the share of filters whose mask varies across the test inputs (``dynamic_filters``:
0 for input-independent masks). Derived arms (per seed, nothing trained): τ* is chosen on
*validation* by the rule
"largest validation FLOPs reduction among the τ whose validation accuracy is at most 2 points
below the dense arm's" (the τ of highest validation accuracy when none qualifies), per predictor
variant; ``ftwt_sel``, ``static_sel``, ``random_sel`` (and the ``_nosoftmax_sel`` ones) are the
arms at τ*, and ``thresholds`` holds the claims' zero slack.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.data.batches import TensorBatches
from regzoo.methods.ftwt import FTWT, filter_scores
from regzoo.models.digit_cnn import (
    DigitsSplits,
    accuracy,
    build_cnn,
    dense_accuracy,
    dense_digit_cnn,
    digits_splits,
)
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
from regzoo.train.seeding import seed_everything
from regzoo.train.timing import time_steps

SETTING = "digits"
FAMILIES = ("ftwt", "static", "random")
VARIANTS = ("softmax", "nosoftmax")
"""The predictor with its softmax (official default, the headline) and without (``--softmax 0``)."""
SUFFIX = {"softmax": "", "nosoftmax": "_nosoftmax"}
THRESHOLDS_ARM = "thresholds"
FLOPS_MARGIN = 0.35
ACCURACY_LOSS = 0.02
RANDOM_MARGIN = 0.05


def arm_name(family: str, tau: float, variant: str = "softmax") -> str:
    """``ftwt_t095`` (``static_nosoftmax_t090``): family, predictor variant, τ."""
    return f"{family}{SUFFIX[variant]}_t{round(100 * tau):03d}"


def selected_arm(family: str, variant: str = "softmax") -> str:
    """The derived arm of ``family`` at the validation-chosen τ*: ``ftwt_sel``, ..."""
    return f"{family}{SUFFIX[variant]}_sel"


def parse_arm(arm: str) -> tuple[str, str, float]:
    """``(family, variant, τ)`` of a trained arm name (inverse of :func:`arm_name`)."""
    base, _, code = arm.rpartition("_t")
    variant = "nosoftmax" if base.endswith(SUFFIX["nosoftmax"]) else "softmax"
    return base.removesuffix(SUFFIX["nosoftmax"]), variant, int(code) / 100


@dataclasses.dataclass(frozen=True)
class FTWTReproConfig(ReproConfig):
    """Settings of the FTWT reproduction; presets ``tiny``, ``quick``, ``full``."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    taus: tuple[float, ...] = (1.0, 0.95, 0.9, 0.85, 0.8)
    families: tuple[str, ...] = FAMILIES
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.405, 0.61, 0.755)
    """Step decays ×0.1 at these shares of the epochs (official 81/122/151 of 200)."""
    predictor_lr: float = 0.1
    cooldown: float = 0.5
    mode: str = "decoupled"
    predictor_init: str = "random"
    channels: tuple[int, ...] = (32, 64, 64)
    variants: tuple[str, ...] = VARIANTS
    pretrain_epochs: int = 30
    """Epochs of the dense asset (Adam lr 3e-3, batch 32)."""
    eval_every: int = 3
    """Test curves every this many epochs (and at the last)."""

    positive_fields: ClassVar[tuple[str, ...]] = (
        "epochs",
        "batch_size",
        "lr",
        "predictor_lr",
        "pretrain_epochs",
        "eval_every",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.taus or any(not 0 < t <= 1 for t in self.taus):
            raise ValueError(f"taus must be thresholds in (0, 1], got {self.taus}")
        if "softmax" not in self.variants or set(self.variants) - set(VARIANTS):
            raise ValueError(
                f"variants must include 'softmax' and name only {VARIANTS}, got {self.variants}"
            )
        unknown = set(self.families) - set(FAMILIES)
        if unknown or "ftwt" not in self.families:
            raise ValueError(
                f"families must include 'ftwt' and name only {FAMILIES}, got {self.families}"
            )

    @classmethod
    def tiny(cls) -> FTWTReproConfig:
        return cls(
            seeds=(0,), taus=(0.9,), epochs=2, pretrain_epochs=2, channels=(8, 16, 16), eval_every=1
        )

    @classmethod
    def quick(cls) -> FTWTReproConfig:
        return cls(seeds=(0,), taus=(1.0, 0.9), epochs=12)

    @classmethod
    def full(cls) -> FTWTReproConfig:
        return cls()


def _asset_config(config: FTWTReproConfig, seed: int) -> dict[str, Any]:
    return {"seed": seed, "channels": tuple(config.channels), "epochs": config.pretrain_epochs}


def _eval(
    model: nn.Module, handle: FTWT | None, x: torch.Tensor, y: torch.Tensor, official: bool = True
) -> dict[str, float]:
    """Accuracy, FLOPs reduction (exact, and official) and mask statistics on ``(x, y)``."""
    metrics = {"accuracy": accuracy(model, x, y)}
    if handle is None:
        metrics.update(flops_reduction=0.0, flops_reduction_official=0.0)
        return metrics
    with torch.no_grad():
        count = handle.macs(x)
        metrics["flops_reduction"] = count.reduction
        metrics["mean_macs"] = float(count.per_example.mean())
        if official:
            metrics["flops_reduction_official"] = handle.macs(x, counting="official").reduction
        metrics["mask_accuracy"] = handle.mask_accuracy()
        varying = [(b.last.mask != b.last.mask[:1]).any(0) for b in handle.blocks]
        metrics["dynamic_filters"] = float(torch.cat(varying).double().mean())
        for i, share in enumerate(handle.keep_fractions(), start=1):
            metrics[f"kept_block{i}"] = share
    return metrics


def _finetune(
    config: FTWTReproConfig,
    model: nn.Module,
    handle: FTWT | None,
    splits: DigitsSplits,
    seed: int,
    device: torch.device,
    train_predictors: bool,
) -> list[dict[str, float]]:
    """The shared fine-tuning loop; returns the test metrics after every epoch."""
    backbone = handle.backbone_parameters() if handle is not None else list(model.parameters())
    optimizer = torch.optim.SGD(
        backbone, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    milestones = [math.ceil(m * config.epochs) for m in config.milestones]
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    predictors = (
        handle.predictor_optimizer(lr=config.predictor_lr)
        if handle is not None and train_predictors
        else None
    )
    batches = TensorBatches(
        splits.x_train, splits.y_train, config.batch_size, seed=seed, num_replicas=1, rank=0
    )
    x_test, y_test = splits.x_test.to(device), splits.y_test.to(device)
    curve = []
    for epoch in range(config.epochs):
        batches.set_epoch(epoch)
        if handle is not None:
            handle.set_epoch(epoch, config.epochs)
        model.train()
        for x, y, _ in batches:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y)
            if predictors is not None:
                loss = loss + handle.penalty()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch}: {float(loss)}")
            optimizer.zero_grad()
            if predictors is not None:
                predictors.zero_grad()
            loss.backward()
            optimizer.step()
            if predictors is not None:
                predictors.step()
        scheduler.step()
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            last = epoch + 1 == config.epochs
            curve.append(_eval(model, handle, x_test, y_test, official=last))
    return curve


def _train_ftwt(
    config: FTWTReproConfig, tau: float, seed: int, device: torch.device, softmax: bool = True
) -> dict[str, Any]:
    """Fine-tune FTWT at τ from the dense asset; metrics, curves and the budget it set."""
    splits = digits_splits(seed)
    model = dense_digit_cnn(**_asset_config(config, seed))
    seed_everything(seed)  # the predictors' official random init, from the CPU generator
    handle = FTWT.apply(
        model,
        threshold=tau,
        mode=config.mode,
        predictor_init=config.predictor_init,
        cooldown=config.cooldown,
        softmax=softmax,
    )
    model.to(device)
    curve = _finetune(config, model, handle, splits, seed, device, train_predictors=True)
    x_val, y_val = splits.x_val.to(device), splits.y_val.to(device)
    val = _eval(model, handle, x_val, y_val)
    metrics = {
        "tau": tau,
        "test_accuracy": curve[-1]["accuracy"],
        "val_accuracy": val["accuracy"],
        "val_flops_reduction": val["flops_reduction"],
        **{k: v for k, v in curve[-1].items() if k != "accuracy"},
    }
    return {
        "metrics": metrics,
        "curves": {
            "test_accuracy": [c["accuracy"] for c in curve],
            "flops_reduction": [c["flops_reduction"] for c in curve],
        },
        "val_kept": [val[f"kept_block{i}"] for i in range(1, len(handle.blocks) + 1)],
        "val_mean_macs": val["mean_macs"],
    }


def _budget_counts(
    handle: FTWT, kept: Sequence[float], target_macs: float, x: torch.Tensor
) -> list[int]:
    """Kept filters per block, the FTWT shares scaled by one factor to match ``target_macs``."""
    widths = [b.layer.out_channels for b in handle.blocks]
    best: tuple[float, list[int]] | None = None
    for step in range(1, 401):
        scale = step / 200
        counts = [min(w, max(1, round(scale * share * w))) for w, share in zip(widths, kept)]
        handle.force_masks([_fixed_count_rule(c) for c in counts])
        gap = abs(float(handle.macs(x[:1]).per_example[0]) - target_macs)
        if best is None or gap < best[0]:
            best = (gap, counts)
    handle.force_masks([None] * len(widths))
    return best[1]


def _fixed_count_rule(count: int):
    def rule(output: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(output.shape[:2], dtype=output.dtype, device=output.device)
        mask[:, :count] = 1
        return mask

    return rule


def _static_rule(keep: torch.Tensor):
    def rule(output: torch.Tensor) -> torch.Tensor:
        return keep.to(device=output.device, dtype=output.dtype).expand(output.shape[0], -1)

    return rule


def _random_rule(count: int, generator: torch.Generator):
    def rule(output: torch.Tensor) -> torch.Tensor:
        order = torch.rand(output.shape[:2], generator=generator).argsort(1)[:, :count]
        mask = torch.zeros(output.shape[:2]).scatter(1, order, 1.0)
        return mask.to(device=output.device, dtype=output.dtype)

    return rule


@torch.no_grad()
def _mean_shares(handle: FTWT, x: torch.Tensor) -> list[torch.Tensor]:
    """Mean activation share â of each block's filters on ``x`` (masks all on)."""
    shares: list[torch.Tensor] = []
    widths = [b.layer.out_channels for b in handle.blocks]
    handle.force_masks([_fixed_count_rule(w) for w in widths])

    def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        scores = filter_scores(out)
        shares.append((scores / scores.sum(1, keepdim=True).clamp_min(1e-12)).mean(0))

    hooks = [b.register_forward_hook(record) for b in handle.blocks]
    handle.model.eval()
    handle.model(x)
    for h in hooks:
        h.remove()
    handle.force_masks([None] * len(widths))
    return shares


def _train_baseline(
    config: FTWTReproConfig,
    family: str,
    tau: float,
    seed: int,
    budget: dict[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """Static or random masks at the FTWT arm's budget, fine-tuned as FTWT is."""
    splits = digits_splits(seed)
    model = dense_digit_cnn(**_asset_config(config, seed)).to(device)
    seed_everything(seed)
    handle = FTWT.apply(model, threshold=tau, cooldown=config.cooldown)
    x_val = splits.x_val.to(device)
    counts = _budget_counts(handle, budget["val_kept"], budget["val_mean_macs"], x_val)
    if family == "static":
        shares = _mean_shares(handle, splits.x_train.to(device))
        rules = []
        for share, count in zip(shares, counts):
            keep = torch.zeros(share.shape[0])
            keep[torch.sort(share.cpu(), descending=True, stable=True).indices[:count]] = 1.0
            rules.append(_static_rule(keep))
    else:
        generator = torch.Generator().manual_seed(10_000 + seed)
        rules = [_random_rule(count, generator) for count in counts]
    handle.force_masks(rules)
    curve = _finetune(config, model, handle, splits, seed, device, train_predictors=False)
    val = _eval(model, handle, x_val, splits.y_val.to(device))
    metrics = {
        "tau": tau,
        "test_accuracy": curve[-1]["accuracy"],
        "val_accuracy": val["accuracy"],
        "val_flops_reduction": val["flops_reduction"],
        **{k: v for k, v in curve[-1].items() if k not in ("accuracy", "mask_accuracy")},
    }
    return {
        "metrics": metrics,
        "curves": {
            "test_accuracy": [c["accuracy"] for c in curve],
            "flops_reduction": [c["flops_reduction"] for c in curve],
        },
    }


def _train_dense(config: FTWTReproConfig, seed: int, device: torch.device) -> dict[str, Any]:
    splits = digits_splits(seed)
    model = dense_digit_cnn(**_asset_config(config, seed)).to(device)
    seed_everything(seed)
    curve = _finetune(config, model, None, splits, seed, device, train_predictors=False)
    val = accuracy(model, splits.x_val.to(device), splits.y_val.to(device))
    pretrained = dense_accuracy(**_asset_config(config, seed))
    return {
        "metrics": {
            "test_accuracy": curve[-1]["accuracy"],
            "val_accuracy": val,
            "flops_reduction": 0.0,
            "flops_reduction_official": 0.0,
            "val_flops_reduction": 0.0,
            "pretrained_test_accuracy": pretrained["test"],
        },
        "curves": {
            "test_accuracy": [c["accuracy"] for c in curve],
            "flops_reduction": [0.0] * len(curve),
        },
    }


def select_tau(dense_val: float, candidates: dict[float, dict[str, float]]) -> float:
    """τ* by validation: the largest val FLOPs reduction within 2 points of the dense val accuracy.

    ``candidates`` maps τ to its FTWT metrics (``val_accuracy``, ``val_flops_reduction``); when
    no τ qualifies, the τ of highest validation accuracy. Ties go to the larger τ.
    """
    feasible = {
        t: m
        for t, m in candidates.items()
        if m["val_accuracy"] >= dense_val - ACCURACY_LOSS - 1e-12
    }
    if feasible:
        return max(feasible, key=lambda t: (feasible[t]["val_flops_reduction"], t))
    return max(candidates, key=lambda t: (candidates[t]["val_accuracy"], t))


class FTWTReproduction(Reproduction):
    """FTWT over τ vs dense, static pruning and random masks at equal FLOPs on digits."""

    slug = "ftwt"
    config_type = FTWTReproConfig
    title = "Fire Together Wire Together (dynamic channel pruning with self-supervised masks)"
    plot_curves = (("test_accuracy", "test accuracy"), ("flops_reduction", "FLOPs reduction"))
    arm_labels = {
        "dense": "dense (fine-tuned)",
        **{
            selected_arm(f, v): f"{f}{' (no softmax)' if v == 'nosoftmax' else ''} at τ* (val)"
            for v in VARIANTS
            for f in FAMILIES
        },
        THRESHOLDS_ARM: "claim thresholds (slack 0)",
    }
    unit_axes = ("seeds", "taus", "families", "variants")
    table_metrics = (
        "test_accuracy",
        "flops_reduction",
        "flops_reduction_official",
        "mask_accuracy",
        "dynamic_filters",
        "val_accuracy",
        "tau",
        "headline_slack",
    )
    extra_row_label = "test accuracy vs FLOPs reduction"

    def units(self, config: FTWTReproConfig) -> list[Unit]:
        # FTWT units first: the baselines of a (variant, τ, seed) wait for its budget.
        grid = [(s, v, t) for s in config.seeds for v in config.variants for t in config.taus]
        units = [Unit(SETTING, arm_name("ftwt", t, v), s) for s, v, t in grid]
        units += [Unit(SETTING, "dense", s) for s in config.seeds]
        units += [
            Unit(SETTING, arm_name(f, t, v), s)
            for f in ("static", "random")
            if f in config.families
            for s, v, t in grid
        ]
        return units

    def curve_x(
        self, config: FTWTReproConfig, setting: str
    ) -> tuple[str, Sequence[float] | None, str]:
        epochs = [
            e
            for e in range(1, config.epochs + 1)
            if e % config.eval_every == 0 or e == config.epochs
        ]
        return "epoch", epochs, "linear"

    def run_unit(self, config: FTWTReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        device = env.device
        torch.zeros(1, device=device)  # fail early on an unavailable device
        if unit.arm == "dense":
            out = _train_dense(config, unit.seed, device)
            return UnitResult(out["metrics"], out["curves"])
        family, variant, tau = parse_arm(unit.arm)
        budget = shared_once(
            env.workdir,
            f"budget_{arm_name('ftwt', tau, variant)}_s{unit.seed}",
            lambda: _train_ftwt(config, tau, unit.seed, device, softmax=variant == "softmax"),
        )
        if family == "ftwt":
            return UnitResult(budget["metrics"], budget["curves"])
        out = _train_baseline(config, family, tau, unit.seed, budget, device)
        return UnitResult(out["metrics"], out["curves"])

    def derived_arms(
        self, config: FTWTReproConfig, records: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        by = {(r["arm"], r["seed"]): r["metrics"] for r in records if r["setting"] == SETTING}
        out = []
        for seed in config.seeds:
            dense = by.get(("dense", seed))
            if dense is None:
                continue
            for variant in config.variants:
                candidates = {
                    t: by[(arm_name("ftwt", t, variant), seed)]
                    for t in config.taus
                    if (arm_name("ftwt", t, variant), seed) in by
                }
                if not candidates:
                    continue
                tau = select_tau(dense["val_accuracy"], candidates)
                chosen = {f: by.get((arm_name(f, tau, variant), seed)) for f in FAMILIES}
                ftwt = chosen["ftwt"]
                random_acc = (chosen["random"] or {}).get("test_accuracy", math.nan)
                slack = min(
                    ftwt["flops_reduction"] - FLOPS_MARGIN,
                    ftwt["test_accuracy"] - dense["test_accuracy"] + ACCURACY_LOSS,
                    ftwt["test_accuracy"] - random_acc - RANDOM_MARGIN,
                )
                for family, metrics in chosen.items():
                    if metrics is None:
                        continue
                    extra = {"headline_slack": slack} if family == "ftwt" else {}
                    out.append(
                        {
                            "setting": SETTING,
                            "arm": selected_arm(family, variant),
                            "seed": seed,
                            "metrics": {**metrics, "tau": tau, **extra},
                            "curves": {},
                        }
                    )
            out.append(
                {
                    "setting": SETTING,
                    "arm": THRESHOLDS_ARM,
                    "seed": seed,
                    "metrics": {"headline_slack": 0.0},
                    "curves": {},
                }
            )
        return out

    def claim(self, config: FTWTReproConfig) -> Claim:
        return Claim(
            statement="Some τ gives ≥ 35 % fewer FLOPs at ≤ 2 points test-accuracy loss vs the "
            "dense CNN, where the dynamic masks beat random per-input masks at equal budget by "
            "≥ 5 points (official README: 56–78 % fewer FLOPs on CIFAR-10 at 0.1–1.0 point). "
            "The predictor is the official default (pool 1, softmax, random init). τ* is chosen "
            "per seed on "
            "validation: the largest validation FLOPs reduction among τ ∈ {1, .95, .9, .85, .8} "
            "whose validation accuracy is at most 2 points below the dense arm's (else the τ of "
            "best validation accuracy). The per-seed effect is the slack min(FLOPs reduction − "
            "0.35, acc − dense acc + 0.02, acc − random acc − 0.05) of FTWT at τ* (test split, "
            "counted FLOPs, exact counter), judged against 0: reproduced means each of the "
            "three conditions holds in the mean.",
            metric="headline_slack",
            setting=SETTING,
            method=selected_arm("ftwt"),
            baseline=THRESHOLDS_ARM,
            margin=0.0,
        )

    def secondary_claims(self, config: FTWTReproConfig) -> list[Claim]:
        claims = []
        for variant in config.variants:
            method = selected_arm("ftwt", variant)
            which = (
                ""
                if variant == "softmax"
                else "Predictor without its softmax (official --softmax 0), same τ* rule: "
            )
            if variant == "nosoftmax":
                claims.append(
                    Claim(
                        statement=which + "the headline's three conditions (slack ≥ 0).",
                        metric="headline_slack",
                        setting=SETTING,
                        method=method,
                        baseline=THRESHOLDS_ARM,
                        margin=0.0,
                    )
                )
            claims += [
                Claim(
                    statement=which + "FTWT at τ* cuts the counted FLOPs (exact counter, "
                    "predictors included) by at least 35 % vs dense.",
                    metric="flops_reduction",
                    setting=SETTING,
                    method=method,
                    baseline="dense",
                    margin=FLOPS_MARGIN,
                ),
                Claim(
                    statement=which + "FTWT at τ* loses at most 2 points of test accuracy vs "
                    "the dense CNN fine-tuned equally long (effect = acc − dense acc ≥ −0.02).",
                    metric="test_accuracy",
                    setting=SETTING,
                    method=method,
                    baseline="dense",
                    margin=-ACCURACY_LOSS,
                ),
            ]
            if "random" in config.families:
                claims.append(
                    Claim(
                        statement=which + "FTWT at τ* beats random per-input masks at equal mean "
                        "FLOPs and equal fine-tuning by at least 5 points of test accuracy.",
                        metric="test_accuracy",
                        setting=SETTING,
                        method=method,
                        baseline=selected_arm("random", variant),
                        margin=RANDOM_MARGIN,
                    )
                )
            if "static" in config.families:
                claims.append(
                    Claim(
                        statement=which + "FTWT at τ* reaches at least the test accuracy of "
                        "static pruning (filters of largest mean activation share) at equal mean "
                        "FLOPs and equal fine-tuning (recorded: the spec expects this to be open "
                        "on digits).",
                        metric="test_accuracy",
                        setting=SETTING,
                        method=method,
                        baseline=selected_arm("static", variant),
                        margin=0.0,
                    )
                )
        return claims

    def draw_extra_row(self, ax: Any, setting: str, result: dict[str, Any]) -> bool:
        """Mean test accuracy against mean FLOPs reduction: one line per arm family over τ."""
        arms = result["metrics"]["aggregate"].get(setting, {})
        config = self.config_type.from_dict(result["run"]["config"])
        drawn = False
        for variant in config.variants:
            for family in config.families:
                points = [
                    (arms[a]["flops_reduction"]["mean"], arms[a]["test_accuracy"]["mean"])
                    for a in (arm_name(family, t, variant) for t in config.taus)
                    if a in arms
                ]
                if points:
                    label = family + ("" if variant == "softmax" else ", no softmax")
                    ax.plot(
                        *zip(*sorted(points)),
                        marker="o",
                        label=label,
                        linestyle="-" if variant == "softmax" else "--",
                    )
                    drawn = True
        if "dense" in arms:
            ax.scatter(
                [0.0],
                [arms["dense"]["test_accuracy"]["mean"]],
                marker="*",
                s=60,
                color="black",
                label="dense",
            )
        if drawn:
            ax.set_xlabel("FLOPs reduction (counted)")
            ax.legend(fontsize=6)
        return drawn

    def timing(self, config: FTWTReproConfig, device: torch.device) -> dict[str, Any]:
        """A training step with predictors and mask loss vs the plain step, same batch."""
        splits = digits_splits(0)
        x = splits.x_train[: config.batch_size].to(device)
        y = splits.y_train[: config.batch_size].to(device)
        torch.manual_seed(0)
        plain = build_cnn(tuple(config.channels)).to(device)
        masked = build_cnn(tuple(config.channels))
        handle = FTWT.apply(masked, threshold=0.9, predictor_init="random")
        masked.to(device)
        opt_plain = torch.optim.SGD(plain.parameters(), lr=1e-3, momentum=0.9)
        opt_backbone = torch.optim.SGD(handle.backbone_parameters(), lr=1e-3, momentum=0.9)
        opt_predictors = handle.predictor_optimizer(lr=1e-3)

        def plain_step() -> None:
            opt_plain.zero_grad()
            F.cross_entropy(plain(x), y).backward()
            opt_plain.step()

        def ftwt_step() -> None:
            opt_backbone.zero_grad()
            opt_predictors.zero_grad()
            (F.cross_entropy(masked(x), y) + handle.penalty()).backward()
            opt_backbone.step()
            opt_predictors.step()

        seconds = time_steps(
            {"plain": plain_step, "ftwt": ftwt_step}, repeats=10, inner=3, device=device
        )
        return {
            "plain_step_seconds": seconds["plain"],
            "ftwt_over_plain": seconds["ftwt"] / seconds["plain"],
        }

    def note(
        self, config: FTWTReproConfig, claim: dict[str, Any], aggregate: dict[str, Any]
    ) -> str:
        def cell(arm: str, metric: str, fmt: str = ".3f") -> str:
            return summary_text(aggregate, SETTING, arm, metric, fmt)

        def measured(arm: str) -> bool:
            return summary_mean(aggregate, SETTING, arm, "test_accuracy") is not None

        rows = [
            f"dense {cell('dense', 'test_accuracy')} (pretrained "
            f"{cell('dense', 'pretrained_test_accuracy')})"
        ]
        for variant in config.variants:
            for tau in config.taus:
                parts = []
                for family in config.families:
                    arm = arm_name(family, tau, variant)
                    if not measured(arm):
                        continue
                    text = (
                        f"{family} {cell(arm, 'test_accuracy')} at "
                        f"{cell(arm, 'flops_reduction', '.2f')} fewer FLOPs"
                    )
                    if family == "ftwt":
                        text += (
                            f" (mask accuracy {cell(arm, 'mask_accuracy')}, varying "
                            f"filters {cell(arm, 'dynamic_filters', '.2f')})"
                        )
                    parts.append(text)
                if parts:
                    rows.append(f"{variant} τ = {tau:g}: " + "; ".join(parts))
        selected = []
        for variant in config.variants:
            arm = selected_arm("ftwt", variant)
            if not measured(arm):
                continue
            selected.append(
                f"{'with' if variant == 'softmax' else 'without'} the predictor's softmax, "
                f"FTWT at τ* (mean "
                f"{cell(arm, 'tau', '.3f')}) reaches {cell(arm, 'test_accuracy')} at "
                f"{cell(arm, 'flops_reduction')} fewer FLOPs (official counter "
                f"{cell(arm, 'flops_reduction_official')}), static pruning "
                f"{cell(selected_arm('static', variant), 'test_accuracy')} and random masks "
                f"{cell(selected_arm('random', variant), 'test_accuracy')} at equal mean FLOPs; "
                f"slack {cell(arm, 'headline_slack')}"
            )
        verdict = claim["verdict"].replace("_", " ")
        return (
            "Test accuracy (mean ± SE over seeds) and counted FLOPs reduction per arm: "
            + " · ".join(rows)
            + ". At the validation-chosen τ*: "
            + "; ".join(selected)
            + f". Headline (official softmax predictor): {verdict}. The softmax squashes a pooled "
            "32- or 64-vector to near-uniform values, so at this scale the official predictor "
            "learns almost input-independent masks (see varying filters) and, at small τ, can "
            "switch off nearly every filter of a block whose filters each fire on fewer than "
            "half the inputs; the no-softmax arms (an official option) are run at every τ with "
            "their own static and random baselines, as secondary claims, because the pilot "
            "(seeds 0–2) showed this. FLOPs are counted, not realised: masked filters are still "
            "computed (dense conv × mask), so no wall-clock speed-up is claimed or measured; the "
            "exact counter multiplies each layer's active outputs by the previous masked "
            "block's active inputs and adds the predictors' MACs, the official counter leaves "
            "the head and predictors out of the numerator. Setting vs paper: 8×8 digits and a "
            "3-block CNN instead of CIFAR-10/ImageNet and VGG/ResNet; "
            f"{config.epochs} fine-tuning epochs from a {config.pretrain_epochs}-epoch Adam "
            "dense model instead of 200; the first block's predictor sees one input channel, so "
            "with the softmax its mask is the same for every input. τ* is chosen per seed on "
            "the 240 validation images, never on test; no other hyperparameter was tuned."
        )


REPRODUCTION = FTWTReproduction()
