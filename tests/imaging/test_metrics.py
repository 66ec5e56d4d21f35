"""PSNR and SSIM: closed forms, the reference implementation, gradients, bad input."""

import math

import numpy as np
import pytest
import torch

from regzoo.imaging import psnr, ssim


def test_psnr_closed_form_and_types():
    x = np.zeros((4, 5))
    assert psnr(x + 0.1, x) == pytest.approx(20.0)
    assert psnr(x + 0.5, x, data_range=2.0) == pytest.approx(10 * math.log10(16))
    value = psnr(torch.zeros(3) + 0.1, torch.zeros(3))
    assert isinstance(value, torch.Tensor) and float(value) == pytest.approx(20.0, rel=1e-5)
    assert psnr(x, x) == math.inf


def test_ssim_equals_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.random((24, 20))
    b = np.clip(0.7 * a + 0.2 * rng.random((24, 20)), 0, 1)
    reference = metrics.structural_similarity(a, b, data_range=1.0, gaussian_weights=True,
                                              sigma=1.5, use_sample_covariance=False)
    assert ssim(a, b) == pytest.approx(reference, abs=1e-10)


def test_ssim_identity_bounds_and_3d():
    rng = np.random.default_rng(1)
    volume = rng.random((2, 12, 12, 12))
    assert ssim(volume, volume, spatial_dims=3) == pytest.approx(1.0)
    noisy = volume + 0.3 * rng.standard_normal(volume.shape)
    assert -1 < ssim(volume, noisy, spatial_dims=3) < 0.9
    # A constant offset only changes the luminance term, so SSIM stays close to 1.
    assert ssim(volume, volume + 0.01, spatial_dims=3) > 0.99


def test_ssim_gradient_reaches_the_estimate():
    target = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    estimate = torch.rand(1, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    (1 - ssim(estimate, target)).backward()
    assert estimate.grad is not None and estimate.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda e: ssim(e, target), (estimate,))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"data_range": 0.0}, "data_range"),
    ({"window_size": 4}, "window_size"),
    ({"window_size": 21}, "window_size"),
    ({"spatial_dims": 4}, "spatial_dims"),
])
def test_ssim_bad_input(kwargs, match):
    x = np.zeros((12, 12))
    with pytest.raises(ValueError, match=match):
        ssim(x, x, **kwargs)


def test_shape_mismatch_and_type_errors():
    with pytest.raises(ValueError, match="same shape"):
        psnr(np.zeros((3, 3)), np.zeros((3, 4)))
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        psnr([0.0], np.zeros(1))
