"""The one reference training loop (design.md §5); optional for users, used by reproductions.

The caller supplies ``step(model, batch) -> loss`` and, optionally, ``evaluate(model, epoch)``;
the loop places batches on the device, runs epochs, steps the optimiser and scheduler, shows a
tqdm bar (silent off a terminal), checks the loss is finite, and writes an atomic checkpoint that
``resume=True`` continues from — model, optimiser, scheduler, any extra stateful object (a
criterion's target memory), RNG states and the history — so a resumed run ends exactly where an
uninterrupted one does. Under ``torchrun`` it wraps the model in DDP; rank 0 alone writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from regzoo.core.checks import check_positive_int
from regzoo.core.compose import LossBreakdown
from regzoo.core.kinds import untrained_transform_parameters
from regzoo.core.progress import progress_disabled
from regzoo.train.checkpoint import load_checkpoint, save_checkpoint
from regzoo.train.distributed import (
    DistributedContext,
    all_reduce_mean,
    unwrap_model,
    wrap_model,
)
from regzoo.train.seeding import rng_state, set_rng_state

StepFn = Callable[[nn.Module, tuple[Any, ...]], "torch.Tensor | LossBreakdown"]
EvalFn = Callable[[nn.Module, int], Mapping[str, float]]


@dataclass
class History:
    """Per-epoch records: ``{"epoch", "train_loss", "seconds", **evaluation metrics}``."""

    records: list[dict[str, float]] = field(default_factory=list)

    def curve(self, key: str) -> list[float]:
        """The values of ``key`` over the epochs where it was recorded."""
        return [r[key] for r in self.records if key in r]

    @property
    def last(self) -> dict[str, float]:
        """The last epoch's record."""
        if not self.records:
            raise ValueError("the history is empty: no epoch has finished")
        return self.records[-1]


def _to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(b, device) for b in batch)
    return batch


def fit(
    model: nn.Module,
    batches: Iterable[Any],
    step: StepFn,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    scheduler: Any = None,
    scheduler_per: str = "epoch",
    evaluate: EvalFn | None = None,
    eval_every: int = 1,
    state: Mapping[str, Any] | None = None,
    on_epoch_start: Callable[[int], None] | None = None,
    after_backward: Callable[[nn.Module], None] | None = None,
    after_step: Callable[[], None] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    stop: Callable[[], bool] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    context: DistributedContext | None = None,
    distribute: bool = True,
    progress: bool | None = None,
    desc: str = "train",
    log: Callable[[dict[str, float]], None] | None = None,
) -> History:
    """Train ``model`` for ``epochs`` epochs; return the per-epoch :class:`History`.

    Args:
        model: the network (moved to ``context.device``; DDP-wrapped under torchrun when
            ``distribute``). ``step`` and ``evaluate`` receive the model as trained (wrapped).
        batches: an iterable of batches; if it has ``set_epoch(e)`` it is called each epoch.
        step: returns the loss (a tensor or a :class:`LossBreakdown`) of one batch.
        optimizer: steps after every backward.
        epochs: number of epochs.
        scheduler: a learning-rate scheduler stepped per ``"epoch"`` or per ``"step"``.
        evaluate: metrics after every ``eval_every`` epochs and after the last one.
        state: extra objects with ``state_dict``/``load_state_dict`` saved in checkpoints
            (a criterion with per-example memory, an EMA model...).
        on_epoch_start, after_backward, after_step, on_epoch_end: hooks (``set_epoch`` of a
            criterion, a gradient edit before the optimiser step, an EMA update after it...).
        stop: asked after every epoch (and before a resumed run's first): ``True`` ends training
            there, after that epoch's checkpoint is written (early stopping; it must answer
            the same on every rank, and read state saved through ``state`` so a resumed run
            stops where the first did).
        checkpoint_path: where to write checkpoints; ``None`` writes none.
        checkpoint_every: epochs between checkpoints (the last epoch is always saved).
        resume: continue from ``checkpoint_path`` if it exists.
        context: the process context from :func:`regzoo.train.init_distributed` (default: one
            process on the model's current device).
        progress: show a progress bar (``None``: only on a terminal).
        log: receives each epoch's record (the reproduction runner writes ``progress.jsonl``).
    """
    check_positive_int("epochs", epochs)
    check_positive_int("eval_every", eval_every)
    check_positive_int("checkpoint_every", checkpoint_every)
    if scheduler_per not in ("epoch", "step"):
        raise ValueError(f"scheduler_per must be 'epoch' or 'step', got {scheduler_per!r}")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path, the file to resume from")
    untrained = untrained_transform_parameters(model, optimizer)
    if untrained:
        owner, names = next(iter(untrained.items()))
        raise ValueError(
            f"optimizer: {len(names)} parameter(s) that {owner} added to the model require grad "
            f"but are in no parameter group (e.g. {names[0]!r}), so they would never train: the "
            "transform was applied after the optimizer was built. Apply every transform first, "
            "then build the optimizer from its trainable_parameters()")
    if context is None:
        device = next(model.parameters()).device
        context = DistributedContext(0, 1, 0, device)
    model.to(context.device)
    trained = wrap_model(model, context) if distribute else model
    state = dict(state or {})
    history = History()
    start_epoch = 0

    if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
        # On the CPU: RNG states must stay CPU tensors; load_state_dict moves the rest.
        saved = load_checkpoint(checkpoint_path, map_location="cpu")
        unwrap_model(trained).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        for name, obj in state.items():
            obj.load_state_dict(saved["state"][name])
        set_rng_state(saved["rng"][context.rank % len(saved["rng"])])
        history = History(saved["history"])
        start_epoch = saved["epoch"] + 1

    bar = tqdm(range(start_epoch, epochs), desc=desc, initial=start_epoch, total=epochs,
               disable=progress_disabled(progress, context.is_main),
               mininterval=1.0, leave=False, dynamic_ncols=True)
    global_step = start_epoch * _safe_len(batches)
    for epoch in bar:
        if epoch == start_epoch and start_epoch > 0 and stop is not None and stop():
            break
        started = time.perf_counter()
        if hasattr(batches, "set_epoch"):
            batches.set_epoch(epoch)
        if on_epoch_start is not None:
            on_epoch_start(epoch)
        trained.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=context.device)
        n_steps = 0
        for batch in batches:
            out = step(trained, _to_device(batch, context.device))
            loss = out.total if isinstance(out, LossBreakdown) else out
            if not bool(torch.isfinite(loss.detach())):
                raise FloatingPointError(
                    f"the loss is {float(loss.detach())} at epoch {epoch}, step {global_step}; "
                    "lower the learning rate or check the inputs"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if after_backward is not None:
                after_backward(unwrap_model(trained))
            optimizer.step()
            if after_step is not None:
                after_step()
            if scheduler is not None and scheduler_per == "step":
                scheduler.step()
            loss_sum += loss.detach()
            n_steps += 1
            global_step += 1
        if n_steps == 0:
            raise ValueError(f"epoch {epoch} had no batch: the data yields nothing (empty data, "
                             "or drop_last with a batch larger than the data)")
        if scheduler is not None and scheduler_per == "epoch":
            scheduler.step()
        if on_epoch_end is not None:
            on_epoch_end(epoch)
        record: dict[str, float] = {
            "epoch": epoch,
            "train_loss": (all_reduce_mean(float(loss_sum) / n_steps, context.device)
                           if context.enabled else float(loss_sum) / n_steps),
        }
        if evaluate is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == epochs):
            record.update(evaluate(trained, epoch))
        record["seconds"] = time.perf_counter() - started
        history.records.append(record)
        bar.set_postfix({k: round(v, 4) for k, v in record.items() if k != "epoch"},
                        refresh=False)
        if log is not None and context.is_main:
            log(record)
        stopping = stop is not None and stop()
        if checkpoint_path is not None and (
            (epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs or stopping
        ):
            _save(checkpoint_path, trained, optimizer, scheduler, state, history, epoch, context)
        if stopping:
            break
    bar.close()
    return history


def _safe_len(batches: Iterable[Any]) -> int:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return 0


def _save(path: str | os.PathLike[str], model: nn.Module, optimizer: torch.optim.Optimizer,
          scheduler: Any, state: Mapping[str, Any], history: History, epoch: int,
          context: DistributedContext) -> None:
    rngs = [rng_state()]
    if context.enabled:
        gathered: list[Any] = [None] * context.world_size
        torch.distributed.all_gather_object(gathered, rngs[0])
        rngs = gathered
    if not context.is_main:
        return
    save_checkpoint(path, {
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "state": {name: obj.state_dict() for name, obj in state.items()},
        "rng": rngs,
        "history": history.records,
        "epoch": epoch,
    })
