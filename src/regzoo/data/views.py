"""Sparse multi-view scenes for novel-view synthesis (CoherentGS), from ray-cast procedural scenes.

:func:`multiview_scene` draws a scene of one of three families with
:func:`regzoo.imaging.scenes.random_scene` and renders it exactly
(:func:`regzoo.imaging.scenes.raycast`):

* 3 training views on a short horizontal baseline (cameras at x = −b, 0, b, all looking at the
  scene centre) and 6 test views: 4 interpolated (x = ±b/4, ±3b/4, two of them slightly raised)
  and 2 slightly extrapolated (x = ±1.25 b);
* depth bounds (near, far) = (0.9 z₀, 1.1 z₁) of the scene box (an SfM-like range, not the
  true depths);
* a monocular-depth stand-in per training view: the true depth z through a monotone distortion
  z^γ (γ = 1.2), an unknown per-view affine a_v z^γ + c_v, 5 % multiplicative noise and a Gaussian
  blur (σ = 1 pixel), like a relative depth network's output;
* optical flow between every ordered pair of training views from the true geometry
  (p ↦ π_j(o_i + z_i(p) d_i(p)) − p), valid where the forward–backward check passes
  (|F_{i→j}(p) + F_{j→i}(p + F_{i→j}(p))| < 0.5 px) and the point lands inside view j;
* depth layers: C soft masks on the monocular disparity, centred on its quantiles
  (memberships ∝ exp(−(δ − c_k)² / (2 s²)) with δ the disparity scaled to [0, 1]; s = 0 gives
  hard layers, the official code's choice, from agglomerative clustering there).

Everything is deterministic in ``seed``; numbers come back as float32 CPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from regzoo.imaging.scenes import PinholeCamera, look_at, random_scene, raycast

FAMILIES = {
    "boxes": {"n_boxes": 3, "n_spheres": 0, "n_planes": 1},
    "planes": {"n_boxes": 0, "n_spheres": 1, "n_planes": 3},
    "mixed": {"n_boxes": 2, "n_spheres": 1, "n_planes": 1},
}
"""Scene families: counts of primitives in front of the textured background plane."""

BOUNDS = ((-1.5, 1.5), (-1.5, 1.5), (2.0, 5.0))
"""The scene box (x, y, z); cameras sit near the origin looking down +z."""


@dataclass
class MultiViewScene:
    """A sparse-view problem with its ground truth (``train_*``, ``test_*``: true renders)."""

    family: str
    seed: int
    train_images: torch.Tensor
    train_cameras: list[PinholeCamera]
    train_depth: torch.Tensor
    mono_depth: torch.Tensor
    depth_layers: torch.Tensor
    flows: dict[tuple[int, int], torch.Tensor]
    flow_masks: dict[tuple[int, int], torch.Tensor]
    test_images: torch.Tensor
    test_cameras: list[PinholeCamera]
    test_depth: torch.Tensor
    depth_bounds: tuple[float, float]


def _camera(eye: tuple[float, float, float], target: tuple[float, float, float],
            height: int, width: int, fov_degrees: float) -> PinholeCamera:
    focal = 0.5 * width / np.tan(np.deg2rad(fov_degrees) / 2)
    return PinholeCamera(fx=focal, fy=focal, cx=width / 2, cy=height / 2,
                         c2w=look_at(eye, target))


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return x
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    padded = np.pad(x, radius, mode="edge")
    rows = np.apply_along_axis(lambda r: np.convolve(r, taps, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda c: np.convolve(c, taps, mode="valid"), 0, rows)


def _project(camera: PinholeCamera, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    local = points @ camera.w2c[:3, :3].T + camera.w2c[:3, 3]
    z = local[..., 2]
    safe = np.where(z > 1e-6, z, 1e-6)
    uv = np.stack([camera.fx * local[..., 0] / safe + camera.cx,
                   camera.fy * local[..., 1] / safe + camera.cy], axis=-1)
    return uv, z


def _sample(field: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear samples of a field at pixel coordinates.

    Bilinear samples of ``field`` (H, W, C) at pixel coordinates ``uv`` (pixel centres at
    +½), edges clamped.
    """
    h, w = field.shape[:2]
    grid = torch.from_numpy(np.stack([uv[..., 0] * (2.0 / w) - 1.0,
                                      uv[..., 1] * (2.0 / h) - 1.0], -1))[None]
    image = torch.from_numpy(np.ascontiguousarray(field.transpose(2, 0, 1)))[None]
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].numpy().transpose(1, 2, 0)


def geometric_flow(depth_i: np.ndarray, camera_i: PinholeCamera, camera_j: PinholeCamera
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Geometric flow from view i into view j.

    Flow F_{i→j} (H, W, 2) of view i's surface points into view j, and whether they land in
    front of camera j and inside its image.
    """
    h, w = depth_i.shape
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    local = np.stack([(u - camera_i.cx) / camera_i.fx, (v - camera_i.cy) / camera_i.fy,
                      np.ones_like(u)], -1) * depth_i[..., None]
    world = local @ camera_i.c2w[:3, :3].T + camera_i.c2w[:3, 3]
    uv, z = _project(camera_j, world)
    inside = (z > 1e-6) & (uv[..., 0] >= 0) & (uv[..., 0] <= w) & (uv[..., 1] >= 0) \
        & (uv[..., 1] <= h)
    return uv - np.stack([u, v], -1), inside


def flow_with_occlusion(depths: np.ndarray, cameras: list[PinholeCamera], *,
                        threshold: float = 0.5) -> tuple[dict, dict]:
    """Flows and forward–backward validity masks for every ordered pair of views."""
    n = len(cameras)
    raw = {(i, j): geometric_flow(depths[i], cameras[i], cameras[j])
           for i in range(n) for j in range(n) if i != j}
    flows, masks = {}, {}
    h, w = depths.shape[1:]
    v, u = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    for (i, j), (flow, inside) in raw.items():
        back = _sample(raw[(j, i)][0], np.stack([u, v], -1) + flow)
        consistent = np.linalg.norm(flow + back, axis=-1) < threshold
        flows[(i, j)] = torch.from_numpy(flow.astype(np.float32))
        masks[(i, j)] = torch.from_numpy((consistent & inside).astype(np.float32))
    return flows, masks


def depth_layers(depth: np.ndarray, channels: int, softness: float) -> np.ndarray:
    """Soft layer masks (C, H, W) on the disparity 1/depth scaled to [0, 1] (module docstring)."""
    disparity = 1.0 / depth
    scaled = (disparity - disparity.min()) / max(float(np.ptp(disparity)), 1e-12)
    centres = np.quantile(scaled, (np.arange(channels) + 0.5) / channels)
    distance = (scaled[None] - centres[:, None, None]) ** 2
    if softness <= 0:
        hard = np.zeros_like(distance)
        np.put_along_axis(hard, distance.argmin(0)[None], 1.0, axis=0)
        return hard
    logits = -distance / (2 * softness**2)
    weights = np.exp(logits - logits.max(0, keepdims=True))
    return weights / weights.sum(0, keepdims=True)


def multiview_scene(seed: int, *, family: str = "mixed", height: int = 32, width: int = 32,
                    baseline: float = 0.3, fov_degrees: float = 55.0, gamma: float = 1.2,
                    noise: float = 0.05, blur: float = 1.0, layers: int = 3,
                    softness: float = 0.1) -> MultiViewScene:
    """A sparse-view scene of ``family`` (``"boxes"``, ``"planes"``, ``"mixed"``), seeded.

    Args:
        seed: draws the scene, the monocular-depth affines and noise.
        height, width: image size.
        baseline: b, the distance between neighbouring training cameras.
        fov_degrees: horizontal field of view.
        gamma, noise, blur: the monocular-depth stand-in's distortion exponent, multiplicative
            noise level and blur σ (pixels).
        layers, softness: depth layers (module docstring).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    if not baseline > 0:
        raise ValueError(f"baseline must be > 0, got {baseline}")
    if layers < 1:
        raise ValueError(f"layers must be ≥ 1, got {layers}")
    rng = np.random.default_rng([seed, sorted(FAMILIES).index(family)])
    scene = random_scene(rng, bounds=BOUNDS, **FAMILIES[family])
    target = (0.0, 0.0, float(np.mean(BOUNDS[2])))
    train_x = (-baseline, 0.0, baseline)
    test_eyes = [(-0.75 * baseline, 0.0), (-0.25 * baseline, 0.1 * baseline),
                 (0.25 * baseline, -0.1 * baseline), (0.75 * baseline, 0.0),
                 (-1.25 * baseline, 0.0), (1.25 * baseline, 0.0)]
    train_cams = [_camera((x, 0.0, 0.0), target, height, width, fov_degrees) for x in train_x]
    test_cams = [_camera((x, y, 0.0), target, height, width, fov_degrees) for x, y in test_eyes]
    train_hits = [raycast(scene, c, height, width) for c in train_cams]
    test_hits = [raycast(scene, c, height, width) for c in test_cams]
    depths = np.stack([hit.depth for hit in train_hits])
    monos, masks = [], []
    for depth in depths:
        scale, shift = rng.uniform(0.5, 1.5), rng.uniform(-0.3, 0.3) * float(np.mean(depth))
        mono = scale * depth**gamma + shift
        mono = mono * (1.0 + noise * rng.standard_normal(mono.shape))
        mono = _gaussian_blur(mono, blur)
        mono = np.maximum(mono, 0.05 * float(np.median(np.abs(mono))))
        monos.append(mono)
        masks.append(depth_layers(mono, layers, softness))
    flows, flow_masks = flow_with_occlusion(depths, train_cams)

    def stack(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(arrays).astype(np.float32))

    return MultiViewScene(
        family=family, seed=seed,
        train_images=stack([h.rgb for h in train_hits]), train_cameras=train_cams,
        train_depth=stack(list(depths)), mono_depth=stack(monos), depth_layers=stack(masks),
        flows=flows, flow_masks=flow_masks,
        test_images=stack([h.rgb for h in test_hits]), test_cameras=test_cams,
        test_depth=stack([h.depth for h in test_hits]),
        depth_bounds=(0.9 * BOUNDS[2][0], 1.1 * BOUNDS[2][1]))
