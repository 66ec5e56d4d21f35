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
The hyper steps draw their batches from one validation stream that runs on across epochs, a
new pass (``val_batches.set_epoch(k)`` for pass k) whenever one is used up — the official
``valid_iter``; ``val_stream="per_epoch"`` restarts it at every training epoch instead.

The official script's stopping recipe (:meth:`STNConfig.official`; ``cnn/hypertrain.py``, all
off by default). After the warm-up, at the end of every epoch, with v the tuned network's
validation loss (current λ, no dropout, mean of ``val_loss`` over all of ``val_batches``) and
v_1 … v_n the losses of the earlier tuned epochs:

* decay (``--nonmono 60``, ``--lr_decay 0.1``): if n > ``nonmono`` and
  v > min(v_1 … v_{n−nonmono}), the weight SGD's learning rate is multiplied by ``lr_decay``. The
  hyper optimisers keep theirs (the script decays ``cnn_optimizer`` only), and nothing waits
  between decays, so the rule can fire on consecutive epochs;
* best: if v is below every earlier v, the network and the hyperparameters (λ, ρ) are kept;
* stop (``--patience 75`` and the script's ``lr < 1e-5`` break): after ``patience`` epochs in a
  row without a new best, or once the learning rate is below ``min_lr``;
* reload (``reload_best``): the kept network and hyperparameters are restored before returning.

What differs from the script, and why: its ``model_load`` leaves ``htensor`` out of its
``global`` line (``lstm/train.py``'s includes it), so its final evaluation pairs the best
weights with the *last* λ; the checkpoint it wrote holds the best λ and we restore it. Its
``--total_epochs`` (500) is never read, so only the rules above end its run; here ``epochs``
caps it. Its ``MultiStepLR([60, 120, 160])`` is built but never stepped, so it changes nothing.
It evaluates each epoch after the first step of the next; we do at the epoch's end.

Built on :func:`regzoo.train.fit`: the weight steps are ``fit``'s steps and the hyper steps run
in its ``after_step`` hook, so checkpoints (λ, ρ, their Adam state, the cycle position, the
validation stream's position, the recipe's record with the kept state), exact resume, progress
and torchrun come with it; a stop ends ``fit`` through its ``stop`` argument, after that epoch's
checkpoint. Under torchrun the hyper gradient and the validation loss are averaged over ranks
(each rank draws validation batches from its own shard), so λ and every decision stay identical
everywhere. Cost: a hyper
step is one forward and backward pass on a validation batch; the recipe adds one forward pass
over the validation set per epoch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_choice, check_positive_int, check_range
from regzoo.methods.stn.hyperparameters import HyperBatch, HyperparameterSpace
from regzoo.registry import Default, register
from regzoo.train import fit
from regzoo.train.distributed import DistributedContext, all_reduce_mean, sync_gradients
from regzoo.train.loop import History

LossFn = Callable[[nn.Module, Any, HyperBatch], torch.Tensor]
"""``loss(model, batch, hyper)``: the loss of one batch at per-example hyperparameters."""

VAL_STREAMS = ("continuous", "per_epoch")


@dataclass(frozen=True)
class STNConfig:
    """Hyperparameters of STN training (official ``cnn/hypertrain.py`` and its README command).

    Args:
        epochs: weight-training epochs, warm-up included (with the stopping recipe: the most).
        train_lr, momentum: SGD on φ.
        hyper_lr: Adam on λ (official 3e-3; ~3e-2 on tiny data, spec §5: with a few hundred
            hyper steps 3e-3 barely moves λ).
        scale_lr: Adam on the perturbation scales.
        train_steps, val_steps: weight steps then hyper steps per cycle.
        warmup_epochs: epochs of weight steps only before the first hyper step.
        tune_scales: learn σ with the entropy bonus (the README command's ``--tune_scales``).
        entropy_weight: τ (README command 1e-3; argparse default 1e-5).
        val_stream: ``"continuous"`` (official: the hyper steps' validation batches run on across
            epochs) or ``"per_epoch"`` (the stream restarts at each epoch, with
            ``val_batches.set_epoch(epoch)``).
        lr_decay: the factor of a learning-rate decay (official ``--lr_decay`` 0.1).
        nonmono: decay φ's learning rate when the epoch's validation loss exceeds the best of
            those from before the last ``nonmono`` epochs (official ``--nonmono`` 60); ``None``
            never decays.
        patience: stop after this many epochs without a new best validation loss (official
            ``--patience`` 75); ``None`` never does.
        min_lr: stop once φ's learning rate is below it (official 1e-5); 0 never does.
        reload_best: restore the network and hyperparameters of the best validation loss
            before returning (official ``model_load`` of ``best_checkpoint.pt``).

    Defaults train a fixed number of epochs (the paper's Algorithm 1); :meth:`official` adds
    the official script's stopping recipe (module docstring).
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
    val_stream: str = "continuous"
    lr_decay: float = 0.1
    nonmono: int | None = None
    patience: int | None = None
    min_lr: float = 0.0
    reload_best: bool = False

    def __post_init__(self) -> None:
        check_positive_int("epochs", self.epochs)
        check_positive_int("train_steps", self.train_steps)
        check_positive_int("val_steps", self.val_steps)
        check_positive_int("warmup_epochs", self.warmup_epochs, minimum=0)
        for name in ("train_lr", "hyper_lr", "scale_lr"):
            check_range(name, getattr(self, name), 0.0, low_inclusive=False)
        check_range("momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        check_range("entropy_weight", self.entropy_weight, 0.0)
        check_choice("val_stream", self.val_stream, VAL_STREAMS)
        check_range("lr_decay", self.lr_decay, 0.0, 1.0, low_inclusive=False,
                    high_inclusive=False)
        for name in ("nonmono", "patience"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name))
        check_range("min_lr", self.min_lr, 0.0)
        if not isinstance(self.reload_best, bool):
            raise TypeError(f"reload_best must be a bool, got {type(self.reload_best).__name__}")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs "
                             f"({self.epochs}), or no hyperparameter is ever tuned")
        if self.min_lr >= self.train_lr:
            raise ValueError(f"min_lr ({self.min_lr}) must be < train_lr ({self.train_lr}), or "
                             "training stops after its first tuned epoch; 0 turns the rule off")

    @classmethod
    def official(cls, **overrides: Any) -> STNConfig:
        """The official script's recipe: the defaults plus its decay, stops and reload.

        ``cnn/hypertrain.py``: ``--lr_decay 0.1``, ``--nonmono 60``, ``--patience 75``, the
        ``lr < 1e-5`` break and the final load of ``best_checkpoint.pt``; a continuous
        validation stream; ``epochs`` 500 is its ``--total_epochs``, which the script declares
        but never reads (its run ends only by the rules), so here it is a cap. ``overrides``
        replace any field, e.g. ``STNConfig.official(epochs=150, hyper_lr=3e-2)``.
        """
        recipe: dict[str, Any] = {"epochs": 500, "val_stream": "continuous", "lr_decay": 0.1,
                                  "nonmono": 60, "patience": 75, "min_lr": 1e-5,
                                  "reload_best": True}
        return cls(**{**recipe, **overrides})

    @property
    def watches_validation(self) -> bool:
        """Whether a rule needs each epoch's validation loss."""
        return self.nonmono is not None or self.patience is not None or self.reload_best


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

    ``schedule`` has one record per epoch run: every hyperparameter's value and σ at the epoch's
    end — the learned schedule (paper §5 replays it in a plain network). With ``reload_best``,
    ``model`` and ``space`` hold the state of ``best_epoch`` (the epoch of the lowest validation
    loss, ``None`` when no rule watches it), not the last epoch's. ``stop_reason``:
    ``"epochs"`` (every epoch ran), ``"patience"`` or ``"min_lr"``.
    """

    model: TunedNetwork
    space: HyperparameterSpace
    history: History
    schedule: list[dict[str, float]]
    hyper_steps: int
    stop_reason: str = "epochs"
    best_epoch: int | None = None


def _cross_entropy(model: nn.Module, batch: Any, hyper: HyperBatch) -> torch.Tensor:
    return F.cross_entropy(model(batch[0], hyper), batch[1])


class _Cycle(nn.Module):
    """Checkpointed counters: weight steps in the current cycle, hyper steps done."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("counts", torch.zeros(2, dtype=torch.int64))


class _Tracker:
    """Checkpointed state beyond ``fit``'s: the validation stream's place and the recipe's record.

    The stream: the pass it is in and the batches drawn from that pass. The recipe: the
    validation losses, the best epoch with its kept state, epochs since it, why training
    stopped. Plain data and tensors only, so a checkpoint loads with ``weights_only=True``.
    """

    FIELDS = ("val_pass", "val_position", "val_losses", "best_loss", "best_epoch", "best_state",
              "since_best", "stop_reason")

    def __init__(self) -> None:
        self.val_pass = 0
        self.val_position = 0
        self.val_losses: list[float] = []
        self.best_loss = math.inf
        self.best_epoch = -1
        self.best_state: dict[str, dict[str, torch.Tensor]] | None = None
        self.since_best = 0
        self.stop_reason = ""

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in self.FIELDS:
            setattr(self, name, state[name])


_END = object()


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, tuple | list) else batch
    return int(first.shape[0])


def _on_device(batch: Any, device: torch.device) -> tuple[Any, ...]:
    return tuple(b.to(device) if isinstance(b, torch.Tensor) else b for b in batch)


def _copy(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in state.items()}


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
        Default("dropout range", "(0, 0.9)", "official cnn/util/hyperparameter.py l. 34 "
                "(drop_max)"),
        Default("val_stream", "continuous", "official hypertrain.py (valid_iter runs on across "
                "epochs)"),
        Default("stopping recipe", "none: fixed epochs (paper Algorithm 1); STNConfig.official() "
                "decays lr ×0.1 (nonmono 60), stops at patience 75 or lr < 1e-5, reloads the "
                "best", "official hypertrain.py (--lr_decay, --nonmono, --patience)"),
    ),
    variants=("tuned σ with entropy bonus (default) or fixed σ (tune_scales=False)",
              "per-layer or shared hyperparameters (names in the HyperparameterSpace)",
              "fixed epochs (default) or the official stopping recipe (STNConfig.official(); "
              "repro arm stn_official)",
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
    on_epoch_start: Callable[[int], None] | None = None,
    state: Mapping[str, Any] | None = None,
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
            targets (e.g. :class:`regzoo.data.TensorBatches`). An exact resume of a continuous
            validation stream needs ``val_batches`` whose order ``set_epoch`` fixes (or a fixed
            order): the resumed run re-draws the current pass and skips what it had used.
        config: :class:`STNConfig` (:meth:`STNConfig.official` for the official recipe).
        train_loss, val_loss: ``loss(model, batch, hyper)``; default cross-entropy of
            ``model(batch[0], hyper)``. A train loss may add a penalty whose strength is a tuned
            hyperparameter (read it from ``hyper``): the validation loss never includes it.
            When a rule of the recipe watches the validation loss, ``val_loss`` also gives it,
            without gradients, at the end of each tuned epoch (its mean over ``val_batches``,
            weighted by batch size).
        make_scheduler: learning-rate schedule of φ's SGD, stepped per epoch (the recipe's decay
            multiplies the learning rate it sets).
        evaluate: per-epoch metrics of the :class:`TunedNetwork` (``model(x)``). Each record
            also holds ``hp/<name>``, ``sigma/<name>``, ``stn/lr`` (the epoch's learning rate)
            and, when watched, ``stn/val_loss``.
        on_epoch_start: called with the epoch before its first step (``set_epoch`` of a
            criterion or :class:`regzoo.Objective` inside ``train_loss``, as with
            :func:`regzoo.train.fit`).
        state: extra objects with ``state_dict``/``load_state_dict`` saved in the checkpoints
            beside STN's own (a criterion with per-example memory inside ``train_loss``).
        context, checkpoint_path, checkpoint_every, resume, progress, log: as in
            :func:`regzoo.train.fit`.
    """
    config = config or STNConfig()
    if not isinstance(space, HyperparameterSpace):
        raise TypeError(f"space must be a HyperparameterSpace, got {type(space).__name__}")
    train_loss = train_loss or _cross_entropy
    val_loss = val_loss or _cross_entropy
    device = context.device if context is not None else next(net.parameters()).device
    distributed = context is not None and context.enabled
    extra_state = dict(state or {})
    clashes = {"space", "hyper_optimizer", "cycle", "tracker"} & set(extra_state)
    if clashes:
        raise ValueError(f"state uses the names {sorted(clashes)}, which fit_stn keeps for its own "
                         "checkpoint entries; rename them")
    space.to(device)
    cycle = _Cycle().to(device)
    tracker = _Tracker()
    phi = torch.optim.SGD(net.parameters(), lr=config.train_lr, momentum=config.momentum)
    groups = [{"params": [space.values], "lr": config.hyper_lr}]
    if config.tune_scales:
        groups.append({"params": [space.scales], "lr": config.scale_lr})
    hyper_optimizer = torch.optim.Adam(groups)
    scheduler = make_scheduler(phi) if make_scheduler is not None else None
    tuned = TunedNetwork(net, space)
    now: dict[str, Any] = {"epoch": 0}
    val_stream: dict[str, Iterator[Any]] = {}

    def new_val_pass(index: int) -> Iterator[Any]:
        if hasattr(val_batches, "set_epoch"):
            val_batches.set_epoch(index)
        return iter(val_batches)

    def next_val_batch() -> Any:
        if config.val_stream == "per_epoch":
            batch = next(val_stream["it"], _END)
            if batch is _END:  # fewer validation batches than hyper steps: again, same order
                val_stream["it"] = iter(val_batches)
                batch = next(val_stream["it"], _END)
        else:
            if "it" not in val_stream:  # this process's first draw; a resumed run skips ahead
                val_stream["it"] = itertools.islice(new_val_pass(tracker.val_pass),
                                                    tracker.val_position, None)
            batch = next(val_stream["it"], _END)
            if batch is _END:
                tracker.val_pass, tracker.val_position = tracker.val_pass + 1, 0
                val_stream["it"] = new_val_pass(tracker.val_pass)
                batch = next(val_stream["it"], _END)
            tracker.val_position += 1
        if batch is _END:
            raise ValueError("val_batches yields no batch; the hyper steps need validation data")
        return batch

    def start_epoch(epoch: int) -> None:
        now["epoch"], now["lr"] = epoch, phi.param_groups[0]["lr"]
        if config.val_stream == "per_epoch":
            val_stream["it"] = new_val_pass(epoch)
        if on_epoch_start is not None:
            on_epoch_start(epoch)

    def step(model: nn.Module, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            hyper = space.batch(_batch_size(batch), perturb=True)
        return train_loss(model, batch, hyper)

    def hyper_step() -> None:
        net.eval()
        batch = _on_device(next_val_batch(), device)
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
        if now["epoch"] < config.warmup_epochs:
            return
        cycle.counts[0] += 1
        if int(cycle.counts[0]) % config.train_steps == 0:
            cycle.counts[0] = 0
            for _ in range(config.val_steps):
                hyper_step()

    def validation_loss(epoch: int) -> float:
        """The tuned network's mean validation loss (all of ``val_batches``, all ranks)."""
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0
        was_training = net.training
        net.eval()
        with torch.no_grad():
            for batch in val_batches:
                batch = _on_device(batch, device)
                size = _batch_size(batch)
                total += val_loss(net, batch, space.batch(size, perturb=False)).double() * size
                count += size
        net.train(was_training)
        if count == 0:
            raise ValueError("val_batches yields no batch; the recipe needs validation data")
        mean = float(total) / count
        if not math.isfinite(mean):
            raise FloatingPointError(f"the validation loss is {mean} at epoch {epoch}; lower "
                                     "train_lr or hyper_lr")
        return all_reduce_mean(mean, device) if distributed else mean

    def apply_recipe(epoch: int) -> None:
        # Official order at an epoch's end: decay against the earlier losses, keep a new best,
        # then the stops. The warm-up epochs take no part (the script's warm-up loop has none).
        if epoch < config.warmup_epochs:
            return
        if config.watches_validation:
            loss = now["val_loss"] = validation_loss(epoch)
            nonmono = config.nonmono
            if (nonmono is not None and len(tracker.val_losses) > nonmono
                    and loss > min(tracker.val_losses[:-nonmono])):
                for group in phi.param_groups:
                    group["lr"] *= config.lr_decay
            tracker.val_losses.append(loss)
            if loss < tracker.best_loss:
                tracker.best_loss, tracker.best_epoch, tracker.since_best = loss, epoch, 0
                if config.reload_best:
                    tracker.best_state = {"net": _copy(net.state_dict()),
                                          "space": _copy(space.state_dict())}
            else:
                tracker.since_best += 1
            if config.patience is not None and tracker.since_best >= config.patience:
                tracker.stop_reason = "patience"
        if phi.param_groups[0]["lr"] < config.min_lr:
            tracker.stop_reason = "min_lr"

    def evaluate_epoch(model: nn.Module, epoch: int) -> dict[str, float]:
        record = {f"hp/{k}": v for k, v in space.current().items()}
        record.update({f"sigma/{k}": v for k, v in space.current_sigma().items()})
        record["stn/lr"] = now["lr"]
        if "val_loss" in now:
            record["stn/val_loss"] = now.pop("val_loss")
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
        state={**extra_state, "space": space, "hyper_optimizer": hyper_optimizer, "cycle": cycle,
               "tracker": tracker},
        on_epoch_start=start_epoch, after_step=after_step, on_epoch_end=apply_recipe,
        stop=lambda: bool(tracker.stop_reason),
        checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every, resume=resume,
        progress=progress, desc="stn", log=log,
    )
    if config.reload_best and tracker.best_state is not None:
        net.load_state_dict(tracker.best_state["net"])
        space.load_state_dict(tracker.best_state["space"])
    schedule = [{k: v for k, v in r.items() if k.startswith(("hp/", "sigma/"))}
                for r in history.records]
    tuned.eval()
    return STNResult(tuned, space, history, schedule, int(cycle.counts[1]),
                     stop_reason=tracker.stop_reason or "epochs",
                     best_epoch=tracker.best_epoch if config.watches_validation else None)
