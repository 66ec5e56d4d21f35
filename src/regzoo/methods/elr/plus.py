r"""ELR+: the paper's two-network recipe built on the ELR criterion.

Paper §4.2 and appendix; official code ``ELR_plus/``.

Two networks f_1, f_2 train on the same noisy data, each with a weight-averaged copy
\bar f_k (mean-teacher style). Network k's ELR targets are the temporal ensemble of the *other*
network's averaged copy on the clean inputs, its inputs and labels are mixed up, and λ may be
ramped in:

.. math::

    x' = \ell x + (1-\ell) x_{\pi}, \quad y' = \ell y + (1-\ell) y_{\pi}, \quad
    \ell = \max(u, 1-u),\ u \sim \mathrm{Beta}(\alpha, \alpha)

.. math::

    t_i \leftarrow \beta t_i + (1-\beta)\, \mathrm{softmax}(\bar f_{\bar k}(x_i)), \qquad
    q_i = \ell\, t_i + (1-\ell)\, t_{\pi(i)}

.. math::

    \mathcal{L}_k = -\frac{1}{B}\sum_i \langle y'_i, \log \mathrm{softmax} f_k(x'_i)\rangle
      + \lambda\, r(s)\, \frac{1}{B}\sum_i \log(1 - \langle q_i, p_i\rangle),\quad
      p_i = \mathrm{clamp}(\mathrm{softmax} f_k(x'_i), 10^{-4}, 1-10^{-4})

and after every optimiser step ``w̄_k ← a(s) w̄_k + (1 − a(s)) w_k`` with
``a(s) = ema_alpha · r_ema(s + 1)``; r(s) and r_ema are the sigmoid ramps
``exp(−5 (1 − min(s/L, 1))²)`` of lengths ``coef_step`` and ``ema_step`` (1 when L = 0). π is a
random permutation of the batch; the same (ℓ, π) mixes inputs, labels and targets. Prediction
averages the logits of the two live networks.

Defaults are the official CIFAR-10 symmetric config (``ELR_plus/config_cifar10.json``):
β = 0.7, λ = 3, mixup α = 1, ema_alpha = 0.997, ema_step = 40 000 steps (57 % of its 70 400
steps), coef_step = 0, SGD lr 0.02, momentum 0.9, weight decay 5e-4, batch 128, 200 epochs,
learning rate ×0.1 at epoch 150. Cost: about 3× an ELR step per network (one extra forward of the
other network's averaged copy), so ≈ 4× ELR for the pair.

As in the official single-process trainer, each epoch trains network 1 over the whole data,
then network 2; the averaged copies average parameters only (BatchNorm buffers come from their
own forward passes, run in training mode as in the code). Differences from the official code, all
to follow the paper or to be reproducible: both networks see the same split and the same noisy
labels (the code builds two loaders that draw independent splits and noise from an unseeded RNG);
the averaged copies start as copies of their networks (the code initialises them independently,
which its near-zero initial decay hides); mixup draws from torch's seeded generator. The code's
CIFAR-100-only reweighting of mixed labels by the targets, ``y' ← normalise(y' ⊙ q)``, is the
option ``label_reweighting``. Under ``torchrun`` gradients are averaged with
:func:`regzoo.train.distributed.sync_gradients` and the target memories are gathered, as in ELR;
mixup pairs examples within each rank's local batch, so with ``mixup_alpha > 0`` the result
depends on the world size (a 2-process run equals a 1-process run only without mixup: tested).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_positive_int, check_range, check_tensor
from regzoo.core.schedules import SigmoidRamp
from regzoo.data.batches import TensorBatches
from regzoo.methods.elr.loss import CLAMP, EarlyLearningRegularization, elr_regularizer
from regzoo.train.distributed import DistributedContext, sync_gradients
from regzoo.train.loop import History, fit


@dataclass(frozen=True)
class ELRPlusConfig:
    """Hyperparameters of ELR+, defaults from the official CIFAR-10 symmetric config."""

    lam: float = 3.0
    beta: float = 0.7
    mixup_alpha: float = 1.0
    ema_alpha: float = 0.997
    ema_step: int = 40_000
    coef_step: int = 0
    label_reweighting: bool = False
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (150,)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_range("lam", self.lam, 0.0)
        check_range("beta", self.beta, 0.0, 1.0, high_inclusive=False)
        check_range("mixup_alpha", self.mixup_alpha, 0.0)
        check_range("ema_alpha", self.ema_alpha, 0.0, 1.0, high_inclusive=False)
        check_positive_int("ema_step", self.ema_step, minimum=0)
        check_positive_int("coef_step", self.coef_step, minimum=0)
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_range("lr", self.lr, 0.0, low_inclusive=False)
        check_range("momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("gamma", self.gamma, 0.0, low_inclusive=False)
        if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be positive epoch numbers, got {self.milestones}")


class ELRPlusPair(nn.Module):
    """The two networks and their weight-averaged copies; ``forward`` averages the live logits."""

    def __init__(self, net1: nn.Module, net2: nn.Module) -> None:
        super().__init__()
        self.nets = nn.ModuleList([net1, net2])
        self.averaged = nn.ModuleList([copy.deepcopy(net1), copy.deepcopy(net2)])
        for p in self.averaged.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.nets[0](x) + self.nets[1](x))

    @torch.no_grad()
    def update_average(self, k: int, decay: float) -> None:
        """``w̄_k ← decay · w̄_k + (1 − decay) · w_k`` over parameters (not buffers)."""
        averaged = list(self.averaged[k].parameters())
        live = [p.detach() for p in self.nets[k].parameters()]
        torch._foreach_lerp_(averaged, live, 1.0 - decay)


@dataclass
class ELRPlusResult:
    """The trained pair (``model(x)`` predicts), its target memories and the history.

    ``targets[k]`` is network k's N × C temporal ensemble (fed by the other network's average).
    """

    model: ELRPlusPair
    targets: tuple[torch.Tensor, torch.Tensor]
    history: History


class _Alternating:
    """One ELR+ epoch: every batch for network 0, then every batch for network 1."""

    def __init__(self, batches: TensorBatches) -> None:
        self.batches = batches

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return 2 * len(self.batches)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        for k in (0, 1):
            for batch in self.batches:
                yield (torch.tensor(k), *batch)


class _StepCounter(nn.Module):
    """Optimisation steps taken by each network (for the ramps); checkpointed."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("steps", torch.zeros(2, dtype=torch.int64))


class _Mixup:
    """Draws ``(ℓ, π)``: ℓ = max(u, 1 − u) with u ~ Beta(α, α), π a permutation (torch's RNG)."""

    def __init__(self, alpha: float) -> None:
        self.beta = (torch.distributions.Beta(alpha, alpha, validate_args=False)
                     if alpha > 0 else None)

    def __call__(self, batch_size: int, device: torch.device) -> tuple[float, torch.Tensor]:
        if self.beta is None:
            return 1.0, torch.arange(batch_size, device=device)
        u = float(self.beta.sample())
        return max(u, 1.0 - u), torch.randperm(batch_size).to(device)


def fit_elr_plus(
    make_model: Callable[[], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    config: ELRPlusConfig | None = None,
    make_optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
    make_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    evaluate: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
    seed: int = 0,
    context: DistributedContext | None = None,
    checkpoint_path: str | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> ELRPlusResult:
    """Train an ELR+ pair on ``(x, y)``; see the module docstring for the method.

    Args:
        make_model: builds one network (called twice; the two draws differ).
        x, y: training inputs and noisy labels (index i of the memory is row i of ``x``).
        num_classes: C.
        config: hyperparameters (official CIFAR-10 defaults).
        make_optimizer, make_scheduler: override the official SGD and step schedule; one
            optimiser holds both networks' parameters (each step touches one network only, so
            this equals two optimisers).
        evaluate: per-epoch metrics of the pair (``model(x)`` averages the live logits).
        seed: seeds the initialisation, batch order and mixup draws.
        context, checkpoint_path, checkpoint_every, resume, progress, log: as in
            :func:`regzoo.train.fit`.
    """
    config = config or ELRPlusConfig()
    check_tensor("x", x)
    check_tensor("y", y, ndim=1, floating=False)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of rows, got {x.shape[0]} and "
                         f"{y.shape[0]}")
    check_positive_int("num_classes", num_classes, minimum=2)
    torch.manual_seed(seed)
    pair = ELRPlusPair(make_model(), make_model())
    memories = nn.ModuleList([
        EarlyLearningRegularization(x.shape[0], num_classes, config.lam, config.beta)
        for _ in range(2)
    ])
    counter = _StepCounter()
    device = context.device if context is not None else next(pair.parameters()).device
    memories.to(device)
    counter.to(device)
    params = [p for p in pair.nets.parameters()]
    optimizer = (make_optimizer(params) if make_optimizer is not None else torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay))
    scheduler = (make_scheduler(optimizer) if make_scheduler is not None else
                 torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones),
                                                      config.gamma))
    lam_ramp = SigmoidRamp(config.lam, config.coef_step)
    decay_ramp = SigmoidRamp(config.ema_alpha, config.ema_step)
    mixup = _Mixup(config.mixup_alpha)
    current = {"k": 0}

    def step(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        which, xb, yb, idx = batch
        k = int(which)
        current["k"] = k
        s = int(counter.steps[k])
        ell, perm = mixup(xb.shape[0], xb.device)
        with torch.no_grad():
            t = memories[k].update_targets(idx, model.averaged[1 - k](xb).softmax(dim=1))
            q = ell * t + (1.0 - ell) * t[perm]
        onehot = F.one_hot(yb, num_classes).to(xb.dtype)
        y_mix = ell * onehot + (1.0 - ell) * onehot[perm]
        if config.label_reweighting:
            y_mix = y_mix * q
            y_mix = y_mix / y_mix.sum(dim=1, keepdim=True)
        logits = model.nets[k](ell * xb + (1.0 - ell) * xb[perm])
        ce = -(y_mix * logits.log_softmax(dim=1)).sum(dim=1).mean()
        probs = logits.softmax(dim=1).clamp(CLAMP, 1.0 - CLAMP)
        return ce + lam_ramp(s) * elr_regularizer(probs, q)

    def after_step() -> None:
        k = current["k"]
        counter.steps[k] += 1
        pair.update_average(k, decay_ramp(int(counter.steps[k])))

    batches = _Alternating(TensorBatches(x, y, config.batch_size, seed=seed))
    history = fit(
        pair, batches, step, optimizer, epochs=config.epochs, scheduler=scheduler,
        evaluate=evaluate, state={"memories": memories, "counter": counter},
        after_backward=sync_gradients, after_step=after_step,
        checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every, resume=resume,
        context=context, distribute=False, progress=progress, desc="elr+", log=log,
    )
    return ELRPlusResult(pair, (memories[0].targets, memories[1].targets), history)
