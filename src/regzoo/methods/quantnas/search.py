"""QuantNAS's bilevel search loop, its regularisers, and the retraining of the found network.

Built on :func:`regzoo.train.fit`: the weight steps are ``fit``'s steps; the α step on the
α-split batch runs first inside each step (official order: α step, then w step), with its
optimiser, the α-batch stream and the BitOps normaliser checkpointed through ``fit(state=...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_positive_int, check_range
from regzoo.data.batches import TensorBatches
from regzoo.methods.quantnas.networks import Genotype, QuantNASNet, QuantNASSuperNet
from regzoo.registry import Default, register
from regzoo.train import fit
from regzoo.train.loop import History


def arch_entropy(alphas: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_l H(softmax(α_l)), H(p) = −Σ p log p (official ``SparseCrit``, ``entropy``)."""
    alphas = list(alphas)
    if not alphas:
        raise ValueError("alphas is empty; pass one logit vector per searched layer")
    total = None
    for a in alphas:
        if not isinstance(a, torch.Tensor) or a.ndim != 1 or a.numel() == 0:
            raise ValueError("every alpha must be a non-empty 1-D logit vector")
        h = -(torch.softmax(a, 0) * torch.log_softmax(a, 0)).sum()
        total = h if total is None else total + h
    return total  # type: ignore[return-value]


def entropy_schedule(epoch: int, epochs: int, warmup: int) -> float:
    """w₁(e)·w₂(e): the entropy weight's schedule (official ``SparseCrit.update``).

    w₁ = (e − e_wu)/(E − 1 − e_wu); q = ⌊(E − e_wu)/4⌋; w₂ = 0 while e − e_wu < q, else
    log_{E − q − e_wu + 1}(e − q − e_wu + 2). Zero before the warm-up ends plus a quarter of the
    search; 1 at the last epoch (e = E − 1).
    """
    check_positive_int("epochs", epochs)
    check_positive_int("warmup", warmup, minimum=0)
    if warmup >= epochs - 1:
        raise ValueError(
            f"warmup ({warmup}) must be < epochs − 1 ({epochs - 1}) so the schedule has a ramp"
        )
    if epoch < warmup:
        return 0.0
    quarter = (epochs - warmup) // 4
    if epoch - warmup < quarter:
        return 0.0
    w1 = (epoch - warmup) / (epochs - 1 - warmup)
    base = epochs - quarter - warmup + 1
    w2 = math.log(epoch - quarter - warmup + 2) / math.log(base) if base > 1 else 1.0
    return w1 * w2


@dataclass(frozen=True)
class QuantNASConfig:
    """Hyperparameters of :func:`fit_quantnas` (official ``configs/*.yaml``, ``search_sr.py``).

    Args:
        epochs, warmup: E search epochs; α steps start at epoch ``warmup`` (official 20, 9).
        batch_size: batch of both splits (official 32).
        lr, weight_decay, grad_clip: Adam on the weights, cosine over the epochs (1e-3, 3e-8, 5).
        alpha_lr, alpha_betas, alpha_weight_decay: Adam on α (3e-4, (0.5, 0.999), 0).
        entropy_weight: c of the entropy term (1e-3; 0: no entropy regulariser).
        hardware_weight: λ_hw of the normalised BitOps term (0: none).
        subsample: share of the training patches used by the search, split in two equal halves
            for the weights and for α (official 0.7: 35 % each).
        seed: the split and both batch orders.
        schedule_epochs: E of the cosine and entropy schedules (None: ``epochs``); fix it to
            stop early or to extend a run by resuming it.
    """

    epochs: int = 20
    warmup: int = 9
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 3e-8
    grad_clip: float | None = 5.0
    alpha_lr: float = 3e-4
    alpha_betas: tuple[float, float] = (0.5, 0.999)
    alpha_weight_decay: float = 0.0
    entropy_weight: float = 1e-3
    hardware_weight: float = 0.0
    subsample: float = 0.7
    seed: int = 0
    schedule_epochs: int | None = None

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("warmup", self.warmup, minimum=0)
        check_positive_int("batch_size", self.batch_size)
        if self.schedule_epochs is not None:
            check_positive_int("schedule_epochs", self.schedule_epochs)
        if self.warmup >= self.horizon - 1:
            raise ValueError(
                f"warmup ({self.warmup}) must be < epochs − 1 ({self.horizon - 1}), "
                "or α is never (or only once) trained"
            )
        check_range("lr", self.lr, 0.0, low_inclusive=False)
        check_range("alpha_lr", self.alpha_lr, 0.0, low_inclusive=False)
        for name in ("weight_decay", "alpha_weight_decay", "entropy_weight", "hardware_weight"):
            check_range(name, getattr(self, name), 0.0)
        if self.grad_clip is not None:
            check_range("grad_clip", self.grad_clip, 0.0, low_inclusive=False)
        if len(self.alpha_betas) != 2:
            raise ValueError(f"alpha_betas must be two numbers, got {self.alpha_betas!r}")
        for beta in self.alpha_betas:
            check_range("alpha_betas", beta, 0.0, 1.0, high_inclusive=False)
        check_range("subsample", self.subsample, 0.0, 1.0, low_inclusive=False)
        check_positive_int("seed", self.seed, minimum=0)

    @property
    def horizon(self) -> int:
        """E of the schedules: ``schedule_epochs`` or ``epochs``."""
        return self.epochs if self.schedule_epochs is None else self.schedule_epochs


@dataclass
class QuantNASResult:
    """What :func:`fit_quantnas` returns: the supernet, its genotype and the loop's history.

    ``history`` records per epoch the weight-step L1 (``train_loss``), the entropy weight
    ``c·w₁·w₂``, Σ H(p_l), the mean max-p_l and the normalised expected BitOps.
    """

    supernet: QuantNASSuperNet
    genotype: Genotype
    history: History
    alpha_steps: int


class _SearchState:
    """Checkpointed state beyond ``fit``'s: α's optimiser, the α-step count, the BitOps norm."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.alpha_steps = 0
        self.bitops_norm = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "alpha_steps": self.alpha_steps,
            "bitops_norm": self.bitops_norm,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.alpha_steps = int(state["alpha_steps"])
        self.bitops_norm = float(state["bitops_norm"])


def _check_pairs(lr: torch.Tensor, hr: torch.Tensor, scale: int) -> None:
    for name, t in (("lr", lr), ("hr", hr)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.ndim != 4:
            raise TypeError(f"{name} must be a floating (N, C, H, W) tensor")
    if lr.shape[0] != hr.shape[0] or lr.shape[0] < 2:
        raise ValueError(
            f"lr and hr must hold the same N ≥ 2 patches, got {lr.shape[0]} and {hr.shape[0]}"
        )
    if hr.shape[-2:] != (lr.shape[-2] * scale, lr.shape[-1] * scale):
        raise ValueError(
            f"hr patches must be ×{scale} the lr patches, got "
            f"{tuple(hr.shape[-2:])} vs {tuple(lr.shape[-2:])}"
        )


def mean_max_probability(supernet: QuantNASSuperNet) -> float:
    """The mean over searched layers of max_{(o,b)} p_l(o, b) (1: every layer one-hot)."""
    with torch.no_grad():
        return float(torch.stack([p.max() for p in supernet.probabilities()]).mean())


@register(
    "quantnas",
    kind="procedure",
    declares={
        "owns_loss": "its super-resolution loss and architecture objective are the method",
    },
    summary="Differentiable search over operations × bit-widths for super-resolution, "
    "with quantisation noise in place of fake quantisation, an entropy regulariser that "
    "drives each layer to one choice, a normalised BitOps penalty and ADQ residual blocks.",
    equation="α ← Adam ∇_α[L1(f(x_a; W̃(p), X̃(p)), y_a) + c·w₁(e)w₂(e)·Σ_l H(softmax α_l) + "
    "λ_hw·BitOps(p)/BitOps(p₀)];  W ← Adam ∇_W L1(f(x_w), y_w);  "
    "W̃ = a_fp W + Σ_b a'_b(W + Δ_b(W)), "
    "Δ_b ~ (max−min)/(2^b−1)·N(0,1)/2",
    defaults=(
        Default("epochs", 20, "official configs (search.epochs)"),
        Default("warmup", 9, "official configs (search.warm_up)"),
        Default("batch_size", 32, "official configs (dataset.batch_size)"),
        Default("lr", 1e-3, "official configs (search.w_lr, Adam, cosine)"),
        Default("weight_decay", 3e-8, "official configs (search.w_weight_decay)"),
        Default("grad_clip", 5.0, "official configs (search.w_grad_clip)"),
        Default("alpha_lr", 3e-4, "official configs (search.alpha_lr)"),
        Default("alpha_betas", (0.5, 0.999), "official search_sr.py (alpha_optim)"),
        Default("entropy_weight", 1e-3, "official configs (search.sparse_coef, entropy)"),
        Default(
            "hardware_weight",
            0.0,
            "official configs (search.penalty; README sweeps {0, 5e-5, 1e-4, 1e-3})",
        ),
        Default(
            "subsample", 0.7, "official configs (dataset.search_subsample: 35 % for w, 35 % for α)"
        ),
        Default("bits", "(4, 8)", "official configs (arch.bits [4, 8]; also [4], [8])"),
        Default("noise", "gaussian", "official quant_noise (n_type)"),
        Default("detach_noisy", False, "paper's equation; True = official code (.detach())"),
    ),
    variants=(
        "mode='noise' (QuantNAS) or mode='direct' (LSQ/HWGQ fake quantisation)",
        "noise='gaussian' or 'uniform'",
        "detach_noisy=True (official code: weights get gradient via the FP share only)",
        "direct_form='shared' (one conv per op, official) or 'per_bit' (one per (op, bit))",
        "train_steps=False (official search: LSQ steps never trained)",
        "adq=False (plain residual, official skip_mode)",
        "entropy_weight=0 (no entropy regulariser)",
        "hardware_weight λ_hw > 0 (BitOps penalty; the sweep traces the Pareto front)",
    ),
)
def fit_quantnas(
    supernet: QuantNASSuperNet,
    lr: torch.Tensor,
    hr: torch.Tensor,
    *,
    config: QuantNASConfig | None = None,
    evaluate: Callable[[nn.Module, int], Mapping[str, float]] | None = None,
    checkpoint_path: str | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> QuantNASResult:
    """Search an architecture on (``lr``, ``hr``) training pairs with first-order DARTS.

    Args:
        supernet: a :class:`QuantNASSuperNet` (its ``mode`` picks noise or direct search).
        lr, hr: (N, C, h, w) inputs and (N, C, s·h, s·w) targets, on the device to train on.
        config: :class:`QuantNASConfig`.
        evaluate: extra per-epoch metrics of the supernet.
        checkpoint_path, checkpoint_every, resume, progress, log: as :func:`regzoo.train.fit`.
    """
    config = config or QuantNASConfig()
    if not isinstance(supernet, QuantNASSuperNet):
        raise TypeError(f"supernet must be a QuantNASSuperNet, got {type(supernet).__name__}")
    _check_pairs(lr, hr, supernet.scale)
    device = supernet.alphas[0].device
    g = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(lr.shape[0], generator=g)
    half = max(1, int(config.subsample * lr.shape[0]) // 2)
    w_index, a_index = order[:half].to(lr.device), order[half : 2 * half].to(lr.device)
    if a_index.numel() == 0:
        raise ValueError("too few patches for two search splits; pass more or raise subsample")
    w_batches = TensorBatches(lr[w_index], w_index, config.batch_size, seed=config.seed)
    a_batches = TensorBatches(lr[a_index], a_index, config.batch_size, seed=config.seed + 1)
    weights = supernet.weight_parameters()
    alphas = supernet.arch_parameters()
    w_optim = torch.optim.Adam(weights, lr=config.lr, weight_decay=config.weight_decay)
    a_optim = torch.optim.Adam(
        alphas,
        lr=config.alpha_lr,
        betas=tuple(config.alpha_betas),
        weight_decay=config.alpha_weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(w_optim, config.horizon)
    state = _SearchState(a_optim)
    height, width = lr.shape[-2:]
    with torch.no_grad():
        state.bitops_norm = float(supernet.expected_bitops(supernet.probabilities(), height, width))
    now: dict[str, Any] = {"epoch": 0}
    stream: dict[str, Any] = {}

    def next_alpha_batch() -> torch.Tensor:
        batch = next(stream["it"], None)
        if batch is None:
            stream["it"] = iter(a_batches)
            batch = next(stream["it"])
        return batch[1]

    def on_epoch_start(epoch: int) -> None:
        now["epoch"] = epoch
        now["entropy"] = config.entropy_weight * entropy_schedule(
            min(epoch, config.horizon - 1), config.horizon, config.warmup
        )
        a_batches.set_epoch(epoch)
        stream["it"] = iter(a_batches)

    def alpha_loss(index: torch.Tensor) -> torch.Tensor:
        probs = supernet.probabilities()
        loss = F.l1_loss(supernet(lr[index], probs), hr[index])
        if now["entropy"] > 0:
            loss = loss + now["entropy"] * arch_entropy(alphas)
        if config.hardware_weight > 0:
            loss = (
                loss
                + config.hardware_weight
                * supernet.expected_bitops(probs, height, width)
                / state.bitops_norm
            )
        return loss

    def step(model: nn.Module, batch: Any) -> torch.Tensor:
        if now["epoch"] >= config.warmup:
            loss = alpha_loss(next_alpha_batch())
            if not bool(torch.isfinite(loss.detach())):
                raise FloatingPointError(
                    f"the α loss is {float(loss)} at α step {state.alpha_steps}; lower alpha_lr"
                )
            grads = torch.autograd.grad(loss, alphas)
            for p, grad in zip(alphas, grads):
                p.grad = grad
            a_optim.step()
            a_optim.zero_grad(set_to_none=True)
            state.alpha_steps += 1
        probs = [p.detach() for p in supernet.probabilities()]
        index = batch[1]
        return F.l1_loss(model(batch[0], probs), hr[index])

    def clip(_: nn.Module) -> None:
        if config.grad_clip is not None:
            nn.utils.clip_grad_norm_(weights, config.grad_clip)

    def evaluate_epoch(model: nn.Module, epoch: int) -> dict[str, float]:
        with torch.no_grad():
            probs = supernet.probabilities()
            record = {
                "entropy_weight": now["entropy"],
                "arch_entropy": float(arch_entropy(alphas)),
                "mean_max_p": mean_max_probability(supernet),
                "bitops_ratio": float(supernet.expected_bitops(probs, height, width))
                / state.bitops_norm,
            }
        if evaluate is not None:
            record.update(evaluate(model, epoch))
        return record

    history = fit(
        supernet.to(device),
        w_batches,
        step,
        w_optim,
        epochs=config.epochs,
        scheduler=scheduler,
        evaluate=evaluate_epoch,
        state={"search": state},
        on_epoch_start=on_epoch_start,
        after_backward=clip,
        checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every,
        resume=resume,
        progress=progress,
        desc="quantnas",
        log=log,
        distribute=False,
    )
    return QuantNASResult(supernet, supernet.genotype(), history, state.alpha_steps)


@dataclass(frozen=True)
class RetrainConfig:
    """Training of the found network from scratch with LSQ (official ``augment_sr.py``).

    Official: 30 epochs, Adam lr 1e-4, cosine, no weight decay, batch 32 (spec §2).
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        check_range("lr", self.lr, 0.0, low_inclusive=False)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_positive_int("seed", self.seed, minimum=0)


def train_quantized(
    net: QuantNASNet,
    lr: torch.Tensor,
    hr: torch.Tensor,
    *,
    config: RetrainConfig | None = None,
    checkpoint_path: str | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> History:
    """Train a discrete :class:`QuantNASNet` (LSQ weights, HWGQ inputs) with L1 on all pairs."""
    config = config or RetrainConfig()
    if not isinstance(net, QuantNASNet):
        raise TypeError(f"net must be a QuantNASNet, got {type(net).__name__}")
    _check_pairs(lr, hr, net.scale)
    index = torch.arange(lr.shape[0], device=lr.device)
    batches = TensorBatches(lr, index, config.batch_size, seed=config.seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs)

    def step(model: nn.Module, batch: Any) -> torch.Tensor:
        return F.l1_loss(model(batch[0]), hr[batch[1]])

    return fit(
        net,
        batches,
        step,
        optimizer,
        epochs=config.epochs,
        scheduler=scheduler,
        checkpoint_path=checkpoint_path,
        resume=resume,
        progress=progress,
        desc="quantnas-retrain",
        log=log,
        distribute=False,
    )


@torch.no_grad()
def super_resolution_psnr(
    model: Callable[[torch.Tensor], torch.Tensor],
    lr: torch.Tensor,
    hr: torch.Tensor,
    *,
    batch_size: int = 256,
    seed: int = 0,
) -> float:
    """PSNR (dB, data range 1) of ``model(lr)`` clipped to [0, 1] against ``hr``.

    Random draws inside ``model`` (quantisation noise) come from the global generator reseeded
    with ``seed`` inside a forked RNG, so an evaluation is repeatable and leaves the training's
    random stream untouched.
    """
    from regzoo.imaging import psnr

    devices = [lr.device] if lr.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = torch.cat([model(chunk).clamp(0, 1) for chunk in lr.split(batch_size)])
    return float(psnr(out, hr))
