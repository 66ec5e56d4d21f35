"""Weight schedules: a term's weight as a function of the training step or epoch.

A schedule is any callable ``f(t) -> float``. These are the shapes the papers use: constant
weights, linear warm-up, the sigmoid ramp-up of temporal ensembling that ELR+ uses for λ and for
its weight-averaging decay (Laine & Aila, 2017: ``exp(-5 (1 - t/T)^2)``), cosine decay, and the
fine-tuning recipes' learning-rate factor: linear warm-up, then cosine decay
(:class:`WarmupCosine`, for ``torch.optim.lr_scheduler.LambdaLR``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from regzoo.core.checks import check_positive_int, check_real

Schedule = Callable[[int], float]


@dataclass(frozen=True)
class Constant:
    """``w(t) = value``."""

    value: float

    def __call__(self, t: int) -> float:
        return self.value


@dataclass(frozen=True)
class LinearRamp:
    """``w(t) = start + (end - start) · min(t / length, 1)``."""

    start: float
    end: float
    length: int

    def __post_init__(self) -> None:
        check_positive_int("length", self.length)

    def __call__(self, t: int) -> float:
        return self.start + (self.end - self.start) * min(max(t, 0) / self.length, 1.0)


@dataclass(frozen=True)
class SigmoidRamp:
    """``w(t) = value · exp(-5 (1 - min(t/length, 1))^2)``: 0.0067·value at t=0, value at t≥length.

    The ramp-up of temporal ensembling (Laine & Aila, ICLR 2017, §3.1), used by ELR+ for λ
    (``coef_step``) and for the weight-averaging decay (``ema_step``).
    """

    value: float
    length: int

    def __post_init__(self) -> None:
        check_real("value", self.value)
        check_positive_int("length", self.length, minimum=0)

    def __call__(self, t: int) -> float:
        if self.length == 0:
            return self.value
        phase = 1.0 - min(max(t, 0) / self.length, 1.0)
        return self.value * math.exp(-5.0 * phase * phase)


@dataclass(frozen=True)
class Cosine:
    """``w(t) = end + (start - end) · (1 + cos(π · min(t/length, 1))) / 2``."""

    start: float
    end: float
    length: int

    def __post_init__(self) -> None:
        check_positive_int("length", self.length)

    def __call__(self, t: int) -> float:
        phase = min(max(t, 0) / self.length, 1.0)
        return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * phase))


@dataclass(frozen=True)
class WarmupCosine:
    """A learning-rate factor: ``(t + 1) / warmup`` for t < warmup, then cosine from 1 to ``end``.

    ``w(t) = end + (1 − end) · (1 + cos(π · min(t − warmup, T − warmup) / (T − warmup))) / 2``
    with T = ``length`` (the total steps): the shape of transformers'
    ``get_cosine_schedule_with_warmup`` that the fine-tuning papers' trainers use. ``warmup = 0``
    is plain cosine decay. Use it as ``LambdaLR(optimizer, WarmupCosine(warmup, steps))``.
    """

    warmup: int
    length: int
    end: float = 0.0

    def __post_init__(self) -> None:
        check_positive_int("length", self.length)
        check_positive_int("warmup", self.warmup, minimum=0)
        if self.warmup >= self.length:
            raise ValueError(f"warmup must be shorter than length, got warmup={self.warmup} and "
                             f"length={self.length}")
        check_real("end", self.end)

    def __call__(self, t: int) -> float:
        if t < self.warmup:
            return (max(t, 0) + 1) / self.warmup
        span = self.length - self.warmup
        phase = min(t - self.warmup, span) / span
        return self.end + (1.0 - self.end) * 0.5 * (1.0 + math.cos(math.pi * phase))


def as_schedule(weight: float | Schedule, name: str = "weight") -> Schedule:
    """Turn a number into a :class:`Constant`; pass a callable schedule through."""
    if callable(weight):
        return weight
    return Constant(check_real(name, weight))
