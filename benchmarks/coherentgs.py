"""CoherentGS benchmark: the pure-torch rasteriser, the projection, and a CoherentGS step.

1. Rasteriser forward + backward at 32 × 32 with the 3 072 Gaussians of a 3-view CoherentGS
   model: regzoo's top-k compositing (candidates from each Gaussian's footprint, fresh each
   call; and reused, as between refreshes) against dense all-pairs compositing (every Gaussian
   at every pixel, one global depth sort, transmittance by a cumulative product), with the
   largest difference of the images.
2. Projection (means and 2-D covariances) against gsplat's pure-torch reference
   ``gsplat.cuda._torch_impl._fully_fused_projection`` when gsplat is installed
   (``pip install --no-deps gsplat``): time ratio and largest difference.
3. One CoherentGS phase-2 step (decoders, render, photometric + TV + flow loss, backward,
   optimiser steps) over one vanilla 3DGS step (render, photometric loss, backward, Adam), with
   the official decoder widths (ngf 15 / 10) and the reproduction's (4 / 3); target ≤ 1.2×.

Ratios only, one process, one thread. Run ``python benchmarks/coherentgs.py [--quick]`` or
``regzoo bench coherentgs``.
"""

from __future__ import annotations

import argparse
import sys

import torch

from regzoo.data.views import multiview_scene
from regzoo.methods.coherentgs import (
    CoherentGaussians,
    FreeGaussians,
    SparseViews,
    covariance_3d,
    disparity_tv,
    flow_loss,
    photometric_loss,
    project_gaussians,
    render_gaussians,
)
from regzoo.methods.coherentgs.rasterizer import (
    ALPHA_MIN,
    _alphas,
    _conics,
    pixel_centres,
)
from regzoo.train.timing import machine_line, time_steps


def dense_composite(means, log_scales, quats, opac, colors, camera, h, w):
    """Every Gaussian at every pixel: one global depth sort, cumulative-product transmittance."""
    mean2d, cov2d, z = project_gaussians(means, covariance_3d(log_scales, quats), camera)
    order = z.detach().argsort()
    mean2d, conic, z = mean2d[order], _conics(cov2d)[order], z[order]
    opac, colors = opac[order], colors[order]
    pixels = pixel_centres(h, w, dtype=means.dtype)
    alpha = _alphas(pixels[:, None], mean2d[None], conic[None], opac[None])
    alpha = torch.where((alpha.detach() >= ALPHA_MIN) & (z[None] > 0.01), alpha,
                        torch.zeros_like(alpha))
    transmit = torch.cumprod(1 - alpha, 1)
    before = torch.cat([torch.ones_like(transmit[:, :1]), transmit[:, :-1]], 1)
    weight = before * alpha
    rgb = weight @ colors + transmit[:, -1:]
    return rgb.reshape(h, w, 3), (weight * z[None]).sum(1).reshape(h, w)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 3 if args.quick else 10
    print(machine_line())
    scene = multiview_scene(0, family="mixed")
    views = SparseViews(scene.train_images, scene.train_cameras, scene.mono_depth,
                        scene.depth_layers, scene.flows, scene.flow_masks,
                        depth_bounds=scene.depth_bounds)
    torch.manual_seed(0)
    model = CoherentGaussians(views, depth_unit=0.02)
    model.start_phase_two()
    camera = views.camera_tensors[1]
    with torch.no_grad():
        gaussians = [t.detach().clone() for t in model.gaussians()]
    trainable = [t.requires_grad_(True) for t in gaussians]
    cached = render_gaussians(*trainable, camera, 32, 32).candidates

    def topk_fresh() -> None:
        out = render_gaussians(*trainable, camera, 32, 32)
        (out.rgb.sum() + out.depth.sum()).backward()

    def topk_cached() -> None:
        out = render_gaussians(*trainable, camera, 32, 32, candidates=cached)
        (out.rgb.sum() + out.depth.sum()).backward()

    def dense() -> None:
        rgb, depth = dense_composite(*trainable, camera, 32, 32)
        (rgb.sum() + depth.sum()).backward()

    with torch.no_grad():
        ours = render_gaussians(*gaussians, camera, 32, 32)
        ref, _ = dense_composite(*gaussians, camera, 32, 32)
    times = time_steps({"topk_fresh": topk_fresh, "topk_cached": topk_cached, "dense": dense},
                       repeats=repeats, inner=1, warmup=1)
    print(f"rasteriser fwd+bwd, 32×32, {gaussians[0].shape[0]} Gaussians: dense / top-k "
          f"(fresh candidates) = {times['dense'] / times['topk_fresh']:.1f}×, dense / top-k "
          f"(reused) = {times['dense'] / times['topk_cached']:.1f}×; max |Δrgb| "
          f"{float((ours.rgb - ref).abs().max()):.2e}")

    try:
        from gsplat.cuda import _torch_impl
    except ImportError:
        print("gsplat not installed (pip install --no-deps gsplat): projection parity skipped")
    else:
        means, covars = gaussians[0], covariance_3d(gaussians[1], gaussians[2])
        intr = camera.intrinsics
        k = torch.tensor([[intr[0], 0, intr[2]], [0, intr[1], intr[3]], [0, 0, 1.0]])
        viewmat = camera.w2c[None]

        def ours_projection() -> None:
            project_gaussians(means, covars, camera)

        def gsplat_projection() -> None:
            _torch_impl._fully_fused_projection(means, covars, viewmat, k[None], 32, 32,
                                                eps2d=0.3)

        t = time_steps({"ours": ours_projection, "gsplat": gsplat_projection},
                       repeats=repeats, inner=5, warmup=2)
        m2, c2, _ = project_gaussians(means, covars, camera)
        _, g2, _, conics, _ = _torch_impl._fully_fused_projection(
            means, covars, viewmat, k[None], 32, 32, eps2d=0.3)
        inv = torch.linalg.inv(c2)
        diff = (conics[0] - torch.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], -1)).abs()
        offset = (g2[0] - m2).abs().max().detach()
        print(f"projection: gsplat / regzoo time = {t['gsplat'] / t['ours']:.2f}×; max |Δmean| "
              f"{float(offset):.2e} px, max |Δconic| {float(diff.max().detach()):.2e}")

    flows, masks = views.flow_tensor()
    vanilla = FreeGaussians(views, gaussians[0].detach(), scene.train_images.reshape(-1, 3),
                            gaussians[1].detach()[:, 0].exp())
    vanilla_opt = torch.optim.Adam(vanilla.parameters(), lr=1e-3, eps=1e-15)
    target = scene.train_images[1].permute(2, 0, 1)
    cache: dict[str, torch.Tensor] = {}

    def vanilla_step() -> None:
        out = render_gaussians(*vanilla.gaussians(), camera, 32, 32,
                               candidates=cache.get("vanilla"))
        cache["vanilla"] = out.candidates
        loss = photometric_loss(out.rgb.permute(2, 0, 1), target, multiscale=False)
        vanilla_opt.zero_grad()
        loss.backward()
        vanilla_opt.step()

    def coherent_step(net: CoherentGaussians, opt: torch.optim.Optimizer, key: str) -> None:
        positions = net.positions()
        out = render_gaussians(*net.gaussians(positions), camera, 32, 32,
                               candidates=cache.get(key))
        cache[key] = out.candidates
        loss = (photometric_loss(out.rgb.permute(2, 0, 1), target)
                + 5 * disparity_tv(out.depth, out.alpha, net.layers[1], 0.5)
                + 0.1 * flow_loss(positions, flows, masks, 0))
        opt.zero_grad()
        loss.backward()
        opt.step()

    steps = {"vanilla": vanilla_step}
    for ngf in ((15, 10), (4, 3)):
        torch.manual_seed(0)
        net = CoherentGaussians(views, depth_unit=0.02, ngf_depth=ngf[0], ngf_opacity=ngf[1])
        net.start_phase_two()
        opt = torch.optim.AdamW([p for name, p in net.named_parameters()
                                 if name not in ("depth_scale", "depth_offset")], lr=1e-5)
        key = f"ngf {ngf[0]}/{ngf[1]}"
        steps[key] = (lambda n=net, o=opt, k=key: coherent_step(n, o, k))
    t = time_steps(steps, repeats=repeats, inner=2, warmup=2)
    for key in steps:
        if key != "vanilla":
            print(f"CoherentGS step / vanilla 3DGS step ({key}): "
                  f"{t[key] / t['vanilla']:.2f}× (target ≤ 1.2×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
