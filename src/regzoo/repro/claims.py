"""Claims and the one verdict rule every headline and secondary claim goes through.

A claim is a paired comparison over seeds. The effect per seed is
``d_s = sign · (method_s − baseline_s)`` (``sign`` = +1 when higher is better). With n seeds,
mean m, standard error e = sd(d)/√n and t = the 0.975 quantile of Student's t with n − 1
degrees of freedom (a two-sided 95 % interval m ± t·e):

* ``reproduced`` when m − t·e ≥ margin: the effect is at least the margin with 95 % confidence;
* ``not_reproduced`` when m + t·e < margin: with 95 % confidence the effect falls short;
* ``inconclusive`` otherwise, and always when n < :data:`MIN_SEEDS` or a value is not finite.

Student's t rather than the normal 2·SE: with 5 seeds t = 2.776, and 2·SE would cover only
≈ 88 % (≈ 82 % with 3 seeds). This module turns unit records into verdicts; it does not shape
any unit's numbers, so it is not part of a unit's provenance fingerprint.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scipy import stats

MIN_SEEDS = 5
"""Fewer paired seeds than this never give a verdict."""
CONFIDENCE = 0.95
VERDICTS = ("reproduced", "not_reproduced", "inconclusive")
VERDICT_SYMBOL = {"reproduced": "✓", "not_reproduced": "✗", "inconclusive": "?"}
RULE_TEXT = (f"Verdict rule: with n paired seeds, mean effect m, standard error e and t the "
             f"0.975 quantile of Student's t with n − 1 degrees of freedom, a claim is "
             f"reproduced when m − t·e ≥ margin (the effect is at least the margin with "
             f"{CONFIDENCE:.0%} confidence), not reproduced when m + t·e < margin, and "
             f"inconclusive otherwise or whenever n < {MIN_SEEDS} or a value is not finite.")


def t_quantile(n: int) -> float:
    """The two-sided 95 % Student-t multiplier for the mean of ``n`` paired values (n ≥ 2)."""
    if n < 2:
        raise ValueError(f"n must be at least 2 for a t interval, got {n}")
    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))


def verdict(diffs: Iterable[float], margin: float) -> dict[str, Any]:
    """Mean, SE, t, the verdict and the reason for an inconclusive one, from paired effects."""
    values = [math.nan if d is None else float(d) for d in diffs]
    n = len(values)
    finite = all(math.isfinite(d) for d in values)
    mean = statistics.fmean(values) if values and finite else math.nan
    se = statistics.stdev(values) / math.sqrt(n) if n > 1 and finite else math.nan
    t = t_quantile(n) if n > 1 else math.nan
    reason = ""
    if not finite:
        outcome, reason = "inconclusive", "a per-seed value is not finite"
    elif n < MIN_SEEDS:
        outcome, reason = "inconclusive", f"{n} paired seeds < {MIN_SEEDS}: no verdict"
    elif mean - t * se >= margin:
        outcome = "reproduced"
    elif mean + t * se < margin:
        outcome = "not_reproduced"
    else:
        outcome, reason = "inconclusive", "the 95 % interval contains the margin"
    return {"mean_effect": mean, "se": se, "n": n, "t": t,
            "interval": [mean - t * se, mean + t * se], "verdict": outcome, "reason": reason}


def _finite(value: float | None) -> float:
    """``None`` (a NaN written to JSON as null) back to NaN."""
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class Claim:
    """A paper's claim as a paired comparison over seeds, judged by :func:`verdict`."""

    statement: str
    metric: str
    setting: str
    method: str
    baseline: str
    margin: float
    higher_is_better: bool = True

    def evaluate(self, method_values: Mapping[int, float | None],
                 baseline_values: Mapping[int, float | None]) -> dict[str, Any]:
        """The observed effect and verdict from per-seed values keyed by seed."""
        seeds = sorted(set(method_values) & set(baseline_values))
        sign = 1.0 if self.higher_is_better else -1.0
        diffs = [sign * (_finite(method_values[s]) - _finite(baseline_values[s])) for s in seeds]
        judged = verdict(diffs, self.margin)
        return {
            "statement": self.statement,
            "metric": self.metric,
            "setting": self.setting,
            "method": self.method,
            "baseline": self.baseline,
            "margin": self.margin,
            "direction": "higher" if self.higher_is_better else "lower",
            "observed": {"mean_effect": judged["mean_effect"], "se": judged["se"],
                         "n": judged["n"], "t": judged["t"], "interval": judged["interval"],
                         "per_seed": dict(zip(map(str, seeds), diffs))},
            "verdict": judged["verdict"],
            "reason": judged["reason"],
            "rule": RULE_TEXT,
        }


def claim_counts(result: Mapping[str, Any]) -> dict[str, int]:
    """How many of a result's claims (headline and secondary) have each verdict."""
    claims = [result["claim"], *result.get("secondary_claims", ())]
    return {v: sum(c.get("verdict") == v for c in claims) for v in VERDICTS}


def status_line(result: Mapping[str, Any]) -> str:
    """``<headline verdict> · claims 3✓ 2✗ 4?``: the headline and every claim's verdict."""
    counts = claim_counts(result)
    tally = " ".join(f"{counts[v]}{VERDICT_SYMBOL[v]}" for v in VERDICTS)
    return f"{result['claim']['verdict']} · claims {tally}"
