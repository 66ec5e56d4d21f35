"""The registry: one :class:`MethodCard` per paper, all 27 of them.

A method module registers its public class or function with :func:`register`; the paper's
bibliographic record comes from :mod:`regzoo.catalog`, so it is written once. Papers whose
method has not landed yet have a card with status ``planned`` and no object: nothing pretends to
run. The status of an implemented method is the verdict of its committed full reproduction
(``results/<slug>/result.json``) when there is one, else ``implemented``.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, TypeVar

from regzoo.catalog import PAPERS, PaperEntry

KINDS = ("criterion", "penalty", "transform", "procedure", "estimator")
STATUSES = ("planned", "implemented", "reproduced", "not_reproduced", "inconclusive")
_SLUG = re.compile(r"^[a-z][a-z0-9_]*$")

T = TypeVar("T")

DECLARATIONS = {
    "owns_loss": "a procedure whose own losses are the method: no criterion or penalty joins "
                 "its loop",
    "every_layer_of_type": "a transform that acts on every layer of the given module types, so "
                           "it cannot leave a layer to another transform",
    "trains_backbone": "a transform that fine-tunes the network's own weights with its added "
                       "parameters: an adapter applied after it freezes those weights (peft's "
                       "semantics) and leaves it only the parameters it added",
    "one_adapter_per_layer": "an adapter: a layer that carries one cannot take a second "
                             "(ValueError naming the adapter it carries)",
    "not_on_a_classifier": "a penalty on one architecture's internals, not on a classifier's "
                           "features and head",
    "batch_coupled": "its value couples the examples of a batch: 2 ranks, or micro-batches, "
                     "differ from one process on the global batch",
    "batch_coupled_variant": "a variant (not the default) is batch-coupled",
    "pairs": "pair-specific: {other slug: why the two do not meet as applied by default}",
}
"""What a card may declare about composition (``register(..., declares={key: reason})``)."""


@dataclass(frozen=True)
class Default:
    """A hyperparameter's default value and where it comes from (paper table or code file)."""

    name: str
    value: Any
    source: str


@dataclass(frozen=True)
class MethodCard:
    """Everything ``regzoo list`` and ``regzoo info`` show about one paper's method."""

    paper: PaperEntry
    obj: Any = None
    summary: str = ""
    equation: str = ""
    defaults: tuple[Default, ...] = ()
    variants: tuple[str, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def declarations(self) -> dict[str, Any]:
        """What the card declares about composition, each with its reason (:data:`DECLARATIONS`)."""
        return dict(self.extras.get("declares", {}))

    @property
    def slug(self) -> str:
        """The method's one name: module, registry key, CLI argument, results folder."""
        return self.paper.slug

    @property
    def kind(self) -> str:
        """One of :data:`KINDS`; it fixes the interface (design.md §3)."""
        return self.paper.kind

    @property
    def implemented(self) -> bool:
        """True when a method module registered an object for this slug."""
        return self.obj is not None

    @property
    def target(self) -> str | None:
        """``module:qualname`` of the registered object."""
        if self.obj is None:
            return None
        return f"{self.obj.__module__}:{self.obj.__qualname__}"

    def last_result(self) -> dict[str, Any] | None:
        """The committed full run's ``result.json``, if one is found."""
        path = results_dir() / self.slug / "result.json"
        if not path.is_file():
            return None
        return json.loads(path.read_text())

    def status_line(self) -> str:
        """What ``regzoo list`` shows: the status, and for a committed result every claim.

        ``reproduced · claims 3✓ 2✗ 4?``, with `` · stale`` when the result's code fingerprint
        no longer matches the code (or it ran dirty or mixed).
        """
        result = self.last_result() if self.implemented else None
        if result is None or "run" not in result or "verdict" not in result.get("claim", {}):
            return self.status
        from regzoo.repro.claims import status_line
        from regzoo.repro.runner import result_changes

        return status_line(result) + (" · stale" if result_changes(result) else "")

    @property
    def status(self) -> str:
        """``planned``, ``implemented``, or the committed full run's verdict."""
        if not self.implemented:
            return "planned"
        result = self.last_result()
        if result is None:
            return "implemented"
        verdict = result.get("claim", {}).get("verdict")
        return verdict if verdict in STATUSES else "implemented"


_REGISTERED: dict[str, MethodCard] = {}
_LOADED = False


def results_dir() -> Path:
    """Committed results: ``$REGZOO_RESULTS``, else ``results/`` of the source checkout."""
    env = os.environ.get("REGZOO_RESULTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "results"


def register(
    slug: str,
    *,
    kind: str,
    summary: str,
    equation: str,
    defaults: tuple[Default, ...] = (),
    variants: tuple[str, ...] = (),
    **extras: Any,
) -> Callable[[T], T]:
    """Class or function decorator that registers a paper's method under ``slug``.

    The slug must be lower-case, listed in :mod:`regzoo.catalog`, registered once, and ``kind``
    must be the catalog's kind for it.
    """
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise ValueError(f"slug must be lower-case letters, digits and '_', got {slug!r}")
    if slug not in PAPERS:
        raise ValueError(f"slug {slug!r} is not in regzoo.catalog.PAPERS; add its paper first")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if PAPERS[slug].kind != kind:
        raise ValueError(f"{slug!r} is a {PAPERS[slug].kind!r} in the catalog, not {kind!r}")
    unknown = sorted(set(extras.get("declares", {})) - set(DECLARATIONS))
    if unknown:
        raise ValueError(f"declares: unknown keys {unknown}; known: {sorted(DECLARATIONS)}")

    def decorate(obj: T) -> T:
        if slug in _REGISTERED:
            raise ValueError(f"slug {slug!r} is already registered by "
                             f"{_REGISTERED[slug].target}")
        _REGISTERED[slug] = MethodCard(PAPERS[slug], obj, summary, equation, tuple(defaults),
                                       tuple(variants), dict(extras))
        return obj

    return decorate


def _load_methods() -> None:
    global _LOADED
    if _LOADED:
        return
    import regzoo.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _LOADED = True


def cards(kind: str | None = None, pattern: str = "*") -> list[MethodCard]:
    """All 27 cards (planned ones included), sorted by slug, filtered by kind and wildcard."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    _load_methods()
    out = [_REGISTERED.get(slug, MethodCard(paper)) for slug, paper in sorted(PAPERS.items())]
    return [c for c in out if (kind is None or c.kind == kind) and fnmatch(c.slug, pattern)]


def card(slug: str) -> MethodCard:
    """The card of ``slug``; an unknown slug raises with the closest known names."""
    _load_methods()
    if slug not in PAPERS:
        import difflib

        close = difflib.get_close_matches(slug, PAPERS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `regzoo list`"
        raise KeyError(f"unknown method {slug!r}{hint}")
    return _REGISTERED.get(slug, MethodCard(PAPERS[slug]))
