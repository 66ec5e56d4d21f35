"""HoloBeam benchmark: Monte-Carlo harness throughput, vectorised over receivers vs a loop.

The same policy objects run either on a batch of R receivers (one ``select``/``pull``/``update``
per pilot for the whole batch, :func:`regzoo.methods.holobeam.run_policy`) or one receiver at a
time in a Python loop (batch of one). The figure to quote is the ratio of receiver-pilots per
second (design.md §7). One process, one thread. Run: ``python benchmarks/holobeam.py [--quick]``
or ``regzoo bench holobeam``.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from regzoo.methods.holobeam import POLICIES, random_receivers, run_policy
from regzoo.train.timing import machine_line


def pilots_per_second(name: str, receivers: int, budget: int, vectorised: bool,
                      loop_receivers: int, n: int) -> float:
    """Receiver-pilots simulated per second by one policy (looped over a subset if not batched).

    The budget is raised to the policy's minimum where it is smaller (Sequential Halving).
    """
    channel = random_receivers(receivers, torch.Generator().manual_seed(0), nx=n, ny=n,
                               snr_db=20.0)
    noise = torch.Generator().manual_seed(1)
    policy_type = POLICIES[name]
    budget = max(budget, policy_type.min_budget(channel.arms))
    started = time.perf_counter()
    if vectorised:
        run_policy(channel, policy_type(channel.arms, budget, receivers), noise)
        count = receivers
    else:
        for index in range(loop_receivers):
            run_policy(channel.subset(index), policy_type(channel.arms, budget, 1), noise)
        count = loop_receivers
    return count * budget / (time.perf_counter() - started)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    receivers, budget, looped, n = (200, 512, 3, 16) if args.quick else (1000, 2048, 10, 32)
    print(f"{machine_line()}; {n} × {n} HMT, T = {budget} (SH: its "
          f"minimum K⌈log₂K⌉ if larger), {receivers} receivers batched, {looped} looped\n")
    print("| policy | batched pilots/s | looped pilots/s | batched / looped |")
    print("|---|---:|---:|---:|")
    for name in POLICIES:
        batched = pilots_per_second(name, receivers, budget, True, looped, n)
        single = pilots_per_second(name, receivers, budget, False, looped, n)
        print(f"| {name} | {batched:,.0f} | {single:,.0f} | {batched / single:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
