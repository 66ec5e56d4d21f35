r"""CoherentGS's Gaussians, decoders and losses (Paliwal et al., ECCV 2024, arXiv 2403.19495).

* :class:`SparseViews` — the input: V images, cameras, a relative (monocular) depth per view,
  soft depth layers, and optical flow with validity masks between every ordered pair of views.
* :class:`CoherentGaussians` — one Gaussian per input pixel p of view v on its ray:
  μ_v(p) = o_v + z_v(p) d_v(p) (d scaled so camera z = 1). Phase 1: z = s_v d̂_v + b_v
  with per-view scale and offset. Phase 2: z = z₀ + Δz with
  Δz_v = 50 · Σ_c m_{v,c} tanh(D_z(γ(e_v)))_c / Σ_c m_{v,c} (m the depth layers, γ the
  positional code of the camera index e_v = linspace(0, 1, V)[v], D_z the implicit decoder), and
  opacity σ(o_base + 100 · the same masked tanh of D_o).
* :class:`FreeGaussians` — the 3DGS baselines: free means, anisotropic scales, rotations,
  opacities and colours.
* Losses: :func:`flow_loss`, :func:`disparity_tv` (with the mask ramp),
  :func:`multiscale_l1`, :func:`photometric_loss`; :func:`backward_warp`.

The procedures that train them and the paper's full description: :mod:`.procedure`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.imaging.metrics import ssim
from regzoo.imaging.tv import total_variation
from regzoo.methods.coherentgs.rasterizer import (
    CameraTensors,
    Rendering,
    pixel_centres,
    render_gaussians,
)

SH_C0 = 0.28209479177387814
"""Degree-0 spherical-harmonic constant: colour = SH_C0 · f_dc + ½ (3DGS)."""

BASE_OPACITY = {2: 0.6, 3: 0.5, 4: 0.35}
"""Official base opacity by number of input views (``create_from_pcd``); other V use 0.5."""

DEPTH_RESIDUAL_SCALE = 50.0
"""The depth residual's bound in LLFF depth units (official ``get_residual``)."""

OPACITY_RESIDUAL_SCALE = 100.0
"""The opacity-logit residual's bound (official ``get_learned_opac``)."""

MULTISCALE_WEIGHTS = (1.0, 1 / 4, 1 / 8, 1 / 16, 1 / 32)
"""Weights of the L1 term over 2×-pooled scales, finest first (official ``ML1Loss``)."""


def _pair_key(key: object) -> tuple[int, int]:
    if (not isinstance(key, tuple) or len(key) != 2
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in key)):
        raise TypeError(f"flows and flow_masks are keyed by view pairs (i, j), got key {key!r}")
    return key


@dataclass
class SparseViews:
    """The inputs of CoherentGS, checked on construction.

    Args:
        images: (V, H, W, 3) RGB in [0, 1].
        cameras: V pinhole cameras (``fx, fy, cx, cy, c2w``; OpenCV axes), the images' size.
        mono_depth: (V, H, W) relative depth per view (any positive affine of the truth, plus
            errors): the monocular-depth prior.
        depth_layers: (V, C, H, W) non-negative soft (or hard) depth-layer masks.
        flows: ``{(i, j): (H, W, 2)}`` for every ordered pair i ≠ j: the optical flow F_{i→j}
            (pixel p of view i sits at p + F_{i→j}(p) in view j), in pixels (u, v).
        flow_masks: ``{(i, j): (H, W)}`` in [0, 1]: where F_{i→j} is valid (thresholded at ½).
        depth_bounds: (near, far) of the scene's depth, for the baselines' random init
            (LLFF's ``poses_bounds``); ``None`` where unused.
    """

    images: torch.Tensor
    cameras: Sequence[object]
    mono_depth: torch.Tensor
    depth_layers: torch.Tensor
    flows: Mapping[tuple[int, int], torch.Tensor]
    flow_masks: Mapping[tuple[int, int], torch.Tensor]
    depth_bounds: tuple[float, float] | None = None
    camera_tensors: list[CameraTensors] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        images = self.images
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be a (V, H, W, 3) tensor, got "
                             f"{tuple(getattr(images, 'shape', ()))}")
        if not images.is_floating_point():
            raise TypeError(f"images must be floating point RGB in [0, 1], got dtype "
                            f"{images.dtype}; convert with images.float() / 255")
        v, h, w, _ = images.shape
        if v < 2:
            raise ValueError(f"images holds {v} view(s); CoherentGS needs at least 2 views")
        if len(self.cameras) != v:
            raise ValueError(f"cameras has {len(self.cameras)} entries but images has {v} views; "
                             "pass one camera per view")
        self.camera_tensors = []
        for index, camera in enumerate(self.cameras):
            tensors = CameraTensors.of(camera, device=images.device, dtype=images.dtype)
            self.camera_tensors.append(tensors)
            cx, cy = (float(x) for x in tensors.intrinsics[2:])
            if not (0 < cx < w and 0 < cy < h):
                raise ValueError(f"cameras[{index}] has principal point ({cx}, {cy}) outside the "
                                 f"{w}×{h} images: intrinsics and image size disagree")
        for name, value, shape in (("mono_depth", self.mono_depth, (v, h, w)),
                                   ("depth_layers", self.depth_layers, None)):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
            if shape is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} must have shape {shape} (views, height, width of "
                                 f"images), got {tuple(value.shape)}")
        layers = self.depth_layers
        if layers.ndim != 4 or layers.shape[0] != v or tuple(layers.shape[2:]) != (h, w):
            raise ValueError(f"depth_layers must have shape ({v}, C, {h}, {w}), got "
                             f"{tuple(layers.shape)}")
        if bool((layers < 0).any()):
            raise ValueError("depth_layers must be non-negative masks")
        if bool((self.mono_depth <= 0).any()):
            raise ValueError("mono_depth must be positive (a relative depth, not a disparity)")
        for name, table, shape in (("flows", self.flows, (h, w, 2)),
                                   ("flow_masks", self.flow_masks, (h, w))):
            if not isinstance(table, Mapping):
                raise TypeError(f"{name} must be a dict {{(i, j): tensor}}, got "
                                f"{type(table).__name__}")
            for key in table:
                i, j = _pair_key(key)
                if not (0 <= i < v and 0 <= j < v) or i == j:
                    raise ValueError(f"{name} has key {key}: views are 0..{v - 1} and i ≠ j")
            for i in range(v):
                for j in range(v):
                    if i == j:
                        continue
                    if (i, j) not in table:
                        raise ValueError(f"{name} misses the pair ({i}, {j}): CoherentGS needs "
                                         f"the flow between every ordered pair of the {v} views")
                    if tuple(table[(i, j)].shape) != shape:
                        raise ValueError(f"{name}[({i}, {j})] must have shape {shape} to match "
                                         f"the images, got {tuple(table[(i, j)].shape)}")
        if self.depth_bounds is not None:
            near, far = self.depth_bounds
            if not 0 < near < far:
                raise ValueError(f"depth_bounds must be (near, far) with 0 < near < far, got "
                                 f"{self.depth_bounds}")

    @property
    def num_views(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def flow_tensor(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Flows (V, V, H, W, 2) and binarised masks (V, V, H, W); zeros on the diagonal."""
        v, (h, w) = self.num_views, self.size
        flows = self.images.new_zeros(v, v, h, w, 2)
        masks = self.images.new_zeros(v, v, h, w)
        for (i, j), flow in self.flows.items():
            flows[i, j] = flow.to(flows)
            masks[i, j] = (self.flow_masks[(i, j)].to(masks) > 0.5).to(masks)
        return flows, masks


def ray_directions(camera: CameraTensors, height: int, width: int) -> torch.Tensor:
    """World-space ray directions (H, W, 3) through the pixel centres, scaled so camera z = 1."""
    fx, fy, cx, cy = camera.intrinsics.unbind(-1)
    pix = pixel_centres(height, width, device=camera.w2c.device, dtype=camera.w2c.dtype)
    local = torch.stack([(pix[:, 0] - cx) / fx, (pix[:, 1] - cy) / fy,
                         torch.ones_like(pix[:, 0])], dim=-1)
    c2w = torch.linalg.inv(camera.w2c)
    return (local @ c2w[:3, :3].T).reshape(height, width, 3)


def camera_center(camera: CameraTensors) -> torch.Tensor:
    """The camera centre (3,) in world coordinates."""
    return torch.linalg.inv(camera.w2c)[:3, 3]


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` (B, C, H, W) at p + flow(p) for every pixel p: flow (B, H, W, 2) in pixels.

    Bilinear, border padding; zero flow returns the image exactly (the official ``backwarp``
    maps integer indices through ``align_corners=False``, a half-pixel shift: not used).
    """
    b, _, h, w = image.shape
    if flow.shape != (b, h, w, 2):
        raise ValueError(f"flow must have shape ({b}, {h}, {w}, 2) to match image, got "
                         f"{tuple(flow.shape)}")
    rows = torch.arange(h, dtype=flow.dtype, device=flow.device)
    cols = torch.arange(w, dtype=flow.dtype, device=flow.device)
    v, u = torch.meshgrid(rows, cols, indexing="ij")
    x = (u + 0.5 + flow[..., 0]) * (2.0 / w) - 1.0
    y = (v + 0.5 + flow[..., 1]) * (2.0 / h) - 1.0
    grid = torch.stack([x, y], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def flow_loss(positions: torch.Tensor, flows: torch.Tensor, masks: torch.Tensor,
              reference: int) -> torch.Tensor:
    r"""Flow loss Σ_{j≠i} mean |m_{i→j} ⊙ W(X_j, F_{i→j}) − m_{i→j} ⊙ X_i| for reference i.

    ``positions`` (V, H, W, 3) are the per-pixel Gaussian means of each view, ``flows``
    (V, V, H, W, 2) and binary ``masks`` (V, V, H, W) as from :meth:`SparseViews.flow_tensor`.
    The mean runs over all 3·H·W entries, masked zeros included (official).
    """
    v = positions.shape[0]
    if not 0 <= reference < v:
        raise ValueError(f"reference must be a view index in 0..{v - 1}, got {reference}")
    maps = positions.permute(0, 3, 1, 2)
    others = [j for j in range(v) if j != reference]
    warped = backward_warp(maps[others], flows[reference, others])
    mask = masks[reference, others][:, None]
    return (warped * mask - maps[reference:reference + 1] * mask).abs().mean((1, 2, 3)).sum()


def disparity_tv(depth: torch.Tensor, alpha: torch.Tensor, layers: torch.Tensor,
                 gamma: float) -> torch.Tensor:
    """TV of the rendered disparity with the mask ramp.

    As the official code: disparity δ = 1/(D/(A + 1e-6) + 1) of the rendered view,
    γ·TV(m ⊙ δ) + (1 − γ)·TV(δ), TV = mean|∂x| + mean|∂y|, γ = iteration / T (the ramp).
    """
    disparity = 1.0 / (depth / (alpha + 1e-6) + 1.0)
    masked = layers * disparity[None]
    return gamma * total_variation(masked) + (1.0 - gamma) * total_variation(disparity)


def multiscale_l1(image: torch.Tensor, target: torch.Tensor,
                  weights: Sequence[float] = MULTISCALE_WEIGHTS) -> torch.Tensor:
    """Multi-scale L1 loss.

    Σ_s w_s · mean|pool^s(image) − pool^s(target)| over 2× average-pooled scales (C, H, W);
    scales smaller than 1 pixel are skipped.
    """
    total = image.new_zeros(())
    x, y = image[None], target[None]
    for index, weight in enumerate(weights):
        if index > 0:
            if min(x.shape[-2:]) < 2:
                break
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        total = total + weight * (x - y).abs().mean()
    return total


def _ssim_window(height: int, width: int) -> int:
    size = min(11, height, width)
    return size if size % 2 == 1 else size - 1


def photometric_loss(image: torch.Tensor, target: torch.Tensor, *, lambda_dssim: float = 0.2,
                     multiscale: bool = True) -> torch.Tensor:
    """The photometric loss.

    (1 − λ)·L1 + λ·(1 − SSIM) on (C, H, W) images: CoherentGS's L1 is multi-scale, 3DGS's is
    not (``multiscale=False``); the SSIM window shrinks to the image below 11 pixels.
    """
    l1 = multiscale_l1(image, target) if multiscale else (image - target).abs().mean()
    window = _ssim_window(*image.shape[-2:])
    return (1.0 - lambda_dssim) * l1 + lambda_dssim * (1.0 - ssim(image, target,
                                                                  window_size=window))


def positional_code(num_views: int, frequencies: int = 10) -> torch.Tensor:
    """Positional code of the camera index.

    γ(e) of e_v = linspace(0, 1, V)[v]: (V, 2F, 1, 1) = [sin(2^k e), cos(2^k e)]_{k<F}
    (official ``get_embedder(10)``: log-spaced frequencies 2^0 … 2^{F−1}, no raw input).
    """
    e = torch.linspace(0.0, 1.0, num_views, dtype=torch.float64)
    freq = 2.0 ** torch.arange(frequencies, dtype=torch.float64)
    angles = e[:, None] * freq[None]
    code = torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(num_views, -1)
    return code.float()[..., None, None]


class ImplicitDecoder(nn.Module):
    """The implicit decoder of CoherentGS.

    X-Fields-style decoder (official ``scene/decoder.py``): from a (B, c_in, 1, 1) code, a
    bilinear ×2 upsampling and a 1×1 convolution to 16·ngf channels, a 2-channel coordinate grid
    concatenated, then [bilinear ×2 → reflect pad → 3×3 conv → LeakyReLU(0.2)] with widths
    (16, 16, 8, 8, 8, 4, 4, …)·ngf up to H × W, and a last 3×3 convolution to c_out channels;
    weights N(0, 0.02), biases 0, so the output starts near 0.

    Sizes that are not powers of two are reached by resizing each stage to ⌈size / 2^r⌉
    (the official code pads odd sizes; the same stages for powers of two).
    """

    WIDTHS = (16, 16, 16, 8, 8, 8, 4)

    def __init__(self, height: int, width: int, *, ngf: int, in_channels: int = 20,
                 out_channels: int = 5) -> None:
        super().__init__()
        for name, value in (("height", height), ("width", width), ("ngf", ngf),
                            ("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if max(height, width) < 2:
            raise ValueError(f"the decoder needs an image of at least 2 pixels, got "
                             f"{height}×{width}")
        levels = max(math.ceil(math.log2(height)), math.ceil(math.log2(width)))
        self.sizes = [(math.ceil(height / 2 ** (levels - s)), math.ceil(width / 2 ** (levels - s)))
                      for s in range(1, levels + 1)]
        widths = [ngf * w for w in self.WIDTHS] + [ngf * 4] * max(0, levels - len(self.WIDTHS))
        self.first = nn.Conv2d(in_channels, widths[0], 1)
        convs, channels = [], widths[0] + 2
        for index in range(1, levels):
            convs.append(nn.Conv2d(channels, widths[index], 3))
            channels = widths[index]
        self.convs = nn.ModuleList(convs)
        self.last = nn.Conv2d(channels, out_channels, 3)
        for conv in [self.first, *self.convs, self.last]:
            nn.init.normal_(conv.weight, 0.0, 0.02)
            nn.init.zeros_(conv.bias)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(code, size=self.sizes[0], mode="bilinear", align_corners=True)
        x = F.leaky_relu(self.first(x), 0.2)
        lin_y = torch.linspace(-1.0, 1.0, self.sizes[0][0], device=x.device, dtype=x.dtype)
        lin_x = torch.linspace(-1.0, 1.0, self.sizes[0][1], device=x.device, dtype=x.dtype)
        gy, gx = torch.meshgrid(lin_y, lin_x, indexing="ij")
        coords = torch.stack([gx, gy])[None].expand(x.shape[0], -1, -1, -1)
        x = torch.cat([x, coords], dim=1)
        for size, conv in zip(self.sizes[1:], self.convs):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
            x = F.leaky_relu(conv(F.pad(x, (1, 1, 1, 1), mode="reflect")), 0.2)
        return self.last(F.pad(x, (1, 1, 1, 1), mode="reflect"))


def masked_tanh(raw: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
    """Σ_c m_c tanh(raw_c) / Σ_c m_c per pixel: (V, C, H, W) → (V, H, W)."""
    return (torch.tanh(raw) * layers).sum(1) / (layers.sum(1) + 1e-10)


class _Splat(nn.Module, abc.ABC):
    """What both models share: cameras, image size, per-view rendering."""

    views: SparseViews

    @abc.abstractmethod
    def gaussians(self) -> tuple[torch.Tensor, ...]:
        """(means, log_scales, quaternions, opacities, colours) as the rasteriser takes them."""

    def render(self, camera: object, height: int, width: int, *,
               background: tuple[float, float, float] = (1.0, 1.0, 1.0), k: int = 128,
               candidates: torch.Tensor | None = None) -> Rendering:
        """Render the current Gaussians from any camera."""
        return render_gaussians(*self.gaussians(), camera, height, width,
                                background=background, k=k, candidates=candidates)

    def needle_share(self, ratio: float = 10.0) -> float:
        """Share of Gaussians whose largest scale exceeds ``ratio`` × their smallest."""
        scales = self.gaussians()[1].detach().exp()
        return float((scales.max(1).values > ratio * scales.min(1).values).float().mean())


class CoherentGaussians(_Splat):
    """CoherentGS's structured Gaussians: one per input pixel, moving only along its ray.

    Args:
        views: the :class:`SparseViews`.
        depth_unit: the scene's depth unit relative to LLFF's (multiplies the residual bound
            50 of the official code; 1 keeps the official value).
        residual: ``"decoder"`` (the paper: D_z, D_o implicit decoders) or ``"per_pixel"`` (the
            ablation without decoder: free (V, C, H, W) maps in place of the decoders' outputs,
            same masked tanh and bounds).
        ngf_depth, ngf_opacity: decoder widths (official by view count: {2: 10, 3: 15, 4: 18}
            and {2: 6, 3: 10, 4: 12}; ``None`` picks them, 15 and 10 beyond 4 views).
        radius_mult: the Gaussians' radius in half-pixel footprints (official 1.2).
    """

    def __init__(self, views: SparseViews, *, depth_unit: float = 1.0,
                 residual: str = "decoder", ngf_depth: int | None = None,
                 ngf_opacity: int | None = None, radius_mult: float = 1.2) -> None:
        super().__init__()
        if residual not in ("decoder", "per_pixel"):
            raise ValueError(f"residual must be 'decoder' or 'per_pixel', got {residual!r}")
        if not depth_unit > 0:
            raise ValueError(f"depth_unit must be > 0, got {depth_unit}")
        self.views = views
        self.residual = residual
        self.depth_unit = float(depth_unit)
        self.radius_mult = float(radius_mult)
        v, (h, w) = views.num_views, views.size
        dtype, device = views.images.dtype, views.images.device
        channels = views.depth_layers.shape[1]
        self.register_buffer("directions", torch.stack(
            [ray_directions(c, h, w) for c in views.camera_tensors]))
        self.register_buffer("origins", torch.stack(
            [camera_center(c) for c in views.camera_tensors]))
        self.register_buffer("focal_y", torch.stack(
            [c.intrinsics[1] for c in views.camera_tensors]))
        self.register_buffer("colors", views.images.reshape(-1, 3).clone())
        self.register_buffer("mono_depth", views.mono_depth.to(dtype).clone())
        self.register_buffer("layers", views.depth_layers.to(dtype).clone())
        self.register_buffer("z0", views.mono_depth.to(dtype).clone())
        self.register_buffer("code", positional_code(v).to(device=device, dtype=dtype))
        self.register_buffer("phase", torch.ones((), dtype=torch.int64, device=device))
        base = BASE_OPACITY.get(v, 0.5)
        self.register_buffer("base_logit", torch.full((v * h * w,), math.log(base / (1 - base)),
                                                      dtype=dtype, device=device))
        self.depth_scale = nn.Parameter(torch.ones(v, dtype=dtype, device=device))
        self.depth_offset = nn.Parameter(torch.zeros(v, dtype=dtype, device=device))
        if residual == "decoder":
            ngf_z = ngf_depth or {2: 10, 3: 15, 4: 18}.get(v, 15)
            ngf_o = ngf_opacity or {2: 6, 3: 10, 4: 12}.get(v, 10)
            self.decoder_depth = ImplicitDecoder(h, w, ngf=ngf_z, out_channels=channels)
            self.decoder_opacity = ImplicitDecoder(h, w, ngf=ngf_o, out_channels=channels)
            self.decoder_depth.to(device=device, dtype=dtype)
            self.decoder_opacity.to(device=device, dtype=dtype)
        else:
            self.raw_depth = nn.Parameter(torch.zeros(v, channels, h, w, dtype=dtype,
                                                      device=device))
            self.raw_opacity = nn.Parameter(torch.zeros(v, channels, h, w, dtype=dtype,
                                                        device=device))
        self.log_scales = nn.Parameter(torch.zeros(v * h * w, 3, dtype=dtype, device=device))
        quats = torch.zeros(v * h * w, 4, dtype=dtype, device=device)
        quats[:, 0] = 1.0
        self.quaternions = nn.Parameter(quats)
        self.reset_scales()

    def decoder_parameters(self) -> list[nn.Parameter]:
        if self.residual == "decoder":
            return [*self.decoder_depth.parameters()]
        return [self.raw_depth]

    def opacity_decoder_parameters(self) -> list[nn.Parameter]:
        if self.residual == "decoder":
            return [*self.decoder_opacity.parameters()]
        return [self.raw_opacity]

    def depth_residual(self) -> torch.Tensor:
        """Δz (V, H, W) = 50 · depth_unit · masked tanh of D_z."""
        raw = self.decoder_depth(self.code) if self.residual == "decoder" else self.raw_depth
        return DEPTH_RESIDUAL_SCALE * self.depth_unit * masked_tanh(raw, self.layers)

    def opacity_residual(self) -> torch.Tensor:
        """The opacity-logit residual (V, H, W) = 100 · masked tanh of D_o."""
        raw = (self.decoder_opacity(self.code) if self.residual == "decoder"
               else self.raw_opacity)
        return OPACITY_RESIDUAL_SCALE * masked_tanh(raw, self.layers)

    def depth(self) -> torch.Tensor:
        """Z (V, H, W): s_v d̂_v + b_v in phase 1, z₀ + Δz in phase 2."""
        if int(self.phase) == 1:
            return self.depth_scale[:, None, None] * self.mono_depth \
                + self.depth_offset[:, None, None]
        return self.z0 + self.depth_residual()

    def positions(self, depth: torch.Tensor | None = None) -> torch.Tensor:
        """Gaussian means per pixel (V, H, W, 3) = o_v + z d_v(p)."""
        depth = self.depth() if depth is None else depth
        return self.origins[:, None, None, :] + depth[..., None] * self.directions

    @torch.no_grad()
    def start_phase_two(self) -> None:
        """Freeze z₀ = s_v d̂_v + b_v, reset the radii, switch the parameterisation."""
        self.z0.copy_(self.depth_scale[:, None, None] * self.mono_depth
                      + self.depth_offset[:, None, None])
        self.phase.fill_(2)
        self.reset_scales()

    @torch.no_grad()
    def reset_scales(self) -> None:
        """Isotropic radius r = radius_mult · tan(FoV_y/2) z / H = radius_mult · z / (2 f_y)."""
        radius = self.radius_mult * self.depth() / (2.0 * self.focal_y[:, None, None])
        self.log_scales.copy_(radius.clamp_min(1e-6).log().reshape(-1, 1).expand(-1, 3))

    def opacities(self) -> torch.Tensor:
        if int(self.phase) == 1:
            return torch.sigmoid(self.base_logit)
        return torch.sigmoid(self.base_logit + self.opacity_residual().reshape(-1))

    def gaussians(self, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The rasteriser's inputs; ``positions`` (V, H, W, 3) reuses means computed already."""
        positions = self.positions() if positions is None else positions
        return (positions.reshape(-1, 3), self.log_scales, self.quaternions,
                self.opacities(), self.colors)


class FreeGaussians(_Splat):
    """Free 3DGS Gaussians.

    3DGS's unconstrained Gaussians (the baselines): means, log-scales, rotations, opacity
    logits and degree-0 SH colours are all free parameters (colour = max(SH_C0 f + ½, 0)).
    """

    def __init__(self, views: SparseViews, means: torch.Tensor, colors: torch.Tensor,
                 radii: torch.Tensor, *, opacity: float = 0.1) -> None:
        super().__init__()
        self.views = views
        n = means.shape[0]
        self.means = nn.Parameter(means.clone())
        self.log_scales = nn.Parameter(radii.clamp_min(1e-6).log()[:, None].expand(n, 3).clone())
        quats = torch.zeros(n, 4, dtype=means.dtype, device=means.device)
        quats[:, 0] = 1.0
        self.quaternions = nn.Parameter(quats)
        self.opacity_logits = nn.Parameter(torch.full((n,), math.log(opacity / (1 - opacity)),
                                                      dtype=means.dtype, device=means.device))
        self.sh_dc = nn.Parameter((colors - 0.5) / SH_C0)

    def gaussians(self) -> tuple[torch.Tensor, ...]:
        colors = (SH_C0 * self.sh_dc + 0.5).clamp_min(0.0)
        return (self.means, self.log_scales, self.quaternions,
                torch.sigmoid(self.opacity_logits), colors)
