"""Grey-scale super-resolution patches: procedural shapes and textures, and upsampled digits.

A stand-in for DIV2K crops (a download): high-resolution (HR) patches with the structures a
super-resolution net must restore — sharp anti-aliased edges (random polygons), oriented
stripes of varying frequency, checker and sinusoid textures — plus scikit-learn's handwritten
digits (8×8) upsampled bilinearly to the patch size. The low-resolution (LR) input is the HR
patch averaged over s × s blocks (area downsampling, ``scale`` s, default 2), so the HR patch is
exactly recoverable only where the blocks are flat.

Every kind is drawn from a NumPy generator seeded by ``seed`` (same seed, same patches on any
machine); shapes are rendered at ``supersample`` × the patch size and area-averaged, so edges
are anti-aliased. Values lie in [0, 1]. Used by :mod:`regzoo.repro.quantnas`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

KINDS = ("polygon", "stripes", "texture", "digits")


@dataclass(frozen=True)
class SuperResPatches:
    """HR patches (N, 1, H, W), their area-downsampled LR inputs and each patch's kind index."""

    hr: torch.Tensor
    lr: torch.Tensor
    kind: torch.Tensor
    scale: int

    def __len__(self) -> int:
        return int(self.hr.shape[0])


def downsample_area(hr: torch.Tensor, scale: int = 2) -> torch.Tensor:
    """Average (…, H, W) over ``scale`` × ``scale`` blocks; H and W must be multiples of it."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if not isinstance(hr, torch.Tensor) or hr.ndim < 2 or not hr.is_floating_point():
        raise TypeError("hr must be a floating tensor of shape (..., H, W)")
    height, width = hr.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(
            f"image size {height}×{width} is not divisible by scale={scale}; crop "
            f"the image to a multiple of {scale} first"
        )
    flat = hr.reshape(-1, 1, height, width)
    return F.avg_pool2d(flat, scale).reshape(*hr.shape[:-2], height // scale, width // scale)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(size) + 0.5) / size * 2 - 1
    return np.meshgrid(centres, centres, indexing="ij")


def _area(image: np.ndarray, factor: int) -> np.ndarray:
    n, size, _ = image.shape
    out = size // factor
    return image.reshape(n, out, factor, out, factor).mean(axis=(2, 4))


def _polygons(n: int, size: int, supersample: int, rng: np.random.Generator) -> np.ndarray:
    """Random star-shaped polygons (3–7 vertices) of one grey level on another, even-odd rule."""
    ys, xs = _grid(size * supersample)
    out = np.empty((n, size * supersample, size * supersample))
    for i in range(n):
        k = int(rng.integers(3, 8))
        centre = rng.uniform(-0.4, 0.4, size=2)
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=k))
        radii = rng.uniform(0.3, 0.9, size=k)
        vx = centre[0] + radii * np.cos(angles)
        vy = centre[1] + radii * np.sin(angles)
        inside = np.zeros(xs.shape, dtype=bool)
        for j in range(k):
            x0, y0, x1, y1 = vx[j], vy[j], vx[(j + 1) % k], vy[(j + 1) % k]
            crosses = (y0 > ys) != (y1 > ys)
            with np.errstate(divide="ignore", invalid="ignore"):
                at = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
            inside ^= crosses & (xs < at)
        background, foreground = rng.uniform(0, 1, size=2)
        out[i] = np.where(inside, foreground, background)
    return _area(out, supersample)


def _stripes(n: int, size: int, supersample: int, rng: np.random.Generator) -> np.ndarray:
    """Oriented stripes, square-wave or sinusoidal, 1–5 periods across the patch."""
    ys, xs = _grid(size * supersample)
    theta = rng.uniform(0, np.pi, size=(n, 1, 1))
    freq = rng.uniform(0.5, 2.5, size=(n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    wave = np.sin(np.pi * freq * (xs * np.cos(theta) + ys * np.sin(theta)) * 2 + phase)
    square = rng.uniform(size=(n, 1, 1)) < 0.5
    wave = np.where(square, np.sign(wave), wave)
    low, high = np.sort(rng.uniform(0, 1, size=(2, n, 1, 1)), axis=0)
    return _area(low + (high - low) * (wave + 1) / 2, supersample)


def _textures(n: int, size: int, supersample: int, rng: np.random.Generator) -> np.ndarray:
    """Rotated checkerboards or sums of two random sinusoids."""
    ys, xs = _grid(size * supersample)
    theta = rng.uniform(0, np.pi / 2, size=(n, 1, 1))
    cells = rng.uniform(1.5, 4.0, size=(n, 1, 1))
    u = xs * np.cos(theta) + ys * np.sin(theta)
    v = -xs * np.sin(theta) + ys * np.cos(theta)
    checker = (np.floor(u * cells) + np.floor(v * cells)) % 2
    f1, f2 = rng.uniform(1, 4, size=(2, n, 1, 1))
    p1, p2 = rng.uniform(0, 2 * np.pi, size=(2, n, 1, 1))
    waves = (np.sin(np.pi * f1 * u + p1) + np.sin(np.pi * f2 * v + p2) + 2) / 4
    use_checker = rng.uniform(size=(n, 1, 1)) < 0.5
    base = np.where(use_checker, checker, waves)
    low, high = np.sort(rng.uniform(0, 1, size=(2, n, 1, 1)), axis=0)
    return _area(low + (high - low) * base, supersample)


def _digits(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """scikit-learn digits (8×8, values 0–16) upsampled bilinearly to ``size``, in [0, 1]."""
    from sklearn.datasets import load_digits

    images = load_digits().images[rng.integers(0, 1797, size=n)] / 16.0
    tensor = torch.from_numpy(images).unsqueeze(1)
    up = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    flip = torch.from_numpy(rng.uniform(size=n) < 0.5).view(n, 1, 1, 1)
    up = torch.where(flip, 1 - up, up)
    return up[:, 0].clamp(0, 1).numpy()


def superres_patches(
    n: int,
    *,
    hr_size: int = 16,
    scale: int = 2,
    seed: int = 0,
    kinds: tuple[str, ...] = KINDS,
    supersample: int = 4,
    dtype: torch.dtype = torch.float32,
) -> SuperResPatches:
    """``n`` HR patches of ``hr_size`` × ``hr_size`` (kinds in equal shares) and their LR inputs.

    Args:
        n: number of patches (kinds cycle so each gets ⌈n / len(kinds)⌉ or one fewer; the
            order is shuffled by ``seed``).
        hr_size: side of an HR patch; must be a multiple of ``scale``.
        scale: the downsampling factor s (LR side = hr_size / s).
        seed: seed of every random draw.
        kinds: a non-empty subset of :data:`KINDS`.
        supersample: rendering factor of the procedural kinds (anti-aliasing).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(hr_size, bool) or not isinstance(hr_size, int) or hr_size < 2:
        raise ValueError(f"hr_size must be an integer ≥ 2, got {hr_size!r}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if hr_size % scale:
        raise ValueError(
            f"hr_size={hr_size} is not divisible by scale={scale}; the LR patch "
            f"would not be whole: use a multiple of {scale}"
        )
    if not kinds or any(k not in KINDS for k in kinds) or len(set(kinds)) != len(kinds):
        raise ValueError(
            f"kinds must be a non-empty subset of {KINDS} without repeats, got {kinds!r}"
        )
    if isinstance(supersample, bool) or not isinstance(supersample, int) or supersample < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample!r}")
    rng = np.random.default_rng(seed)
    counts = [n // len(kinds) + (i < n % len(kinds)) for i in range(len(kinds))]
    parts, labels = [], []
    for kind, count in zip(kinds, counts):
        if count == 0:
            continue
        if kind == "polygon":
            part = _polygons(count, hr_size, supersample, rng)
        elif kind == "stripes":
            part = _stripes(count, hr_size, supersample, rng)
        elif kind == "texture":
            part = _textures(count, hr_size, supersample, rng)
        else:
            part = _digits(count, hr_size, rng)
        parts.append(part)
        labels.append(np.full(count, KINDS.index(kind)))
    order = rng.permutation(n)
    hr = torch.from_numpy(np.concatenate(parts)[order]).to(dtype).clamp(0, 1).unsqueeze(1)
    kind_index = torch.from_numpy(np.concatenate(labels)[order]).long()
    return SuperResPatches(hr=hr, lr=downsample_area(hr, scale), kind=kind_index, scale=scale)
