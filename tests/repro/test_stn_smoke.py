"""Smoke test of `regzoo repro stn --tiny`: artefacts, arms (the official recipe's too),
claims, schedule curves."""

from regzoo.repro.runner import run_reproduction, validate_result
from regzoo.repro.stn import DIGITS_ARMS, RIDGE_ARMS, STNReproConfig


def test_tiny_run_writes_valid_artefacts_with_every_arm(tmp_path):
    result = run_reproduction("stn", "tiny", out=tmp_path / "run", jobs=1, progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]
    assert set(aggregate["digits_dropout"]) == set(DIGITS_ARMS)
    assert set(aggregate["ridge"]) == set(RIDGE_ARMS)
    config = STNReproConfig.tiny()
    grid_rate = aggregate["digits_dropout"]["grid"]["rate_layer1"]["values"][0]
    assert grid_rate in config.grid_rates
    assert aggregate["digits_dropout"]["fixed"]["rate_layer1"]["values"][0] == config.start_rate
    stn_curves = result["metrics"]["curves"]["digits_dropout"]["stn"]
    assert len(stn_curves["rate_layer1"]["mean"]) == config.epochs
    # The replay arm trains with the STN run's final rates in its last epoch.
    replay = aggregate["digits_dropout"]["stn_replay"]["rate_layer1"]["values"][0]
    assert replay == aggregate["digits_dropout"]["stn"]["rate_layer1"]["values"][0]
    assert aggregate["ridge"]["optimal"]["log10_lambda_error"]["values"][0] == 0.0
    official = aggregate["digits_dropout"]["stn_official"]
    epochs_run = official["epochs_run"]["values"][0]
    assert 1 <= official["best_epoch"]["values"][0] <= epochs_run <= config.epochs
    assert len(result["secondary_claims"]) == 5
    assert [c["method"] for c in result["secondary_claims"]].count("stn_official") == 1
    assert result["timing"]["stn_per_training_step_over_plain"] > 1
    assert (tmp_path / "run" / "stn.png").is_file()


def test_full_preset_runs_ten_seeds_of_every_arm():
    full = STNReproConfig.full()
    assert len(full.seeds) == 10 and full.arms == DIGITS_ARMS and full.epochs == 150
