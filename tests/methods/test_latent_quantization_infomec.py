"""InfoMEC and DCI: identity, permuted/duplicated and mixed codes, noise, pinned values, errors."""

import numpy as np
import pytest

from regzoo.data.factors import mini_dsprites
from regzoo.methods.latent_quantization import dci, infomec
from regzoo.methods.latent_quantization.infomec import normalized_mutual_information


@pytest.fixture(scope="module")
def sources():
    return mini_dsprites().factors.numpy()


def test_identity_codes_are_perfect(sources):
    result = infomec(sources, sources, discrete=True)
    assert result.infom == pytest.approx(1.0) and result.infoc == pytest.approx(1.0)
    # The official expectation: in-sample unregularised regression, 100 lbfgs steps, ≈ 0.9998.
    assert 0.999 < result.infoe <= 1.0
    np.testing.assert_allclose(result.nmi, np.eye(4), atol=1e-12)


def test_permuted_and_duplicated_sources_keep_modularity_but_lose_compactness(sources):
    codes = np.concatenate([sources[:, [2, 0, 3, 1]], sources[:, [0]]], axis=1)
    result = infomec(sources, codes, discrete=True)
    assert result.infom == pytest.approx(1.0)
    # Source 0 is split over two latents: its max/sum is 1/2, so InfoC = (7/8 − 1/5)/(4/5).
    assert result.infoc == pytest.approx((7 / 8 - 1 / 5) / (1 - 1 / 5))


def test_one_latent_mixing_two_sources_lowers_modularity(sources):
    mixed = np.stack([sources[:, 0] * 4 + sources[:, 1], sources[:, 2], sources[:, 3]], axis=1)
    result = infomec(sources, mixed, discrete=True)
    assert result.infom < 0.85
    assert result.infoc == pytest.approx(1.0)


def test_independent_noise_carries_no_information():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 5, (20000, 3))
    result = infomec(s, rng.integers(0, 5, (20000, 4)), discrete=True)
    assert result.nmi.max() < 1e-3 and abs(result.infoe) < 0.01
    continuous = infomec(s[:2000], rng.standard_normal((2000, 4)), discrete=False)
    assert continuous.nmi.max() < 0.02 and abs(continuous.infoe) < 0.01
    # InfoM/InfoC of pure noise are ratios of near-zero estimates (≈ 0.18 here), not ≈ 0:
    # only the NMI and InfoE are meaningful without signal.


def test_values_are_pinned_on_fixed_arrays():
    rng = np.random.default_rng(42)
    s = rng.integers(0, 4, (300, 3))
    z = np.stack([s[:, 0] + rng.integers(0, 2, 300), s[:, 1] * 2 + s[:, 2],
                  rng.integers(0, 3, 300)], axis=1)
    discrete = infomec(s, z, discrete=True)
    assert (discrete.infom, discrete.infoc, discrete.infoe) == pytest.approx(
        (0.45910681461240715, 0.938625687996561, 0.6618859067079477), abs=1e-6)
    zc = np.stack([s[:, 0] + 0.3 * rng.standard_normal(300),
                   s[:, 1] - 0.5 * s[:, 2] + 0.3 * rng.standard_normal(300),
                   rng.standard_normal(300)], axis=1)
    continuous = infomec(s, zc, discrete=False)
    assert (continuous.infom, continuous.infoc, continuous.infoe) == pytest.approx(
        (0.5519835074511872, 0.970883084103881, 0.4796869744946271), abs=1e-6)


def test_inactive_latents_are_pruned_and_one_active_latent_leaves_infoc_undefined(sources):
    codes = np.concatenate([sources[:, :1], np.zeros((len(sources), 2))], axis=1)
    result = infomec(sources, codes, discrete=True)
    assert result.active.tolist() == [True, False, False]
    assert np.isnan(result.infoc) and result.infom == pytest.approx(1.0)
    continuous = np.concatenate([sources[:, :2].astype(float), 1e-3 * sources[:, 2:3]], axis=1)
    assert infomec(sources, continuous, discrete=False).active.tolist() == [True, True, False]


def test_subsampling_is_seeded_and_nmi_is_normalised_by_the_source_entropy(sources):
    a = infomec(sources, sources, discrete=True, max_samples=200, seed=3)
    b = infomec(sources, sources, discrete=True, max_samples=200, seed=3)
    np.testing.assert_array_equal(a.nmi, b.nmi)
    nmi = normalized_mutual_information(sources[:, :2], sources[:, :1], discrete=True)
    assert nmi[0, 0] == pytest.approx(1.0) and nmi[1, 0] == pytest.approx(0.0, abs=1e-12)


def test_dci_of_identity_and_noise():
    s = mini_dsprites().factors.numpy()[::7, :2]  # shape and scale: few classes, fast
    perfect = dci(s, s.astype(float))
    assert perfect.disentanglement > 0.99 and perfect.completeness > 0.99
    assert perfect.informativeness == pytest.approx(1.0)
    noise = dci(s, np.random.default_rng(0).standard_normal((len(s), 3)))
    assert noise.disentanglement < 0.1 and noise.completeness < 0.1


@pytest.mark.parametrize(("sources_", "latents", "error", "match"), [
    (np.zeros((5, 2)), np.zeros((4, 2)), ValueError, "5 samples but latents has 4"),
    (np.full((5, 2), 0.5), np.zeros((5, 2)), ValueError, "integer factor indices"),
    (np.zeros((5,)), np.zeros((5, 2)), ValueError, "2-D"),
    (np.zeros((5, 2)), np.full((5, 2), np.nan), ValueError, "NaN"),
    (np.zeros((0, 2)), np.zeros((0, 2)), ValueError, "non-empty"),
])
def test_bad_input(sources_, latents, error, match):
    with pytest.raises(error, match=match):
        infomec(sources_, latents, discrete=True)


def test_constant_source_and_bad_options_raise(sources):
    with pytest.raises(ValueError, match="single value"):
        infomec(np.zeros((10, 1), dtype=int), np.arange(10)[:, None], discrete=True)
    with pytest.raises(ValueError, match="max_samples"):
        infomec(sources, sources, discrete=True, max_samples=1)
    with pytest.raises(ValueError, match="train_fraction"):
        dci(sources, sources, train_fraction=1.0)
