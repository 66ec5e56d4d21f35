"""The claim's verdict rule and the results index."""

import json
import math

import pytest

from regzoo.repro.protocol import Claim
from regzoo.repro.report import build_results_index

CLAIM = Claim("m beats b by 0.05", "acc", "s", "m", "b", margin=0.05)


@pytest.mark.parametrize(
    ("method", "baseline", "verdict"),
    [
        ({0: 0.9, 1: 0.91, 2: 0.92}, {0: 0.7, 1: 0.7, 2: 0.71}, "reproduced"),
        ({0: 0.7, 1: 0.71, 2: 0.7}, {0: 0.7, 1: 0.7, 2: 0.7}, "not_reproduced"),
        ({0: 0.9, 1: 0.6, 2: 0.75}, {0: 0.7, 1: 0.7, 2: 0.7}, "inconclusive"),
        ({0: 0.9}, {0: 0.1}, "inconclusive"),
    ],
)
def test_verdict_follows_the_paired_mean_and_standard_error(method, baseline, verdict):
    assert CLAIM.evaluate(method, baseline)["verdict"] == verdict


def test_lower_is_better_flips_the_sign():
    claim = Claim("lower", "err", "s", "m", "b", margin=0.01, higher_is_better=False)
    out = claim.evaluate({0: 0.1, 1: 0.1}, {0: 0.2, 1: 0.21})
    assert out["verdict"] == "reproduced"
    assert out["observed"]["mean_effect"] == pytest.approx(0.105)
    assert out["observed"]["n"] == 2 and not math.isnan(out["observed"]["se"])


def test_results_index_lists_committed_runs_and_the_rest(tmp_path):
    (tmp_path / "elr").mkdir()
    result = {
        "claim": {"setting": "sym40", "metric": "acc", "baseline": "ce", "method": "elr",
                  "observed": {"mean_effect": 0.2, "se": 0.01}, "verdict": "reproduced"},
        "run": {"seeds": [0, 1], "created_at": "2026-11-27T00:00:00", "command": "regzoo x"},
        "metrics": {"aggregate": {"sym40": {"ce": {"acc": {"mean": 0.7, "se": 0.01}},
                                            "elr": {"acc": {"mean": 0.9, "se": 0.01}}}}},
    }
    (tmp_path / "elr" / "result.json").write_text(json.dumps(result))
    text = build_results_index(tmp_path)
    assert "| [elr](elr/result.md) |" in text and "reproduced" in text
    assert "Without a committed full result yet (26)" in text


def test_non_finite_values_make_the_verdict_inconclusive_not_a_crash():
    out = CLAIM.evaluate({0: 0.9, 1: float("nan"), 2: 0.9}, {0: 0.7, 1: 0.7, 2: None})
    assert out["verdict"] == "inconclusive"
    assert math.isnan(out["observed"]["mean_effect"])


def test_evaluate_claim_pairs_by_seed_and_rejects_an_arm_no_unit_ran():
    from regzoo.repro.protocol import Claim
    from regzoo.repro.runner import evaluate_claim

    records = [{"setting": "s", "arm": arm, "seed": seed, "metrics": {"m": value + seed}}
               for arm, value in (("a", 1.0), ("b", 0.0)) for seed in (0, 1, 2)]
    claim = Claim("a beats b", "m", "s", "a", "b", margin=0.5)
    verdict = evaluate_claim(claim, records)
    assert verdict["observed"]["mean_effect"] == 1.0 and verdict["verdict"] == "reproduced"
    with pytest.raises(ValueError, match="no unit ran it"):
        evaluate_claim(Claim("c beats b", "m", "s", "c", "b", margin=0.5), records)
