"""Reproduction configs: frozen dataclasses with ``tiny()``, ``quick()`` and ``full()`` presets.

``tiny`` is the CI smoke size (seconds), ``quick`` the CLI default (≤ 2 minutes on 2 cores),
``full`` the committed run (≤ 20 minutes). ``--set field=value`` overrides are parsed by the
field's declared type.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="ReproConfig")


@dataclasses.dataclass(frozen=True)
class ReproConfig:
    """Base of every reproduction config: the training seeds, then the reproduction's fields.

    Subclasses define the classmethods ``tiny()``, ``quick()`` and ``full()``.
    """

    seeds: tuple[int, ...] = (0, 1, 2)
    positive_fields: ClassVar[tuple[str, ...]] = ("epochs", "batch_size", "lr")
    """Fields that must be > 0 when the config has them (checked in ``__post_init__``)."""

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("seeds is empty; give at least one seed, e.g. --seeds 0 1 2")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be non-negative integers, got {self.seeds}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be finite, got {value}")
            if f.name in self.positive_fields and not (isinstance(value, (int, float))
                                                       and value > 0):
                raise ValueError(f"{f.name} must be positive, got {value!r}")

    @classmethod
    def preset(cls: type[C], mode: str) -> C:
        """``tiny``, ``quick`` or ``full``."""
        if mode not in ("tiny", "quick", "full"):
            raise ValueError(f"mode must be 'tiny', 'quick' or 'full', got {mode!r}")
        factory = getattr(cls, mode, None)
        if factory is None:
            raise TypeError(f"{cls.__name__} defines no {mode}() preset")
        return factory()

    def with_overrides(self: C, overrides: Mapping[str, str]) -> C:
        """A copy with fields set from strings, each parsed by the field's type."""
        hints = typing.get_type_hints(type(self))
        fields = {f.name for f in dataclasses.fields(self)}
        values: dict[str, Any] = {}
        for key, text in overrides.items():
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise ValueError(f"unknown config field {key!r}; fields: {known}")
            values[key] = parse_value(key, text, hints[key])
        return dataclasses.replace(self, **values)

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Rebuild a config from :meth:`as_dict` output (as stored in ``result.json``)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view of the config."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def parse_value(name: str, text: str, hint: Any) -> Any:
    """Parse ``text`` as ``hint`` (bool, int, float, str, or tuple[...] given comma-separated)."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item, *_rest) = typing.get_args(hint)
        parts = [p for p in text.split(",") if p.strip()]
        return tuple(parse_value(name, p.strip(), item) for p in parts)
    try:
        if hint is bool:
            lowered = text.lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(text)
            return lowered in ("1", "true", "yes")
        if hint in (int, float, str):
            return hint(text)
    except ValueError:
        raise ValueError(f"--set {name}={text!r}: expected {hint.__name__}") from None
    raise TypeError(f"--set cannot parse field {name!r} of type {hint}")
