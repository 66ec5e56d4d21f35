"""Image-quality metrics for images and volumes: PSNR and Gaussian-window SSIM.

- PSNR = 10 log₁₀(R² / MSE) with R the data range (∞ for identical inputs).
- SSIM (Wang, Bovik, Sheikh & Simoncelli, IEEE TIP 13(4), 2004, eq. 13): local means μ,
  variances σ² and covariance σ_xy under a Gaussian window (11 taps, σ = 1.5, the paper's
  choice), SSIM = (2μ_xμ_y + C₁)(2σ_xy + C₂) / ((μ_x² + μ_y² + C₁)(σ_x² + σ_y² + C₂)) with
  C₁ = (0.01R)², C₂ = (0.03R)², averaged over the valid positions (no padding). The window is
  separable, so the same code serves 2-D images and 3-D volumes (``spatial_dims``).

Torch input gives a 0-d tensor (differentiable, on the input's device: ``1 − ssim`` is the
photometric loss of 3-D Gaussian splatting); numpy input gives a float.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = np.ndarray | torch.Tensor


def _pair(name: str, estimate: ArrayLike, reference: ArrayLike
          ) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Both inputs as floating tensors of one shape, and whether the caller used numpy."""
    is_numpy = isinstance(estimate, np.ndarray) and isinstance(reference, np.ndarray)
    tensors = []
    for label, value in (("estimate", estimate), ("reference", reference)):
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.asarray(value, dtype=np.float64))
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: {label} must be a numpy array or a torch tensor, got "
                            f"{type(value).__name__}")
        tensors.append(value if value.is_floating_point() else value.double())
    x, y = tensors
    if x.shape != y.shape:
        raise ValueError(f"{name}: estimate has shape {tuple(x.shape)} but reference has "
                         f"{tuple(y.shape)}; compare arrays of the same shape")
    if x.numel() == 0:
        raise ValueError(f"{name}: the inputs are empty")
    dtype = torch.promote_types(x.dtype, y.dtype)
    return x.to(dtype), y.to(dtype=dtype, device=x.device), is_numpy


def _check_range(name: str, data_range: float) -> None:
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"{name}: data_range must be a positive number (the span of valid "
                         f"values, 1.0 for images in [0, 1]), got {data_range}")


def psnr(estimate: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0
         ) -> torch.Tensor | float:
    """Peak signal-to-noise ratio in dB over all entries of two arrays of the same shape."""
    _check_range("psnr", data_range)
    x, y, is_numpy = _pair("psnr", estimate, reference)
    mse = torch.mean((x - y) ** 2)
    value = 10 * torch.log10(data_range**2 / mse)
    return float(value) if is_numpy else value


def _gaussian_taps(window_size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    offsets = torch.arange(window_size, dtype=like.dtype, device=like.device)
    taps = torch.exp(-((offsets - (window_size - 1) / 2) ** 2) / (2 * sigma**2))
    return taps / taps.sum()


def _blur(volume: torch.Tensor, taps: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Valid separable Gaussian filtering of (N, 1, *spatial) along each spatial axis."""
    conv = (F.conv1d, F.conv2d, F.conv3d)[spatial_dims - 1]
    for axis in range(spatial_dims):
        shape = [1, 1] + [1] * spatial_dims
        shape[2 + axis] = taps.numel()
        volume = conv(volume, taps.reshape(shape))
    return volume


def ssim(estimate: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0,
         spatial_dims: int = 2, window_size: int = 11, sigma: float = 1.5
         ) -> torch.Tensor | float:
    """Mean structural similarity of two arrays whose last ``spatial_dims`` axes are spatial.

    Leading axes (batch, channel) are averaged over. Raises ``ValueError`` when a spatial axis
    is shorter than the window (pass a smaller odd ``window_size``).
    """
    _check_range("ssim", data_range)
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"ssim: spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"ssim: window_size must be a positive odd integer, got {window_size}")
    if not sigma > 0:
        raise ValueError(f"ssim: sigma must be positive, got {sigma}")
    x, y, is_numpy = _pair("ssim", estimate, reference)
    if x.ndim < spatial_dims:
        raise ValueError(f"ssim: inputs of shape {tuple(x.shape)} have fewer than "
                         f"spatial_dims={spatial_dims} axes")
    spatial = tuple(x.shape[x.ndim - spatial_dims:])
    if min(spatial) < window_size:
        raise ValueError(f"ssim: spatial shape {spatial} is smaller than window_size="
                         f"{window_size}; pass a smaller odd window_size")
    x = x.reshape(-1, 1, *spatial)
    y = y.reshape(-1, 1, *spatial)
    taps = _gaussian_taps(window_size, sigma, x)
    mu_x, mu_y = _blur(x, taps, spatial_dims), _blur(y, taps, spatial_dims)
    var_x = _blur(x * x, taps, spatial_dims) - mu_x**2
    var_y = _blur(y * y, taps, spatial_dims) - mu_y**2
    cov = _blur(x * y, taps, spatial_dims) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)
             / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)))
    value = index.mean()
    return float(value) if is_numpy else value
