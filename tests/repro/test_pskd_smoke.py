"""Smoke test of `regzoo repro pskd --tiny`: artefacts, arms, curves, reliability bins."""

import json

import pytest
import torch

from regzoo.metrics import expected_calibration_error
from regzoo.repro.pskd import ARMS, PSKDReproConfig, reliability_bins
from regzoo.repro.runner import run_reproduction, validate_result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pskd") / "run"
    return out, run_reproduction("pskd", "tiny", out=out, jobs=1, progress=False,
                                 command="regzoo repro pskd --tiny")


def test_tiny_run_writes_valid_artefacts_with_every_arm_and_setting(tiny_run):
    out, result = tiny_run
    validate_result(result)
    validate_result(json.loads((out / "result.json").read_text()))
    for name in ("result.md", "pskd.png", "done", "config.json", "progress.jsonl"):
        assert (out / name).is_file(), name
    config = PSKDReproConfig.tiny()
    aggregate = result["metrics"]["aggregate"]
    assert set(aggregate) == set(config.settings)
    for setting in config.settings:
        assert set(aggregate[setting]) == set(ARMS)
    assert result["claim"]["verdict"] == "inconclusive"  # one seed cannot decide
    assert (result["claim"]["setting"], result["claim"]["margin"]) == ("mnist1d", 0.005)
    secondary = {(c["setting"], c["baseline"]) for c in result["secondary_claims"]}
    assert secondary == {("digits_sym40", "ce"), ("mnist1d", "ls")}
    assert result["timing"]["pskd_over_ce"] > 0
    lines = (out / "progress.jsonl").read_text().splitlines()
    assert len(lines) == len(ARMS) * (config.digits_epochs + config.mnist1d_epochs)
    assert "mnist1d" in result["claim"]["note"] and "PS-KD + ELR" in result["claim"]["note"]


def test_units_record_curves_metrics_and_consistent_reliability_bins(tiny_run):
    _, result = tiny_run
    config = PSKDReproConfig.tiny()
    for record in result["metrics"]["per_seed"]:
        epochs = config.epochs_of(record["setting"])
        metrics, curves = record["metrics"], record["curves"]
        for name in ("test_accuracy", "test_nll", "test_ece"):
            assert len(curves[name]) == epochs, (record["arm"], name)
        last = curves["test_accuracy"][-1]
        assert metrics["final_test_accuracy"] == pytest.approx(last, abs=1e-6)
        count = curves["reliability_count"]
        assert len(count) == 15
        n = sum(count)
        assert n == (599 if record["setting"].startswith("digits") else 120)
        accuracy = sum(curves["reliability_correct"]) / n
        assert accuracy == pytest.approx(metrics["final_test_accuracy"], abs=1e-6)
        ece = sum(abs(a - b) for a, b in zip(curves["reliability_confidence"],
                                             curves["reliability_correct"])) / n
        assert ece == pytest.approx(metrics["final_test_ece"], abs=1e-5)
        noisy = record["setting"] == "digits_sym40"
        assert (metrics["realized_noise_rate"] > 0.3) == noisy


def test_reliability_bins_reproduce_the_metrics_ece():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 7, generator=g) * 3
    target = torch.randint(0, 7, (500,), generator=g)
    bins = reliability_bins(logits, target)
    ece = sum(abs(c - k) for c, k in zip(bins["reliability_confidence"],
                                         bins["reliability_correct"])) / 500
    assert ece == pytest.approx(expected_calibration_error(logits, target), abs=1e-12)
    assert sum(bins["reliability_count"]) == 500


def test_config_is_validated():
    config = PSKDReproConfig.quick().with_overrides(
        {"settings": "digits_sym40,mnist1d", "arms": "ce,pskd,pskd_elr", "alpha_T": "0.5"})
    assert config.settings == ("digits_sym40", "mnist1d") and config.alpha_T == 0.5
    assert config.epochs_of("mnist1d") == 60 and config.epochs_of("digits_sym40") == 100
    with pytest.raises(ValueError, match="settings"):
        config.with_overrides({"settings": "cifar100"})
    with pytest.raises(ValueError, match="arms"):
        config.with_overrides({"arms": "ce,ls"})
    with pytest.raises(ValueError, match="arms"):
        config.with_overrides({"arms": "ce,pskd,mixup"})
    full = PSKDReproConfig.full()
    assert set(full.arms) == set(ARMS) and len(full.seeds) == 5
