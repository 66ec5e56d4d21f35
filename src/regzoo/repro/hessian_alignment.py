"""Hessian alignment at CPU scale: Colored MNIST built from scikit-learn's digits (spec §5).

Data (:func:`regzoo.data.domains.digits_cmnist`): 500 digits held out for the test environment,
the other 1297 plus one shifted, noisy copy each split into two training environments; binary
label ``1[digit < 5]`` flipped w.p. 0.25, colour = label flipped w.p. 0.2 / 0.1 (training) and
0.9 (test), 2×8×8 images flattened to 128 features. A model that uses the shape only gets ≈ 0.75
everywhere; one that follows the colour gets ≈ 0.1 at test.

Protocol (official ``cmnist/cmnist_HGP.py``, itself the IRM/Fishr Colored-MNIST script):
MLP 128 → h → h → 1 with h = 64 (official 390 on 25k images per environment; 64 is the spec's
advice for 1.3k images, to limit memorising the label noise), ReLU, Xavier-uniform weights, zero
biases, binary logistic loss, full batch, 501 Adam steps (lr 4.8985e-4), ``0.00110794568 Σ‖θ‖²``
added to the loss, penalty weight 1 for 190 steps then 91257.19 with the loss divided by it; the
test accuracy after the last step is the metric (no model selection, as in the official script).
Every penalty arm uses this schedule, as the Fishr and HGP scripts do (hyper-parameters tuned for
IRM, shared by all methods).

Arms: ``erm`` (no penalty); ``irm`` (IRMv1, mean over domains); ``vrex`` (V-REx, the script's
``(ℓ_1 − ℓ_2)²`` = 4 Var); ``coral`` (DomainBed CORAL on the features); ``fishr`` (closed-form
per-example head gradients, sum over domains); ``hgp`` and ``hutchinson`` (the CMNIST recipe:
α = β = 1, sum over domains, averages not detached; Hutchinson with ``probes`` = 10 Rademacher
probes shared by the domains, instead of the CMNIST script's 150 fresh probes per domain and
DomainBed's 300). The derived arm ``best_baseline`` is, per seed, the baseline
(IRM, V-REx, CORAL, Fishr) with the highest mean test accuracy over seeds.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from regzoo.data.domains import DomainSuite, digits_cmnist
from regzoo.methods.hessian_alignment import (
    CMNIST_RECIPE,
    CORAL,
    Fishr,
    HessianAlignment,
    IRMv1,
    PenaltySchedule,
    VREx,
    domain_loss,
)
from regzoo.models import MLP
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import Claim, Reproduction, Unit, UnitEnv, UnitResult
from regzoo.train import seed_everything, time_steps

ARMS = ("erm", "irm", "vrex", "coral", "fishr", "hgp", "hutchinson")
BASELINES = ("irm", "vrex", "coral", "fishr")
SETTING = "digits_cmnist"


@dataclasses.dataclass(frozen=True)
class HAReproConfig(ReproConfig):
    """Settings of the Hessian-alignment reproduction; presets ``tiny``, ``quick``, ``full``."""

    arms: tuple[str, ...] = ARMS
    hidden: int = 64
    steps: int = 501
    lr: float = 0.0004898536566546834
    l2: float = 0.00110794568
    anneal_steps: int = 190
    penalty_weight: float = 91257.18613115903
    probes: int = 10
    n_aug: int = 1
    label_noise: float = 0.25
    eval_every: int = 25
    timing_repeats: int = 15
    positive_fields = ("steps", "lr", "hidden", "probes", "eval_every", "timing_repeats")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.arms or any(a not in ARMS for a in self.arms) or "erm" not in self.arms:
            raise ValueError(f"arms must be a subset of {ARMS} that includes 'erm', got "
                             f"{self.arms}")

    @classmethod
    def tiny(cls) -> HAReproConfig:
        return cls(seeds=(0, 1), steps=12, anneal_steps=6, hidden=16, probes=2, eval_every=4,
                   timing_repeats=2)

    @classmethod
    def quick(cls) -> HAReproConfig:
        return cls(seeds=(0, 1), arms=("erm", "hgp"))

    @classmethod
    def full(cls) -> HAReproConfig:
        return cls(seeds=(0, 1, 2, 3, 4))


def build_model(in_features: int, hidden: int) -> MLP:
    """The script's MLP: two ReLU layers, one logit, Xavier-uniform weights, zero biases."""
    model = MLP(in_features, 1, hidden=(hidden, hidden))
    for layer in model.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    return model


def build_penalty(arm: str, head: nn.Module, probes: int) -> nn.Module | None:
    """The arm's penalty module with the CMNIST scripts' reductions (``None`` for ERM)."""
    if arm == "erm":
        return None
    if arm in ("hgp", "hutchinson"):
        return HessianAlignment(head, arm, probes=probes, loss="binary", **CMNIST_RECIPE)
    if arm == "irm":
        return IRMv1(head, loss="binary", reduction="mean")
    if arm == "vrex":
        return VREx(head, loss="binary", scale=4.0)
    if arm == "fishr":
        return Fishr(head, loss="binary", reduction="sum")
    return CORAL()


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x).reshape(-1) > 0).float() == y).float().mean())


def train_cmnist(config: HAReproConfig, arm: str, suite: DomainSuite, seed: int,
                 evaluate: bool = True) -> tuple[nn.Module, dict[str, list[float]]]:
    """Train one arm with the official Colored-MNIST recipe; return the model and curves."""
    seed_everything(seed)
    model = build_model(suite.num_features, config.hidden)
    penalty = build_penalty(arm, model.head, config.probes)
    if isinstance(penalty, HessianAlignment):
        penalty.generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = PenaltySchedule(config.anneal_steps, config.penalty_weight)
    xs = [d.x for d in suite.train]
    ys = [d.y for d in suite.train]
    test = suite.test[0]
    curves: dict[str, list[float]] = {"test_accuracy": [], "train_accuracy": []}
    for step in range(config.steps):
        features = [model.features(x) for x in xs]
        risk = torch.stack([domain_loss(model.head(f), y, "binary")
                            for f, y in zip(features, ys)]).mean()
        loss = risk + config.l2 * sum(p.pow(2).sum() for p in model.parameters())
        if penalty is not None:
            loss = schedule.combine(loss, penalty(features, ys), step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"arm {arm!r}: non-finite loss at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if evaluate and ((step + 1) % config.eval_every == 0 or step + 1 == config.steps):
            curves["test_accuracy"].append(_accuracy(model, test.x, test.y))
            curves["train_accuracy"].append(statistics.fmean(
                _accuracy(model, x, y) for x, y in zip(xs, ys)))
    return model, curves


class HessianAlignmentReproduction(Reproduction):
    """ERM, IRMv1, V-REx, CORAL, Fishr, HGP and Hutchinson on digits Colored MNIST."""

    slug = "hessian_alignment"
    config_type = HAReproConfig
    title = "Understanding Hessian Alignment for Domain Generalization (digits Colored MNIST)"
    plot_curves = (("test_accuracy", "test-env accuracy"), ("train_accuracy", "train accuracy"))
    arm_labels = {"erm": "ERM", "irm": "IRMv1", "vrex": "V-REx", "coral": "CORAL",
                  "fishr": "Fishr", "hgp": "HGP", "hutchinson": "Hutchinson",
                  "best_baseline": "best baseline"}
    unit_axes = ("seeds", "arms")
    table_metrics = ("test_accuracy", "train_accuracy")

    def units(self, config: HAReproConfig) -> list[Unit]:
        # Slow arms first so the parallel processes finish together.
        order = sorted(config.arms, key=lambda a: a not in ("hutchinson", "irm", "hgp"))
        return [Unit(SETTING, arm, seed) for arm in order for seed in config.seeds]

    def run_unit(self, config: HAReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        suite = digits_cmnist(unit.seed, label_noise=config.label_noise, n_aug=config.n_aug)
        _, curves = train_cmnist(config, unit.arm, suite, unit.seed)
        return UnitResult({"test_accuracy": curves["test_accuracy"][-1],
                           "train_accuracy": curves["train_accuracy"][-1]}, curves)

    def derived_arms(self, config: HAReproConfig,
                     records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        present = [a for a in BASELINES if a in config.arms]
        if not present:
            return []

        def mean(arm: str) -> float:
            return statistics.fmean(r["metrics"]["test_accuracy"] for r in records
                                    if r["arm"] == arm)

        best = max(present, key=mean)
        return [{"setting": r["setting"], "arm": "best_baseline", "seed": r["seed"],
                 "metrics": {"test_accuracy": r["metrics"]["test_accuracy"],
                             "train_accuracy": r["metrics"]["train_accuracy"],
                             "best_baseline_index": float(BASELINES.index(best))},
                 "curves": {}}
                for r in records if r["arm"] == best]

    def curve_x(self, config: HAReproConfig, setting: str
                ) -> tuple[str, Sequence[float] | None, str]:
        points = [float(s) for s in range(config.eval_every, config.steps + 1, config.eval_every)]
        if not points or points[-1] != config.steps:
            points.append(float(config.steps))
        return "step", points, "linear"

    def claim(self, config: HAReproConfig) -> Claim:
        return Claim(
            statement="On digits Colored MNIST, HGP beats ERM by at least 15 points of "
            "test-environment accuracy (paper: ≈ 69-70% vs ERM ≈ 14-28% on Colored MNIST).",
            metric="test_accuracy", setting=SETTING, method="hgp", baseline="erm", margin=0.15,
        )

    def secondary_claims(self, config: HAReproConfig) -> list[Claim]:
        claims = []
        if "hutchinson" in config.arms:
            claims.append(Claim(
                statement="Hutchinson beats ERM by at least 15 points of test-environment "
                "accuracy.", metric="test_accuracy", setting=SETTING, method="hutchinson",
                baseline="erm", margin=0.15))
        if any(a in config.arms for a in BASELINES):
            claims.append(Claim(
                statement="HGP is at least on par with the best baseline (IRMv1, V-REx, CORAL, "
                "Fishr; the one with the highest mean test accuracy).",
                metric="test_accuracy", setting=SETTING, method="hgp",
                baseline="best_baseline", margin=0.0))
        return claims

    def timing(self, config: HAReproConfig, device: torch.device) -> dict[str, Any]:
        suite = digits_cmnist(0, n_aug=config.n_aug)
        xs = [d.x.to(device) for d in suite.train]
        ys = [d.y.to(device) for d in suite.train]
        steps = {}
        for arm in config.arms:
            torch.manual_seed(0)
            model = build_model(suite.num_features, config.hidden).to(device)
            penalty = build_penalty(arm, model.head, config.probes)
            optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)

            def step(model: nn.Module = model, penalty: nn.Module | None = penalty,
                     optimizer: Any = optimizer) -> None:
                features = [model.features(x) for x in xs]
                loss = torch.stack([domain_loss(model.head(f), y, "binary")
                                    for f, y in zip(features, ys)]).mean()
                if penalty is not None:
                    loss = loss + penalty(features, ys)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            steps[arm] = step
        # Enough interleaved rounds that a busy shared machine does not decide the medians.
        seconds = time_steps(steps, repeats=config.timing_repeats, inner=3, warmup=2,
                             device=device)
        out: dict[str, Any] = {"erm_step_seconds": seconds["erm"], "probes": config.probes}
        out.update({f"{arm}_over_erm": seconds[arm] / seconds["erm"] for arm in seconds
                    if arm != "erm"})
        return out

    def note(self, config: HAReproConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        arms = aggregate[SETTING]

        def cell(arm: str) -> str:
            test = arms[arm]["test_accuracy"]
            train = arms[arm]["train_accuracy"]["mean"]
            return (f"{self.arm_labels[arm]} {test['mean']:.3f} ± {test['se']:.3f} "
                    f"(train {train:.3f})")

        listed = "; ".join(cell(a) for a in config.arms if a in arms)
        best = ""
        if "best_baseline" in arms:
            index = int(arms["best_baseline"]["best_baseline_index"]["mean"])
            best = f" The best baseline by mean test accuracy is {BASELINES[index]}."
        return (f"Test-environment accuracy, mean ± SE over {len(config.seeds)} seeds (h = "
                f"{config.hidden}, {config.steps} steps, Hutchinson with {config.probes} probes): "
                f"{listed}.{best} CORAL (feature moments only) stays on the colour: its train "
                "accuracy is the colour agreement (≈ 0.85) and its test accuracy the colour-only "
                "0.10, as DomainBed reports for CORAL on Colored MNIST. The invariant (shape-only) "
                "ceiling is ≈ 0.75. The paper's MNIST numbers (HGP/Hutchinson ≈ 0.69-0.70, "
                "Fishr ≈ 0.69, V-REx ≈ 0.67, ERM ≈ 0.14-0.28) come from 25k images per "
                "environment, far more than the 1297 per environment here, where the MLP can fit "
                "the label noise; at this scale every alignment method stays below the ceiling "
                "and the ordering among them is what the secondary claims check.")


REPRODUCTION = HessianAlignmentReproduction()
