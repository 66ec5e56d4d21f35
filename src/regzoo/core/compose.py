"""``Objective``: named, weighted loss terms evaluated on one shared forward pass.

In a user's own loop composition is arithmetic (``loss = crit(z, y, idx) + 0.1 * pen(model)``).
``Objective`` offers the same with bookkeeping for those who want it (design.md §3):

    total = Σ_k w_k(t) · term_k(inputs),   t = the step (or epoch) counter,

where every term receives, by the names of its ``forward`` parameters, the quantities the caller
computed once (logits, features, targets, indices, the model...). The result is a
:class:`LossBreakdown` holding the total and every weighted part, so logs show each term. After
``total.backward()``, :meth:`Objective.after_backward` runs the terms' gradient-editing hooks in
registration order; :meth:`Objective.set_epoch` forwards the epoch to terms that keep per-epoch
state (ELR+, PS-KD) and advances epoch-based schedules.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from regzoo.core.checks import check_choice
from regzoo.core.schedules import Schedule, as_schedule


@dataclass
class LossBreakdown:
    """The total loss and each weighted part, as returned by :class:`Objective`."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)

    def as_floats(self) -> dict[str, float]:
        """Detached Python floats for logging: ``{"total": ..., name: weighted part, ...}``."""
        out = {"total": float(self.total.detach())}
        out.update({name: float(part.detach()) for name, part in self.parts.items()})
        return out


@dataclass
class _Term:
    fn: Callable[..., torch.Tensor]
    weight: Schedule
    per: str
    arg_names: tuple[str, ...]
    positional: bool


def _parameter_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    target = fn.forward if isinstance(fn, nn.Module) else fn
    params = inspect.signature(target).parameters.values()
    return tuple(
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is p.empty
    )


class Objective(nn.Module):
    """A weighted sum of named loss terms with a per-term breakdown.

    Example (each term takes the inputs its signature names):
        >>> import torch
        >>> from regzoo.methods.elr import EarlyLearningRegularization
        >>> model = torch.nn.Linear(5, 3)
        >>> x, y, idx = torch.randn(8, 5), torch.randint(0, 3, (8,)), torch.arange(8)
        >>> objective = (
        ...     Objective()
        ...     .add("elr", EarlyLearningRegularization(num_examples=8, num_classes=3))
        ...     .add("l2", lambda model: sum(p.square().sum() for p in model.parameters()),
        ...          weight=1e-4)
        ... )
        >>> out = objective(logits=model(x), target=y, index=idx, model=model)
        >>> out.total.backward(); objective.after_backward(model)
        >>> sorted(out.parts)
        ['elr', 'l2']

    Terms that are ``nn.Module`` s are registered as submodules, so their buffers (ELR's target
    memory) travel with ``objective.state_dict()``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.modules_by_name = nn.ModuleDict()
        self._terms: dict[str, _Term] = {}
        self.step = 0
        self.epoch = 0

    def add(
        self,
        name: str,
        term: Callable[..., torch.Tensor],
        weight: float | Schedule = 1.0,
        *,
        per: str = "step",
        args: tuple[str, ...] | None = None,
    ) -> Objective:
        """Register ``term`` under ``name`` with a constant or scheduled weight.

        Args:
            name: a unique identifier, used as the key of the breakdown.
            term: an ``nn.Module`` or callable returning a scalar tensor.
            weight: a number or a schedule ``w(t)`` (see :mod:`regzoo.core.schedules`).
            per: whether a schedule's ``t`` counts optimisation steps (``"step"``) or epochs.
            args: names of the inputs to pass positionally, for callables whose parameter
                names differ from the inputs' (``F.cross_entropy`` takes ``input, target``:
                ``args=("logits", "target")``). By default inputs are matched to the term's
                required parameter names.
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"name must be a Python identifier, got {name!r}")
        if name in self._terms:
            raise ValueError(f"a term named {name!r} is already registered; choose another name")
        if not callable(term):
            raise TypeError(f"term {name!r} must be callable, got {type(term).__name__}")
        shared = [other for other, t in self._terms.items()
                  if t.fn is term and isinstance(term, nn.Module)
                  and next(term.buffers(), None) is not None]
        if shared:
            raise ValueError(f"term {name!r} is the module already registered as {shared[0]!r}; "
                             "its state (per-example memory) would be written twice per step. "
                             "Build a second instance, or give the one term a larger weight")
        check_choice("per", per, ("step", "epoch"))
        positional = args is not None
        arg_names = tuple(args) if positional else _parameter_names(term)
        self._terms[name] = _Term(term, as_schedule(weight, f"weight of {name!r}"), per,
                                  arg_names, positional)
        if isinstance(term, nn.Module):
            self.modules_by_name[name] = term
        return self

    def weight_of(self, name: str) -> float:
        """The current weight of term ``name`` (its schedule at the current step or epoch)."""
        term = self._terms[name]
        return float(term.weight(self.step if term.per == "step" else self.epoch))

    def forward(self, **inputs: Any) -> LossBreakdown:
        """Evaluate every term on ``inputs`` and return the weighted total and its parts."""
        if not self._terms:
            raise ValueError("the Objective has no terms; call add(name, term) first")
        parts: dict[str, torch.Tensor] = {}
        weights: dict[str, float] = {}
        for name, term in self._terms.items():
            missing = [a for a in term.arg_names if a not in inputs]
            if missing:
                hint = ("; it keeps per-example state and needs each example's dataset index: "
                        "make the loader yield (x, y, index), e.g. with regzoo.data."
                        "IndexedDataset" if "index" in missing else "")
                raise ValueError(
                    f"term {name!r} needs inputs {missing}; pass them as keywords, e.g. "
                    f"objective({missing[0]}=...){hint}"
                )
            values = [inputs[a] for a in term.arg_names]
            value = term.fn(*values) if term.positional else term.fn(**dict(zip(term.arg_names,
                                                                               values)))
            if not torch.is_tensor(value) or value.ndim != 0:
                raise TypeError(f"term {name!r} must return a scalar tensor, got {value!r}")
            if not bool(torch.isfinite(value.detach())):
                raise FloatingPointError(
                    f"term {name!r} is non-finite ({float(value.detach())}) at step {self.step}"
                )
            weights[name] = self.weight_of(name)
            parts[name] = weights[name] * value
        total = torch.stack(list(parts.values())).sum()
        if self.training:
            self.step += 1
        return LossBreakdown(total=total, parts=parts, weights=weights)

    def after_backward(self, model: nn.Module) -> None:
        """Run the terms' ``after_backward(model)`` hooks in registration order."""
        for term in self._terms.values():
            hook = getattr(term.fn, "after_backward", None)
            if hook is not None:
                hook(model)

    def set_epoch(self, epoch: int) -> None:
        """Advance epoch-based schedules and forward ``epoch`` to terms that track it."""
        self.epoch = epoch
        for term in self._terms.values():
            hook = getattr(term.fn, "set_epoch", None)
            if hook is not None:
                hook(epoch)

    def get_extra_state(self) -> Mapping[str, int]:
        return {"step": self.step, "epoch": self.epoch}

    def set_extra_state(self, state: Mapping[str, int]) -> None:
        self.step = int(state["step"])
        self.epoch = int(state["epoch"])
