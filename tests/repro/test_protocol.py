"""Pairing claims with unit records, and the results index."""

import json

import pytest

from regzoo.repro.report import build_results_index


def test_results_index_lists_committed_runs_and_the_rest(tmp_path):
    (tmp_path / "elr").mkdir()
    result = {
        "claim": {"setting": "sym40", "metric": "acc", "baseline": "ce", "method": "elr",
                  "observed": {"mean_effect": 0.2, "se": 0.01}, "verdict": "reproduced"},
        "run": {"slug": "elr", "seeds": [0, 1], "created_at": "2026-11-27T00:00:00",
                "command": "regzoo x", "config": {}},
        "metrics": {"aggregate": {"sym40": {"ce": {"acc": {"mean": 0.7, "se": 0.01}},
                                            "elr": {"acc": {"mean": 0.9, "se": 0.01}}}}},
    }
    (tmp_path / "elr" / "result.json").write_text(json.dumps(result))
    text = build_results_index(tmp_path)
    assert "| [elr](elr/result.md) |" in text
    assert "reproduced · claims 1✓ 0✗ 0? · stale" in text  # no fingerprint: stale
    assert "Without a committed full result yet (26)" in text


def test_evaluate_claim_pairs_by_seed_and_rejects_an_arm_no_unit_ran():
    from regzoo.repro.protocol import Claim
    from regzoo.repro.runner import evaluate_claim

    records = [{"setting": "s", "arm": arm, "seed": seed, "metrics": {"m": value + seed}}
               for arm, value in (("a", 1.0), ("b", 0.0)) for seed in range(5)]
    claim = Claim("a beats b", "m", "s", "a", "b", margin=0.5)
    verdict = evaluate_claim(claim, records)
    assert verdict["observed"]["mean_effect"] == 1.0 and verdict["verdict"] == "reproduced"
    with pytest.raises(ValueError, match="no unit ran it"):
        evaluate_claim(Claim("c beats b", "m", "s", "c", "b", margin=0.5), records)
