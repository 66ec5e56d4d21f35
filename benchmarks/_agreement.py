"""Shared by the benchmarks: never time two arms that do not compute the same thing."""

from __future__ import annotations

from collections.abc import Mapping


def require_agreement(what: str, diffs: Mapping[str, float], tol: float,
                      measure: str = "max |diff|") -> None:
    """Stop the benchmark (exit message ``FAIL: ...``) at the first difference above ``tol``.

    ``diffs`` maps each checked quantity (loss, gradient, state...) to the max |difference|
    between the arms (``measure`` says how it was taken); ``what`` names the arms, e.g.
    "regzoo and reference HGP".
    """
    for key, value in diffs.items():
        if value > tol:
            raise SystemExit(f"FAIL: {what} disagree ({key}: {measure} = {value:.3g}); "
                             "timings would compare different computations")
