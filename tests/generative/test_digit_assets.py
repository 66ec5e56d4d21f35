"""The digits assets: registered, deterministic builds, loadable payloads, bad classes."""

import pytest
import torch

from regzoo import assets
from regzoo.generative import assets as digit_assets


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REGZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny_oracle(cache, monkeypatch):
    """A one-epoch oracle in the empty cache: DCGAN builds measure their quality with it, fast."""
    monkeypatch.setattr(digit_assets, "digit_oracle",
                        lambda: digit_assets.load_oracle(
                            assets.get("digit_oracle", {"epochs": 1, "channels": (4, 8)})))


def test_digit_assets_are_registered_without_importing_their_module_first():
    assert {"digits_mlp", "digit_oracle", "digit_dcgan"} <= set(assets.registry())


def test_two_oracle_builds_into_empty_caches_are_identical(tmp_path, monkeypatch):
    payloads = []
    for folder in ("a", "b"):
        monkeypatch.setenv("REGZOO_CACHE", str(tmp_path / folder))
        payloads.append(assets.get("digit_oracle", {"epochs": 1, "channels": (4, 8)}))
    first, second = payloads
    assert first["test_accuracy"] == second["test_accuracy"]
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key])
    model = digit_assets.load_oracle(first)
    assert model.features(torch.rand(3, 64)).shape == (3, 8 * 2 * 2)


def test_a_small_dcgan_builds_loads_and_reports_its_quality(tiny_oracle):
    gan = digit_assets.digit_dcgan(classes=[4, 3, 2, 1, 0], steps=3, batch_size=16)
    assert gan.classes == (0, 1, 2, 3, 4)
    assert len(gan.class_shares) == 10 and sum(gan.class_shares) == pytest.approx(1.0)
    assert gan.fd_test > 0
    assert gan.generator_ema(torch.zeros(1, 32)).shape == (1, 1, 8, 8)
    again = digit_assets.digit_dcgan(classes=range(5), steps=3, batch_size=16)
    for a, b in zip(gan.generator.parameters(), again.generator.parameters()):
        assert torch.equal(a, b)


def test_bad_classes_are_named():
    with pytest.raises(ValueError, match="classes must be a non-empty set of digits 0–9"):
        digit_assets.digit_dcgan(classes=[])
    with pytest.raises(ValueError, match="classes must be a non-empty set of digits 0–9"):
        digit_assets.digit_dcgan(classes=[3, 10])


def test_a_cold_cache_hit_from_inside_no_grad_still_trains(tiny_oracle):
    # An evaluation block that asks for the GAN on a fresh machine builds it there.
    with torch.no_grad():
        gan = digit_assets.digit_dcgan(classes=[0, 1], steps=2, batch_size=16)
        oracle = assets.get("digit_oracle", {"epochs": 1, "channels": (2, 4)})
    assert gan.fd_test > 0 and len(gan.class_shares) == 10
    assert 0.0 <= oracle["test_accuracy"] <= 1.0
