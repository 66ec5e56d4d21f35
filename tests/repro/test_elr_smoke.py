"""Smoke test of `regzoo repro elr --tiny` and the runner's protocol (artefacts, resume)."""

import json

import pytest

from regzoo.repro.elr import ELRReproConfig
from regzoo.repro.runner import run_reproduction, validate_result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("elr") / "run"
    return out, run_reproduction("elr", "tiny", out=out, jobs=1, progress=False,
                                 command="regzoo repro elr --tiny")


def test_tiny_run_writes_valid_artefacts(tiny_run):
    out, result = tiny_run
    validate_result(result)
    validate_result(json.loads((out / "result.json").read_text()))
    for name in ("result.md", "elr.png", "done", "config.json", "progress.jsonl"):
        assert (out / name).is_file(), name
    arms = set(result["metrics"]["aggregate"]["sym40"])
    assert arms == {"ce", "elr", "elr_plus", "elr_wc", "elr_bf16", "cleanlab", "ce_oracle_stop"}
    assert result["claim"]["verdict"] == "inconclusive"  # one seed cannot decide
    (label_issues,) = result["secondary_claims"]
    assert (label_issues["method"], label_issues["baseline"]) == ("elr", "cleanlab")
    for arm in ("elr", "elr_bf16", "elr_wc", "cleanlab"):
        assert 0 <= result["metrics"]["aggregate"]["sym40"][arm]["label_issue_f1"]["mean"] <= 1
    assert result["timing"]["elr_over_ce"] > 0
    lines = (out / "progress.jsonl").read_text().splitlines()
    # One logged training per arm: cleanlab's out-of-fold trainings are not logged.
    assert len(lines) == 6 * ELRReproConfig.tiny().epochs


def test_resume_reuses_finished_units_and_refuses_another_config(tiny_run):
    out, first = tiny_run
    again = run_reproduction("elr", "tiny", out=out, resume=True, jobs=1, progress=False)
    assert again["metrics"]["per_seed"] == first["metrics"]["per_seed"]
    units = sorted(p.name for p in (out / "units").iterdir())
    extended = run_reproduction("elr", "tiny", out=out, resume=True, jobs=1, progress=False,
                                seeds=[0, 1])
    assert len(extended["metrics"]["per_seed"]) == 2 * len(first["metrics"]["per_seed"])
    reused = [r for r in extended["metrics"]["per_seed"] if r["seed"] == 0]
    assert reused == first["metrics"]["per_seed"]
    assert set(units) < {p.name for p in (out / "units").iterdir()}
    with pytest.raises(ValueError, match="another config"):
        run_reproduction("elr", "tiny", out=out, resume=True, overrides={"epochs": "3"},
                         jobs=1, progress=False)


def test_an_existing_run_is_never_overwritten_silently(tiny_run):
    out, _ = tiny_run
    with pytest.raises(ValueError, match="--resume"):
        run_reproduction("elr", "tiny", out=out, jobs=1, progress=False)


def test_runs_are_deterministic(tmp_path, tiny_run):
    _, first = tiny_run
    second = run_reproduction("elr", "tiny", out=tmp_path / "again", jobs=1, progress=False)
    assert second["metrics"]["per_seed"][0]["metrics"] == first["metrics"]["per_seed"][0][
        "metrics"]


def test_two_parallel_processes_give_the_same_numbers_as_one(tmp_path, tiny_run):
    _, first = tiny_run
    parallel = run_reproduction("elr", "tiny", out=tmp_path / "par", jobs=2, progress=False)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in
             first["metrics"]["per_seed"]]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in
            parallel["metrics"]["per_seed"]] == strip


def test_config_overrides_are_parsed_by_type_and_validated():
    config = ELRReproConfig.quick().with_overrides(
        {"epochs": "7", "lam": "1.5", "noises": "sym20,pair40", "arms": "ce,elr"})
    assert (config.epochs, config.lam, config.noises) == (7, 1.5, ("sym20", "pair40"))
    with pytest.raises(ValueError, match="unknown config field"):
        config.with_overrides({"epoch": "3"})
    with pytest.raises(ValueError, match="expected int"):
        config.with_overrides({"epochs": "many"})
    with pytest.raises(ValueError, match="arms"):
        config.with_overrides({"arms": "elr,mixup"})
    with pytest.raises(ValueError, match="seeds"):
        config.with_overrides({"seeds": "1,1"})
