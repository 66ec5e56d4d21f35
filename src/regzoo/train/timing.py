"""Side-by-side step timing: ratios measured in one process, interleaved (design.md §7).

Absolute times are noise on a shared 2-core machine; the ratio of two steps measured in
alternation, in the same process and on the same inputs, is the figure regzoo quotes.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Mapping

import torch
from torch import nn

from regzoo.core.checks import check_positive_int


def machine_line() -> str:
    """One line naming what a benchmark ran on: versions, torch threads, CPU, Python."""
    import numpy

    return (f"torch {torch.__version__}, numpy {numpy.__version__}, threads "
            f"{torch.get_num_threads()}, CPU {platform.processor() or platform.machine()}, "
            f"python {platform.python_version()}")


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    steps: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 30,
    inner: int = 5,
    warmup: int = 5,
    device: torch.device | None = None,
) -> dict[str, float]:
    """Median seconds per call of each step, measured round-robin.

    Each of ``repeats`` rounds times ``inner`` consecutive calls of every step in turn, so slow
    phases of the machine hit all steps alike.
    """
    if not steps:
        raise ValueError("steps is empty; pass {name: callable}")
    check_positive_int("repeats", repeats)
    check_positive_int("inner", inner)
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            _sync(device)
            started = time.perf_counter()
            for _ in range(inner):
                fn()
            _sync(device)
            samples[name].append((time.perf_counter() - started) / inner)
    return {name: statistics.median(values) for name, values in samples.items()}


def time_criteria(
    model: nn.Module,
    criteria: Mapping[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]],
    x: torch.Tensor,
    y: torch.Tensor,
    index: torch.Tensor,
    device: torch.device | None = None,
    **timing: int,
) -> dict[str, float]:
    """Median seconds of one training step per criterion ``f(logits, target, index)``.

    A step is zero_grad, forward, loss, backward and an SGD step; all criteria share the model
    and the batch and are timed interleaved. ``timing`` (repeats, inner, warmup) goes to
    :func:`time_steps`.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def make_step(criterion: Callable[..., torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            criterion(model(x), y, index).backward()
            optimizer.step()
        return step

    return time_steps({name: make_step(c) for name, c in criteria.items()}, device=device,
                      **timing)


def criterion_differences(
    ours: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    reference: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    logits: torch.Tensor,
    target: torch.Tensor,
    index: torch.Tensor,
) -> dict[str, float]:
    """Largest absolute differences of loss and logit gradient between two criteria on one batch.

    Benchmarks call it before timing an implementation against a reference, so that the ratio
    they print compares the same computation.
    """
    results = []
    for criterion in (ours, reference):
        leaf = logits.detach().clone().requires_grad_(True)
        loss = criterion(leaf, target, index)
        (grad,) = torch.autograd.grad(loss, leaf)
        results.append((loss.detach(), grad))
    (loss_a, grad_a), (loss_b, grad_b) = results
    return {"loss": float((loss_a - loss_b).abs().max()),
            "grad": float((grad_a - grad_b).abs().max())}
