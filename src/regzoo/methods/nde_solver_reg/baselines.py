"""The paper's baselines: STEER (random end times) and TayNODE (Taylor-mode derivative penalty).

* STEER — Ghosh, Behl, Dupont, Torr, Namboodiri, "STEER: Simple Temporal Regularization For
  Neural ODEs", NeurIPS 2020, arXiv 2006.10711. During training the end time of the solve is drawn
  per iteration, T ~ U(t₁ − b, t₁ + b), with b = 0.5 in the ERNODE paper's
  comparison (spec, official scripts); evaluation uses t₁. :class:`SteerEndTime`.
* TayNODE — Kelly, Bettencourt, Johnson, Duvenaud, "Learning Differential Equations that are
  Easy to Solve", NeurIPS 2020, arXiv 2007.04504. Penalises the squared K-th total time
  derivative of the solution, R_K = ∫_{t₀}^{t₁} ‖dᴷz/dtᴷ‖² dt, integrated by the
  solver itself on an augmented state. The total derivatives come from Taylor mode: with
  D₁(t, z) = f(t, z) and D_{k+1}(t, z) = ∂D_k/∂t + ∂D_k/∂z · f(t, z) (a forward-mode
  ``torch.func.jvp`` along the tangent (1, f)), dᴷz/dtᴷ = D_K(t, z). K = 2 by default (the
  order Kelly et al. use for their classifiers). :class:`TaylorModeRegularizedDynamics`.

Cost: STEER is free. TayNODE's augmented dynamics cost, per evaluation, one f plus K − 1 nested
jvps (each about a forward pass, nested ones more), and the backward pass differentiates through
them, so a training step is several times a plain one — the cost the ERNODE paper contrasts with.

Departures: Kelly et al. use JAX's ``jet`` (truncated Taylor arithmetic); nested ``jvp`` gives
the same derivatives at a cost exponential in K, negligible for K ≤ 3. The regulariser per
example is the squared norm summed over state dimensions; the batch value is its mean.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import jvp

from regzoo.core.checks import check_positive_int, check_range

STEER_B = 0.5
"""STEER half-width b (ERNODE paper's comparison)."""


class SteerEndTime:
    """Draws the training end time T ~ U(t₁ − b, t₁ + b) from a CPU generator (STEER).

    Args:
        t1: the nominal end time (evaluation uses it).
        b: half-width, 0 ≤ b < |t₁ − t₀| so that T stays beyond t₀ (default 0.5).
        t0: the start time (default 0).
        generator: a ``torch.Generator`` for reproducible draws.
    """

    def __init__(self, t1: float = 1.0, b: float = STEER_B, *, t0: float = 0.0,
                 generator: torch.Generator | None = None):
        self.t0 = check_range("t0", t0)
        self.t1 = check_range("t1", t1)
        span = abs(self.t1 - self.t0)
        self.b = check_range("b", b, 0.0, span, high_inclusive=False)
        self.generator = generator

    def sample(self) -> float:
        """One end time, uniform in [t₁ − b, t₁ + b]."""
        u = float(torch.rand((), generator=self.generator, dtype=torch.float64))
        return self.t1 + self.b * (2.0 * u - 1.0)


def total_derivative(func: Callable, t: torch.Tensor, z: torch.Tensor, order: int,
                     dz: torch.Tensor | None = None) -> torch.Tensor:
    """dᴷz/dtᴷ of the solution of dz/dt = func(t, z) through (t, z), by nested jvp (Taylor mode).

    ``order`` = 1 returns func(t, z); each further order is one jvp of the previous total
    derivative along (1, func(t, z)). ``dz`` = func(t, z) when the caller has it (the outer
    tangent), saving one evaluation. Differentiable w.r.t. func's parameters and z.
    """
    check_positive_int("order", order)
    t = torch.as_tensor(t, dtype=z.dtype, device=z.device)

    def derivative(k: int) -> Callable:
        if k == 1:
            return func

        def next_order(tt: torch.Tensor, zz: torch.Tensor) -> torch.Tensor:
            return jvp(derivative(k - 1), (tt, zz), (torch.ones_like(tt), func(tt, zz)))[1]
        return next_order

    if order == 1:
        return func(t, z) if dz is None else dz
    tangent = func(t, z) if dz is None else dz
    return jvp(derivative(order - 1), (t, z), (torch.ones_like(t), tangent))[1]


class TaylorModeRegularizedDynamics(nn.Module):
    """Dynamics of the augmented state [z, r] with dr/dt = ‖dᴷz/dtᴷ‖² per example (TayNODE).

    The state is ``(batch, d + 1)`` (last column r, start it at 0); after the solve the
    regulariser is ``state[:, -1].mean()`` = mean over the batch of ∫‖dᴷz/dtᴷ‖² dt.

    Args:
        func: the plain dynamics on ``(batch, d)`` states.
        order: K (default 2).
    """

    def __init__(self, func: Callable, order: int = 2):
        super().__init__()
        self.func = func
        self.order = check_positive_int("order", order, minimum=2)

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        z = state[..., :-1]
        dz = self.func(t, z)
        dk = total_derivative(self.func, t, z, self.order, dz=dz)
        rate = dk.pow(2).flatten(1).sum(1) if dk.ndim > 1 else dk.pow(2).sum().reshape(1)
        return torch.cat([dz, rate.reshape(*state.shape[:-1], 1)], dim=-1)

    @staticmethod
    def augment(z0: torch.Tensor) -> torch.Tensor:
        """[z0, 0]: the augmented initial state."""
        return torch.cat([z0, z0.new_zeros(*z0.shape[:-1], 1)], dim=-1)

    @staticmethod
    def split(state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, R_K): the solution and the batch-mean regulariser from an augmented state."""
        return state[..., :-1], state[..., -1].mean()
