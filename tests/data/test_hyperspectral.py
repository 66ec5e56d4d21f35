import numpy as np
import pytest
import torch

from regzoo.data.hyperspectral import (
    NOISE_KINDS,
    add_noise,
    noise_defaults,
    psnr,
    sam,
    ssim,
    synthetic_cube,
)


def test_synthetic_cube_is_exact_rank_in_unit_interval_and_seeded():
    cube = synthetic_cube(20, 24, 30, rank=4, seed=3)
    assert cube.shape == (20, 24, 30)
    assert cube.dtype == np.float64
    assert cube.min() >= 0.0 and cube.max() <= 1.0
    assert np.linalg.matrix_rank(cube.reshape(-1, 30), tol=1e-8) == 4
    np.testing.assert_array_equal(cube, synthetic_cube(20, 24, 30, rank=4, seed=3))
    assert not np.allclose(cube, synthetic_cube(20, 24, 30, rank=4, seed=4))


def test_gaussian_noise_has_requested_sigma_and_psnr_20db():
    cube = synthetic_cube(32, 32, 16, seed=0)
    noisy = add_noise(cube, "gaussian", seed=1, sigma=0.1)
    assert np.std(noisy - cube) == pytest.approx(0.1, rel=0.02)
    assert psnr(cube, noisy) == pytest.approx(20.0, abs=0.1)


def test_every_noise_kind_is_seeded_and_changes_the_cube():
    cube = synthetic_cube(16, 16, 12, seed=0)
    for kind in NOISE_KINDS:
        a = add_noise(cube, kind, seed=5)
        np.testing.assert_array_equal(a, add_noise(cube, kind, seed=5))
        assert not np.allclose(a, cube), kind


def test_impulse_fraction_and_stripes_touch_only_chosen_bands():
    cube = synthetic_cube(40, 40, 20, seed=0)
    noisy = add_noise(cube, "impulse", seed=2, fraction=0.1)
    changed = np.mean(noisy != cube)
    assert changed == pytest.approx(0.1, abs=0.01)
    striped = add_noise(cube, "stripes", seed=2, n_bands=3)
    touched = np.flatnonzero(np.any(striped != cube, axis=(0, 1)))
    assert touched.size == 3
    # A stripe is a constant offset along a whole column of a band.
    diff = (striped - cube)[:, :, touched[0]]
    np.testing.assert_allclose(diff, diff[:1].repeat(40, axis=0))


def test_mixed_defaults_combine_the_three_models():
    assert set(noise_defaults("mixed")) == (set(noise_defaults("band_gaussian"))
                                             | set(noise_defaults("impulse"))
                                             | set(noise_defaults("stripes")))


def test_metrics_limits_and_known_values():
    cube = synthetic_cube(24, 24, 8, seed=0)
    assert ssim(cube, cube) == pytest.approx(1.0)
    assert sam(cube, cube) == pytest.approx(0.0, abs=1e-5)
    assert sam(cube, 2 * cube) == pytest.approx(0.0, abs=1e-5)  # SAM ignores scale
    shifted = cube + 0.01
    assert psnr(cube, shifted) == pytest.approx(40.0, abs=1e-9)
    assert psnr(torch.from_numpy(cube), torch.from_numpy(shifted)) == pytest.approx(40.0)


def test_ssim_matches_skimage_when_installed():
    metrics = pytest.importorskip("skimage.metrics")
    cube = synthetic_cube(32, 32, 4, rank=3, seed=0)
    noisy = add_noise(cube, "gaussian", seed=0, sigma=0.05)
    ref = np.mean([metrics.structural_similarity(cube[..., b], noisy[..., b], data_range=1.0,
                                                 gaussian_weights=True, sigma=1.5)
                   for b in range(4)])
    assert ssim(cube, noisy) == pytest.approx(ref, abs=1e-6)


def test_bad_arguments_raise_clear_errors():
    cube = synthetic_cube(8, 8, 6, seed=0)
    with pytest.raises(ValueError, match="rank"):
        synthetic_cube(8, 8, 6, rank=7, seed=0)
    with pytest.raises(ValueError, match="kind"):
        add_noise(cube, "speckle", seed=0)
    with pytest.raises(ValueError, match="unknown parameter"):
        add_noise(cube, "gaussian", seed=0, peak=3)
    with pytest.raises(ValueError, match="3 dimensions"):
        add_noise(cube[..., 0], "gaussian", seed=0)
    with pytest.raises(ValueError, match="same shape"):
        psnr(cube, cube[:4])
