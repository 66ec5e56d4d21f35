"""One procedural 3-D scene generator for the 3-D inverse problems: voxelise it or ray-cast it.

A :class:`Scene` is a handful of analytic primitives (axis-aligned :class:`Box`,
:class:`Sphere`, finite :class:`Plane` rectangles) and an optional far background plane. Each
primitive carries a scalar ``value`` (a reflectivity magnitude, for radar) and a colour with a
procedural world-space texture (so a surface point has the same colour from every viewpoint,
as multi-view reconstruction assumes).

- :func:`voxelize` samples the values on a grid (PnP-MIMO's magnitude volumes);
- :func:`raycast` renders colour, camera-frame depth and the hit primitive through a
  :class:`PinholeCamera` by exact ray–primitive intersection (CoherentGS's views);
- :func:`random_scene` draws a scene inside given bounds, deterministically in its seed.

Cameras follow OpenCV's axes (x right, y down, z forward). Everything here is numpy float64:
scenes are data, built once per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Pattern = Literal["checker", "stripes", "noise", "flat"]
Vector = tuple[float, float, float]
PATTERNS: tuple[Pattern, ...] = ("checker", "stripes", "noise", "flat")
LIGHT = np.array([0.3, -0.5, -0.8]) / np.linalg.norm([0.3, -0.5, -0.8])
"""Direction towards a fixed light: view-independent Lambert shading gives shapes their cue."""


@dataclass(frozen=True)
class Surface:
    """What a primitive looks like: radar value, base colour and texture."""

    value: float = 1.0
    color: Vector = (0.8, 0.5, 0.3)
    pattern: Pattern = "checker"
    frequency: float = 4.0

    def __post_init__(self) -> None:
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}")
        if not self.frequency > 0:
            raise ValueError(f"frequency must be positive, got {self.frequency}")


@dataclass(frozen=True)
class Box(Surface):
    """An axis-aligned box with centre ``center`` and half extents ``half_size``."""

    center: Vector = (0.0, 0.0, 3.0)
    half_size: Vector = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Sphere(Surface):
    """A sphere with centre ``center`` and radius ``radius``."""

    center: Vector = (0.0, 0.0, 3.0)
    radius: float = 0.5


@dataclass(frozen=True)
class Plane(Surface):
    """A rectangle through ``center`` with unit ``normal`` and half extents ``half_size``.

    Its in-plane axes are fixed by the normal (:func:`plane_axes`). In a voxel grid it is a
    sheet one voxel thick.
    """

    center: Vector = (0.0, 0.0, 4.0)
    normal: Vector = (0.0, 0.0, -1.0)
    half_size: tuple[float, float] = (1.0, 1.0)


Primitive = Box | Sphere | Plane


@dataclass(frozen=True)
class Scene:
    """Primitives plus an optional background plane that every camera ray should hit."""

    primitives: tuple[Primitive, ...]
    background: Plane | None = None

    @property
    def surfaces(self) -> tuple[Primitive, ...]:
        """The primitives followed by the background, in hit-index order."""
        return self.primitives + ((self.background,) if self.background is not None else ())


@dataclass(frozen=True, eq=False)
class PinholeCamera:
    """Intrinsics (fx, fy, cx, cy) in pixels and a 4×4 camera-to-world matrix (OpenCV axes)."""

    fx: float
    fy: float
    cx: float
    cy: float
    c2w: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        c2w = np.asarray(self.c2w, dtype=np.float64)
        if c2w.shape != (4, 4):
            raise ValueError(f"c2w must be a 4×4 matrix, got shape {c2w.shape}")
        if not (self.fx > 0 and self.fy > 0):
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        object.__setattr__(self, "c2w", c2w)

    @property
    def K(self) -> np.ndarray:
        """The 3×3 intrinsic matrix."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    @property
    def w2c(self) -> np.ndarray:
        """The 4×4 world-to-camera matrix."""
        return np.linalg.inv(self.c2w)

    @property
    def center(self) -> np.ndarray:
        """The camera centre in world coordinates."""
        return self.c2w[:3, 3].copy()


def look_at(eye: Vector, target: Vector, up: Vector = (0.0, -1.0, 0.0)) -> np.ndarray:
    """The c2w matrix of a camera at ``eye`` looking at ``target`` (image up = world ``up``)."""
    eye_, target_, up_ = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target_ - eye_
    if np.linalg.norm(forward) == 0:
        raise ValueError("look_at: eye and target coincide")
    z = forward / np.linalg.norm(forward)
    x = np.cross(z, up_)
    if np.linalg.norm(x) < 1e-12:
        raise ValueError(f"look_at: up={up} is parallel to the viewing direction")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = x, y, z, eye_
    return c2w


def plane_axes(normal: Vector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit normal n and in-plane axes (u, v) with u ⟂ v ⟂ n, fixed by n alone."""
    n = np.asarray(normal, dtype=np.float64)
    if np.linalg.norm(n) == 0:
        raise ValueError("Plane.normal must be non-zero")
    n = n / np.linalg.norm(n)
    helper = np.array([1.0, 0, 0]) if abs(n[1]) > 0.9 else np.array([0, 1.0, 0])
    u = np.cross(helper, n)
    u /= np.linalg.norm(u)
    return n, u, np.cross(n, u)


def pixel_rays(camera: PinholeCamera, height: int, width: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Ray origins and directions (H, W, 3) through pixel centres, scaled to camera-frame z = 1.

    A point at parameter t along a ray has camera-frame depth t.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}×{width}")
    v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    local = np.stack(((u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy,
                      np.ones_like(u)), axis=-1)
    directions = local @ camera.c2w[:3, :3].T
    origins = np.broadcast_to(camera.center, directions.shape).copy()
    return origins, directions


def _intersect(primitive: Primitive, o: np.ndarray, d: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest positive ray parameter (inf when missed) and the surface normal there."""
    if isinstance(primitive, Sphere):
        c = np.asarray(primitive.center)
        oc = o - c
        a = (d * d).sum(-1)
        b = (oc * d).sum(-1)
        disc = b * b - a * ((oc * oc).sum(-1) - primitive.radius**2)
        root = np.sqrt(np.maximum(disc, 0))
        near, far = (-b - root) / a, (-b + root) / a
        t = np.where(near > 1e-9, near, far)
        t = np.where((disc >= 0) & (t > 1e-9), t, np.inf)
        normal = (o + np.where(np.isfinite(t), t, 0)[..., None] * d - c) / primitive.radius
        return t, normal
    if isinstance(primitive, Box):
        lo = np.asarray(primitive.center) - np.asarray(primitive.half_size)
        hi = np.asarray(primitive.center) + np.asarray(primitive.half_size)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (lo - o) / d, (hi - o) / d
        t_near = np.nanmax(np.minimum(t1, t2), axis=-1)
        t_far = np.nanmin(np.maximum(t1, t2), axis=-1)
        t = np.where(t_near > 1e-9, t_near, t_far)
        t = np.where((t_near <= t_far) & (t > 1e-9), t, np.inf)
        point = o + np.where(np.isfinite(t), t, 0)[..., None] * d
        scaled = (point - np.asarray(primitive.center)) / np.asarray(primitive.half_size)
        axis = np.abs(scaled).argmax(-1)
        normal = np.zeros_like(point)
        np.put_along_axis(normal, axis[..., None],
                          np.sign(np.take_along_axis(scaled, axis[..., None], -1)), -1)
        return t, normal
    n, u, v = plane_axes(primitive.normal)
    c = np.asarray(primitive.center)
    denom = d @ n
    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((c - o) @ n) / denom
    point = o + np.where(np.isfinite(t), t, 0)[..., None] * d
    inside = ((np.abs((point - c) @ u) <= primitive.half_size[0])
              & (np.abs((point - c) @ v) <= primitive.half_size[1]))
    t = np.where(inside & np.isfinite(t) & (t > 1e-9), t, np.inf)
    return t, np.broadcast_to(n, point.shape).copy()


def texture(surface: Surface, points: np.ndarray) -> np.ndarray:
    """The pattern's intensity in [0, 1] at world points (…, 3); same value from every view."""
    f = surface.frequency
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    if surface.pattern == "checker":
        return (np.floor(f * x) + np.floor(f * y) + np.floor(f * z)) % 2
    if surface.pattern == "stripes":
        return 0.5 + 0.5 * np.sin(2 * np.pi * f * (0.8 * x + 0.6 * y))
    if surface.pattern == "noise":
        waves = (np.sin(2 * np.pi * f * (0.9 * x + 0.3 * y + 0.2 * z))
                 * np.sin(2 * np.pi * f * (0.2 * x + 1.1 * y + 0.5 * z) + 1.3)
                 + 0.5 * np.sin(2 * np.pi * 2.3 * f * (x - 0.7 * y) + 0.4))
        return np.clip(0.5 + 0.35 * waves, 0, 1)
    return np.ones_like(x)


@dataclass(frozen=True)
class RayHits:
    """What :func:`raycast` sees: colour (H, W, 3), z-depth (H, W), hit index (−1: nothing)."""

    rgb: np.ndarray
    depth: np.ndarray
    primitive: np.ndarray


def raycast(scene: Scene, camera: PinholeCamera, height: int, width: int) -> RayHits:
    """Render ``scene`` through ``camera`` by exact intersection with every primitive.

    The hit index counts :attr:`Scene.surfaces` (the background last); pixels that hit nothing
    get index −1, depth ``inf`` and black.
    """
    origins, directions = pixel_rays(camera, height, width)
    surfaces = scene.surfaces
    if not surfaces:
        raise ValueError("raycast: the scene has no primitives and no background")
    hits = [_intersect(s, origins, directions) for s in surfaces]
    ts = np.stack([t for t, _ in hits])
    index = ts.argmin(0)
    depth = np.take_along_axis(ts, index[None], 0)[0]
    missed = ~np.isfinite(depth)
    rgb = np.zeros((height, width, 3))
    points = origins + np.where(missed, 0, depth)[..., None] * directions
    for k, surface in enumerate(surfaces):
        mask = (index == k) & ~missed
        if not mask.any():
            continue
        shade = 0.55 + 0.45 * np.abs(hits[k][1][mask] @ LIGHT)
        pattern = texture(surface, points[mask])
        rgb[mask] = (np.asarray(surface.color) * (0.35 + 0.65 * pattern[:, None])
                     * shade[:, None])
    return RayHits(rgb=np.clip(rgb, 0, 1), depth=depth,
                   primitive=np.where(missed, -1, index))


def voxelize(scene: Scene, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
    """The value of the primitive containing each voxel centre of the grid xs × ys × zs.

    Overlaps take the largest value; a plane fills the voxels within half the largest grid
    spacing of it; the background is ignored; empty space is 0.
    """
    axes = [np.asarray(a, dtype=np.float64) for a in (xs, ys, zs)]
    for name, a in zip(("xs", "ys", "zs"), axes, strict=True):
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"voxelize: {name} must be a non-empty 1-D array of coordinates")
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    spacing = max((np.diff(a).max() if a.size > 1 else 0.0) for a in axes)
    out = np.zeros(points.shape[:3])
    for primitive in scene.primitives:
        c = np.asarray(primitive.center)
        if isinstance(primitive, Box):
            inside = np.all(np.abs(points - c) <= np.asarray(primitive.half_size), axis=-1)
        elif isinstance(primitive, Sphere):
            inside = np.linalg.norm(points - c, axis=-1) <= primitive.radius
        else:
            n, u, v = plane_axes(primitive.normal)
            rel = points - c
            inside = ((np.abs(rel @ n) <= spacing / 2 + 1e-12)
                      & (np.abs(rel @ u) <= primitive.half_size[0])
                      & (np.abs(rel @ v) <= primitive.half_size[1]))
        out = np.where(inside, np.maximum(out, primitive.value), out)
    return out


def random_scene(seed: int | np.random.Generator, *,
                 bounds: tuple[tuple[float, float], ...] = ((-1.5, 1.5), (-1.5, 1.5),
                                                            (2.0, 5.0)),
                 n_boxes: int = 2, n_spheres: int = 1, n_planes: int = 1,
                 value_range: tuple[float, float] = (0.3, 1.0), max_tilt: float = 30.0,
                 background: bool = True) -> Scene:
    """A random scene inside ``bounds`` = ((x0, x1), (y0, y1), (z0, z1)), deterministic in seed.

    Boxes and spheres take 10–25% of the smallest extent as half size or radius; planes face
    the −z direction (towards cameras at smaller z) tilted by up to ``max_tilt`` degrees; each
    primitive draws a value in ``value_range``, a colour and a pattern. ``background`` adds a
    large textured plane at z = z1 facing −z.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    box = np.asarray(bounds, dtype=np.float64)
    if box.shape != (3, 2) or not np.all(box[:, 1] > box[:, 0]):
        raise ValueError(f"bounds must be three (low, high) pairs with low < high, got {bounds}")
    counts = {"n_boxes": n_boxes, "n_spheres": n_spheres, "n_planes": n_planes}
    for name, count in counts.items():
        if count < 0:
            raise ValueError(f"{name} must be ≥ 0, got {count}")
    low_value, high_value = value_range
    if not 0 <= low_value <= high_value:
        raise ValueError(f"value_range must be (low, high) with 0 ≤ low ≤ high, got "
                         f"{value_range}")
    extent = box[:, 1] - box[:, 0]
    small = extent.min()

    def surface() -> dict:
        return {"value": float(rng.uniform(low_value, high_value)),
                "color": tuple(float(c) for c in rng.uniform(0.15, 1.0, 3)),
                "pattern": PATTERNS[int(rng.integers(0, 3))],
                "frequency": float(rng.uniform(2.0, 6.0) / small)}

    def centre(margin: np.ndarray) -> tuple[float, float, float]:
        return tuple(float(c) for c in rng.uniform(box[:, 0] + margin, box[:, 1] - margin))

    primitives: list[Primitive] = []
    for _ in range(n_boxes):
        half = rng.uniform(0.10, 0.25, 3) * small
        primitives.append(Box(center=centre(half), half_size=tuple(float(h) for h in half),
                              **surface()))
    for _ in range(n_spheres):
        radius = float(rng.uniform(0.10, 0.25) * small)
        primitives.append(Sphere(center=centre(np.full(3, radius)), radius=radius, **surface()))
    for _ in range(n_planes):
        tilt = np.deg2rad(rng.uniform(-max_tilt, max_tilt, 2))
        normal = (float(np.sin(tilt[0])), float(np.sin(tilt[1])), -1.0)
        half = rng.uniform(0.15, 0.35, 2) * extent[:2]
        margin = np.array([half[0], half[1], 0.0])
        primitives.append(Plane(center=centre(margin), normal=normal,
                                half_size=(float(half[0]), float(half[1])), **surface()))
    back = None
    if background:
        back = Plane(center=(float(box[0].mean()), float(box[1].mean()), float(box[2, 1])),
                     normal=(0.0, 0.0, -1.0), half_size=(50 * extent[0], 50 * extent[1]),
                     **surface())
    return Scene(primitives=tuple(primitives), background=back)
