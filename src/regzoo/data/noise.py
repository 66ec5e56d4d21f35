"""Label-noise models of the noisy-label literature, seeded and reporting the realised rate.

* symmetric, ``include_true=True`` (ELR's official ``cifar10.py``): a fraction ``rate`` of the
  examples gets a label drawn uniformly from *all* C classes, so only ≈ rate·(C-1)/C of the
  labels actually change;
* symmetric, ``include_true=False``: exactly round(rate·N) labels move to a different class,
  uniformly among the other C-1;
* pair-flip: exactly round(rate·N) labels move from c to (c+1) mod C;
* asymmetric with a class map (ELR's CIFAR-10 rule: within each mapped class, a fraction
  ``rate`` of its examples flips to the partner class; truck→automobile, bird→airplane,
  deer→horse, cat↔dog).

Every function accepts a 1-D integer ``torch.Tensor`` or ``numpy`` array and returns
:class:`NoisyLabels` whose ``labels`` have the input's type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from regzoo.core.checks import check_positive_int, check_range

CIFAR10_ASYMMETRIC_MAP: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
"""ELR's CIFAR-10 asymmetric map: truck→automobile, bird→airplane, deer→horse, cat↔dog."""


@dataclass(frozen=True)
class NoisyLabels:
    """Corrupted labels together with what was done to them.

    Attributes:
        labels: the corrupted labels (same type as the input labels).
        is_noisy: boolean mask, True where ``labels`` differs from the clean label.
        noise_rate: realised fraction of changed labels (``is_noisy.mean()``).
        kind: the noise model's name; ``rate``: the requested rate.
    """

    labels: Any
    is_noisy: np.ndarray
    noise_rate: float
    kind: str
    rate: float


def _as_numpy(labels: Any, name: str = "labels") -> tuple[np.ndarray, bool]:
    is_torch = isinstance(labels, torch.Tensor)
    array = labels.detach().cpu().numpy() if is_torch else np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    return array.astype(np.int64), is_torch


def _result(clean: np.ndarray, noisy: np.ndarray, is_torch: bool, kind: str,
            rate: float) -> NoisyLabels:
    mask = noisy != clean
    labels: Any = torch.as_tensor(noisy) if is_torch else noisy
    return NoisyLabels(labels, mask, float(mask.mean()), kind, rate)


def _check_classes(clean: np.ndarray, num_classes: int) -> None:
    check_positive_int("num_classes", num_classes, minimum=2)
    if clean.min() < 0 or clean.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}] for num_classes={num_classes}, "
            f"got range [{clean.min()}, {clean.max()}]"
        )


def _draw(labels: Any, rate: float, num_classes: int,
          seed: int) -> tuple[np.ndarray, bool, float, np.random.Generator, np.ndarray]:
    """Validate, then choose exactly round(rate·N) examples: (clean, is_torch, rate, rng, idx)."""
    clean, is_torch = _as_numpy(labels)
    _check_classes(clean, num_classes)
    rate = check_range("rate", rate, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    return clean, is_torch, rate, rng, rng.permutation(clean.size)[: round(rate * clean.size)]


def symmetric_noise(
    labels: Any, rate: float, num_classes: int, *, include_true: bool = True, seed: int = 0
) -> NoisyLabels:
    """Resample a fraction ``rate`` of the labels uniformly.

    Args:
        labels: clean integer labels, shape (N,).
        rate: fraction of examples whose label is resampled, in [0, 1].
        num_classes: C.
        include_true: draw the new label from all C classes (ELR's official convention, so the
            true-label flip rate is rate·(C-1)/C) or from the C-1 other classes only.
        seed: seed of the draw.
    """
    clean, is_torch, rate, rng, chosen = _draw(labels, rate, num_classes, seed)
    noisy = clean.copy()
    if include_true:
        noisy[chosen] = rng.integers(0, num_classes, size=chosen.size)
    else:
        shift = rng.integers(1, num_classes, size=chosen.size)
        noisy[chosen] = (clean[chosen] + shift) % num_classes
    kind = "symmetric" if include_true else "symmetric_exclusive"
    return _result(clean, noisy, is_torch, kind, rate)


def pairflip_noise(labels: Any, rate: float, num_classes: int, *, seed: int = 0) -> NoisyLabels:
    """Move exactly round(rate·N) labels from class c to class (c + 1) mod C."""
    clean, is_torch, rate, _, chosen = _draw(labels, rate, num_classes, seed)
    noisy = clean.copy()
    noisy[chosen] = (clean[chosen] + 1) % num_classes
    return _result(clean, noisy, is_torch, "pairflip", rate)


def asymmetric_noise(
    labels: Any, rate: float, mapping: Mapping[int, int] | None = None, *,
    num_classes: int | None = None, seed: int = 0
) -> NoisyLabels:
    """Within each class ``c`` of ``mapping``, flip a fraction ``rate`` of it to ``mapping[c]``.

    The default mapping is ELR's CIFAR-10 rule :data:`CIFAR10_ASYMMETRIC_MAP`. As in the official
    code, each class's examples are drawn from the clean labels, so cat↔dog swaps do not chain.
    """
    clean, is_torch = _as_numpy(labels)
    rate = check_range("rate", rate, 0.0, 1.0)
    mapping = dict(CIFAR10_ASYMMETRIC_MAP if mapping is None else mapping)
    if not mapping:
        raise ValueError("mapping is empty; give at least one source→target class pair")
    if num_classes is not None:
        _check_classes(clean, num_classes)
        outside = sorted(c for pair in mapping.items() for c in pair
                         if not 0 <= c < num_classes)
        if outside:
            raise ValueError(f"mapping names classes {outside} outside [0, {num_classes - 1}] "
                             f"(num_classes={num_classes})")
    rng = np.random.default_rng(seed)
    noisy = clean.copy()
    for source in sorted(mapping):
        members = np.flatnonzero(clean == source)
        chosen = rng.permutation(members)[: round(rate * members.size)]
        noisy[chosen] = mapping[source]
    return _result(clean, noisy, is_torch, "asymmetric", rate)


_NOISE_SPEC = re.compile(r"^(clean|sym|symx|pair|asym)(\d{1,3})?$")


def parse_noise_spec(spec: str) -> tuple[str, float]:
    """Split a short noise spec (``sym40``) into its kind and rate; raise if malformed."""
    match = _NOISE_SPEC.match(spec) if isinstance(spec, str) else None
    if match is None or (match.group(1) != "clean") == (match.group(2) is None):
        raise ValueError(
            f"noise spec must look like 'sym40', 'symx40', 'pair40', 'asym40' or 'clean'; "
            f"got {spec!r}"
        )
    if match.group(1) == "clean":
        return "clean", 0.0
    return match.group(1), check_range("noise rate (percent)", int(match.group(2)), 0, 100) / 100


def label_noise(spec: str, labels: Any, num_classes: int, *, seed: int = 0) -> NoisyLabels:
    """Apply noise named by a short spec: ``sym40``, ``symx40``, ``pair40``, ``asym40``, ``clean``.

    ``sym`` resamples from all classes, ``symx`` from the other classes only, ``pair`` flips
    c→c+1, ``asym`` uses the CIFAR-10 class map; the number is the rate in percent.
    """
    kind, rate = parse_noise_spec(spec)
    if kind == "clean":
        return symmetric_noise(labels, 0.0, num_classes, seed=seed)
    if kind == "sym":
        return symmetric_noise(labels, rate, num_classes, include_true=True, seed=seed)
    if kind == "symx":
        return symmetric_noise(labels, rate, num_classes, include_true=False, seed=seed)
    if kind == "pair":
        return pairflip_noise(labels, rate, num_classes, seed=seed)
    return asymmetric_noise(labels, rate, num_classes=num_classes, seed=seed)
