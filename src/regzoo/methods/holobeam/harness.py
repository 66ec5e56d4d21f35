"""The Monte-Carlo harness: every policy by name, one run over a batch of receivers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from regzoo.methods.holobeam.baselines import (
    SequentialHalving,
    SuccessiveRejects,
    UniformAllocation,
)
from regzoo.methods.holobeam.channel import HMTChannel
from regzoo.methods.holobeam.policies import FixedBudgetPolicy, HoloBeam, UnimodalSearch2D

POLICIES: dict[str, type[FixedBudgetPolicy]] = {
    "holobeam": HoloBeam,
    "sequential_halving": SequentialHalving,
    "successive_rejects": SuccessiveRejects,
    "uniform": UniformAllocation,
    "unimodal_2d": UnimodalSearch2D,
}
"""Every policy behind the common interface, by name."""


@dataclass(frozen=True)
class BanditRun:
    """One Monte-Carlo run over a batch of receivers (torch tensors on the channel's device)."""

    pairs: torch.Tensor
    correct: torch.Tensor
    throughput: torch.Tensor
    pulls: torch.Tensor

    @property
    def error_rate(self) -> float:
        """Fraction of receivers whose recommended pair is not the best grid arm."""
        return 1.0 - float(self.correct.double().mean())


def run_policy(channel: HMTChannel, policy: FixedBudgetPolicy,
               generator: torch.Generator) -> BanditRun:
    """Spend the policy's budget on the channel's receivers, one pilot per receiver per step.

    The harness vectorised over receivers: every step is one ``select`` / ``pull`` /
    ``update`` on the whole batch. ``generator`` draws all pilot noise (no global RNG).
    """
    if policy.batch != channel.n_receivers:
        raise ValueError(f"policy.batch ({policy.batch}) must equal the channel's number of "
                         f"receivers ({channel.n_receivers})")
    if (policy.kx, policy.ky) != channel.arms:
        raise ValueError(f"the policy's grid {(policy.kx, policy.ky)} must be the channel's "
                         f"{channel.arms}; build it with arms=channel.arms")
    while not policy.done:
        arms = policy.select()
        policy.update(channel.pull(arms, generator))
    pairs = policy.recommend().to(channel.device)
    ix, iy = pairs[:, 0], pairs[:, 1]
    best = channel._best()
    correct = (ix == best[:, 0]) & (iy == best[:, 1])
    rate = torch.log2(1 + channel._snr(ix, iy))
    return BanditRun(pairs, correct, rate, policy.pulls.clone())
