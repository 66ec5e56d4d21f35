"""Irregularly sampled 2-D spirals: the latent-ODE toy task of Chen et al. (NeurIPS 2018, §5.1).

Each trajectory follows one of two Archimedean spirals (clockwise or counter-clockwise, as in the
latent-ODE paper's ``generate_spiral2d``), starting at a random point along it, observed on a
shared time grid with Gaussian noise; a random subset of the grid is observed (the encoder's
input and the training targets), the rest is held out for interpolation. Everything is drawn
from a CPU generator seeded by ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from regzoo.core.checks import check_positive_int, check_range


@dataclass(frozen=True)
class Spirals:
    """A batch of spiral trajectories on one time grid.

    ``times`` (m,), ``values`` (n, m, 2) noisy positions, ``clean`` (n, m, 2) noiseless,
    ``observed`` (n, m) bool mask of observed points (the rest are interpolation targets),
    ``direction`` (n,) 0 = counter-clockwise, 1 = clockwise.
    """

    times: torch.Tensor
    values: torch.Tensor
    clean: torch.Tensor
    observed: torch.Tensor
    direction: torch.Tensor

    def __len__(self) -> int:
        return len(self.values)

    def subset(self, index: torch.Tensor) -> Spirals:
        """The trajectories at ``index`` (same time grid)."""
        return Spirals(self.times, self.values[index], self.clean[index], self.observed[index],
                       self.direction[index])


def irregular_spirals(n: int, *, n_times: int = 40, observed_fraction: float = 0.5,
                      noise: float = 0.05, turns: float = 2.0, seed: int = 0) -> Spirals:
    """``n`` spiral trajectories on ``n_times`` grid points, ``observed_fraction`` observed.

    Spiral: r(θ) = a + bθ with a = 0, b = 0.3 (Chen et al.'s constants), θ over ``turns`` turns;
    a trajectory covers a third of the spiral from a uniform random start, at ``n_times`` equally
    spaced times in [0, 1]. The clockwise spiral is the counter-clockwise one mirrored and shifted
    (x → −x + 5, as in the latent-ODE code), so the two classes overlap in the plane.
    """
    check_positive_int("n", n)
    check_positive_int("n_times", n_times, minimum=4)
    check_range("observed_fraction", observed_fraction, 0.0, 1.0, low_inclusive=False,
                high_inclusive=False)
    check_range("noise", noise, 0.0, None)
    check_range("turns", turns, 0.0, None, low_inclusive=False)
    g = torch.Generator().manual_seed(seed)
    theta_max = 2 * math.pi * turns
    span = theta_max / 3
    start = torch.rand(n, generator=g, dtype=torch.float64) * (theta_max - span)
    grid = torch.linspace(0.0, 1.0, n_times, dtype=torch.float64)
    theta = start[:, None] + span * grid[None, :]
    r = 0.3 * theta
    direction = (torch.rand(n, generator=g) < 0.5).long()
    x = r * torch.cos(theta)
    y = r * torch.sin(theta)
    x = torch.where(direction[:, None] == 1, -x + 5.0, x)
    clean = torch.stack([x, y], dim=-1)
    clean = (clean - torch.tensor([2.5, 0.0], dtype=torch.float64)) / 3.0  # about unit scale
    values = clean + noise * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    n_obs = max(2, round(observed_fraction * n_times))
    scores = torch.rand(n, n_times, generator=g)
    scores[:, 0] = -1.0  # the first time point is always observed (the ODE's start)
    order = scores.argsort(dim=1)
    observed = torch.zeros(n, n_times, dtype=torch.bool)
    observed.scatter_(1, order[:, :n_obs], True)
    return Spirals(grid.float(), values.float(), clean.float(), observed, direction)
