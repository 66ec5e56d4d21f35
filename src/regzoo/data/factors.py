"""Mini-dSprites: binary sprites from a full factorial of known generative factors.

A procedural stand-in for dSprites (Matthey et al. 2017), which cannot be downloaded here: every
combination of shape (square, ellipse, triangle) × scale (4) × x (8) × y (8), optionally ×
orientation (4), is rasterised once, so the data set is the factorial grid itself (768 images,
3072 with orientation) and each image's factor indices are known exactly — what disentanglement
metrics such as InfoMEC and DCI need. Deterministic: no randomness at all.

Geometry (image coordinates in [−1, 1], pixel centres): half sizes ``linspace(0.2, 0.35, 4)``,
centres ``linspace(−0.55, 0.55, 8)`` on both axes (the largest unrotated sprite stays inside;
rotated squares may touch the border), rotations
0°, 22.5°, 45°, 67.5° (distinct for all three shapes, whose symmetry orders are 4, 2 and 3).
A pixel is on when its centre lies inside the shape: a square of half side s, an ellipse with
semi-axes (s, 0.6 s), an equilateral triangle with circumradius 1.2 s.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

SHAPES = ("square", "ellipse", "triangle")
SCALES = tuple(np.linspace(0.2, 0.35, 4).tolist())
POSITIONS = tuple(np.linspace(-0.55, 0.55, 8).tolist())
ORIENTATIONS = (0.0, np.pi / 8, np.pi / 4, 3 * np.pi / 8)


@dataclass(frozen=True)
class FactorData:
    """Images (N, 1, H, W) in {0, 1}, their factor indices (N, F) and the factors' names/sizes."""

    images: torch.Tensor
    factors: torch.Tensor
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]


def _inside(shape: str, dx: np.ndarray, dy: np.ndarray, scale: float) -> np.ndarray:
    if shape == "square":
        return (np.abs(dx) <= scale) & (np.abs(dy) <= scale)
    if shape == "ellipse":
        return (dx / scale) ** 2 + (dy / (0.6 * scale)) ** 2 <= 1
    radius = 1.2 * scale
    inside = np.ones_like(dx, dtype=bool)
    for k in range(3):  # the three edges' inward half-planes; apothem = radius / 2
        angle = -np.pi / 2 + 2 * np.pi * k / 3
        inside &= dx * np.cos(angle) + dy * np.sin(angle) <= radius / 2
    return inside


def mini_dsprites(size: int = 32, *, orientation: bool = False) -> FactorData:
    """The full factorial data set (module docstring), in ``itertools.product`` order.

    Factors: shape (3), scale (4), x (8), y (8) and, with ``orientation``, orientation (4).
    """
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an integer ≥ 16 (smaller grids merge neighbouring "
                         f"positions), got {size!r}")
    names = ["shape", "scale", "x", "y"] + (["orientation"] if orientation else [])
    sizes = [len(SHAPES), len(SCALES), len(POSITIONS), len(POSITIONS)]
    sizes += [len(ORIENTATIONS)] if orientation else []
    grid = (np.arange(size) + 0.5) / size * 2 - 1
    py, px = np.meshgrid(grid, grid, indexing="ij")
    combos = list(itertools.product(*(range(n) for n in sizes)))
    images = np.empty((len(combos), size, size), dtype=np.float32)
    for n, combo in enumerate(combos):
        shape, scale, x, y = combo[:4]
        theta = ORIENTATIONS[combo[4]] if orientation else 0.0
        dx, dy = px - POSITIONS[x], py - POSITIONS[y]
        rx = np.cos(theta) * dx + np.sin(theta) * dy
        ry = -np.sin(theta) * dx + np.cos(theta) * dy
        images[n] = _inside(SHAPES[shape], rx, ry, SCALES[scale])
    return FactorData(images=torch.from_numpy(images)[:, None],
                      factors=torch.tensor(combos, dtype=torch.long),
                      factor_names=tuple(names), factor_sizes=tuple(sizes))
