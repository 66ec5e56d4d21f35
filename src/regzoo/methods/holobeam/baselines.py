"""Flat fixed-budget best-arm baselines: Sequential Halving, Successive Rejects, uniform."""

from __future__ import annotations

import math

import torch

from regzoo.methods.holobeam.policies import FixedBudgetPolicy, _empirical_best


class SequentialHalving(FixedBudgetPolicy):
    """Sequential Halving (Karnin, Koren, Somekh, ICML 2013) on the K_x·K_y flat arms.

    ⌈log₂K⌉ rounds; in round r every survivor is pulled ⌊T/(|S_r|⌈log₂K⌉)⌋ times and the better
    half (by that round's means) survives.
    """

    name = "Sequential Halving"

    @classmethod
    def min_budget(cls, arms: tuple[int, int]) -> int:
        """Every arm pulled once in the first round: K⌈log₂K⌉."""
        k = arms[0] * arms[1]
        return k * max(1, math.ceil(math.log2(k)))

    def _first_round(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._rounds = max(1, math.ceil(math.log2(self.n_arms)))
        arms = torch.arange(self.n_arms, device=self.device).expand(self.batch, -1)
        return self._plan(arms)

    def _plan(self, arms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._survivors = arms
        per_arm = self.budget // (arms.shape[1] * self._rounds)
        return arms, torch.full_like(arms, per_arm)

    def _next_round(self, sums: torch.Tensor,
                    counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        means = sums / counts.clamp(min=1)
        keep = math.ceil(self._survivors.shape[1] / 2)
        order = torch.argsort(means, dim=1, descending=True, stable=True)[:, :keep]
        survivors = self._survivors.gather(1, order)
        if keep == 1:
            self._survivors = survivors
            return None
        return self._plan(survivors)

    def _recommend_flat(self) -> torch.Tensor:
        return self._survivors[:, 0]


class SuccessiveRejects(FixedBudgetPolicy):
    """Successive Rejects (Audibert, Bubeck, COLT 2010) on the K_x·K_y flat arms.

    K − 1 phases; after phase k every survivor has n_k pulls and the lowest cumulative mean is
    rejected; n_k = 1 + ⌊(T − K)/(logbar(K)(K + 1 − k))⌋ with logbar(K) = ½ + Σ_{i=2}^K 1/i.
    """

    name = "Successive Rejects"

    @classmethod
    def min_budget(cls, arms: tuple[int, int]) -> int:
        """One pull per arm."""
        return arms[0] * arms[1]

    def _first_round(self) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.n_arms
        log_bar = 0.5 + sum(1.0 / i for i in range(2, k + 1))
        self._n = [0] + [1 + math.floor((self.budget - k) / (log_bar * (k + 1 - j)))
                         for j in range(1, k)]
        self._phase = 1
        self._survivors = torch.arange(k, device=self.device).expand(self.batch, -1)
        return self._plan()

    def _plan(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._phase >= len(self._n):
            return None
        extra = self._n[self._phase] - self._n[self._phase - 1]
        return self._survivors, torch.full_like(self._survivors, extra)

    def _next_round(self, sums: torch.Tensor,
                    counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        total = self.sums.gather(1, self._survivors)
        n = self.counts.gather(1, self._survivors).clamp(min=1)
        worst = (total / n).argmin(1, keepdim=True)
        keep = torch.ones_like(self._survivors, dtype=torch.bool).scatter_(1, worst, False)
        self._survivors = self._survivors[keep].reshape(self.batch, -1)
        self._phase += 1
        return self._plan()

    def _recommend_flat(self) -> torch.Tensor:
        return self._survivors[:, 0]


class UniformAllocation(FixedBudgetPolicy):
    """Uniform allocation: ⌊T/K⌋ pulls on every flat arm, then the empirical best."""

    name = "uniform"

    @classmethod
    def min_budget(cls, arms: tuple[int, int]) -> int:
        """One pull per arm."""
        return arms[0] * arms[1]

    def _first_round(self) -> tuple[torch.Tensor, torch.Tensor]:
        arms = torch.arange(self.n_arms, device=self.device).expand(self.batch, -1)
        return arms, torch.full_like(arms, self.budget // self.n_arms)

    def _next_round(self, sums: torch.Tensor,
                    counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None

    def _recommend_flat(self) -> torch.Tensor:
        return _empirical_best(self.sums, self.counts)
