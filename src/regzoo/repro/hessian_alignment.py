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
DomainBed's 300). The derived arm ``best_baseline`` is the strongest baseline (IRM, V-REx, CORAL,
Fishr), per setting: chosen seed by seed by training-domain validation accuracy where the units
have it (rotated digits), else the one with the highest mean test accuracy over seeds (Colored
MNIST, whose official protocol has no validation split). The headline is the paper's own
comparative claim: HGP at least as accurate as that best baseline on Colored MNIST.

Rotated digits, leave one domain out (setting ``rotated_digits``, ``full`` preset; spec §5's
secondary suite, DomainBed's protocol): :func:`regzoo.data.domains.digits_domains` splits the
digits into disjoint parts, upsampled to 16×16 and rotated by 0°, 15°, 30°, 45° (``loo_angles``,
a subset of RotatedMNIST's six). For each held-out rotation an MLP 256 → 64 → 64 → 10 (instead
of DomainBed's MNIST CNN, for CPU cost) trains on the other domains with DomainBed's recipe —
Adam lr 1e-3, 64 examples per domain per step drawn with replacement, the penalties with their
``hparams_registry`` defaults (:data:`DOMAINBED_WEIGHTS`; mean over domains, detached averages,
Adam re-created when a penalty weight switches) — for ``loo_steps`` steps instead of 5000. 20% of
each training domain is held out; the reported held-out accuracy is the one at the evaluation
with the best mean validation accuracy (DomainBed's training-domain validation, with the
defaults only, no hyper-parameter search). A unit is one arm and seed over every held-out
rotation; its metrics are each rotation's accuracy and their mean (DomainBed's "Avg").
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from regzoo.data.domains import (
    Domain,
    DomainSuite,
    digits_cmnist,
    digits_domains,
    leave_one_domain_out,
    training_domain_validation,
)
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
LOO_SETTING = "rotated_digits"
LOO_ANGLES = (0.0, 15.0, 30.0, 45.0, 60.0, 75.0)
"""RotatedMNIST's domains (DomainBed); the leave-one-domain-out suite uses a subset."""
DOMAINBED_WEIGHTS = {
    "erm": (0.0, 0.0, 0.0),
    "irm": (1.0, 100.0, 0.1),
    "vrex": (1.0, 10.0, 0.1),
    "coral": (1.0, 1.0, 0.0),
    "fishr": (0.0, 1000.0, 0.3),
    "hgp": (1.0, 1.0, 0.0),
    "hutchinson": (1.0, 1.0, 0.0),
}
"""Per arm: penalty weight before and after the switch, and the switch as a fraction of the
steps (DomainBed ``hparams_registry``: IRM λ 100 and V-REx λ 10 after 500 of 5000 steps, weight 1
before; Fishr λ 1000 after 1500 steps, 0 before; CORAL γ 1; HGP/Hutchinson carry α, β inside)."""


def _loo_metric(angle: float) -> str:
    return f"test_rot{angle:g}"


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
    loo_angles: tuple[float, ...] = ()
    loo_seeds: tuple[int, ...] = ()
    loo_hidden: int = 64
    loo_steps: int = 400
    loo_batch: int = 64
    loo_lr: float = 1e-3
    loo_eval_every: int = 40
    loo_probes: int = 10
    loo_upsample: int = 2
    loo_val_fraction: float = 0.2
    positive_fields = ("steps", "lr", "hidden", "probes", "eval_every", "timing_repeats",
                       "loo_hidden", "loo_steps", "loo_batch", "loo_lr", "loo_eval_every",
                       "loo_probes", "loo_upsample", "loo_val_fraction")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.arms or any(a not in ARMS for a in self.arms) or "erm" not in self.arms:
            raise ValueError(f"arms must be a subset of {ARMS} that includes 'erm', got "
                             f"{self.arms}")
        if "hgp" not in self.arms or not any(a in self.arms for a in BASELINES):
            raise ValueError(f"arms must include 'hgp' and at least one baseline of {BASELINES}"
                             f" (the headline compares HGP with the best of them), got "
                             f"{self.arms}")
        if self.loo_angles and (len(self.loo_angles) < 3
                                or len(set(self.loo_angles)) != len(self.loo_angles)
                                or any(a not in LOO_ANGLES for a in self.loo_angles)):
            raise ValueError(f"loo_angles must be empty (no leave-one-domain-out suite) or at "
                             f"least 3 distinct angles of {LOO_ANGLES}, got {self.loo_angles}")
        if len(set(self.loo_seeds)) != len(self.loo_seeds) or any(
                isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.loo_seeds):
            raise ValueError(f"loo_seeds must be distinct non-negative integers, got "
                             f"{self.loo_seeds}")
        if self.loo_val_fraction >= 1.0:
            raise ValueError(f"loo_val_fraction must lie in (0, 1), got {self.loo_val_fraction}")

    @classmethod
    def tiny(cls) -> HAReproConfig:
        return cls(seeds=(0, 1), steps=12, anneal_steps=6, hidden=16, probes=2, eval_every=4,
                   timing_repeats=2, loo_angles=(0.0, 15.0, 30.0), loo_hidden=8, loo_steps=6,
                   loo_batch=16, loo_eval_every=3, loo_probes=2)

    @classmethod
    def quick(cls) -> HAReproConfig:
        return cls(seeds=(0, 1), arms=("erm", "irm", "vrex", "coral", "fishr", "hgp"))

    @classmethod
    def full(cls) -> HAReproConfig:
        return cls(seeds=(0, 1, 2, 3, 4), loo_angles=(0.0, 15.0, 30.0, 45.0))

    @property
    def loo_seed_list(self) -> tuple[int, ...]:
        """Seeds of the leave-one-domain-out suite (``loo_seeds``, default ``seeds``)."""
        return self.loo_seeds or self.seeds


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


def apply_penalty(penalty: nn.Module, features: list[torch.Tensor], targets: list[torch.Tensor],
                  losses: list[torch.Tensor]) -> torch.Tensor:
    """The penalty's value; HGP, Hutchinson and V-REx reuse the step's per-domain losses."""
    if isinstance(penalty, (HessianAlignment, VREx)):
        return penalty(features, targets, losses=losses)
    return penalty(features, targets)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x).reshape(-1) > 0).float() == y).float().mean())


def _on(domains: Sequence[Domain], device: torch.device) -> list[Domain]:
    """The domains with their tensors on ``device``."""
    return [dataclasses.replace(d, x=d.x.to(device), y=d.y.to(device)) for d in domains]


def train_cmnist(config: HAReproConfig, arm: str, suite: DomainSuite, seed: int,
                 evaluate: bool = True, device: torch.device | str = "cpu"
                 ) -> tuple[nn.Module, dict[str, list[float]]]:
    """Train one arm with the official Colored-MNIST recipe on ``device``; model and curves.

    Initialisation and the Hutchinson probes come from CPU generators, so a seed draws the same
    model and probes on any device.
    """
    seed_everything(seed)
    model = build_model(suite.num_features, config.hidden).to(device)
    penalty = build_penalty(arm, model.head, config.probes)
    if isinstance(penalty, HessianAlignment):
        penalty.generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    schedule = PenaltySchedule(config.anneal_steps, config.penalty_weight)
    train = _on(suite.train, torch.device(device))
    xs = [d.x for d in train]
    ys = [d.y for d in train]
    (test,) = _on(suite.test[:1], torch.device(device))
    curves: dict[str, list[float]] = {"test_accuracy": [], "train_accuracy": []}
    for step in range(config.steps):
        features = [model.features(x) for x in xs]
        losses = [domain_loss(model.head(f), y, "binary") for f, y in zip(features, ys)]
        loss = torch.stack(losses).mean() + config.l2 * sum(
            p.pow(2).sum() for p in model.parameters())
        if penalty is not None:
            loss = schedule.combine(loss, apply_penalty(penalty, features, ys, losses), step)
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


def build_loo_penalty(arm: str, head: nn.Module, probes: int) -> nn.Module | None:
    """The arm's penalty with DomainBed's reductions (mean over domains, detached averages)."""
    if arm == "erm":
        return None
    if arm in ("hgp", "hutchinson"):
        return HessianAlignment(head, arm, probes=probes)
    if arm == "irm":
        return IRMv1(head)
    if arm == "vrex":
        return VREx(head)
    if arm == "fishr":
        return Fishr(head)
    return CORAL()


def _multiclass_accuracy(model: nn.Module, domain: Domain) -> float:
    with torch.no_grad():
        return float((model(domain.x).argmax(1) == domain.y).float().mean())


def train_loo(config: HAReproConfig, arm: str, suite: DomainSuite, seed: int,
              device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, list[float]]]:
    """Train one arm DomainBed-style on ``suite``'s training domains on ``device``.

    Each training domain loses ``loo_val_fraction`` of its examples to validation; every step
    draws ``loo_batch`` examples per domain with replacement (DomainBed's infinite loaders) and
    takes one Adam step on the mean cross-entropy plus the weighted penalty
    (:data:`DOMAINBED_WEIGHTS`; Adam is re-created when the weight switches, as DomainBed does).
    Every ``loo_eval_every`` steps the curves get the mean validation accuracy over the training
    domains and the test-domain accuracy. The batches are drawn by a CPU generator, so a seed
    draws the same examples on any device. Returns the model and the curves.
    """
    device = torch.device(device)
    fit, val = training_domain_validation(suite.train, seed, config.loo_val_fraction)
    fit, val = _on(fit, device), _on(val, device)
    (test,) = _on(suite.test[:1], device)
    seed_everything(seed)
    model = MLP(suite.num_features, suite.num_classes, hidden=(config.loo_hidden,) * 2).to(device)
    penalty = build_loo_penalty(arm, model.head, config.loo_probes)
    sampler = torch.Generator().manual_seed(seed)
    if isinstance(penalty, HessianAlignment):
        penalty.generator = torch.Generator().manual_seed(seed + 1)
    before, after, fraction = DOMAINBED_WEIGHTS[arm]
    switch = round(fraction * config.loo_steps)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.loo_lr)
    curves: dict[str, list[float]] = {"val_accuracy": [], "test_accuracy": []}
    for step in range(config.loo_steps):
        if switch > 0 and step == switch:
            optimizer = torch.optim.Adam(model.parameters(), lr=config.loo_lr)
        picks = [torch.randint(len(d), (config.loo_batch,), generator=sampler).to(device)
                 for d in fit]
        features = [model.features(d.x[i]) for d, i in zip(fit, picks)]
        ys = [d.y[i] for d, i in zip(fit, picks)]
        losses = [domain_loss(model.head(f), y, "cross_entropy") for f, y in zip(features, ys)]
        loss = torch.stack(losses).mean()
        weight = after if step >= switch else before
        if penalty is not None and weight > 0:
            loss = loss + weight * apply_penalty(penalty, features, ys, losses)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"arm {arm!r}: non-finite loss at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (step + 1) % config.loo_eval_every == 0 or step + 1 == config.loo_steps:
            curves["val_accuracy"].append(statistics.fmean(
                _multiclass_accuracy(model, d) for d in val))
            curves["test_accuracy"].append(_multiclass_accuracy(model, test))
    return model, curves


def select_by_validation(curves: dict[str, list[float]]) -> int:
    """DomainBed's training-domain validation: the first evaluation with the best validation."""
    val = curves["val_accuracy"]
    return max(range(len(val)), key=lambda i: (val[i], -i))


class HessianAlignmentReproduction(Reproduction):
    """ERM, IRMv1, V-REx, CORAL, Fishr, HGP and Hutchinson on digits CMNIST and rotated digits."""

    slug = "hessian_alignment"
    config_type = HAReproConfig
    title = ("Understanding Hessian Alignment for Domain Generalization (digits Colored MNIST; "
             "rotated digits, leave one domain out)")
    plot_curves = (("test_accuracy", "test-env accuracy"), ("train_accuracy", "train accuracy"),
                   ("val_accuracy", "training-domain validation accuracy"))
    arm_labels = {"erm": "ERM", "irm": "IRMv1", "vrex": "V-REx", "coral": "CORAL",
                  "fishr": "Fishr", "hgp": "HGP", "hutchinson": "Hutchinson",
                  "best_baseline": "best baseline"}
    # Not loo_angles: every rotated-digits unit loops over all of them, so more angles change
    # the units that ran, they do not add units.
    unit_axes = ("seeds", "arms", "loo_seeds")
    table_metrics = (*(_loo_metric(a) for a in LOO_ANGLES), "test_accuracy", "train_accuracy",
                     "val_accuracy")

    def units(self, config: HAReproConfig) -> list[Unit]:
        # Slow arms first so the parallel processes finish together.
        order = sorted(config.arms, key=lambda a: a not in ("hutchinson", "irm", "hgp"))
        units = [Unit(SETTING, arm, seed) for arm in order for seed in config.seeds]
        if config.loo_angles:
            units += [Unit(LOO_SETTING, arm, seed) for arm in order
                      for seed in config.loo_seed_list]
        return units

    def run_unit(self, config: HAReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        if unit.setting == LOO_SETTING:
            return self._run_loo(config, unit, env.device)
        suite = digits_cmnist(unit.seed, label_noise=config.label_noise, n_aug=config.n_aug)
        _, curves = train_cmnist(config, unit.arm, suite, unit.seed, device=env.device)
        return UnitResult({"test_accuracy": curves["test_accuracy"][-1],
                           "train_accuracy": curves["train_accuracy"][-1]}, curves)

    def _run_loo(self, config: HAReproConfig, unit: Unit, device: torch.device) -> UnitResult:
        """Every held-out angle in turn; metrics at the training-domain-validation choice."""
        domains = digits_domains(unit.seed, angles=config.loo_angles,
                                 upsample=config.loo_upsample)
        metrics: dict[str, float] = {}
        runs = []
        for index, angle in enumerate(config.loo_angles):
            suite = leave_one_domain_out(domains, index, LOO_SETTING)
            _, curves = train_loo(config, unit.arm, suite, unit.seed, device)
            chosen = select_by_validation(curves)
            metrics[_loo_metric(angle)] = curves["test_accuracy"][chosen]
            runs.append((curves, chosen))
        # DomainBed's "Avg" column: the mean over held-out domains of the selected accuracies.
        metrics["test_accuracy"] = statistics.fmean(c["test_accuracy"][i] for c, i in runs)
        metrics["val_accuracy"] = statistics.fmean(c["val_accuracy"][i] for c, i in runs)
        mean_curves = {name: [statistics.fmean(values) for values in
                              zip(*(c[name] for c, _ in runs))]
                       for name in ("test_accuracy", "val_accuracy")}
        return UnitResult(metrics, mean_curves)

    def derived_arms(self, config: HAReproConfig,
                     records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per setting and seed, the strongest baseline (see the module docstring for the rule)."""
        present = [a for a in BASELINES if a in config.arms]
        derived: list[dict[str, Any]] = []
        for setting in dict.fromkeys(r["setting"] for r in records):
            rows = {(r["arm"], r["seed"]): r for r in records if r["setting"] == setting}
            seeds = sorted({seed for arm, seed in rows if arm in present})
            by_validation = all("val_accuracy" in r["metrics"] for (arm, _), r in rows.items()
                                if arm in present)

            def mean_test(arm: str, rows: dict[tuple[str, int], Any] = rows) -> float:
                return statistics.fmean(r["metrics"]["test_accuracy"]
                                        for (a, _), r in rows.items() if a == arm)

            fixed = None if by_validation or not present else max(present, key=mean_test)
            for seed in seeds:
                candidates = [a for a in present if (a, seed) in rows]
                best = fixed if fixed is not None else max(
                    candidates, key=lambda a: rows[(a, seed)]["metrics"]["val_accuracy"])
                if (best, seed) not in rows:
                    continue
                record = rows[(best, seed)]
                derived.append({"setting": setting, "arm": "best_baseline", "seed": seed,
                                "metrics": {**record["metrics"],
                                            "best_baseline_index": float(BASELINES.index(best))},
                                "curves": {}})
        return derived

    def curve_x(self, config: HAReproConfig, setting: str
                ) -> tuple[str, Sequence[float] | None, str]:
        every, steps = ((config.loo_eval_every, config.loo_steps) if setting == LOO_SETTING
                        else (config.eval_every, config.steps))
        points = [float(s) for s in range(every, steps + 1, every)]
        if not points or points[-1] != steps:
            points.append(float(steps))
        return "step", points, "linear"

    def claim(self, config: HAReproConfig) -> Claim:
        return Claim(
            statement="On digits Colored MNIST, HGP's test-environment accuracy is at least "
            "that of the best domain-generalisation baseline the paper compares with (IRMv1, "
            "V-REx, CORAL, Fishr; the one with the highest mean test accuracy, since the "
            "official Colored-MNIST protocol has no validation split). Paper: HGP ≈ 0.69-0.70 "
            "vs Fishr ≈ 0.69 and V-REx ≈ 0.67 on Colored MNIST.",
            metric="test_accuracy", setting=SETTING, method="hgp", baseline="best_baseline",
            margin=0.0,
        )

    def secondary_claims(self, config: HAReproConfig) -> list[Claim]:
        claims = [Claim(
            statement="On digits Colored MNIST, HGP beats ERM by at least 15 points of "
            "test-environment accuracy (paper: ≈ 69-70% vs ERM ≈ 14-28% on Colored MNIST).",
            metric="test_accuracy", setting=SETTING, method="hgp", baseline="erm", margin=0.15)]
        if "hutchinson" in config.arms:
            claims.append(Claim(
                statement="Hutchinson beats ERM by at least 15 points of test-environment "
                "accuracy.", metric="test_accuracy", setting=SETTING, method="hutchinson",
                baseline="erm", margin=0.15))
        if config.loo_angles:
            claims += self._loo_claims(config)
        return claims

    def _loo_claims(self, config: HAReproConfig) -> list[Claim]:
        """HGP and Hutchinson vs ERM and vs the best baseline on the held-out rotations."""
        suite = (f"On rotated digits (train on all of {len(config.loo_angles)} rotations but one, "
                 "test on it, training-domain validation, mean over the held-out rotations)")
        paper = ("paper: on DomainBed, HGP and Hutchinson give the best or near-best average "
                 "accuracy among the alignment methods")
        claims = []
        for arm in ("hgp", "hutchinson"):
            if arm not in config.arms:
                continue
            label = self.arm_labels[arm]
            claims.append(Claim(
                statement=f"{suite}, {label} is more accurate than ERM ({paper}).",
                metric="test_accuracy", setting=LOO_SETTING, method=arm, baseline="erm",
                margin=0.0))
            claims.append(Claim(
                statement=f"{suite}, {label} is more accurate than the best baseline (IRMv1, "
                "V-REx, CORAL, Fishr; chosen seed by seed by training-domain validation "
                "accuracy).", metric="test_accuracy", setting=LOO_SETTING, method=arm,
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
                losses = [domain_loss(model.head(f), y, "binary") for f, y in zip(features, ys)]
                loss = torch.stack(losses).mean()
                if penalty is not None:
                    loss = loss + apply_penalty(penalty, features, ys, losses)
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
        best = _best_baseline_text(arms, "by mean test accuracy")
        return (f"Test-environment accuracy, mean ± SE over {len(config.seeds)} seeds (h = "
                f"{config.hidden}, {config.steps} steps, Hutchinson with {config.probes} probes): "
                f"{listed}.{best} CORAL (feature moments only) stays on the colour: its train "
                "accuracy is the colour agreement (≈ 0.85) and its test accuracy the colour-only "
                "0.10, as DomainBed reports for CORAL on Colored MNIST. The invariant (shape-only) "
                "ceiling is ≈ 0.75. The paper's MNIST numbers (HGP/Hutchinson ≈ 0.69-0.70, "
                "Fishr ≈ 0.69, V-REx ≈ 0.67, ERM ≈ 0.14-0.28) come from 25k images per "
                "environment, far more than the 1297 per environment here, where the MLP can fit "
                "the label noise; at this scale every alignment method stays below the ceiling "
                "and the ordering among them is what the headline checks (HGP against the best of "
                "them)."
                + self._loo_note(config, aggregate.get(LOO_SETTING)))

    def _loo_note(self, config: HAReproConfig, arms: dict[str, Any] | None) -> str:
        """The leave-one-domain-out suite's setup and averages (empty when it did not run)."""
        if not arms:
            return ""
        listed = "; ".join(
            f"{self.arm_labels[a]} {arms[a]['test_accuracy']['mean']:.3f} ± "
            f"{arms[a]['test_accuracy']['se']:.3f}" for a in config.arms if a in arms)
        best = _best_baseline_text(arms, "seed by seed by validation accuracy")
        underfit = ""
        if "erm" in arms:
            erm_val = arms["erm"]["val_accuracy"]["mean"]
            low = [f"{self.arm_labels[a]} {arms[a]['val_accuracy']['mean']:.3f}"
                   for a in config.arms if a in arms and a != "erm"
                   and arms[a]["val_accuracy"]["mean"] < erm_val - 0.1]
            if low:
                underfit = (" With DomainBed's default weights and no search, some penalties "
                            "keep the model from fitting the training domains (mean validation "
                            f"accuracy {', '.join(low)} vs ERM {erm_val:.3f}).")
        angles = ", ".join(f"{a:g}°" for a in config.loo_angles)
        seeds = len(config.loo_seed_list)
        return (
            f"\n\nRotated digits, leave one domain out (setting {LOO_SETTING}): the "
            f"digits split into {len(config.loo_angles)} disjoint random parts rotated by "
            f"{angles} (upsampled to {8 * config.loo_upsample}×{8 * config.loo_upsample}); for "
            "each held-out rotation, train on the others with DomainBed's recipe (Adam lr "
            f"{config.loo_lr:g}, {config.loo_batch} examples per domain per step, "
            f"{config.loo_steps} steps instead of 5000, an MLP with two hidden layers of "
            f"{config.loo_hidden} instead of the MNIST CNN, DomainBed's default hyper-parameters "
            "and no search: IRMv1 λ 100 and V-REx λ 10 after 10% of the steps, Fishr λ 1000 "
            "after 30% and without its moving average, CORAL γ 1, HGP α 1e-4 β 5e-3, Hutchinson "
            f"α 1e-3 β 5e-3 with {config.loo_probes} probes; mean over domains, detached "
            "averages), keep "
            f"{config.loo_val_fraction:g} of each training domain for validation and report the "
            f"held-out accuracy at the evaluation (every {config.loo_eval_every} steps) with the "
            "best mean validation accuracy (training-domain validation). Mean over held-out "
            f"rotations, mean ± SE over {seeds} seeds: {listed}.{best}{underfit} The "
            f"{LOO_SETTING} table gives each held-out rotation's accuracy.")


def _best_baseline_text(arms: dict[str, Any], rule: str) -> str:
    """Which baseline the derived ``best_baseline`` arm took, and on how many seeds."""
    if "best_baseline" not in arms:
        return ""
    picks = [BASELINES[int(i)] for i in arms["best_baseline"]["best_baseline_index"]["values"]]
    counts = ", ".join(f"{name} on {picks.count(name)} of {len(picks)} seeds"
                       for name in dict.fromkeys(picks))
    return f" The best baseline ({rule}) is {counts}."


REPRODUCTION = HessianAlignmentReproduction()
