"""Fréchet distance and class histogram: closed forms, invariances, bad input."""

import numpy as np
import pytest
import scipy.linalg
import torch

from regzoo.metrics import class_histogram, frechet_distance


def _gaussian(n, mean, cov, seed):
    g = torch.Generator().manual_seed(seed)
    root = torch.linalg.cholesky(torch.as_tensor(cov, dtype=torch.float64))
    return torch.as_tensor(mean, dtype=torch.float64) + torch.randn(n, len(mean), generator=g,
                                                                    dtype=torch.float64) @ root.T


def test_identical_sets_are_at_distance_zero():
    x = _gaussian(500, [0.0, 1.0, 2.0], np.eye(3), 0)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)


def test_matches_the_gaussian_closed_form_on_exact_moments():
    # Two sets whose sample moments are exactly (μ, Σ): whiten, then colour.
    def exact(mean, cov, seed):
        z = torch.randn(400, 2, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)
        z = z - z.mean(0)
        z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T
        return torch.tensor(mean, dtype=torch.float64) + z @ torch.linalg.cholesky(
            torch.tensor(cov, dtype=torch.float64)).T

    cov_a, cov_b = np.array([[2.0, 0.3], [0.3, 1.0]]), np.array([[1.0, -0.2], [-0.2, 0.5]])
    a, b = exact([0.0, 0.0], cov_a, 1), exact([1.0, -2.0], cov_b, 2)
    cross = scipy.linalg.sqrtm(cov_a @ cov_b).real
    expected = 5.0 + np.trace(cov_a + cov_b - 2 * cross)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_one_dimensional_case_is_the_gaussian_w2():
    a, b = _gaussian(2000, [1.0], [[4.0]], 3), _gaussian(2000, [3.0], [[1.0]], 4)
    sa, sb = float(a.std()), float(b.std())
    expected = (float(a.mean()) - float(b.mean())) ** 2 + (sa - sb) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_symmetric_non_negative_and_finite_when_covariances_are_singular():
    a = _gaussian(10, [0.0] * 3, np.eye(3), 5) @ torch.randn(3, 20, dtype=torch.float64)
    b = _gaussian(12, [0.5] * 3, np.eye(3), 6) @ torch.randn(3, 20, dtype=torch.float64)
    ab, ba = frechet_distance(a, b), frechet_distance(b, a)
    assert np.isfinite(ab) and ab >= 0 and ab == pytest.approx(ba, rel=1e-8)


def test_bad_features_are_named():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="same feature width"):
        frechet_distance(x, torch.randn(10, 5))
    with pytest.raises(ValueError, match="features_b has 1 row"):
        frechet_distance(x, torch.randn(1, 4))
    with pytest.raises(ValueError, match="features_a contains NaN"):
        frechet_distance(torch.full((3, 4), float("nan")), x)


def test_class_histogram_sums_to_one_and_checks_the_range():
    shares = class_histogram(torch.tensor([0, 1, 1, 3]), 4)
    assert shares.tolist() == [0.25, 0.5, 0.0, 0.25]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        class_histogram(torch.tensor([0, 3]), 3)
