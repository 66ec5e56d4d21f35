"""The verdict rule: Student-t interval against the margin, n ≥ 5, finite values, direction."""

import math

import pytest

from regzoo.repro.claims import (
    MIN_SEEDS,
    Claim,
    claim_counts,
    status_line,
    t_quantile,
    verdict,
)

CLAIM = Claim("m beats b by 0.05", "acc", "s", "m", "b", margin=0.05)


@pytest.mark.parametrize(("n", "t"), [(2, 12.706), (3, 4.303), (5, 2.776), (10, 2.262),
                                      (31, 2.042)])
def test_t_quantile_matches_the_tables(n, t):
    assert t_quantile(n) == pytest.approx(t, abs=5e-4)


def test_t_quantile_needs_two_values():
    with pytest.raises(ValueError, match="at least 2"):
        t_quantile(1)


def _paired(diffs):
    return {s: d for s, d in enumerate(diffs)}, {s: 0.0 for s in range(len(diffs))}


@pytest.mark.parametrize(
    ("diffs", "expected"),
    [
        ([0.20, 0.21, 0.19, 0.20, 0.22], "reproduced"),      # interval far above the margin
        ([0.00, 0.01, -0.01, 0.00, 0.01], "not_reproduced"),  # interval far below it
        ([0.30, -0.20, 0.10, 0.00, 0.05], "inconclusive"),    # interval contains it
    ],
)
def test_verdict_compares_the_95_percent_interval_with_the_margin(diffs, expected):
    assert CLAIM.evaluate(*_paired(diffs))["verdict"] == expected


def test_the_lower_bound_must_clear_the_margin_not_just_the_mean():
    # mean 0.08 ≥ margin 0.05 and mean − 2·SE > 0 (the old rule said reproduced), but
    # mean − t·SE < 0.05 with t = 2.776 for 5 seeds.
    diffs = [0.08 + d for d in (-0.03, 0.03, -0.02, 0.02, 0.0)]
    out = verdict(diffs, 0.05)
    se = out["se"]
    assert out["mean_effect"] - 2 * se > 0 and out["mean_effect"] >= 0.05
    assert out["mean_effect"] - t_quantile(5) * se < 0.05
    assert out["verdict"] == "inconclusive"
    assert out["interval"] == pytest.approx([0.08 - t_quantile(5) * se, 0.08 + t_quantile(5) * se])


def test_fewer_than_five_seeds_never_give_a_verdict():
    assert MIN_SEEDS == 5
    for n in range(1, MIN_SEEDS):
        out = CLAIM.evaluate(*_paired([0.5 + 0.001 * i for i in range(n)]))
        assert out["verdict"] == "inconclusive" and "< 5" in out["reason"]
    assert CLAIM.evaluate(*_paired([0.5 + 0.001 * i for i in range(5)]))["verdict"] == (
        "reproduced")


def test_non_finite_values_make_the_verdict_inconclusive_not_a_crash():
    method = {0: 0.9, 1: float("nan"), 2: 0.9, 3: 0.9, 4: 0.9}
    baseline = {0: 0.7, 1: 0.7, 2: None, 3: 0.7, 4: 0.7}
    out = CLAIM.evaluate(method, baseline)
    assert out["verdict"] == "inconclusive" and "not finite" in out["reason"]
    assert math.isnan(out["observed"]["mean_effect"])


def test_lower_is_better_flips_the_sign():
    claim = Claim("lower", "err", "s", "m", "b", margin=0.01, higher_is_better=False)
    method = {s: 0.1 for s in range(5)}
    baseline = {s: 0.2 + 0.001 * s for s in range(5)}
    out = claim.evaluate(method, baseline)
    assert out["verdict"] == "reproduced"
    assert out["observed"]["mean_effect"] == pytest.approx(0.102)
    worse = claim.evaluate(baseline, method)
    assert worse["verdict"] == "not_reproduced" and worse["observed"]["mean_effect"] < 0


def test_only_seeds_both_arms_ran_are_paired():
    out = CLAIM.evaluate({s: 1.0 for s in range(7)}, {s: 0.0 for s in range(2, 9)})
    assert out["observed"]["n"] == 5 and set(out["observed"]["per_seed"]) == {"2", "3", "4",
                                                                               "5", "6"}


def test_the_result_states_the_rule_in_words():
    out = CLAIM.evaluate(*_paired([0.2] * 5))
    assert "Student's t" in out["rule"] and "m − t·e ≥ margin" in out["rule"]


def test_status_line_counts_every_claim_by_verdict():
    result = {"claim": {"verdict": "not_reproduced"},
              "secondary_claims": [{"verdict": v} for v in
                                   ("reproduced", "reproduced", "inconclusive",
                                    "not_reproduced")]}
    assert claim_counts(result) == {"reproduced": 2, "not_reproduced": 2, "inconclusive": 1}
    assert status_line(result) == "not_reproduced · claims 2✓ 2✗ 1?"
