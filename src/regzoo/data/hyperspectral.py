"""Synthetic hyperspectral cubes, the HSI noise models and the HSI metrics (HyDe, IGARSS 2022).

The metrics live here, beside the data they score (not in ``methods/hyde``), so that the classical
denoisers, the DNN arm and the reproduction all share one definition.

* :func:`synthetic_cube`: an exact rank-``rank`` cube ``Y = A Eᵀ`` (rows·cols × bands): ``rank``
  smooth endmember spectra ``E`` (sums of Gaussian bumps along the band axis, values in
  [0.05, 0.95]) mixed by smooth, blobby abundance maps ``A`` (Gaussian-filtered white noise
  through a softmax, so abundances are positive and sum to one per pixel). Every pixel is a convex
  combination of the spectra, so the cube lies in [0, 1]. This is the cube of the HyDe spec §3.
* :func:`add_noise`: the noise models of the HSI denoising literature, each seeded:

  ==================  ======================================================================
  ``gaussian``        i.i.d. N(0, σ²), ``sigma=0.1`` (the spec's anchor, noisy PSNR 20 dB)
  ``band_gaussian``   N(0, σ_b²) with σ_b ~ U[``sigma_min``=0.02, ``sigma_max``=0.15] per band
  ``poisson``         ``Poisson(peak · y) / peak`` with ``peak=100`` (std ≈ √(y/100))
  ``impulse``         salt and pepper: a fraction ``fraction=0.05`` of all entries set to 0 or 1
  ``stripes``         on ``n_bands=10`` random bands, a fraction ``stripe_fraction=0.3`` of the
                      columns shifted by a constant drawn from U[-``amplitude``, ``amplitude``]
                      with ``amplitude=0.25``
  ``mixed``           ``band_gaussian`` then ``impulse`` then ``stripes``, each with the
                      defaults above (the spec's "harder variant", L1HyMixDe's setting)
  ==================  ======================================================================

* :func:`psnr` (mean over bands, peak ``data_range=1``), :func:`ssim` (Wang et al. 2004,
  Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, mean over bands) and :func:`sam` (mean spectral
  angle over pixels, in degrees). All three accept numpy arrays or torch tensors of shape
  rows×cols×bands.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import ndimage

from regzoo.core.checks import check_choice, check_positive_int, check_range

NOISE_KINDS = ("gaussian", "band_gaussian", "poisson", "impulse", "stripes", "mixed")
"""The noise models :func:`add_noise` knows."""

_DEFAULTS: dict[str, dict[str, float]] = {
    "gaussian": {"sigma": 0.1},
    "band_gaussian": {"sigma_min": 0.02, "sigma_max": 0.15},
    "poisson": {"peak": 100.0},
    "impulse": {"fraction": 0.05},
    "stripes": {"n_bands": 10, "stripe_fraction": 0.3, "amplitude": 0.25},
}
_DEFAULTS["mixed"] = {**_DEFAULTS["band_gaussian"], **_DEFAULTS["impulse"],
                      **_DEFAULTS["stripes"]}


def synthetic_cube(rows: int, cols: int, bands: int, *, rank: int = 5, seed: int) -> np.ndarray:
    """Return an exact rank-``rank`` cube (float64, rows×cols×bands, values in [0, 1]).

    Args:
        rows, cols, bands: the cube's shape (each ≥ 2; ``rank`` ≤ ``bands``).
        rank: number of endmembers, hence the cube's rank as a (rows·cols)×bands matrix.
        seed: seeds the spectra and the abundance maps.
    """
    for name, value in (("rows", rows), ("cols", cols), ("bands", bands)):
        check_positive_int(name, value, minimum=2)
    check_positive_int("rank", rank)
    if rank > bands:
        raise ValueError(f"rank must be <= bands ({bands}), got {rank}")
    rng = np.random.default_rng(seed)
    axis = np.arange(bands, dtype=np.float64)
    spectra = np.zeros((bands, rank))
    for j in range(rank):
        for _ in range(rng.integers(2, 5)):
            centre = rng.uniform(0, bands)
            width = rng.uniform(bands / 10, bands / 3)
            spectra[:, j] += rng.uniform(0.2, 1.0) * np.exp(-0.5 * ((axis - centre) / width) ** 2)
        low, high = spectra[:, j].min(), spectra[:, j].max()
        spectra[:, j] = 0.05 + 0.9 * (spectra[:, j] - low) / max(high - low, 1e-12)
    # Smooth fields through a sharp softmax: blobby regions dominated by one endmember, with
    # smooth transitions, the look of the abundance maps in the FastHyDe/HyRes simulations.
    width = max(rows, cols) / 8
    fields = np.stack([ndimage.gaussian_filter(rng.standard_normal((rows, cols)), width,
                                               mode="wrap") for _ in range(rank)], axis=-1)
    fields /= fields.std() + 1e-12
    logits = 3.0 * fields
    abundances = np.exp(logits - logits.max(axis=-1, keepdims=True))
    abundances /= abundances.sum(axis=-1, keepdims=True)
    cube = abundances.reshape(-1, rank) @ spectra.T
    return np.clip(cube.reshape(rows, cols, bands), 0.0, 1.0)


def noise_defaults(kind: str) -> dict[str, float]:
    """The documented default parameters of the noise model ``kind``."""
    check_choice("kind", kind, NOISE_KINDS)
    return dict(_DEFAULTS[kind])


def add_noise(cube: Any, kind: str, *, seed: int, **params: float) -> np.ndarray:
    """Return a noisy copy (float64 numpy) of ``cube`` (rows×cols×bands) under noise model ``kind``.

    Args:
        cube: the clean cube, numpy array or torch tensor, 3 dimensions.
        kind: one of :data:`NOISE_KINDS` (see the module docstring for each model).
        seed: seeds every random draw.
        **params: overrides of the model's defaults (:func:`noise_defaults`); unknown names raise.
    """
    check_choice("kind", kind, NOISE_KINDS)
    clean = _as_cube("cube", cube)
    allowed = _DEFAULTS[kind]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown} for noise kind {kind!r}; "
                         f"allowed: {sorted(allowed)}")
    p = {**allowed, **params}
    rng = np.random.default_rng(seed)
    noisy = clean.copy()
    if kind == "gaussian":
        noisy += check_range("sigma", p["sigma"], 0.0) * rng.standard_normal(clean.shape)
    if kind == "poisson":
        peak = check_range("peak", p["peak"], 0.0, low_inclusive=False)
        if clean.min() < 0:
            raise ValueError("cube must be non-negative for Poisson noise")
        noisy = rng.poisson(peak * clean).astype(np.float64) / peak
    if kind in ("band_gaussian", "mixed"):
        low = check_range("sigma_min", p["sigma_min"], 0.0)
        high = check_range("sigma_max", p["sigma_max"], low)
        sigmas = rng.uniform(low, high, size=clean.shape[-1])
        noisy += sigmas * rng.standard_normal(clean.shape)
    if kind in ("impulse", "mixed"):
        fraction = check_range("fraction", p["fraction"], 0.0, 1.0)
        hit = rng.random(clean.shape) < fraction
        noisy[hit] = rng.integers(0, 2, size=int(hit.sum())).astype(np.float64)
    if kind in ("stripes", "mixed"):
        n_bands = check_positive_int("n_bands", int(p["n_bands"]), minimum=0)
        if n_bands > clean.shape[-1]:
            raise ValueError(f"n_bands must be <= bands ({clean.shape[-1]}), got {n_bands}")
        fraction = check_range("stripe_fraction", p["stripe_fraction"], 0.0, 1.0)
        amplitude = check_range("amplitude", p["amplitude"], 0.0)
        cols = clean.shape[1]
        for band in rng.choice(clean.shape[-1], size=n_bands, replace=False):
            striped = rng.choice(cols, size=round(fraction * cols), replace=False)
            noisy[:, striped, band] += rng.uniform(-amplitude, amplitude, size=striped.size)
    return noisy


def _as_cube(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got "
                        f"{type(value).__name__}")
    if value.ndim != 3:
        raise ValueError(f"{name} must be rows×cols×bands (3 dimensions), got shape {value.shape}")
    return np.asarray(value, dtype=np.float64)


def _pair(clean: Any, est: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _as_cube("clean", clean), _as_cube("est", est)
    if x.shape != y.shape:
        raise ValueError(f"clean and est must have the same shape, got {x.shape} and {y.shape}")
    return x, y


def psnr(clean: Any, est: Any, *, data_range: float = 1.0) -> float:
    """Mean over bands of 10·log10(data_range² / MSE_b), in dB."""
    x, y = _pair(clean, est)
    mse = np.mean((x - y) ** 2, axis=(0, 1))
    return float(np.mean(10 * np.log10(data_range**2 / np.maximum(mse, 1e-30))))


def ssim(clean: Any, est: Any, *, data_range: float = 1.0) -> float:
    """Mean over bands of the SSIM index (Wang et al. 2004, Gaussian window σ = 1.5)."""
    x, y = _pair(clean, est)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        # Filter rows and columns only (sigma 0 on the band axis), truncated at 3.5σ like skimage.
        return ndimage.gaussian_filter(a, sigma=(1.5, 1.5, 0), truncate=3.5, mode="reflect")

    mx, my = blur(x), blur(y)
    # Sample (unbiased) covariances, as skimage's default use_sample_covariance=True.
    n = 11 * 11  # skimage's window for σ = 1.5, truncate 3.5: 11×11
    scale = n / (n - 1)
    vx = scale * (blur(x * x) - mx * mx)
    vy = scale * (blur(y * y) - my * my)
    cxy = scale * (blur(x * y) - mx * my)
    index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    pad = 5  # skimage crops (win_size - 1) // 2 pixels of border before averaging
    return float(index[pad:-pad, pad:-pad].mean()) if min(x.shape[:2]) > 2 * pad \
        else float(index.mean())


def sam(clean: Any, est: Any) -> float:
    """Mean over pixels of the spectral angle arccos(⟨x, y⟩ / (‖x‖‖y‖)), in degrees."""
    x, y = _pair(clean, est)
    x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    cos = np.sum(x * y, axis=1) / np.maximum(np.linalg.norm(x, axis=1)
                                             * np.linalg.norm(y, axis=1), 1e-30)
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).mean())
