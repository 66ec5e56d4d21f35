"""Smoke test of `regzoo repro gifd --tiny`: artefacts, settings, arms, claims, data pipeline."""

import json
import math

import pytest
import torch

from conftest import run_tiny
from regzoo.repro.gifd import (
    ARMS,
    HEADLINE,
    PRIOR_FREE,
    SECONDARY,
    GIFDReproConfig,
    fl_model,
    observed_gradients,
    parse_setting,
    private_batches,
)
from regzoo.repro.runner import validate_result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_tiny("gifd", tmp_path_factory)


def test_tiny_run_writes_valid_artefacts_with_every_setting_and_arm(tiny_run):
    out, result = tiny_run
    validate_result(result)
    validate_result(json.loads((out / "result.json").read_text()))
    for name in ("result.md", "gifd.png", "done", "config.json"):
        assert (out / name).is_file(), name
    config = GIFDReproConfig.tiny()
    aggregate = result["metrics"]["aggregate"]
    assert set(aggregate) == set(config.settings())
    for setting in config.settings():
        batch = parse_setting(setting)[1]
        expected = set(ARMS) - ({"pixel_notv"} if batch > 1 else set())
        assert set(aggregate[setting]) == expected, setting
    assert result["claim"]["verdict"] == "inconclusive"  # one seed cannot decide
    claim = result["claim"]
    assert (claim["setting"], claim["method"], claim["baseline"], claim["margin"]) == (
        HEADLINE, "gifd", "latent", 1.0)
    (secondary,) = result["secondary_claims"]
    assert (secondary["setting"], secondary["baseline"], secondary["margin"]) == (
        SECONDARY, "pixel", 0.0)
    assert HEADLINE in claim["note"] and "pixel" in claim["note"].lower()
    for arm in ("pixel", "latent", "gifd"):
        assert result["timing"][f"{arm}_over_plain"] > 0


def test_units_record_metrics_and_the_plotted_settings_curves(tiny_run):
    _, result = tiny_run
    config = GIFDReproConfig.tiny()
    points = 3 * config.stage_steps // config.curve_every
    for record in result["metrics"]["per_seed"]:
        metrics = record["metrics"]
        for name in ("psnr", "ssim", "oracle_agreement", "label_accuracy", "gradient_norm",
                     "gradient_loss"):
            assert math.isfinite(metrics[name]), (record["setting"], record["arm"], name)
        assert 0 <= metrics["label_accuracy"] <= 1 and 0 <= metrics["oracle_agreement"] <= 1
        stages = 3 if record["arm"] == "gifd" else 1
        assert all(f"psnr_stage{k}" in metrics for k in range(stages))
        assert 0 <= metrics["best_stage"] < stages
        curves = record["curves"]
        if record["setting"] in config.plotted():
            assert len(curves.get("psnr_curve", ())) == (0 if record["arm"] == "pixel_notv"
                                                         else points)
            assert len(curves["grid_images"]) == len(curves["grid_truth"]) == 64 * 2
        else:
            assert curves == {}


def test_the_pixel_arm_runs_once_and_is_copied_to_the_other_prior(tiny_run):
    _, result = tiny_run
    records = result["metrics"]["per_seed"]
    for arm in PRIOR_FREE:
        pixel = {r["setting"]: r for r in records if r["arm"] == arm}
        assert pixel
        for setting, record in pixel.items():
            prior, batch, defence, state = parse_setting(setting)
            twin = pixel[f"{'in' if prior == 'ood' else 'ood'}_b{batch}_{defence}_{state}"]
            assert record["metrics"] == twin["metrics"]
            assert record.get("derived", False) == (prior == "ood")


def test_private_batches_hold_distinct_held_out_digits_five_to_nine():
    x, y = private_batches(3, 4, 10)
    assert x.shape == (2, 4, 1, 8, 8) and y.shape == (2, 4)
    for row in y:
        assert len(set(row.tolist())) == 4 and torch.equal(row, torch.sort(row).values)
        assert all(5 <= int(label) <= 9 for label in row)
    again, _ = private_batches(3, 4, 10)
    assert torch.equal(x, again)
    single, _ = private_batches(3, 1, 10)
    assert single.shape == (10, 1, 1, 8, 8)
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_noise_is_the_same_draw_for_every_arm_and_absent_without_the_defence():
    config = GIFDReproConfig.tiny()
    model = fl_model(0, "init", torch.device("cpu"), config)
    x, y = private_batches(0, 1, 2)
    clean, norm = observed_gradients(model, x, y, 0.0, 0)
    noisy, _ = observed_gradients(model, x, y, 0.01, 0)
    again, _ = observed_gradients(model, x, y, 0.01, 0)
    norms = [float(torch.sqrt(sum(g.pow(2).sum() for g in grads))) for grads in clean]
    assert norm == pytest.approx(sum(norms) / 2)
    assert all(torch.equal(a, b) for a, b in zip(noisy[0], again[0]))
    residual = torch.cat([(n - c).flatten() for n, c in zip(noisy[0], clean[0])])
    assert float(residual.std()) == pytest.approx(0.01, rel=0.1)


def test_the_trained_model_is_one_epoch_of_training_in_eval_mode():
    config = GIFDReproConfig.tiny()
    untrained = fl_model(0, "init", torch.device("cpu"), config)
    trained = fl_model(0, "trained", torch.device("cpu"), config)
    assert not trained.training
    assert not all(torch.equal(a, b) for a, b in zip(untrained.parameters(),
                                                     trained.parameters()))
    again = fl_model(0, "trained", torch.device("cpu"), config)
    assert all(torch.equal(a, b) for a, b in zip(trained.parameters(), again.parameters()))


def test_config_is_validated():
    config = GIFDReproConfig.quick().with_overrides({"priors": "ood", "arms": "latent,gifd"})
    assert config.settings()[0] == HEADLINE and config.pixel_prior == "ood"
    assert SECONDARY not in config.settings()
    with pytest.raises(ValueError, match="priors"):
        config.with_overrides({"priors": "svhn"})
    with pytest.raises(ValueError, match="arms"):
        config.with_overrides({"arms": "pixel,gifd"})
    with pytest.raises(ValueError, match="headline"):
        config.with_overrides({"batch_sizes": "4"})
    with pytest.raises(ValueError, match="batch_sizes"):
        config.with_overrides({"batch_sizes": "1,6"})
    full = GIFDReproConfig.full()
    assert len(full.seeds) >= 5 and len(full.settings()) == 16
