r"""STN training: alternate weight steps on training data and hyper steps on validation data.

Paper Algorithm 1 and §4.3; official ``cnn/hypertrain.py``. With φ every weight of the
best-response network (both weight sets, the gates U, the scalars s), λ the unconstrained
hyperparameters and ρ their perturbation scales:

.. math::

    \text{weight step:}\quad \phi \leftarrow \phi - \alpha\,\nabla_\phi\,
      \frac1B \sum_i \ell\big(f(x_i;\, \hat w_\phi(\lambda + \sigma \odot \epsilon_i)), y_i\big),
      \qquad \epsilon_i \sim \mathcal N(0, I)

.. math::

    \text{hyper step:}\quad (\lambda, \rho) \leftarrow \mathrm{Adam}\Big(\nabla_{\lambda,\rho}
      \big[\tfrac1B \textstyle\sum_i \ell_{val}\big(f(x^{val}_i;\, \hat w_\phi(\lambda +
      \sigma \odot \epsilon_i)), y^{val}_i\big) - \tau\, H(\sigma)\big]\Big)

Each example of a training batch draws its own λ and the regulariser uses it (per-example
dropout masks); the hyper step runs the network in evaluation mode (no dropout, no augmentation)
so λ's gradient flows only through the best-response gates — the reason dropout rates and other
non-differentiable hyperparameters can be tuned. Without ``tune_scales`` the hyper step uses the
unperturbed λ and σ stays fixed. The first ``warmup_epochs`` epochs train φ only; after them,
every ``train_steps`` weight steps are followed by ``val_steps`` hyper steps (official 2 : 1).

Built on :func:`regzoo.train.fit`: the weight steps are ``fit``'s steps and the hyper steps run
in its ``after_step`` hook, so checkpoints (λ, ρ, their Adam state, the cycle position), exact
resume, progress and torchrun come with it. Under torchrun the hyper gradient is averaged over
ranks (each rank draws validation batches from its own shard), so λ stays identical everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_positive_int, check_range
from regzoo.methods.stn.hyperparameters import HyperBatch, HyperparameterSpace
from regzoo.registry import Default, register
from regzoo.train import fit
from regzoo.train.distributed import DistributedContext, sync_gradients
from regzoo.train.loop import History

LossFn = Callable[[nn.Module, Any, HyperBatch], torch.Tensor]
"""``loss(model, batch, hyper)``: the loss of one batch at per-example hyperparameters."""


@dataclass(frozen=True)
class STNConfig:
    """Hyperparameters of STN training (official ``cnn/hypertrain.py`` and its README command).

    Args:
        epochs: weight-training epochs (the official run decays the learning rate at epochs
            60/120/160 and stops on patience; pass a scheduler for that).
        train_lr, momentum: SGD on φ.
        hyper_lr: Adam on λ (official 3e-3; ~3e-2 on tiny data, spec §5: with a few hundred
            hyper steps 3e-3 barely moves λ).
        scale_lr: Adam on the perturbation scales.
        train_steps, val_steps: weight steps then hyper steps per cycle.
        warmup_epochs: epochs of weight steps only before the first hyper step.
        tune_scales: learn σ with the entropy bonus (the README command's ``--tune_scales``).
        entropy_weight: τ (README command 1e-3; argparse default 1e-5).
    """

    epochs: int = 200
    train_lr: float = 0.01
    momentum: float = 0.9
    hyper_lr: float = 3e-3
    scale_lr: float = 3e-3
    train_steps: int = 2
    val_steps: int = 1
    warmup_epochs: int = 5
    tune_scales: bool = True
    entropy_weight: float = 1e-3

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("train_steps", self.train_steps)
        check_positive_int("val_steps", self.val_steps)
        check_positive_int("warmup_epochs", self.warmup_epochs, minimum=0)
        for name in ("train_lr", "hyper_lr", "scale_lr"):
            check_range(name, getattr(self, name), 0.0, low_inclusive=False)
        check_range("momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        check_range("entropy_weight", self.entropy_weight, 0.0)
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs "
                             f"({self.epochs}), or no hyperparameter is ever tuned")


class TunedNetwork(nn.Module):
    """A best-response network fed the current, unperturbed hyperparameters: ``forward(x)``.

    What STN evaluates and deploys (the official ``evaluate``): λ repeated for every example.
    """

    def __init__(self, net: nn.Module, space: HyperparameterSpace) -> None:
        super().__init__()
        self.net = net
        self.space = space

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            hyper = self.space.batch(x.shape[0], perturb=False)
        return self.net(x, hyper)


@dataclass
class STNResult:
    """What :func:`fit_stn` returns.

    ``schedule`` has one record per epoch: every hyperparameter's value and σ at the epoch's
    end — the learned schedule (paper §5 replays it in a plain network).
    """

    model: TunedNetwork
    space: HyperparameterSpace
    history: History
    schedule: list[dict[str, float]]
    hyper_steps: int


def _cross_entropy(model: nn.Module, batch: Any, hyper: HyperBatch) -> torch.Tensor:
    return F.cross_entropy(model(batch[0], hyper), batch[1])


class _Cycle(nn.Module):
    """Checkpointed counters: weight steps in the current cycle, hyper steps done."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("counts", torch.zeros(2, dtype=torch.int64))


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, tuple | list) else batch
    return int(first.shape[0])


@register(
    "stn",
    kind="procedure",
    summary="Self-Tuning Networks: hyperparameters tuned online through a structured "
            "best-response network, alternating weight and hyperparameter steps.",
    equation="ŷ = s(W_e x + b_e) + a(λ̃)⊙W_h x + c(λ̃)⊙b_h;  φ ← SGD on L_train(λ+σε);  "
             "(λ, σ) ← Adam on L_val − τH(σ)",
    defaults=(
        Default("train_lr", 0.01, "official hypertrain.py (SGD, momentum 0.9)"),
        Default("hyper_lr", 3e-3, "official hypertrain.py valid_lr (Adam)"),
        Default("scale_lr", 3e-3, "official hypertrain.py (Adam)"),
        Default("train_steps:val_steps", "2:1", "official hypertrain.py"),
        Default("warmup_epochs", 5, "official hypertrain.py"),
        Default("tune_scales", True, "official README command"),
        Default("entropy_weight", 1e-3, "official README command"),
        Default("perturb_scale", 0.5, "official hypertrain.py"),
        Default("dropout range", "(0, 0.9)", "official util/hyperparameter.py (drop_max)"),
    ),
    variants=("tuned σ with entropy bonus (default) or fixed σ (tune_scales=False)",
              "per-layer or shared hyperparameters (names in the HyperparameterSpace)",
              "replay of the learned schedule in a plain network (repro arm stn_replay)"),
)
def fit_stn(
    net: nn.Module,
    space: HyperparameterSpace,
    train_batches: Iterable[Any],
    val_batches: Iterable[Any],
    *,
    config: STNConfig | None = None,
    train_loss: LossFn | None = None,
    val_loss: LossFn | None = None,
    make_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    evaluate: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
    context: DistributedContext | None = None,
    checkpoint_path: str | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> STNResult:
    """Train a best-response network and tune ``space``'s hyperparameters in the same run.

    Args:
        net: a network whose ``forward(x, hyper)`` takes a :class:`HyperBatch` (built from
            :class:`HyperLinear`/:class:`HyperConv2d`, reading regulariser strengths from
            ``hyper["name"]``), with ``hyper_dim == len(space)``.
        space: the tuned hyperparameters.
        train_batches, val_batches: iterables of batches whose first two entries are inputs and
            targets (e.g. :class:`regzoo.data.TensorBatches`).
        config: :class:`STNConfig`.
        train_loss, val_loss: ``loss(model, batch, hyper)``; default cross-entropy of
            ``model(batch[0], hyper)``. A train loss may add a penalty whose strength is a tuned
            hyperparameter (read it from ``hyper``): the validation loss never includes it.
        make_scheduler: learning-rate schedule of φ's SGD, stepped per epoch.
        evaluate: per-epoch metrics of the :class:`TunedNetwork` (``model(x)``).
        context, checkpoint_path, checkpoint_every, resume, progress, log: as in
            :func:`regzoo.train.fit`.
    """
    config = config or STNConfig()
    if not isinstance(space, HyperparameterSpace):
        raise TypeError(f"space must be a HyperparameterSpace, got {type(space).__name__}")
    train_loss = train_loss or _cross_entropy
    val_loss = val_loss or _cross_entropy
    device = context.device if context is not None else next(net.parameters()).device
    space.to(device)
    cycle = _Cycle().to(device)
    phi = torch.optim.SGD(net.parameters(), lr=config.train_lr, momentum=config.momentum)
    groups = [{"params": [space.values], "lr": config.hyper_lr}]
    if config.tune_scales:
        groups.append({"params": [space.scales], "lr": config.scale_lr})
    hyper_optimizer = torch.optim.Adam(groups)
    scheduler = make_scheduler(phi) if make_scheduler is not None else None
    tuned = TunedNetwork(net, space)
    epoch_now = {"epoch": 0}
    val_stream: dict[str, Iterator[Any]] = {}

    def next_val_batch() -> Any:
        try:
            return next(val_stream["it"])
        except StopIteration:
            val_stream["it"] = iter(val_batches)
            return next(val_stream["it"])

    def on_epoch_start(epoch: int) -> None:
        epoch_now["epoch"] = epoch
        if hasattr(val_batches, "set_epoch"):
            val_batches.set_epoch(epoch)
        val_stream["it"] = iter(val_batches)

    def step(model: nn.Module, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            hyper = space.batch(_batch_size(batch), perturb=True)
        return train_loss(model, batch, hyper)

    def hyper_step() -> None:
        net.eval()
        batch = next_val_batch()
        batch = tuple(b.to(device) if isinstance(b, torch.Tensor) else b for b in batch)
        hyper = space.batch(_batch_size(batch), perturb=config.tune_scales)
        loss = val_loss(net, batch, hyper) - config.entropy_weight * space.entropy()
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(f"the validation loss is {float(loss)} at hyper step "
                                     f"{int(cycle.counts[1])}; lower hyper_lr")
        # autograd.grad touches only λ and ρ: φ's gradients (and DDP's hooks) stay untouched.
        params = [space.values, space.scales] if config.tune_scales else [space.values]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = torch.zeros_like(p) if g is None else g
        sync_gradients(space)
        hyper_optimizer.step()
        hyper_optimizer.zero_grad(set_to_none=True)
        cycle.counts[1] += 1
        net.train()

    def after_step() -> None:
        if epoch_now["epoch"] < config.warmup_epochs:
            return
        cycle.counts[0] += 1
        if int(cycle.counts[0]) % config.train_steps == 0:
            cycle.counts[0] = 0
            for _ in range(config.val_steps):
                hyper_step()

    def evaluate_epoch(model: nn.Module, epoch: int) -> dict[str, float]:
        record = {f"hp/{k}": v for k, v in space.current().items()}
        record.update({f"sigma/{k}": v for k, v in space.current_sigma().items()})
        if evaluate is not None:
            was_training = net.training
            net.eval()
            with torch.no_grad():
                record.update(evaluate(tuned, epoch))
            net.train(was_training)
        return record

    history = fit(
        net, train_batches, step, phi, epochs=config.epochs, scheduler=scheduler,
        evaluate=evaluate_epoch, context=context,
        state={"space": space, "hyper_optimizer": hyper_optimizer, "cycle": cycle},
        on_epoch_start=on_epoch_start, after_step=after_step,
        checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every, resume=resume,
        progress=progress, desc="stn", log=log,
    )
    schedule = [{k: v for k, v in r.items() if k.startswith(("hp/", "sigma/"))}
                for r in history.records]
    tuned.eval()
    return STNResult(tuned, space, history, schedule, int(cycle.counts[1]))
