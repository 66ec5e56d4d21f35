"""ELR at CPU scale: cross-entropy memorises noisy labels, ELR does not (spec elr.md §5).

Data: scikit-learn's digits (1797 8×8 images), a stratified 2/3–1/3 split drawn by the seed,
the training labels corrupted by the setting's noise model (``sym40``: 40 % resampled from all
10 classes, as ELR's official code does; ``pair40``: 40 % moved c → c+1), test labels clean.
Model: MLP 64-256-256-10. All arms: SGD lr 0.05, momentum 0.9, weight decay 1e-3, batch 64,
cosine learning-rate decay over 150 epochs, the same seed giving the same split, noise and
initialisation. ELR: β = 0.7, λ = 3 (the official CIFAR-10 values, unchanged).

Arms: ``ce``; ``ce_oracle_stop`` (the CE run's best test accuracy over epochs — early stopping
with an oracle, a deliberately strong baseline); ``elr``; ``elr_plus`` (ELR+ with the same
optimiser and schedule, mixup α = 1, weight-averaging decay 0.997 ramped over the first 57 % of
the steps as in the official config, two networks); ``elr_wc`` (composition of a criterion and a
transform: ELR on a network whose Linear weights are companded, W = a·arctan(V/b) with the
paper's CIFAR-10 ResNet pair a = 1.0, b = 0.6, weight decay on the effective weights);
``elr_bf16`` (ELR with its target memory in bfloat16, half the buffer); ``cleanlab`` (the tool
people use to find label issues: cleanlab's ``find_label_issues`` on out-of-fold probabilities
of the same model and recipe, 5 stratified folds as cleanlab's default, then the same recipe
retrained on the examples it keeps, as its ``CleanLearning`` does; run in ``cleanlab_noises``).
Headline metric: test accuracy at the last epoch. ``memorized``: share of the corrupted training
examples predicted as their noisy label. Label issues: ELR's flagged set is
``criterion.label_issues(noisy_labels)`` after training (memory arg-max ≠ label); precision,
recall and F1 against the examples whose label the noise actually changed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from regzoo.core.label_issues import precision_recall_f1
from regzoo.data import TensorBatches, label_noise, load_digits
from regzoo.data.noise import parse_noise_spec
from regzoo.methods.elr import EarlyLearningRegularization, ELRPlusConfig, fit_elr_plus
from regzoo.methods.weight_compander import WeightCompander
from regzoo.metrics import classification_metrics, predict_logits
from regzoo.models import CNN, MLP
from regzoo.repro.common import IndexedCrossEntropy
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import Claim, Reproduction, Unit, UnitEnv, UnitResult
from regzoo.train import History, fit, seed_everything, time_criteria

ARMS = ("ce", "elr", "elr_plus", "elr_wc", "elr_bf16", "cleanlab")
MEMORY_ARMS = {"elr": None, "elr_wc": None, "elr_bf16": torch.bfloat16}
"""The arms trained with the ELR criterion, and their target memory's dtype."""


@dataclasses.dataclass(frozen=True)
class ELRReproConfig(ReproConfig):
    """Settings of the ELR reproduction; presets ``tiny``, ``quick`` and ``full``."""

    noises: tuple[str, ...] = ("sym40",)
    arms: tuple[str, ...] = ("ce", "elr")
    model: str = "mlp"
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 150
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-3
    lam: float = 3.0
    beta: float = 0.7
    plus_mixup_alpha: float = 1.0
    plus_ema_alpha: float = 0.997
    plus_ema_fraction: float = 40_000 / 70_400
    wc_a: float = 1.0
    wc_b: float = 0.6
    cleanlab_noises: tuple[str, ...] = ("sym40", "pair40")
    cleanlab_folds: int = 5
    checkpoint_every: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms:
            raise ValueError(f"arms must be a non-empty subset of {ARMS}, got {self.arms}")
        if "ce" not in self.arms:
            raise ValueError("arms must include 'ce', the baseline of the claim")
        if self.model not in ("mlp", "cnn"):
            raise ValueError(f"model must be 'mlp' or 'cnn', got {self.model!r}")
        if not self.noises:
            raise ValueError("noises is empty; give e.g. noises=sym40")
        for spec in self.noises:
            parse_noise_spec(spec)
        if self.cleanlab_folds < 2:
            raise ValueError(f"cleanlab_folds must be >= 2, got {self.cleanlab_folds}")

    @classmethod
    def tiny(cls) -> ELRReproConfig:
        return cls(seeds=(0,), noises=("sym40",), arms=ARMS, epochs=2, hidden=(32,),
                   checkpoint_every=1, cleanlab_folds=2)

    @classmethod
    def quick(cls) -> ELRReproConfig:
        return cls(seeds=(0, 1, 2, 3, 4), noises=("sym40",), arms=("ce", "elr"))

    @classmethod
    def full(cls) -> ELRReproConfig:
        return cls(seeds=(0, 1, 2, 3, 4), noises=("sym20", "sym40", "sym60", "sym80", "pair40"),
                   arms=ARMS)


def _build_model(config: ELRReproConfig, in_features: int, num_classes: int) -> nn.Module:
    if config.model == "cnn":
        return CNN((8, 8), num_classes)
    return MLP(in_features, num_classes, hidden=config.hidden)


def _optimizer(config: ELRReproConfig, params: Sequence[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def _scheduler(config: ELRReproConfig, optimizer: torch.optim.Optimizer) -> Any:
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)


def _train(config: ELRReproConfig, x: torch.Tensor, y: torch.Tensor, num_classes: int,
           arm: str, seed: int, device: torch.device, **fit_options: Any
           ) -> tuple[nn.Module, nn.Module, History]:
    """The arms' recipe on (x, y) with ``arm``'s criterion (ELR arms) or cross-entropy."""
    seed_everything(seed)
    model = _build_model(config, x.shape[1], num_classes)
    criterion: nn.Module = (
        EarlyLearningRegularization(x.shape[0], num_classes, lam=config.lam, beta=config.beta,
                                    memory_dtype=MEMORY_ARMS[arm])
        if arm in MEMORY_ARMS else IndexedCrossEntropy()
    ).to(device)
    compander = (WeightCompander.apply(model, a=config.wc_a, b=config.wc_b)
                 if arm == "elr_wc" else None)
    optimizer = (_optimizer(config, list(model.parameters())) if compander is None else
                 torch.optim.SGD(compander.param_groups(config.weight_decay), lr=config.lr,
                                 momentum=config.momentum))
    batches = TensorBatches(x, y, config.batch_size, seed=seed)

    def step(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        xb, yb, idx = batch
        loss = criterion(net(xb), yb, idx)
        if compander is not None:
            loss = loss + config.weight_decay * compander.penalty()
        return loss

    history = fit(model, batches, step, optimizer, epochs=config.epochs,
                  scheduler=_scheduler(config, optimizer), state={"criterion": criterion},
                  **fit_options)
    return model, criterion, history


def _folds(labels: torch.Tensor, folds: int, seed: int
           ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Stratified K-fold (train rows, held-out rows), shuffled by ``seed`` (cleanlab's CV)."""
    from sklearn.model_selection import StratifiedKFold

    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(torch.as_tensor(a), torch.as_tensor(b))
            for a, b in split.split(labels.numpy().reshape(-1, 1), labels.numpy())]


def _cleanlab_issues(labels: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Mask of cleanlab's ``find_label_issues`` (its defaults) on out-of-fold probabilities."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError as error:
        raise ImportError("the 'cleanlab' arm needs cleanlab: pip install 'regzoo[peers]' "
                          "(or drop 'cleanlab' from arms)") from error
    mask = find_label_issues(labels.numpy(), probs.double().numpy(), n_jobs=1)
    return torch.as_tensor(mask, dtype=torch.bool)


class ELRReproduction(Reproduction):
    """ELR vs cross-entropy (and ELR+) under label noise on digits."""

    slug = "elr"
    config_type = ELRReproConfig
    title = "Early-Learning Regularization Prevents Memorization of Noisy Labels"
    plot_curves = (("test_accuracy", "test accuracy"),
                   ("memorized", "corrupted labels\nfitted (share)"))
    arm_labels = {"ce": "CE", "ce_oracle_stop": "CE + oracle early stop", "elr": "ELR",
                  "elr_plus": "ELR+", "elr_wc": "ELR + Weight Compander",
                  "elr_bf16": "ELR, bfloat16 memory", "cleanlab": "cleanlab (CleanLearning)"}
    unit_axes = ("seeds", "noises", "arms")
    table_metrics = ("final_test_accuracy", "best_test_accuracy", "memorized", "final_test_ece",
                     "label_issue_f1")

    def units(self, config: ELRReproConfig) -> list[Unit]:
        return [Unit(noise, arm, seed) for noise in config.noises for arm in config.arms
                for seed in config.seeds
                if arm != "cleanlab" or noise in config.cleanlab_noises]

    def claim(self, config: ELRReproConfig) -> Claim:
        setting = "sym40" if "sym40" in config.noises else config.noises[0]
        return Claim(
            statement="ELR beats cross-entropy by at least 5 points of final-epoch test accuracy "
            f"at {setting} label noise on digits (paper Table 1: +7 to +20 points on CIFAR).",
            metric="final_test_accuracy", setting=setting, method="elr", baseline="ce",
            margin=0.05,
        )

    def secondary_claims(self, config: ELRReproConfig) -> list[Claim]:
        if "cleanlab" not in config.arms or "elr" not in config.arms:
            return []
        runs = [n for n in config.noises if n in config.cleanlab_noises]
        if not runs:
            return []
        setting = "sym40" if "sym40" in runs else runs[0]
        return [Claim(
            statement="ELR's label issues (target memory's arg-max ≠ given label) are at least "
            f"as good as cleanlab's find_label_issues on out-of-fold probabilities: F1 against "
            f"the corrupted labels at {setting} noise (issue 25, margin 0).",
            metric="label_issue_f1", setting=setting, method="elr", baseline="cleanlab",
            margin=0.0,
        )]

    def run_unit(self, config: ELRReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        data = load_digits(seed=unit.seed)
        noisy = label_noise(unit.setting, data.y_train, data.num_classes, seed=unit.seed)
        y_noisy = noisy.labels
        corrupted = torch.as_tensor(noisy.is_noisy)
        device = env.context.device
        x_test, y_test = data.x_test, data.y_test

        def evaluate(model: nn.Module, epoch: int) -> dict[str, float]:
            test = classification_metrics(predict_logits(model, x_test), y_test)
            train_pred = predict_logits(model, data.x_train).argmax(dim=1)
            memorized = (train_pred[corrupted] == y_noisy[corrupted]).float().mean()
            return {"test_accuracy": test["accuracy"], "test_nll": test["nll"],
                    "test_ece": test["ece"],
                    "memorized": float(memorized) if corrupted.any() else 0.0}

        common = dict(evaluate=evaluate, checkpoint_path=env.checkpoint_path,
                      checkpoint_every=config.checkpoint_every, resume=env.resume,
                      context=env.context, progress=env.progress, log=env.log)
        flagged: torch.Tensor | None = None
        if unit.arm == "elr_plus":
            steps = config.epochs * -(-data.x_train.shape[0] // config.batch_size)
            plus = ELRPlusConfig(
                lam=config.lam, beta=config.beta, mixup_alpha=config.plus_mixup_alpha,
                ema_alpha=config.plus_ema_alpha,
                ema_step=round(config.plus_ema_fraction * steps), coef_step=0,
                epochs=config.epochs, batch_size=config.batch_size,
            )
            history = fit_elr_plus(
                lambda: _build_model(config, data.num_features, data.num_classes),
                data.x_train.to(device), y_noisy.to(device), data.num_classes, config=plus,
                make_optimizer=functools.partial(_optimizer, config),
                make_scheduler=functools.partial(_scheduler, config), seed=unit.seed,
                **common,
            ).history
        elif unit.arm == "cleanlab":
            x, classes = data.x_train, data.num_classes
            probs = torch.empty(len(y_noisy), classes)
            folds = _folds(y_noisy, config.cleanlab_folds, unit.seed)
            for k, (rows, held_out) in enumerate(folds):
                fold_model = _train(config, x[rows], y_noisy[rows], classes, "ce", unit.seed,
                                    device, desc=f"{unit.id} fold {k}", context=env.context,
                                    progress=env.progress)[0]
                probs[held_out] = predict_logits(fold_model, x[held_out]).softmax(dim=1).cpu()
            flagged = _cleanlab_issues(y_noisy, probs)
            kept = (~flagged).nonzero().squeeze(1)
            history = _train(config, x[kept], y_noisy[kept], classes, "ce", unit.seed, device,
                             desc=unit.id, **common)[2]
        else:
            _, criterion, history = _train(config, data.x_train, y_noisy, data.num_classes,
                                           unit.arm, unit.seed, device, desc=unit.id, **common)
            if unit.arm in MEMORY_ARMS:
                flagged = criterion.label_issues(y_noisy).is_issue
        accuracy = history.curve("test_accuracy")
        best = max(range(len(accuracy)), key=accuracy.__getitem__)
        last = history.last
        return UnitResult(
            metrics={
                "final_test_accuracy": last["test_accuracy"],
                "best_test_accuracy": accuracy[best],
                "best_epoch": float(best + 1),
                "memorized": last["memorized"],
                "final_test_nll": last["test_nll"],
                "final_test_ece": last["test_ece"],
                "realized_noise_rate": noisy.noise_rate,
                **({} if flagged is None else {
                    f"label_issue_{k}": v
                    for k, v in precision_recall_f1(flagged, corrupted).items()}),
            },
            curves={"test_accuracy": accuracy, "memorized": history.curve("memorized")},
        )

    def derived_arms(self, config: ELRReproConfig,
                     records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"setting": r["setting"], "arm": "ce_oracle_stop", "seed": r["seed"],
             "metrics": {"final_test_accuracy": r["metrics"]["best_test_accuracy"],
                         "best_epoch": r["metrics"]["best_epoch"]},
             "curves": {}}
            for r in records if r["arm"] == "ce"
        ]

    def timing(self, config: ELRReproConfig, device: torch.device) -> dict[str, Any]:
        torch.manual_seed(0)
        data = load_digits(seed=0)
        n, c = data.x_train.shape[0], data.num_classes
        x = data.x_train[: config.batch_size].to(device)
        y = data.y_train[: config.batch_size].to(device)
        idx = torch.arange(config.batch_size, device=device)
        model = _build_model(config, data.num_features, c).to(device)
        elr = EarlyLearningRegularization(n, c).to(device)
        seconds = time_criteria(model, {"ce": IndexedCrossEntropy(), "elr": elr}, x, y, idx,
                                device)
        return {"model": config.model, "batch_size": config.batch_size,
                "ce_step_seconds": seconds["ce"], "elr_step_seconds": seconds["elr"],
                "elr_over_ce": seconds["elr"] / seconds["ce"]}

    def note(self, config: ELRReproConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        def mean(setting: str, arm: str) -> float | None:
            metric = aggregate[setting].get(arm, {}).get("final_test_accuracy")
            return None if metric is None else metric["mean"]

        gaps = []
        for setting in config.noises:
            ce, elr, oracle = (mean(setting, a) for a in ("ce", "elr", "ce_oracle_stop"))
            plus, with_wc = mean(setting, "elr_plus"), mean(setting, "elr_wc")
            text = f"{setting}: ELR − CE {elr - ce:+.3f}" if elr is not None else setting
            if elr is not None and oracle is not None:
                text += f", ELR − oracle-stopped CE {elr - oracle:+.3f}"
            if plus is not None and elr is not None:
                text += f", ELR+ − ELR {plus - elr:+.3f}"
            if with_wc is not None and elr is not None:
                text += f", ELR+WC − ELR {with_wc - elr:+.3f}"
            bf16, clean = mean(setting, "elr_bf16"), mean(setting, "cleanlab")
            if bf16 is not None and elr is not None:
                text += f", bfloat16 memory − float32 {bf16 - elr:+.3f}"
            if clean is not None and elr is not None:
                text += f", ELR − cleanlab's CleanLearning {elr - clean:+.3f}"
            gaps.append(text)
        f1 = [f"{setting}: " + ", ".join(
                  f"{self.arm_labels[arm]} {aggregate[setting][arm]['label_issue_f1']['mean']:.3f}"
                  for arm in ("elr", "elr_bf16", "cleanlab")
                  if "label_issue_f1" in aggregate[setting].get(arm, {}))
              for setting in config.noises]
        return (
            "Final-epoch test accuracy (mean over seeds) — " + "; ".join(gaps) + ". "
            "'CE + oracle early stop' takes CE's best test accuracy over epochs, a baseline that "
            "peeks at test labels. Symmetric noise resamples from all 10 classes (ELR's official "
            "convention), so the realised flip rate is ≈ 0.9 × the nominal rate "
            "(realized_noise_rate in result.json). ELR+ uses the arms' optimiser and schedule, "
            "not the official 200-epoch PreActResNet recipe. "
            "Label issues, F1 of the flagged set against the labels the noise changed (mean) — "
            + "; ".join(f1) + ". ELR flags an example when its target memory's arg-max differs "
            "from the given label, read once after training (in sample, no extra training); "
            f"cleanlab needs {config.cleanlab_folds} extra trainings per run for its out-of-fold "
            "probabilities, then a retraining on the examples it keeps (its CleanLearning)."
        )


REPRODUCTION = ELRReproduction()
