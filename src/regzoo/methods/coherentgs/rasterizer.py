r"""A differentiable 3-D Gaussian splatting rasteriser in pure torch (CPU and CUDA alike).

The 3DGS image formation (Kerbl et al., SIGGRAPH 2023, arXiv 2308.04079, §4 and §6): each
Gaussian i has a mean μ_i, a covariance Σ_i = R_i S_i S_iᵀ R_iᵀ (S_i = diag(exp(log-scales)),
R_i from a unit quaternion), an opacity o_i and an RGB colour c_i. With W, t the world-to-camera
rotation and translation and (x, y, z) = W μ_i + t, the EWA projection (Zwicker et al. 2002)

.. math::

    \mu'_i = (f_x x/z + c_x,\; f_y y/z + c_y), \qquad
    \Sigma'_i = J W \Sigma_i W^\top J^\top + 0.3\, I, \qquad
    J = \begin{pmatrix} f_x/z & 0 & -f_x x/z^2 \\ 0 & f_y/z & -f_y y/z^2 \end{pmatrix}

gives each pixel centre p (pixel (row r, column c) sits at (c + ½, r + ½)) the opacity
α_i(p) = min(0.99, o_i exp(−½ (p − μ'_i)ᵀ Σ'^{-1}_i (p − μ'_i))), cut to 0 below 1/255, and
front-to-back compositing over the Gaussians sorted by their camera depth z_i:

.. math::

    C(p) = \sum_i T_i \alpha_i c_i + T_{N} b, \quad D(p) = \sum_i T_i \alpha_i z_i, \quad
    A(p) = \sum_i T_i \alpha_i, \qquad T_i = \prod_{j < i} (1 - \alpha_j)

(b the background colour; D/A is the "rendered depth" CoherentGS regularises). The 0.3 px²
dilation is 3DGS's low-pass filter.

Where the CUDA rasteriser bins Gaussians into 16×16 tiles, this one keeps, for every pixel, the
``k`` nearest Gaussians (in camera depth) among those with α ≥ 1/255 there, up to where the
transmittance would fall below 1e-4 (3DGS's early stop), chosen without
gradient from each Gaussian's footprint box (:func:`select_candidates_binned`; the dense
all-pairs :func:`select_candidates` gives the same lists); compositing those ``k`` is then
dense and differentiable. With ``k`` ≥ the number of Gaussians that reach a pixel the result
is exact (tested against a brute-force loop); with fewer, the far Gaussians past the k-th
are dropped, whose weight is at most the transmittance left after k. The candidate lists
can be reused for a few steps
(``candidates=``): they are re-sorted by the current depths and re-cut at 1/255 every call.
Cost: O(Σ footprints) without gradient for the selection (O(P·N) dense), O(P·k) with gradient.
What differs from the CUDA rasteriser: the footprint is the exact α ≥ 1/255 ellipse's box
rather than 3σ rounded to 16-pixel tiles (a Gaussian outside it contributes nothing either
way); at most ``k`` Gaussians per pixel (default 128; the CUDA kernel has no cap); RGB
colours (SH degree 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

ALPHA_MIN = 1.0 / 255.0
"""3DGS skips a Gaussian at a pixel below this opacity."""

ALPHA_MAX = 0.99
"""3DGS caps a single Gaussian's opacity so that transmittance never reaches exactly 0."""

DILATION = 0.3
"""3DGS's screen-space low-pass filter added to the 2-D covariance (pixels²)."""

TRANSMITTANCE_MIN = 1e-4
"""3DGS stops compositing a pixel once its transmittance falls below this."""

NEAR = 0.01
"""Gaussians nearer than this camera depth are culled (3DGS's near plane)."""


class Camera(Protocol):
    """A pinhole camera: ``fx, fy, cx, cy`` and a 4×4 camera-to-world ``c2w`` (OpenCV axes)."""

    fx: float
    fy: float
    cx: float
    cy: float
    c2w: object


@dataclass(frozen=True)
class CameraTensors:
    """A camera as tensors: intrinsics ``(fx, fy, cx, cy)`` and the 4×4 world-to-camera."""

    intrinsics: torch.Tensor
    w2c: torch.Tensor

    @classmethod
    def of(cls, camera: Camera, *, device: torch.device | str | None = None,
           dtype: torch.dtype = torch.float32) -> CameraTensors:
        """Convert a :class:`regzoo.imaging.scenes.PinholeCamera`-like camera."""
        for name in ("fx", "fy", "cx", "cy", "c2w"):
            if not hasattr(camera, name):
                raise TypeError(f"camera must have fx, fy, cx, cy and c2w (a PinholeCamera), got "
                                f"{type(camera).__name__} without {name!r}")
        c2w = torch.as_tensor(camera.c2w, dtype=torch.float64)
        if c2w.shape != (4, 4):
            raise ValueError(f"camera.c2w must be 4×4, got shape {tuple(c2w.shape)}")
        intr = torch.tensor([camera.fx, camera.fy, camera.cx, camera.cy], dtype=torch.float64)
        if not bool(torch.isfinite(intr).all()) or camera.fx <= 0 or camera.fy <= 0:
            raise ValueError(f"camera focal lengths must be finite and > 0, got fx={camera.fx}, "
                             f"fy={camera.fy}")
        return cls(intr.to(device=device, dtype=dtype),
                   torch.linalg.inv(c2w).to(device=device, dtype=dtype))

    def scaled(self, factor: int) -> CameraTensors:
        """The same camera rendering ``factor``× more pixels per axis (multisampling)."""
        return CameraTensors(self.intrinsics * factor, self.w2c)


@dataclass
class Rendering:
    """A rendered image.

    What :func:`render_gaussians` returns: ``rgb`` (H, W, 3), ``depth`` (H, W) = Σ T α z,
    ``alpha`` (H, W) = Σ T α, and the per-pixel ``candidates`` (H·W, k) indices it composited
    (−1 where a slot was empty), reusable for the next few renders.
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    alpha: torch.Tensor
    candidates: torch.Tensor


def quaternion_to_rotation(quaternions: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (N, 3, 3) of quaternions (N, 4) = (w, x, y, z), normalised first."""
    q = quaternions / quaternions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*q.shape[:-1], 3, 3)


def covariance_3d(log_scales: torch.Tensor, quaternions: torch.Tensor) -> torch.Tensor:
    """Σ = R S Sᵀ Rᵀ (N, 3, 3) from log-scales (N, 3) and quaternions (N, 4)."""
    rs = quaternion_to_rotation(quaternions) * log_scales.exp()[..., None, :]
    return rs @ rs.transpose(-1, -2)


def project_gaussians(means: torch.Tensor, covariances: torch.Tensor, camera: CameraTensors
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EWA projection of 3-D Gaussians.

    EWA projection: 2-D means (N, 2) in pixels, 2-D covariances (N, 2, 2) with the 0.3
    dilation, and camera depths z (N,).
    """
    w2c = camera.w2c.to(means)
    rot, trans = w2c[:3, :3], w2c[:3, 3]
    cam = means @ rot.T + trans
    x, y, z = cam.unbind(-1)
    fx, fy, cx, cy = camera.intrinsics.to(means).unbind(-1)
    zs = z.clamp_min(NEAR)
    mean2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)
    zero = torch.zeros_like(zs)
    jac = torch.stack([fx / zs, zero, -fx * x / zs**2,
                       zero, fy / zs, -fy * y / zs**2], dim=-1).reshape(-1, 2, 3)
    cov_cam = rot @ covariances @ rot.T
    cov2d = jac @ cov_cam @ jac.transpose(-1, -2)
    cov2d = cov2d + DILATION * torch.eye(2, dtype=means.dtype, device=means.device)
    return mean2d, cov2d, z


def _conics(cov2d: torch.Tensor) -> torch.Tensor:
    a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
    det = (a * c - b * b).clamp_min(1e-12)
    return torch.stack([c / det, -b / det, a / det], dim=-1)


def _alphas(pixels: torch.Tensor, mean2d: torch.Tensor, conic: torch.Tensor,
            opacity: torch.Tensor) -> torch.Tensor:
    """α at pixels (..., 2) for Gaussians broadcast against them (..., ·), before the 1/255 cut."""
    dx = pixels[..., 0] - mean2d[..., 0]
    dy = pixels[..., 1] - mean2d[..., 1]
    power = -0.5 * (conic[..., 0] * dx * dx + conic[..., 2] * dy * dy) - conic[..., 1] * dx * dy
    return (opacity * power.clamp_max(0.0).exp()).clamp_max(ALPHA_MAX)


def pixel_centres(height: int, width: int, *, device: torch.device | str | None = None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pixel centres (H·W, 2) as (u, v) = (column + ½, row + ½), row-major."""
    rows = torch.arange(height, device=device, dtype=dtype) + 0.5
    cols = torch.arange(width, device=device, dtype=dtype) + 0.5
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


@torch.no_grad()
def select_candidates(mean2d: torch.Tensor, conic: torch.Tensor, opacity: torch.Tensor,
                      depth: torch.Tensor, pixels: torch.Tensor, k: int, *,
                      chunk: int = 4096) -> torch.Tensor:
    """Per pixel, the ``k`` Gaussians nearest in depth among those with α ≥ 1/255 there.

    Dense: every (pixel, Gaussian) pair, without gradient, in chunks of ``chunk`` pixels. A
    pixel stops where its transmittance would fall below 1e-4 (3DGS). Returns indices (P, w)
    sorted front to back, −1 in empty slots, w ≤ k the most any pixel uses.
    """
    n = mean2d.shape[0]
    k_eff = min(k, n)
    visible = depth > NEAR
    out = []
    for start in range(0, pixels.shape[0], chunk):
        px = pixels[start:start + chunk, None, :]
        alpha = _alphas(px, mean2d[None], conic[None], opacity[None])
        key = torch.where((alpha >= ALPHA_MIN) & visible[None], depth[None],
                          torch.full_like(alpha, torch.inf))
        values, index = torch.topk(key, k_eff, dim=1, largest=False, sorted=True)
        chosen = alpha.gather(1, index).to(torch.float64)
        after = torch.cumsum(torch.log1p(-chosen), dim=1)
        live = torch.isfinite(values) & (after >= math.log(TRANSMITTANCE_MIN))
        out.append(torch.where(live, index, torch.full_like(index, -1)))
    cand = torch.cat(out, dim=0)
    used = (cand >= 0).sum(1)
    width = max(1, int(used.max()))
    return cand[:, :width]


@torch.no_grad()
def select_candidates_binned(mean2d: torch.Tensor, cov2d: torch.Tensor, conic: torch.Tensor,
                             opacity: torch.Tensor, depth: torch.Tensor, height: int,
                             width: int, k: int) -> torch.Tensor:
    """The same lists as :func:`select_candidates` from each Gaussian's footprint only.

    A Gaussian reaches α ≥ 1/255 only within Mahalanobis radius √(2 ln(255 o)), so only the
    pixels of that box are tested (3DGS's per-Gaussian rectangle, at pixel rather than tile
    granularity); the pairs are sorted by (pixel, depth) and kept front to back up to ``k`` per
    pixel or until the transmittance would fall below 1e-4.
    Falls back to the dense pass when the boxes hold more pairs than the image has
    pixel–Gaussian pairs.
    """
    n, p = mean2d.shape[0], height * width
    reach = 2.0 * torch.log((255.0 * opacity).clamp_min(1.0))
    trace = cov2d[:, 0, 0] + cov2d[:, 1, 1]
    det = cov2d[:, 0, 0] * cov2d[:, 1, 1] - cov2d[:, 0, 1] ** 2
    lam = 0.5 * trace + (0.25 * trace**2 - det).clamp_min(0.0).sqrt()
    radius = (reach * lam).sqrt().ceil()
    lo, hi = mean2d - radius[:, None], mean2d + radius[:, None]
    live = ((depth > NEAR) & (reach > 0) & (hi[:, 0] >= 0) & (lo[:, 0] <= width)
            & (hi[:, 1] >= 0) & (lo[:, 1] <= height))
    ids = live.nonzero().squeeze(1)
    if ids.numel() == 0:
        return torch.full((p, k), -1, dtype=torch.long, device=mean2d.device)
    r_max = int(radius[ids].max().clamp_max(max(height, width)))
    side = 2 * r_max + 1
    if ids.numel() * side * side > p * n:
        pixels = pixel_centres(height, width, device=mean2d.device, dtype=mean2d.dtype)
        return select_candidates(mean2d, conic, opacity, depth, pixels, k)
    offs = torch.arange(-r_max, r_max + 1, device=mean2d.device)
    oy, ox = torch.meshgrid(offs, offs, indexing="ij")
    base = mean2d[ids].floor().long()
    cols = base[:, None, 0] + ox.reshape(1, -1)
    rows = base[:, None, 1] + oy.reshape(1, -1)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    centres = torch.stack([cols, rows], dim=-1).to(mean2d.dtype) + 0.5
    alpha = _alphas(centres, mean2d[ids, None], conic[ids, None], opacity[ids, None])
    keep = inside & (alpha >= ALPHA_MIN)
    pix = (rows * width + cols)[keep]
    gid = ids[:, None].expand_as(keep)[keep]
    alpha = alpha[keep]
    order = depth[gid].argsort(stable=True)
    pix, gid, alpha = pix[order], gid[order], alpha[order]
    order = pix.argsort(stable=True)
    pix, gid, alpha = pix[order], gid[order], alpha[order]
    counts = torch.bincount(pix, minlength=p)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(pix.numel(), device=pix.device) - first[pix]
    # Transmittance after each pair (front to back within its pixel): 3DGS skips a Gaussian
    # that would bring it below 1e-4 and stops the pixel there.
    log_keep = torch.log1p(-alpha.to(torch.float64))
    total = torch.cumsum(log_keep, 0)
    after = total - (total - log_keep)[first[pix]]
    take = (rank < k) & (after >= math.log(TRANSMITTANCE_MIN))
    width = int(rank[take].max()) + 1 if bool(take.any()) else 1
    table = torch.full((p, width), -1, dtype=torch.long, device=mean2d.device)
    table[pix[take], rank[take]] = gid[take]
    return table


def _check_inputs(means: torch.Tensor, log_scales: torch.Tensor, quaternions: torch.Tensor,
                  opacities: torch.Tensor, colors: torch.Tensor) -> int:
    if not isinstance(means, torch.Tensor) or means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(f"means must be a tensor of shape (N, 3), got "
                         f"{getattr(means, 'shape', type(means).__name__)}")
    n = means.shape[0]
    if n == 0:
        raise ValueError("means is empty: render at least one Gaussian")
    expected = {"log_scales": (log_scales, (n, 3)), "quaternions": (quaternions, (n, 4)),
                "opacities": (opacities, (n,)), "colors": (colors, (n, 3))}
    for name, (value, shape) in expected.items():
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape} to match means (N={n}), got "
                             f"{tuple(getattr(value, 'shape', ()))}")
    return n


def render_gaussians(means: torch.Tensor, log_scales: torch.Tensor, quaternions: torch.Tensor,
                     opacities: torch.Tensor, colors: torch.Tensor,
                     camera: Camera | CameraTensors, height: int, width: int, *,
                     background: torch.Tensor | tuple[float, float, float] = (1.0, 1.0, 1.0),
                     k: int = 128, candidates: torch.Tensor | None = None) -> Rendering:
    """Render N Gaussians into an ``height`` × ``width`` image (module docstring).

    Args:
        means: (N, 3) world positions.
        log_scales: (N, 3) log standard deviations along the Gaussian's axes.
        quaternions: (N, 4) rotations (w, x, y, z); normalised here.
        opacities: (N,) in [0, 1] (after the sigmoid).
        colors: (N, 3) RGB.
        camera: a :class:`regzoo.imaging.scenes.PinholeCamera` or :class:`CameraTensors`.
        height, width: image size in pixels.
        background: RGB behind everything (white, the CoherentGS default).
        k: the most Gaussians composited per pixel (the nearest in depth above α = 1/255,
            until the transmittance would fall below 1e-4); 3 views of one-Gaussian-per-pixel
            models need ~60 at 32 × 32 (measured), so the default 128 is exact there.
        candidates: (H·W, k) indices from an earlier :class:`Rendering` of the same camera and
            size to reuse (no selection pass); re-sorted by the current depths.

    Returns:
        a :class:`Rendering`; everything differentiable in the Gaussians' parameters.
    """
    _check_inputs(means, log_scales, quaternions, opacities, colors)
    for name, value in (("height", height), ("width", width), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not isinstance(camera, CameraTensors):
        camera = CameraTensors.of(camera, device=means.device, dtype=means.dtype)
    bg = torch.as_tensor(background, dtype=means.dtype, device=means.device)
    if bg.shape != (3,):
        raise ValueError(f"background must be an RGB triple, got shape {tuple(bg.shape)}")
    mean2d, cov2d, z = project_gaussians(means, covariance_3d(log_scales, quaternions), camera)
    conic = _conics(cov2d)
    pixels = pixel_centres(height, width, device=means.device, dtype=means.dtype)
    if candidates is None:
        candidates = select_candidates_binned(mean2d.detach(), cov2d.detach(), conic.detach(),
                                              opacities.detach(), z.detach(), height, width, k)
    elif candidates.ndim != 2 or candidates.shape[0] != height * width:
        raise ValueError(f"candidates must have shape (height·width, w) = ({height * width}, w), "
                         f"got {tuple(candidates.shape)}")
    empty = candidates < 0
    index = candidates.clamp_min(0)
    with torch.no_grad():  # front-to-back order by the current depths (reused lists move)
        order_key = torch.where(empty, torch.full_like(z[index], torch.inf), z[index])
        order = order_key.argsort(dim=1)
        index, empty = index.gather(1, order), empty.gather(1, order)
    alpha = _alphas(pixels[:, None, :], mean2d[index], conic[index], opacities[index])
    keep = (~empty) & (alpha.detach() >= ALPHA_MIN) & (z[index].detach() > NEAR)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    transmit = torch.cumprod(1.0 - alpha, dim=1)
    before = torch.cat([torch.ones_like(transmit[:, :1]), transmit[:, :-1]], dim=1)
    weight = before * alpha
    rgb = (weight[..., None] * colors[index]).sum(1) + transmit[:, -1:] * bg
    depth = (weight * z[index]).sum(1)
    acc = weight.sum(1)
    sorted_candidates = torch.where(empty, torch.full_like(index, -1), index)
    return Rendering(rgb.reshape(height, width, 3), depth.reshape(height, width),
                     acc.reshape(height, width), sorted_candidates)
