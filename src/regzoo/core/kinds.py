"""The five kinds of method as typed contracts, and the pieces each kind shares.

Every registered method is one of five kinds; the kind fixes how it enters a training run.
The protocols here are what ``tests/contracts/`` checks for every registered method of a kind
(``isinstance`` works on them: they are runtime-checkable):

* **criterion** (:class:`Criterion`): an ``nn.Module`` called as ``criterion(logits, target,
  index)`` that returns the scalar loss; per-example state lives in buffers (checkpointed by
  ``state_dict``). Its batch checks are :func:`check_criterion_batch`, one implementation with
  one exception type per mistake: ``TypeError`` for a wrong type or dtype, ``ValueError`` for a
  wrong shape, range or value — raised before any state changes.
* **penalty** (:class:`Penalty`): an ``nn.Module`` whose call returns a scalar added to the
  loss. Its two properties that change how a loop must call it are class attributes, declared
  once there and read by :func:`penalty_traits`: ``needs_higher_order_grad`` (the penalty
  differentiates through gradients: ``create_graph``, no fused kernels that lack double
  backward) and ``batch_coupled`` (its value couples the examples or domains of a batch, so
  micro-batching or gradient accumulation changes it).
* **transform** (:class:`Transform`, :class:`TransformHandle`): ``Cls.apply(model, **options)``
  rewires the model in place and returns a handle with ``merge``, ``unmerge``, ``remove``,
  ``trainable_parameters`` and ``penalty``. Apply checks every target before it changes any
  (adapter transforms get this from :func:`regzoo.adapters.wrap`) and tags the parameters it
  adds with its name (:func:`mark_transform_parameters`), so a later transform leaves them
  trainable and a loop can tell when they are missing from its optimiser.
* **procedure** (:class:`ProcedureResult`): a function that owns its loop (built on
  :func:`regzoo.train.fit`, so checkpoints, resume and DDP come with it) and returns a result
  record whose ``history`` is the loop's :class:`regzoo.train.History`.
* **estimator**: numpy in → numpy out, torch in → torch out (:mod:`regzoo.core.arrays`:
  ``as_tensor`` and ``restore``; functions return a :class:`~regzoo.core.arrays.SolverResult`),
  or a scikit-learn estimator (``fit`` returns ``self``, fitted attributes end in ``_``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from regzoo.core.checks import INDEX_HINT, check_index_range, check_tensor


@runtime_checkable
class Criterion(Protocol):
    """``loss = criterion(logits, target, index)`` with per-example state of N examples."""

    num_examples: int
    num_classes: int

    def __call__(self, logits: torch.Tensor, target: torch.Tensor,
                 index: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Penalty(Protocol):
    """``loss = task_loss + weight · penalty(...)``; its traits are class attributes."""

    needs_higher_order_grad: bool
    batch_coupled: bool

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor: ...


@runtime_checkable
class TransformHandle(Protocol):
    """What ``Transform.apply`` returns: the rewired model's controls."""

    def merge(self) -> Any: ...

    def unmerge(self) -> Any: ...

    def remove(self) -> Any: ...

    def trainable_parameters(self) -> Any: ...

    def penalty(self) -> torch.Tensor: ...


@runtime_checkable
class Transform(Protocol):
    """A class whose ``apply(model, **options)`` rewires ``model`` and returns a handle."""

    @classmethod
    def apply(cls, model: nn.Module, **options: Any) -> TransformHandle: ...


TRANSFORM_OWNER = "_regzoo_transform"
"""The attribute a transform sets on each parameter it adds to a model: the transform's name."""


def mark_transform_parameters(parameters: Iterable[nn.Parameter], owner: str) -> None:
    """Tag the parameters a transform added (gates, predictors, updates) with its name ``owner``.

    Two things read the tag: a transform applied later that freezes "everything else" (an
    adapter, :func:`regzoo.adapters.wrap`) leaves tagged parameters as they are, so both
    transforms train; and :func:`regzoo.train.fit` refuses to start when a tagged parameter
    requires grad but is in no parameter group of the optimiser (the transform was applied after
    the optimiser was built). ``copy.deepcopy`` keeps the tag.
    """
    for parameter in parameters:
        setattr(parameter, TRANSFORM_OWNER, owner)


def transform_owner(parameter: torch.Tensor) -> str | None:
    """The transform that added ``parameter`` to its model (None: the model's own)."""
    return getattr(parameter, TRANSFORM_OWNER, None)


def untrained_transform_parameters(model: nn.Module, optimizer: Any) -> dict[str, list[str]]:
    """Per transform, the names of its parameters that require grad but no optimiser group holds.

    Empty when every transform parameter the model trains is in ``optimizer.param_groups``.
    """
    held = {id(p) for group in getattr(optimizer, "param_groups", ()) for p in group["params"]}
    missing: dict[str, list[str]] = {}
    for name, parameter in model.named_parameters():
        owner = transform_owner(parameter)
        if owner is not None and parameter.requires_grad and id(parameter) not in held:
            missing.setdefault(owner, []).append(name)
    return missing


@runtime_checkable
class ProcedureResult(Protocol):
    """A procedure's result record: whatever it trained, plus the loop's history."""

    history: Any


@dataclass(frozen=True)
class PenaltyTraits:
    """How a loop must treat a penalty (see the module docstring)."""

    needs_higher_order_grad: bool
    batch_coupled: bool


def penalty_traits(penalty: type | object) -> PenaltyTraits:
    """The traits a penalty class (or instance) declares; ``TypeError`` if it declares none."""
    cls = penalty if isinstance(penalty, type) else type(penalty)
    values = {name: getattr(cls, name, None) for name in ("needs_higher_order_grad",
                                                          "batch_coupled")}
    missing = [name for name, value in values.items() if not isinstance(value, bool)]
    if missing:
        raise TypeError(f"penalty {cls.__qualname__} must declare the class attributes "
                        f"{missing} as bools (see regzoo.core.kinds)")
    return PenaltyTraits(**values)


def check_state_shapes(module: nn.Module, state_dict: dict[str, Any], prefix: str,
                       hint: str) -> None:
    """Refuse a ``state_dict`` whose buffers have other shapes than ``module``'s, with ``hint``.

    Call it from ``_load_from_state_dict``: torch's own message ("size mismatch for targets")
    names neither the constructor argument that differs nor the fix.
    """
    for name, buffer in module.named_buffers(recurse=False):
        stored = state_dict.get(prefix + name)
        if isinstance(stored, torch.Tensor) and stored.shape != buffer.shape:
            raise ValueError(f"state_dict holds {name} of shape {tuple(stored.shape)}, this "
                             f"{type(module).__name__} has {tuple(buffer.shape)}; {hint}")


def check_logits(logits: object, num_classes: int) -> int:
    """Check ``(B, C)`` floating, non-empty logits with C = ``num_classes``; return B."""
    check_tensor("logits", logits, ndim=2, floating=True)
    assert isinstance(logits, torch.Tensor)
    if logits.shape[1] != num_classes:
        raise ValueError(f"logits must have num_classes={num_classes} columns, got shape "
                         f"{tuple(logits.shape)}")
    return logits.shape[0]


def check_target(target: object, batch: int | None, num_classes: int, hint: str = "") -> int:
    """Check class-index targets: a 1-D integer tensor in [0, C) of ``batch`` rows; return B.

    A soft or one-hot target (floating) is a ``TypeError``; ``hint`` is appended to that
    message (a method that supports no soft labels says why).
    """
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must be a 1-D integer tensor of class indices, got dtype "
                        f"{target.dtype} and shape {tuple(target.shape)}{hint}")
    if target.ndim != 1:
        raise ValueError(f"target must be a 1-D integer tensor of class indices, got shape "
                         f"{tuple(target.shape)}")
    if batch is not None and target.shape[0] != batch:
        raise ValueError(f"target must share the batch size of logits, got {target.shape[0]} "
                         f"and {batch}")
    check_tensor("target", target)
    check_index_range("target", target, num_classes,
                      f" (class indices for num_classes={num_classes})")
    return target.shape[0]


def check_index(index: object, batch: int | None, num_examples: int,
                against: str = "logits") -> int:
    """Check dataset indices: a 1-D integer tensor in [0, N) of ``batch`` rows; return B.

    ``against`` names the argument ``batch`` was read from, for the message.
    """
    if index is None:
        raise TypeError("index is None: this criterion keeps per-example state and needs each "
                        "example's dataset index; make the loader yield (x, y, index), e.g. "
                        "with regzoo.data.IndexedDataset, and pass the index")
    check_tensor("index", index, ndim=1, floating=False)
    assert isinstance(index, torch.Tensor)
    if batch is not None and index.shape[0] != batch:
        raise ValueError(f"index must share the batch size of {against}, got "
                         f"{index.shape[0]} and {batch}")
    check_index_range("index", index, num_examples, INDEX_HINT)
    return index.shape[0]


def check_criterion_batch(logits: object, target: object, index: object, *, num_classes: int,
                          num_examples: int, target_hint: str = "") -> int:
    """Every check of a criterion's ``(logits, target, index)`` batch; return the batch size.

    Non-finite logits are not checked here: a criterion checks its loss (one scalar) and only
    then scans the logits, before it writes any state.
    """
    batch = check_logits(logits, num_classes)
    check_target(target, batch, num_classes, target_hint)
    check_index(index, batch, num_examples)
    return batch
