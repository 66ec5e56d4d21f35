"""Self-Tuning Networks at CPU scale: dropout tuned online on digits, and a ridge check (spec §5).

Settings:

* ``digits_dropout``: scikit-learn's digits, 720 images drawn by the seed split 360 train /
  360 validation (stratified), the other 1077 for testing. An MLP 64-256-256-10 with a dropout
  rate after each hidden layer (2 hyperparameters), every run starting the rates at a poor 0.05
  (the paper's start). All networks train 150 epochs with SGD lr 0.05, momentum 0.9, batch 64 on
  the 360 training images; validation data only tunes or selects hyperparameters.

  - ``stn``: :func:`regzoo.methods.stn.fit_stn`, HyperLinear layers, per-layer rates in (0, 0.9)
    (official range), 2 : 1 weight/hyper steps, 5 warm-up epochs, tuned σ with entropy weight
    1e-3 (the official README command), Adam on λ at 3e-2 (the official 3e-3 barely moves λ in
    the ~430 hyper steps this data allows, spec §5). Evaluated with the current λ, no dropout.
    Its hyper steps' validation stream restarts every epoch (``val_stream="per_epoch"``, as when
    its numbers were committed; the ridge STN does the same).
  - ``stn_official``: the same STN with the official script's recipe
    (:meth:`regzoo.methods.stn.STNConfig.official`): a validation stream that runs on across
    epochs, φ's learning rate ×0.1 when the epoch's validation NLL exceeds the best from before
    the last 60 epochs, a stop after 75 epochs without a new best or once the learning rate is
    below 1e-5, and the best-validation network and rates restored at the end; ``epochs`` (150)
    caps it (the script has no cap; on seeds 0-4 it stopped by itself after 72-114 epochs, so
    a cap of 500 gave the same numbers). Its test curve is averaged over the epochs every seed
    ran.
  - ``stn_replay``: a plain network trained from scratch with STN's learned per-epoch rates (the
    paper's schedule experiment: is the schedule itself what helps?).
  - ``fixed``: a plain network at the starting rates 0.05.
  - ``grid``: one shared rate from {0.05, 0.2, 0.4, 0.6, 0.8}, the run with the lowest final
    validation NLL kept (5 full runs).
  - ``random``: per-layer rates drawn uniformly from (0, 0.9), 5 runs, lowest validation NLL kept.

  Metrics: the final test NLL (the paper compares losses) and accuracy, the final rates, and the
  training seconds of the whole search (one STN run vs all grid or random runs); for
  ``stn_official`` also ``epochs_run`` and ``best_epoch`` (1-based, the epoch restored).
* ``ridge``: the deterministic check of the spec: linear regression, d = 50 features, 40 training
  / 100 validation / 2000 test points, noise std 0.5, the L2 strength λ tuned on a log scale from
  λ₀ = 3. ``stn`` is a one-output HyperLinear trained on the per-example ridge objective
  ``(ŵᵢ·xᵢ − yᵢ)² + λᵢ‖ŵᵢ‖²`` (6000 full-batch steps, SGD 0.003, Adam on log λ at 1e-2);
  ``initial`` and ``optimal`` are closed-form ridge at λ₀ and at the validation-optimal λ* of a
  241-point sweep over [1e-4, 1e2]. Metrics: |log10 λ/λ*| and the closed-form validation and
  test MSE at each arm's λ.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from regzoo.data import TensorBatches, load_digits
from regzoo.methods.stn import (
    HyperBatch,
    HyperLinear,
    HyperMLP,
    Hyperparameter,
    HyperparameterSpace,
    STNConfig,
    STNResult,
    fit_stn,
)
from regzoo.metrics import classification_metrics, predict_logits
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import Claim, Reproduction, Unit, UnitEnv, UnitResult, shared_once
from regzoo.train import fit, seed_everything, time_steps
from regzoo.train.distributed import local_only

DIGITS_ARMS = ("stn", "stn_official", "stn_replay", "fixed", "grid", "random")
RIDGE_ARMS = ("stn", "initial", "optimal")
SETTINGS = ("digits_dropout", "ridge")
RATE_NAMES = ("drop1", "drop2")
NUM_POOL = 720
"""Digits drawn per seed for training + validation (spec §5: 360 / 360 / 1077)."""


@dataclasses.dataclass(frozen=True)
class STNReproConfig(ReproConfig):
    """Settings of the STN reproduction; presets ``tiny``, ``quick`` and ``full``."""

    positive_fields = ("epochs", "batch_size", "lr", "hyper_lr", "ridge_epochs", "random_trials")

    settings: tuple[str, ...] = SETTINGS
    arms: tuple[str, ...] = DIGITS_ARMS
    hidden: tuple[int, ...] = (256, 256)
    epochs: int = 150
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    start_rate: float = 0.05
    max_rate: float = 0.9
    hyper_lr: float = 3e-2
    scale_lr: float = 3e-3
    entropy_weight: float = 1e-3
    warmup_epochs: int = 5
    grid_rates: tuple[float, ...] = (0.05, 0.2, 0.4, 0.6, 0.8)
    random_trials: int = 5
    ridge_epochs: int = 6000
    ridge_lr: float = 3e-3
    ridge_hyper_lr: float = 1e-2
    ridge_init: float = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.settings or any(s not in SETTINGS for s in self.settings):
            raise ValueError(f"settings must be a non-empty subset of {SETTINGS}, got "
                             f"{self.settings}")
        if not {"stn", "grid"} <= set(self.arms) or any(a not in DIGITS_ARMS for a in self.arms):
            raise ValueError(f"arms must be a subset of {DIGITS_ARMS} including 'stn' and "
                             f"'grid' (the claim's pair), got {self.arms}")
        if not 0 < self.start_rate < self.max_rate < 1:
            raise ValueError(f"need 0 < start_rate < max_rate < 1, got {self.start_rate}, "
                             f"{self.max_rate}")
        if not self.grid_rates or any(not 0 <= r < 1 for r in self.grid_rates):
            raise ValueError(f"grid_rates must be rates in [0, 1), got {self.grid_rates}")

    @classmethod
    def tiny(cls) -> STNReproConfig:
        return cls(seeds=(0,), hidden=(16, 16), epochs=8, warmup_epochs=2,
                   grid_rates=(0.05, 0.5), random_trials=2, ridge_epochs=40)

    @classmethod
    def quick(cls) -> STNReproConfig:
        return cls(seeds=(0, 1, 2))

    @classmethod
    def full(cls) -> STNReproConfig:
        return cls(seeds=tuple(range(10)))


class DropoutMLP(nn.Module):
    """A plain MLP whose per-layer dropout rates can change between epochs (the replay arm)."""

    def __init__(self, sizes: Sequence[int], rates: Sequence[float]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in itertools.pairwise(sizes))
        self.rates = list(rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer, rate in zip(self.layers[:-1], self.rates):
            x = F.dropout(F.relu(layer(x)), rate, self.training)
        return self.layers[-1](x)


def digits_split(seed: int) -> dict[str, torch.Tensor]:
    """The seed's 360 train / 360 validation / 1077 test digits (stratified)."""
    from sklearn.model_selection import train_test_split

    data = load_digits(seed=seed, test_fraction=1 - NUM_POOL / 1797)
    train, val = train_test_split(np.arange(NUM_POOL), test_size=0.5,
                                  stratify=data.y_train.numpy(), random_state=seed)
    return {"x_train": data.x_train[train], "y_train": data.y_train[train],
            "x_val": data.x_train[val], "y_val": data.y_train[val],
            "x_test": data.x_test, "y_test": data.y_test}


def _losses(model: nn.Module, data: dict[str, torch.Tensor]) -> dict[str, float]:
    # predict_logits returns CPU logits, whatever the model's device.
    val = classification_metrics(predict_logits(model, data["x_val"]), data["y_val"].cpu())
    test = classification_metrics(predict_logits(model, data["x_test"]), data["y_test"].cpu())
    return {"val_nll": val["nll"], "test_nll": test["nll"], "test_accuracy": test["accuracy"]}


def train_plain(config: STNReproConfig, data: dict[str, torch.Tensor], seed: int,
                 rates_at: Callable[[int], Sequence[float]]) -> dict[str, Any]:
    """Train a plain dropout MLP; ``rates_at(epoch)`` gives the per-layer rates of each epoch.

    It trains on the device of ``data`` (initialised on the CPU first, so a seed draws the same
    network on any device).
    """
    seed_everything(seed)
    model = DropoutMLP([64, *config.hidden, 10], rates_at(0)).to(data["x_train"].device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)

    def step(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return F.cross_entropy(net(batch[0]), batch[1])

    def set_rates(epoch: int) -> None:
        model.rates = list(rates_at(epoch))

    started = time.perf_counter()
    history = fit(model, TensorBatches(data["x_train"], data["y_train"], config.batch_size,
                                       seed=seed),
                  step, optimizer, epochs=config.epochs, on_epoch_start=set_rates,
                  evaluate=lambda net, epoch: {"test_loss": _losses(net, data)["test_nll"]},
                  progress=False)
    seconds = time.perf_counter() - started
    return {**_losses(model, data), "seconds": seconds, "curve": history.curve("test_loss")}


def run_stn(config: STNReproConfig, data: dict[str, torch.Tensor], seed: int,
             env: UnitEnv | None, *, official: bool = False) -> dict[str, Any]:
    """One STN run tuning both dropout rates; metrics, learned schedule and test curve.

    ``official`` adds the official script's recipe (the ``stn_official`` arm). It trains on the
    device of ``data``.
    """
    seed_everything(seed)
    space = HyperparameterSpace({name: Hyperparameter(config.start_rate, 0.0, config.max_rate)
                                 for name in RATE_NAMES})
    net = HyperMLP(64, 10, config.hidden, RATE_NAMES, hyper_dim=len(space))
    net.to(data["x_train"].device)
    settings = {"epochs": config.epochs, "train_lr": config.lr, "momentum": config.momentum,
                "hyper_lr": config.hyper_lr, "scale_lr": config.scale_lr,
                "warmup_epochs": config.warmup_epochs, "entropy_weight": config.entropy_weight}
    # The stn arm keeps the per-epoch validation stream its committed numbers were run with.
    stn_config = (STNConfig.official(**settings) if official
                  else STNConfig(**settings, val_stream="per_epoch"))
    started = time.perf_counter()
    result = fit_stn(
        net, space, TensorBatches(data["x_train"], data["y_train"], config.batch_size, seed=seed),
        TensorBatches(data["x_val"], data["y_val"], config.batch_size, seed=seed + 1),
        config=stn_config,
        evaluate=lambda model, epoch: {"test_loss": _losses(model, data)["test_nll"]},
        checkpoint_path=env.checkpoint_path if env else None,
        checkpoint_every=10, resume=env.resume if env else False,
        progress=env.progress if env else False, log=env.log if env else None,
    )
    seconds = time.perf_counter() - started
    schedule = [[record[f"hp/{name}"] for name in RATE_NAMES] for record in result.schedule]
    final = result.space.current()
    run = {**_losses(result.model, data), "seconds": seconds, "schedule": schedule,
           "curve": result.history.curve("test_loss"),
           "rate_layer1": final["drop1"], "rate_layer2": final["drop2"],
           "hyper_steps": result.hyper_steps}
    if official:
        run.update(epochs_run=len(result.history.records), best_epoch=result.best_epoch + 1)
    return run


def _search(config: STNReproConfig, data: dict[str, torch.Tensor], seed: int,
            candidates: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Train every candidate's rates; keep the lowest final validation NLL."""
    runs = [(rates, train_plain(config, data, seed, lambda epoch, r=rates: r))
            for rates in candidates]
    rates, best = min(runs, key=lambda run: run[1]["val_nll"])
    return {**best, "seconds": sum(run["seconds"] for _, run in runs),
            "rate_layer1": rates[0], "rate_layer2": rates[1], "trials": len(runs)}


def _digits_unit(config: STNReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
    data = {name: value.to(env.device) for name, value in digits_split(unit.seed).items()}
    if unit.arm == "stn_official":
        run = run_stn(config, data, unit.seed, env, official=True)
    elif unit.arm in ("stn", "stn_replay"):
        # Both arms need the seed's STN run: computed once per run folder, shared by file. Under
        # torchrun one rank computes it alone while the others wait on the file lock, so its
        # training must issue no collective (it would wait for ranks that never join).
        with local_only():
            run = shared_once(env.workdir, f"stn_digits_seed{unit.seed}",
                              lambda: run_stn(config, data, unit.seed, None))
        if unit.arm == "stn_replay":
            schedule = run["schedule"]
            run = {**train_plain(config, data, unit.seed, lambda epoch: schedule[epoch]),
                   "rate_layer1": schedule[-1][0], "rate_layer2": schedule[-1][1]}
    elif unit.arm == "fixed":
        rates = (config.start_rate, config.start_rate)
        run = {**train_plain(config, data, unit.seed, lambda epoch: rates),
               "rate_layer1": rates[0], "rate_layer2": rates[1]}
    elif unit.arm == "grid":
        run = _search(config, data, unit.seed, [(r, r) for r in config.grid_rates])
    else:
        draw = torch.Generator().manual_seed(10_000 + unit.seed)
        rates = (torch.rand(config.random_trials, 2, generator=draw) * config.max_rate).tolist()
        run = _search(config, data, unit.seed, [tuple(r) for r in rates])
    metrics = {k: float(v) for k, v in run.items()
               if k in ("val_nll", "test_nll", "test_accuracy", "seconds", "rate_layer1",
                        "rate_layer2", "hyper_steps", "trials", "epochs_run", "best_epoch")}
    curves = {"test_loss": run["curve"]}
    if "schedule" in run:
        schedule = run["schedule"]
        curves.update({"rate_layer1": [r[0] for r in schedule],
                       "rate_layer2": [r[1] for r in schedule]})
        if unit.arm == "stn":
            # Have the rates settled? Their mean change over the last quarter of training.
            back = schedule[-1 - max(1, len(schedule) // 4)]
            metrics["rate_change_last_quarter"] = sum(
                now - then for now, then in zip(schedule[-1], back)) / len(back)
    return UnitResult(metrics, curves)


def ridge_problem(seed: int, dim: int = 50, n_train: int = 40, n_val: int = 100,
                  n_test: int = 2000, noise: float = 0.5) -> dict[str, torch.Tensor]:
    """A seeded linear regression task with fewer training points than features."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g) / math.sqrt(dim)
    x = torch.randn(n_train + n_val + n_test, dim, generator=g)
    y = x @ w + noise * torch.randn(x.shape[0], generator=g)
    cut = (n_train, n_train + n_val)
    return {"x_train": x[:cut[0]], "y_train": y[:cut[0]], "x_val": x[cut[0]:cut[1]],
            "y_val": y[cut[0]:cut[1]], "x_test": x[cut[1]:], "y_test": y[cut[1]:]}


def ridge_errors(data: dict[str, torch.Tensor], lam: float) -> dict[str, float]:
    """Validation and test MSE of closed-form ridge, argmin (1/n)‖Xw − y‖² + λ‖w‖²."""
    x, y = data["x_train"].double(), data["y_train"].double()
    gram = x.T @ x / x.shape[0] + lam * torch.eye(x.shape[1], dtype=torch.float64,
                                                  device=x.device)
    w = torch.linalg.solve(gram, x.T @ y / x.shape[0])
    return {f"{part}_mse": float(((data[f"x_{part}"].double() @ w
                                   - data[f"y_{part}"].double()) ** 2).mean())
            for part in ("val", "test")}


RIDGE_SWEEP = torch.logspace(-4, 2, 241, dtype=torch.float64)


def ridge_optimum(data: dict[str, torch.Tensor]) -> float:
    """The validation-optimal λ of a dense sweep of closed-form solutions."""
    errors = [ridge_errors(data, float(lam))["val_mse"] for lam in RIDGE_SWEEP]
    return float(RIDGE_SWEEP[min(range(len(errors)), key=errors.__getitem__)])


class _RidgeNet(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = HyperLinear(dim, 1, hyper_dim=1, bias=False)

    def forward(self, x: torch.Tensor, hyper: HyperBatch) -> torch.Tensor:
        return self.linear(x, hyper.net_input).squeeze(1)


def _ridge_train_loss(model: nn.Module, batch: Any, hyper: HyperBatch) -> torch.Tensor:
    weight = model.linear.effective_weight(hyper.net_input)[:, 0, :]
    fit_term = ((weight * batch[0]).sum(dim=1) - batch[1]) ** 2
    return (fit_term + hyper["l2"] * weight.pow(2).sum(dim=1)).mean()


def _ridge_val_loss(model: nn.Module, batch: Any, hyper: HyperBatch) -> torch.Tensor:
    return F.mse_loss(model(batch[0], hyper), batch[1])


def run_stn_ridge(config: STNReproConfig, data: dict[str, torch.Tensor],
                  seed: int) -> STNResult:
    """STN tuning the L2 strength of a one-output HyperLinear on ``data`` (log scale)."""
    seed_everything(seed)
    space = HyperparameterSpace({"l2": Hyperparameter(config.ridge_init, 0.0, math.inf,
                                                      scale="log")})
    n_train, n_val = data["x_train"].shape[0], data["x_val"].shape[0]
    return fit_stn(
        _RidgeNet(data["x_train"].shape[1]).to(data["x_train"].device), space,
        TensorBatches(data["x_train"], data["y_train"], n_train, seed=seed),
        TensorBatches(data["x_val"], data["y_val"], n_val, seed=seed),
        config=STNConfig(epochs=config.ridge_epochs, train_lr=config.ridge_lr,
                         momentum=config.momentum, hyper_lr=config.ridge_hyper_lr,
                         warmup_epochs=min(config.warmup_epochs, config.ridge_epochs - 1),
                         val_stream="per_epoch"),
        train_loss=_ridge_train_loss, val_loss=_ridge_val_loss, progress=False,
        evaluate=lambda model, epoch: {"test_loss": float(F.mse_loss(model(data["x_test"]),
                                                                     data["y_test"]))},
    )


def _ridge_unit(config: STNReproConfig, unit: Unit, device: torch.device) -> UnitResult:
    data = {name: value.to(device) for name, value in ridge_problem(unit.seed).items()}
    best = ridge_optimum(data)
    curves: dict[str, list[float]] = {}
    metrics: dict[str, float] = {}
    if unit.arm == "stn":
        result = run_stn_ridge(config, data, unit.seed)
        lam = result.space.current()["l2"]
        metrics["network_test_mse"] = result.history.last["test_loss"]
        curves["log10_lambda_ratio"] = [math.log10(r["hp/l2"] / best) for r in result.schedule]
        curves["test_loss"] = result.history.curve("test_loss")
    else:
        lam = config.ridge_init if unit.arm == "initial" else best
    metrics.update(ridge_errors(data, lam))
    metrics.update({"lambda": lam, "optimal_lambda": best,
                    "log10_lambda_error": abs(math.log10(lam / best))})
    return UnitResult(metrics, curves)


class STNReproduction(Reproduction):
    """STN vs fixed, grid-searched and random-searched dropout on digits; λ on ridge."""

    slug = "stn"
    config_type = STNReproConfig
    title = ("Self-Tuning Networks: Bilevel Optimization of Hyperparameters using Structured "
             "Best-Response Functions")
    plot_curves = (("test_loss", "test NLL (digits), MSE (ridge)"),)
    arm_labels = {"stn": "STN", "stn_official": "STN, official recipe",
                  "stn_replay": "STN schedule replayed", "fixed": "fixed 0.05",
                  "grid": "grid (5 runs)", "random": "random (5 runs)",
                  "initial": "λ₀ (start)", "optimal": "λ* (val-optimal)"}
    table_metrics = ("test_nll", "test_accuracy", "val_nll", "rate_layer1", "rate_layer2",
                     "rate_change_last_quarter", "epochs_run", "best_epoch", "seconds", "lambda",
                     "log10_lambda_error", "val_mse", "test_mse")
    extra_row_label = "STN's hyperparameters"
    unit_axes = ("seeds", "arms", "settings")

    def units(self, config: STNReproConfig) -> list[Unit]:
        # Ridge first: the plot's last column carries the legend, and digits has every arm.
        units = []
        if "ridge" in config.settings:
            units += [Unit("ridge", arm, s) for arm in RIDGE_ARMS for s in config.seeds]
        if "digits_dropout" in config.settings:
            slow_first = sorted(config.arms, key=lambda a: a not in ("grid", "random"))
            units += [Unit("digits_dropout", arm, s) for arm in slow_first for s in config.seeds]
        return units

    def run_unit(self, config: STNReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        if unit.setting == "ridge":
            return _ridge_unit(config, unit, env.device)
        return _digits_unit(config, unit, env)

    def claim(self, config: STNReproConfig) -> Claim:
        return Claim(
            statement="STN's online dropout schedule, started at a poor 0.05, ends with a lower "
            "test NLL than the best shared rate of a 5-point grid selected on validation NLL "
            "(paper §5, Table 2: STN beats grid and random search).",
            metric="test_nll", setting="digits_dropout", method="stn", baseline="grid",
            margin=0.0, higher_is_better=False,
        )

    def secondary_claims(self, config: STNReproConfig) -> list[Claim]:
        claims = []
        if "digits_dropout" in config.settings:
            if "stn_official" in config.arms:
                claims.append(Claim(
                    "With the official script's recipe (learning-rate decay, early stopping, "
                    "the best-validation state restored) STN also ends with a lower test NLL "
                    "than the best shared rate of the 5-point grid.", "test_nll",
                    "digits_dropout", "stn_official", "grid", margin=0.0,
                    higher_is_better=False))
            if "fixed" in config.arms:
                claims.append(Claim(
                    "STN moves a poor starting dropout rate to a better one: test NLL at least "
                    "0.02 below fixed rates 0.05.", "test_nll", "digits_dropout", "stn", "fixed",
                    margin=0.02, higher_is_better=False))
            if "random" in config.arms:
                claims.append(Claim(
                    "STN beats 5 random per-layer rate pairs selected on validation NLL.",
                    "test_nll", "digits_dropout", "stn", "random", margin=0.0,
                    higher_is_better=False))
            if {"stn_replay", "fixed"} <= set(config.arms):
                claims.append(Claim(
                    "Replaying STN's schedule in a plain network from scratch keeps a gain over "
                    "the fixed starting rates (paper §5: the schedule itself helps).",
                    "test_nll", "digits_dropout", "stn_replay", "fixed", margin=0.0,
                    higher_is_better=False))
        if "ridge" in config.settings:
            claims.append(Claim(
                "On ridge regression STN's λ approaches the validation-optimal λ*: its "
                "|log10 λ/λ*| is at least half a decade below the start's.",
                "log10_lambda_error", "ridge", "stn", "initial", margin=0.5,
                higher_is_better=False))
        return claims

    def draw_extra_row(self, ax: Any, setting: str, result: dict[str, Any]) -> bool:
        stn = result["metrics"]["curves"].get(setting, {}).get("stn", {})
        names = {"digits_dropout": (("rate_layer1", "dropout rate, layer 1"),
                                    ("rate_layer2", "dropout rate, layer 2")),
                 "ridge": (("log10_lambda_ratio", "log10 λ/λ*"),)}[setting]
        drawn = False
        for name, label in names:
            if name in stn:
                mean = stn[name]["mean"]
                ax.plot(range(1, len(mean) + 1), mean, label=label, lw=1.5)
                drawn = True
        if drawn:
            if setting == "ridge":
                ax.axhline(0.0, color="0.3", ls="--", lw=1, label="λ* (val-optimal)")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
        return drawn

    def timing(self, config: STNReproConfig, device: torch.device) -> dict[str, Any]:
        torch.manual_seed(0)
        data = digits_split(0)
        x = data["x_train"][: config.batch_size].to(device)
        y = data["y_train"][: config.batch_size].to(device)
        plain = DropoutMLP([64, *config.hidden, 10], (0.05, 0.05)).to(device)
        space = HyperparameterSpace({n: Hyperparameter(0.05, 0.0, 0.9)
                                     for n in RATE_NAMES}).to(device)
        hyper_net = HyperMLP(64, 10, config.hidden, RATE_NAMES, len(space)).to(device)
        plain_opt = torch.optim.SGD(plain.parameters(), lr=1e-3)
        phi_opt = torch.optim.SGD(hyper_net.parameters(), lr=1e-3)
        hyper_opt = torch.optim.Adam(space.parameters(), lr=1e-3)

        def plain_step() -> None:
            plain_opt.zero_grad(set_to_none=True)
            F.cross_entropy(plain(x), y).backward()
            plain_opt.step()

        def weight_step() -> None:
            phi_opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                hyper = space.batch(x.shape[0], perturb=True)
            F.cross_entropy(hyper_net(x, hyper), y).backward()
            phi_opt.step()

        def hyper_step() -> None:
            hyper_net.eval()
            loss = F.cross_entropy(hyper_net(x, space.batch(x.shape[0], perturb=True)), y)
            grads = torch.autograd.grad(loss - 1e-3 * space.entropy(), list(space.parameters()))
            for p, g in zip(space.parameters(), grads):
                p.grad = g
            hyper_opt.step()
            hyper_net.train()

        seconds = time_steps({"plain": plain_step, "weight": weight_step, "hyper": hyper_step},
                             device=device)
        per_train_step = (2 * seconds["weight"] + seconds["hyper"]) / 2
        return {"plain_step_seconds": seconds["plain"],
                "stn_weight_step_seconds": seconds["weight"],
                "stn_hyper_step_seconds": seconds["hyper"],
                "stn_per_training_step_over_plain": per_train_step / seconds["plain"]}

    def note(self, config: STNReproConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        parts = []
        digits = aggregate.get("digits_dropout", {})

        def mean(arm: str, metric: str, where: dict[str, Any] = digits) -> float:
            value = where.get(arm, {}).get(metric)
            return math.nan if value is None else value["mean"]

        if "stn" in digits:
            stn_seconds, grid_seconds = mean("stn", "seconds"), mean("grid", "seconds")
            change = mean("stn", "rate_change_last_quarter")
            parts.append(
                f"Digits: STN's rates moved from {config.start_rate} to "
                f"({mean('stn', 'rate_layer1'):.2f}, {mean('stn', 'rate_layer2'):.2f}) on average; "
                f"test NLL STN {mean('stn', 'test_nll'):.3f}, grid {mean('grid', 'test_nll'):.3f}"
                + "".join(f", {self.arm_labels[a]} {mean(a, 'test_nll'):.3f}"
                          for a in ("stn_official", "random", "fixed", "stn_replay")
                          if a in digits)
                + f". Training seconds per search: STN {stn_seconds:.1f}, grid "
                f"{grid_seconds:.1f} (×{grid_seconds / stn_seconds:.1f}; parallel processes on a "
                "shared machine, so wall times are indicative). The "
                "STN network carries a second weight set per layer (≈2× parameters) and sees the "
                "validation set through its hyper steps; the grid shares one rate across both "
                "layers, the random search does not."
                + (f" Over the last quarter of the epochs STN's rates changed by {change:+.3f} "
                   "on average (0 would mean settled)." if math.isfinite(change) else "")
                + (f" With the official recipe STN ran {mean('stn_official', 'epochs_run'):.0f} "
                   f"of {config.epochs} epochs on average and kept epoch "
                   f"{mean('stn_official', 'best_epoch'):.0f}'s network and rates "
                   f"({mean('stn_official', 'rate_layer1'):.2f}, "
                   f"{mean('stn_official', 'rate_layer2'):.2f})."
                   if "stn_official" in digits else "")
                + " The spec's prototype (a separate "
                "re-implementation, seeds 0-3) measured STN 0.164 against a grid best of 0.206; "
                "the grid here is stronger and the STN-grid difference stays within its "
                "seed-to-seed noise. Only the paper's settings with the spec's hyper learning "
                "rate were run; nothing was tuned per arm or seed.")
        ridge = aggregate.get("ridge", {})
        if "stn" in ridge:
            parts.append(
                f"Ridge: λ* averaged {mean('optimal', 'lambda', ridge):.3g}; STN ended at "
                f"{mean('stn', 'lambda', ridge):.3g} from λ₀ = {config.ridge_init} "
                f"(|log10 λ/λ*| {mean('stn', 'log10_lambda_error', ridge):.2f} vs "
                f"{mean('initial', 'log10_lambda_error', ridge):.2f} at the start); validation "
                f"MSE {mean('stn', 'val_mse', ridge):.4f} vs "
                f"{mean('optimal', 'val_mse', ridge):.4f} at λ*.")
        return " ".join(parts)


REPRODUCTION = STNReproduction()
