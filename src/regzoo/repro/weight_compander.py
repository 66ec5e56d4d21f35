"""Weight Compander at CPU scale: small-data digits, an over-parameterised MLP (spec §5).

Data: 200 training images of scikit-learn's digits (stratified, drawn by the seed), the other
1597 for testing. Model: MLP 64-512-512-10. All arms: SGD lr 0.05, momentum 0.9, weight decay
5e-4 (the paper's recipe: SGD with momentum, the baseline's decay), batch 32, cosine decay over
200 epochs, same seed → same split and same initial weights.

Arms: ``wd`` (plain network, weight decay); ``wc_fixed`` (arctan compander, one (a, b) for the
network, chosen from the paper's grid {0.5,…,1.0}² by accuracy on a 150/50 split of the first
seed's training set, then used for every seed — the paper's protocol, one seed; with
``grid=false`` the default a = b = 0.7);
``wc_learned`` (per-layer a, b learned from 0.5, 1.0, paper §III-B; their learning rate is a
tenth of the weights' — the paper gives none, and with the shared rate the variant collapsed here
to chance accuracy, a → 0.04, measured on seed 0); ``weight_norm`` (the paper's
comparison, ``torch.nn.utils.parametrizations.weight_norm`` on every Linear layer).
Besides accuracy and NLL the run records the effective weights' structure, which the paper
argues is the mechanism: largest |W|, share of |W| < 0.01·std(W), and excess kurtosis.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.data import TensorBatches, load_digits
from regzoo.methods.weight_compander import PAPER_GRID, WeightCompander
from regzoo.metrics import classification_metrics, predict_logits
from regzoo.models import MLP
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import (
    Claim,
    Reproduction,
    Unit,
    UnitEnv,
    UnitResult,
    shared_once,
)
from regzoo.train import fit, seed_everything, time_steps
from regzoo.train.distributed import DistributedContext, local_only

ARMS = ("wd", "wc_fixed", "wc_learned", "weight_norm")
NUM_TRAIN = 200


@dataclasses.dataclass(frozen=True)
class WCReproConfig(ReproConfig):
    """Settings of the Weight Compander reproduction; presets ``tiny``, ``quick``, ``full``."""

    arms: tuple[str, ...] = ARMS
    hidden: tuple[int, ...] = (512, 512)
    epochs: int = 200
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grid: bool = True
    grid_values: tuple[float, ...] = PAPER_GRID
    grid_seed: int = 0
    """The one seed the (a, b) grid is searched on (a field of its own, so adding seeds on
    --resume cannot change the grid that earlier units used)."""
    a: float = 0.7
    b: float = 0.7
    learned_shape_lr_scale: float = 0.1
    checkpoint_every: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.arms or any(a not in ARMS for a in self.arms) or "wd" not in self.arms:
            raise ValueError(f"arms must be a subset of {ARMS} that includes 'wd', got "
                             f"{self.arms}")
        if self.grid and not self.grid_values:
            raise ValueError("grid_values is empty; give values for a and b or set grid=false")
        if isinstance(self.grid_seed, bool) or not isinstance(self.grid_seed, int) or (
                self.grid_seed < 0):
            raise ValueError(f"grid_seed must be a non-negative integer, got {self.grid_seed!r}")

    @classmethod
    def tiny(cls) -> WCReproConfig:
        return cls(seeds=(0,), epochs=2, hidden=(32,), grid_values=(0.7, 1.0),
                   checkpoint_every=1)

    @classmethod
    def quick(cls) -> WCReproConfig:
        return cls(seeds=(0, 1, 2), epochs=100, grid=False)

    @classmethod
    def full(cls) -> WCReproConfig:
        return cls(seeds=tuple(range(10)))


def weight_statistics(model: nn.Module) -> dict[str, float]:
    """Structure of the effective weights of every Linear layer, pooled (biases excluded)."""
    weights = torch.cat([m.weight.detach().flatten() for m in model.modules()
                         if isinstance(m, nn.Linear)]).double()
    centred = weights - weights.mean()
    std = centred.std()
    return {
        "max_abs_weight": float(weights.abs().max()),
        "near_zero_fraction": float((weights.abs() < 0.01 * std).double().mean()),
        "excess_kurtosis": float((centred**4).mean() / std**4 - 3.0),
    }


def _train(config: WCReproConfig, arm: str, a: float, b: float, x: torch.Tensor,
           y: torch.Tensor, seed: int, epochs: int, evaluate: Any = None,
           env: UnitEnv | None = None) -> tuple[nn.Module, Any, WeightCompander | None]:
    seed_everything(seed)
    model = MLP(x.shape[1], 10, hidden=config.hidden)
    handle = None
    if arm in ("wc_fixed", "wc_learned"):
        handle = WeightCompander.apply(model, a=a, b=b) if arm == "wc_fixed" else \
            WeightCompander.apply(model, learn=True)
        groups = handle.param_groups(config.weight_decay,
                                     shape_lr=config.lr * config.learned_shape_lr_scale)
    else:
        if arm == "weight_norm":
            for layer in [m for m in model.modules() if isinstance(m, nn.Linear)]:
                nn.utils.parametrizations.weight_norm(layer)
        groups = [{"params": list(model.parameters()), "weight_decay": config.weight_decay}]
    optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    def step(net: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        xb, yb, _ = batch
        loss = F.cross_entropy(net(xb), yb)
        if handle is not None:
            loss = loss + config.weight_decay * handle.penalty()
        return loss

    context = env.context if env is not None else DistributedContext(0, 1, 0,
                                                                     torch.device("cpu"))
    history = fit(
        model, TensorBatches(x, y, config.batch_size, seed=seed), step, optimizer,
        epochs=epochs, scheduler=scheduler, evaluate=evaluate, context=context,
        state={"shapes": nn.ModuleList(handle.shapes)} if handle is not None else None,
        checkpoint_path=env.checkpoint_path if env is not None else None,
        checkpoint_every=config.checkpoint_every, resume=env.resume if env else False,
        progress=env.progress if env is not None else False, log=env.log if env else None,
    )
    return model, history, handle


def _select_shape(config: WCReproConfig, seed: int) -> tuple[float, float, float]:
    """Grid-search (a, b) on a 150/50 split of seed's training set; return (a, b, accuracy)."""
    from sklearn.model_selection import train_test_split

    data = load_digits(seed=seed, test_fraction=1 - NUM_TRAIN / 1797)
    x, y = data.x_train, data.y_train
    fit_idx, val_idx = train_test_split(torch.arange(x.shape[0]).numpy(), test_size=0.25,
                                        stratify=y.numpy(), random_state=seed)
    best = (config.a, config.b, -1.0)
    for a, b in itertools.product(config.grid_values, repeat=2):
        model, _, _ = _train(config, "wc_fixed", a, b, x[fit_idx], y[fit_idx], seed,
                             config.epochs)
        accuracy = float((predict_logits(model, x[val_idx]).argmax(1) == y[val_idx]).float()
                         .mean())
        if accuracy > best[2]:
            best = (a, b, accuracy)
    return best


class WeightCompanderReproduction(Reproduction):
    """WC (fixed and learned) vs weight decay and weight normalisation on small-data digits."""

    slug = "weight_compander"
    config_type = WCReproConfig
    title = "Weight Compander: A Simple Weight Reparameterization for Regularization"
    plot_curves = (("test_accuracy", "test accuracy"), ("test_nll", "test NLL"))
    arm_labels = {"wd": "weight decay", "wc_fixed": "WC fixed (a, b)",
                  "wc_learned": "WC learned", "weight_norm": "weight norm"}
    unit_axes = ("seeds", "arms")
    table_metrics = ("final_test_accuracy", "final_test_nll", "max_abs_weight",
                     "near_zero_fraction", "excess_kurtosis")

    def units(self, config: WCReproConfig) -> list[Unit]:
        # The first wc_fixed unit runs the grid search: schedule it first and the other
        # wc_fixed units last, so the other processes train the remaining arms meanwhile.
        units = [Unit("digits200", arm, seed) for arm in config.arms for seed in config.seeds]
        fixed = [u for u in units if u.arm == "wc_fixed"]
        rest = [u for u in units if u.arm != "wc_fixed"]
        return fixed[:1] + rest + fixed[1:]

    def claim(self, config: WCReproConfig) -> Claim:
        return Claim(
            statement="Weight Compander with fixed (a, b) raises final test accuracy over weight "
            "decay alone on small-data digits (paper Table II: +0.2 to +1.6 points).",
            metric="final_test_accuracy", setting="digits200", method="wc_fixed",
            baseline="wd", margin=0.0,
        )

    def run_unit(self, config: WCReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        data = load_digits(seed=unit.seed, test_fraction=1 - NUM_TRAIN / 1797)
        x, y = data.x_train, data.y_train

        def evaluate(model: nn.Module, epoch: int) -> dict[str, float]:
            test = classification_metrics(predict_logits(model, data.x_test), data.y_test)
            return {"test_accuracy": test["accuracy"], "test_nll": test["nll"],
                    "test_ece": test["ece"]}

        a, b, validation = config.a, config.b, 0.0
        if unit.arm == "wc_fixed" and config.grid:
            # The paper grid-searches once, on one seed: done by the first unit that needs it.
            first = config.grid_seed
            with local_only():  # one process searches; under torchrun the others wait
                chosen = shared_once(env.workdir, f"grid_seed{first}", lambda: dict(zip(
                    ("a", "b", "validation_accuracy"), _select_shape(config, first))))
            a, b, validation = chosen["a"], chosen["b"], chosen["validation_accuracy"]
        model, history, handle = _train(config, unit.arm, a, b, x, y, unit.seed, config.epochs,
                                        evaluate, env)
        metrics = {"final_test_accuracy": history.last["test_accuracy"],
                   "final_test_nll": history.last["test_nll"],
                   "final_test_ece": history.last["test_ece"]}
        if handle is not None:
            shapes = handle.shapes_now()
            metrics.update({"a_first_layer": shapes[0][0], "b_first_layer": shapes[0][1]})
            if unit.arm == "wc_fixed" and config.grid:
                metrics["grid_validation_accuracy"] = validation
            handle.merge()
        metrics.update(weight_statistics(model))
        return UnitResult(metrics, {"test_accuracy": history.curve("test_accuracy"),
                                    "test_nll": history.curve("test_nll")})

    def timing(self, config: WCReproConfig, device: torch.device) -> dict[str, Any]:
        data = load_digits(seed=0)
        x = data.x_train[:64].to(device)
        y = data.y_train[:64].to(device)
        steps = {}
        models = {}
        for arm in ("plain", "wc", "folded"):
            torch.manual_seed(0)
            model = MLP(64, 10, hidden=config.hidden).to(device)
            if arm != "plain":
                handle = WeightCompander.apply(model)
                if arm == "folded":
                    handle.merge()
            optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
            models[arm] = (model, optimizer)

            def step(model: nn.Module = model, optimizer: Any = optimizer) -> None:
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
            steps[arm] = step
        seconds = time_steps(steps, device=device)
        return {"plain_step_seconds": seconds["plain"], "wc_step_seconds": seconds["wc"],
                "wc_over_plain": seconds["wc"] / seconds["plain"],
                "folded_over_plain": seconds["folded"] / seconds["plain"]}

    def note(self, config: WCReproConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        arms = aggregate["digits200"]

        def mean(arm: str, metric: str) -> float | None:
            value = arms.get(arm, {}).get(metric)
            return None if value is None else value["mean"]

        parts = []
        for arm in config.arms:
            if arm == "wd" or mean(arm, "max_abs_weight") is None:
                continue
            ratios = ", ".join(
                f"{label} ×{mean(arm, metric) / mean('wd', metric):.2f}"
                for metric, label in (("max_abs_weight", "max|W|"),
                                      ("near_zero_fraction", "near-zero share"))
            )
            parts.append(f"{self.arm_labels[arm]}: {ratios}, excess kurtosis "
                         f"{mean(arm, 'excess_kurtosis'):.2f} (weight decay "
                         f"{mean('wd', 'excess_kurtosis'):.2f}), test NLL "
                         f"{mean(arm, 'final_test_nll'):.3f} (weight decay "
                         f"{mean('wd', 'final_test_nll'):.3f})")
        chosen = arms.get("wc_fixed", {})
        picked = ""
        if "a_first_layer" in chosen:
            pair = (chosen["a_first_layer"]["values"][0], chosen["b_first_layer"]["values"][0])
            picked = f" WC fixed used (a, b) = {pair}" + (
                " from the paper's grid, searched on the first seed." if config.grid
                else " (no grid search).")
        return ("Effective weights after training, relative to weight decay alone (means over "
                "seeds) — " + "; ".join(parts) + "." + picked + " The spec expected WC to lower "
                "the largest weight and the share of near-zero weights; whether it did is in the "
                "ratios above (×1 = no change). The paper's accuracy gains are tenths of a point "
                "to 1.5 points on CIFAR/ImageNet ResNets, the size of the seed-to-seed spread "
                "here.")


REPRODUCTION = WeightCompanderReproduction()
