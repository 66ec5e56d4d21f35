r"""Parameter-group routing: groups of parameters, each with its own optimiser and its own pass.

Some methods train a part of a network (gates, mask predictors, architecture logits) with an
optimiser of its own, on a forward/backward pass of its own, before the rest of the network
steps. :class:`GradientRouter` runs that schedule for any list of :class:`RoutedGroup`: per
batch, for each group in order,

.. math::

    L_i = \mathcal{L}(f(x; \theta)) \ \text{(a fresh forward)}, \quad
    g_i = \mathrm{clip}(\nabla L_i, c_i), \quad \text{non-finite entries of } g_i \to 0, \quad
    \theta_{G_i} \leftarrow \mathrm{opt}_i(\theta_{G_i}, g_i)

so pass i sees the parameters as left by the steps of passes 1 … i − 1. Two ways to form g_i:

* ``accumulate=False`` (independent passes): gradients are cleared before each pass and only
  group i's parameters receive gradient (``backward(inputs=...)``), clipped as one vector of
  group i's gradients;
* ``accumulate=True`` (gradients never cleared between the passes of one batch): every
  parameter accumulates every pass's gradient, each clipping acts on all parameters' current
  gradients, so group i steps on the clipped sum of passes 1 … i (how HAG's official trainer
  runs gradient routing in fp32, see :mod:`regzoo.methods.hag`).

Non-finite gradient entries are set to 0 after clipping (as HAG's official trainer does), so a
bad batch skips rather than poisons an optimiser's state. Cost: one forward and backward per
group per batch. A single group is an ordinary training step with clipping, so the same loop
trains a baseline. Used by HAG's gradient routing (:mod:`regzoo.methods.hag`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from regzoo.core.checks import check_range


@dataclass
class RoutedGroup:
    """One routed group: its name, parameters, optimiser and gradient-norm clip (None: none).

    The optimiser must hold exactly ``params`` (possibly in several param groups of its own).
    """

    name: str
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    max_norm: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        self.params = list(self.params)
        if not self.params:
            raise ValueError(f"group {self.name!r} has no parameters; give at least one")
        if any(not isinstance(p, torch.Tensor) or not p.requires_grad for p in self.params):
            raise TypeError(f"group {self.name!r}: params must be tensors that require grad")
        if not isinstance(self.optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"group {self.name!r}: optimizer must be a torch.optim.Optimizer, "
                f"got {type(self.optimizer).__name__}"
            )
        held = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        if held != {id(p) for p in self.params}:
            raise ValueError(
                f"group {self.name!r}: the optimiser must hold exactly the group's "
                "parameters (build it from the same list)"
            )
        if self.max_norm is not None:
            check_range("max_norm", self.max_norm, 0.0, low_inclusive=False)


def zero_nonfinite_(params: Sequence[torch.Tensor]) -> None:
    """Set NaN and ±inf entries of every gradient in ``params`` to 0, in place."""
    for p in params:
        if p.grad is not None:
            torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)


class GradientRouter:
    """Per batch, one fresh forward/backward and one optimiser step per group, in order.

    Args:
        groups: the routed groups; their parameter sets must be disjoint.
        accumulate: keep gradients between the passes of a batch (module docstring).
        zero_nonfinite: set non-finite gradient entries to 0 after clipping.

    ``step(closure)`` calls ``closure()`` (a fresh forward returning the scalar loss) once per
    group and returns the detached losses; ``state_dict``/``load_state_dict`` carry every
    optimiser's state, so the router checkpoints like one optimiser.
    """

    def __init__(
        self,
        groups: Sequence[RoutedGroup],
        *,
        accumulate: bool = False,
        zero_nonfinite: bool = True,
    ) -> None:
        groups = list(groups)
        if not groups or any(not isinstance(g, RoutedGroup) for g in groups):
            raise TypeError("groups must be a non-empty sequence of RoutedGroup")
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise ValueError(f"group names must be distinct, got {names}")
        seen: set[int] = set()
        for g in groups:
            ids = {id(p) for p in g.params}
            if ids & seen:
                raise ValueError(
                    f"group {g.name!r} shares parameters with an earlier group; "
                    "each parameter must belong to one group"
                )
            seen |= ids
        if not isinstance(accumulate, bool):
            raise TypeError(f"accumulate must be a bool, got {accumulate!r}")
        self.groups = groups
        self.accumulate = accumulate
        self.zero_nonfinite = zero_nonfinite
        self.last_norms: dict[str, torch.Tensor] = {}
        """Each group's gradient norm before its clipping, from the last :meth:`step`."""

    @property
    def params(self) -> list[nn.Parameter]:
        """Every routed parameter, group by group."""
        return [p for g in self.groups for p in g.params]

    def zero_grad(self) -> None:
        """Clear every routed parameter's gradient."""
        for p in self.params:
            p.grad = None

    def step(self, closure: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
        """Run every group's pass on ``closure`` (a fresh forward); return the detached losses."""
        losses = []
        self.zero_grad()
        everything = self.params
        for group in self.groups:
            if not self.accumulate:
                self.zero_grad()
            loss = closure()
            if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                raise ValueError(
                    "closure must return a scalar loss tensor, got "
                    f"{type(loss).__name__} of shape "
                    f"{tuple(getattr(loss, 'shape', ()))}"
                )
            if self.accumulate:
                loss.backward()
                clipped = everything
            else:
                loss.backward(inputs=group.params)
                clipped = group.params
            with_grad = [p for p in clipped if p.grad is not None]
            norm = (
                nn.utils.clip_grad_norm_(with_grad, group.max_norm)
                if group.max_norm is not None and with_grad
                else nn.utils.get_total_norm([p.grad for p in with_grad])
                if with_grad
                else torch.zeros(())
            )
            self.last_norms[group.name] = norm.detach()
            if self.zero_nonfinite:
                zero_nonfinite_(clipped)
            group.optimizer.step()
            losses.append(loss.detach())
        return losses

    def state_dict(self) -> dict[str, Any]:
        """Every group's optimiser state, by group name."""
        return {g.name: g.optimizer.state_dict() for g in self.groups}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (same group names)."""
        names = [g.name for g in self.groups]
        if sorted(state) != sorted(names):
            raise ValueError(f"state has groups {sorted(state)}, this router has {sorted(names)}")
        for g in self.groups:
            g.optimizer.load_state_dict(state[g.name])

    def learning_rates(self) -> dict[str, float]:
        """The first param group's learning rate of each group's optimiser."""
        return {g.name: float(g.optimizer.param_groups[0]["lr"]) for g in self.groups}
