"""Argument checks that fail early with a message naming the argument, its value and the fix.

Every public entry point of regzoo validates with these helpers (design.md §8): a user who passes
a wrong shape, a NaN or an impossible hyperparameter learns which argument is wrong and what is
allowed, before any work is done.
"""

from __future__ import annotations

import math
from numbers import Real

import torch


def check_real(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise ``TypeError`` if it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def check_range(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Return ``value`` as a float after checking it lies in the interval given by the bounds."""
    value = check_real(name, value)
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        left = "-inf" if low is None else f"{'[' if low_inclusive else '('}{low}"
        right = "inf)" if high is None else f"{high}{']' if high_inclusive else ')'}"
        raise ValueError(f"{name} must lie in {left}, {right}, got {value}")
    return value


def check_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an int of at least ``minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_tensor(
    name: str,
    value: object,
    *,
    ndim: int | None = None,
    floating: bool | None = None,
    finite: bool = False,
    nonempty: bool = True,
) -> torch.Tensor:
    """Check a tensor argument's type, rank, dtype family, emptiness and finiteness."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")
    if floating is True and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    if floating is False and (value.is_floating_point() or value.is_complex()
                              or value.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer tensor, got dtype {value.dtype}")
    if nonempty and value.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(value.shape)}); pass at least one example")
    if finite and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or infinite values; check the model and its inputs")
    return value


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value  # type: ignore[return-value]


INDEX_HINT = "; pass dataset indices, e.g. with regzoo.data.IndexedDataset"
"""The fix to suggest when a per-example method receives out-of-range indices."""


def check_index_range(name: str, index: torch.Tensor, size: int, hint: str = "") -> None:
    """Raise ``ValueError`` unless every entry of the integer tensor ``index`` is in [0, size)."""
    low, high = (int(v) for v in torch.aminmax(index))
    if low < 0 or high >= size:
        raise ValueError(f"{name} must lie in [0, {size - 1}], got values in [{low}, {high}]"
                         f"{hint}")
