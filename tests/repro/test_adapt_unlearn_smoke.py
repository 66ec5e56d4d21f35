"""Smoke test of `regzoo repro adapt_unlearn --tiny`: artefacts, arms, derived arms, choice."""

import json

import pytest

from regzoo.repro.adapt_unlearn import ARMS, SETTING, AdaptUnlearnReproConfig, _choose
from regzoo.repro.runner import run_reproduction, validate_result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("adapt_unlearn") / "run"
    return out, run_reproduction("adapt_unlearn", "tiny", out=out, jobs=1, progress=False,
                                 command="regzoo repro adapt_unlearn --tiny")


@pytest.mark.slow
def test_tiny_run_writes_valid_artefacts_with_every_arm(tiny_run):
    out, result = tiny_run
    validate_result(result)
    validate_result(json.loads((out / "result.json").read_text()))
    for name in ("result.md", "adapt_unlearn.png", "done", "validation_choice.json"):
        assert (out / name).is_file(), name
    arms = result["metrics"]["aggregate"][SETTING]
    assert set(arms) == {*ARMS, "best_variant", "paper_goal"}
    assert arms["pretrained"]["fd_ratio"]["mean"] == 1.0
    assert arms["paper_goal"]["share_unwanted"]["mean"] == 0.02
    assert 0 <= arms["finetune"]["share_unwanted"]["mean"] <= 1
    assert result["claim"]["verdict"] == "inconclusive"  # one seed cannot decide
    assert (result["claim"]["method"], result["claim"]["baseline"]) == ("best_variant",
                                                                        "finetune")
    assert len(result["secondary_claims"]) == 3
    assert result["timing"]["repulsion_over_plain"] > 0
    config = AdaptUnlearnReproConfig.tiny()
    curve = result["metrics"]["curves"][SETTING]["el2"]["share_unwanted"]["mean"]
    assert len(curve) == config.unlearn_steps // config.steps_per_epoch


def test_the_choice_prefers_the_lowest_share_within_the_fd_budget():
    candidates = {"a": {"share_unwanted": 0.01, "fd_ratio": 1.5},
                  "b": {"share_unwanted": 0.05, "fd_ratio": 1.1},
                  "c": {"share_unwanted": 0.03, "fd_ratio": 1.19}}
    assert _choose(candidates, 1.2) == "c"
    assert _choose({"a": candidates["a"]}, 1.2) == "a"  # none within: lowest FD ratio
    assert _choose({"a": candidates["a"], "d": {"share_unwanted": 0.0, "fd_ratio": 2.0}},
                   1.2) == "a"


def test_a_reported_validation_seed_is_refused():
    with pytest.raises(ValueError, match="validation_seed 100 is also a reported seed"):
        AdaptUnlearnReproConfig(seeds=(0, 100))
