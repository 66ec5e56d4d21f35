"""CoherentGS at CPU scale: 3 input views of procedural scenes, novel views and depth.

Data (:func:`regzoo.data.views.multiview_scene`): three scene families (``boxes``: 3 boxes and a
plane; ``planes``: 3 tilted planes and a sphere; ``mixed``: 2 boxes, a sphere and a plane; all
before a textured background plane, depths 2–5), ray-cast exactly at 32 × 32; 3 training views
on a 0.3 baseline, 6 test views (4 interpolated, 2 extrapolated by a quarter baseline); the
monocular-depth stand-in is the true depth through z^1.2, a random per-view affine, 5 % noise
and a 1-pixel blur; flows come from the true geometry with forward–backward occlusion masks;
3 soft depth layers. A unit's seed draws the scene instance within its family (setting), the
same instance for every arm, so arms are paired over seeds within a family.

Arms: ``vanilla_3dgs`` (free Gaussians from random depths on random input pixels, 3DGS's
learning rates and loss), ``depth_init_free`` (one Gaussian per input pixel at CoherentGS's
phase-1 depth, then free 3-D motion), ``coherentgs``, and its ablations ``no_decoder`` (free
per-pixel residual maps in place of the decoders), ``no_tv`` and ``no_flow``. Every arm trains
``iterations`` rendering steps; the CoherentGS arms and ``depth_init_free`` first run phase 1
(flow-only alignment, no rendering).

Scaling from the paper's setting (decided before any full run): 32 × 32 images; 200
phase-2 steps instead of 13000 (the spec's 1500 does not fit 25 minutes on 2 processes: a
unit of 300 steps took 55–67 s on one thread of the shared machine, so the 90 units of the
full preset at 200 steps take ≈ 90 × 45 s / 2 ≈ 34 minutes there under load, less on an idle
one), each official schedule point kept at its fraction of phase 2; phase 1 its official
1000 steps; ``depth_unit`` = 0.02 (the residual bound 50·0.02 = 1 depth unit, about a third
of the scenes' mean depth; the phase-1 learning rates 0.02 and 0.1); decoder widths ngf 4
(depth) and 3 (opacity) instead of 15 and 10, since the official widths serve ~500 × 400
images and at 32 × 32 make a step ~8.5× a vanilla 3DGS step on one CPU thread (~2.5× at 4 / 3,
``benchmarks/coherentgs.py``); multisampling up to 2× instead of 4× (16× the pixels at 4×).

Claims (fixed from the issue before the full run): headline, on the ``mixed`` family,
CoherentGS's test PSNR ≥ vanilla 3DGS + 2 dB (5 paired seeds); secondary: the same on ``boxes``
and ``planes``, lower test depth MAE than vanilla on each family (margin 0) — together the
issue's "on all 3 scenes" — and each ablation (decoder, TV, flow) and the free-motion baseline
below CoherentGS in test PSNR on ``mixed`` (margin 0: the ablation margins may be small; they
are recorded).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from regzoo.data.views import FAMILIES, MultiViewScene, multiview_scene
from regzoo.imaging.metrics import psnr, ssim
from regzoo.methods.coherentgs import (
    CoherentGSConfig,
    SparseViews,
    SplattingConfig,
    fit_coherentgs,
    fit_gaussian_splatting,
)
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import (
    Claim,
    Reproduction,
    Unit,
    UnitEnv,
    UnitResult,
    summary_mean,
    summary_text,
)

ARMS = ("vanilla_3dgs", "depth_init_free", "coherentgs", "no_decoder", "no_tv", "no_flow")
SETTINGS = ("mixed", "boxes", "planes")
ABLATIONS = {"no_decoder": {"residual": "per_pixel"}, "no_tv": {"tv_weight": 0.0},
             "no_flow": {"flow_weight": 0.0}}


@dataclasses.dataclass(frozen=True)
class CoherentGSReproConfig(ReproConfig):
    """Sizes of the CoherentGS reproduction; presets ``tiny``, ``quick``, ``full``."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    arms: tuple[str, ...] = ARMS
    settings: tuple[str, ...] = SETTINGS
    size: int = 32
    iterations: int = 200
    phase_one_iterations: int = 1000
    steps_per_epoch: int = 20
    eval_every: int = 5
    depth_unit: float = 0.02
    ngf_depth: int = 4
    ngf_opacity: int = 3
    multisample_max: int = 2
    k: int = 128
    positive_fields = ("size", "iterations", "phase_one_iterations", "steps_per_epoch",
                       "eval_every", "depth_unit", "ngf_depth", "ngf_opacity",
                       "multisample_max", "k")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.arms or any(a not in ARMS for a in self.arms) or "coherentgs" not in self.arms:
            raise ValueError(f"arms must be a subset of {ARMS} with 'coherentgs', got "
                             f"{self.arms}")
        if not self.settings or any(s not in FAMILIES for s in self.settings):
            raise ValueError(f"settings must be scene families from {sorted(FAMILIES)}, got "
                             f"{self.settings}")

    @classmethod
    def tiny(cls) -> CoherentGSReproConfig:
        return cls(seeds=(0,), arms=("vanilla_3dgs", "coherentgs"), settings=("mixed",),
                   size=16, iterations=4, phase_one_iterations=4, steps_per_epoch=2,
                   eval_every=1)

    @classmethod
    def quick(cls) -> CoherentGSReproConfig:
        return cls(seeds=(0, 1), arms=("vanilla_3dgs", "coherentgs"), settings=("mixed",),
                   iterations=100)

    @classmethod
    def full(cls) -> CoherentGSReproConfig:
        return cls()


def sparse_views(scene: MultiViewScene, device: torch.device | str = "cpu") -> SparseViews:
    """The method's input from a :class:`MultiViewScene` (ground truth left out)."""
    return SparseViews(scene.train_images.to(device), scene.train_cameras,
                       scene.mono_depth.to(device), scene.depth_layers.to(device),
                       {k: v.to(device) for k, v in scene.flows.items()},
                       {k: v.to(device) for k, v in scene.flow_masks.items()},
                       depth_bounds=scene.depth_bounds)


def _coherent_config(config: CoherentGSReproConfig, arm: str, seed: int) -> CoherentGSConfig:
    return CoherentGSConfig(
        iterations=config.iterations, phase_one_iterations=config.phase_one_iterations,
        steps_per_epoch=config.steps_per_epoch, depth_unit=config.depth_unit,
        ngf_depth=config.ngf_depth, ngf_opacity=config.ngf_opacity,
        multisample_max=config.multisample_max, k=config.k, seed=seed, init_seed=seed,
        refresh_every=min(10, config.steps_per_epoch), **ABLATIONS.get(arm, {}))


def evaluate_views(model: Any, scene: MultiViewScene, size: int,
                   device: torch.device | str) -> dict[str, float]:
    """Metrics of a trained model on a scene.

    Test PSNR / SSIM, test depth MAE (rendered depth D/(A + 1e-6), clipped to [0, 2·z_max]),
    train PSNR, test coverage, needle share.
    """
    far = 2.0 * float(scene.test_depth.max())
    test_psnr, test_ssim, mae, cover = [], [], [], []
    with torch.no_grad():
        for image, camera, depth in zip(scene.test_images, scene.test_cameras,
                                        scene.test_depth):
            out = model.render(camera, size, size)
            rgb = out.rgb.clamp(0, 1).cpu()
            test_psnr.append(float(psnr(rgb, image)))
            test_ssim.append(float(ssim(rgb.permute(2, 0, 1), image.permute(2, 0, 1))))
            rendered = (out.depth / (out.alpha + 1e-6)).clamp(0.0, far).cpu()
            mae.append(float((rendered - depth).abs().mean()))
            cover.append(float(out.alpha.mean()))
        train = [float(psnr(model.render(c, size, size).rgb.clamp(0, 1).cpu(), image))
                 for image, c in zip(scene.train_images, scene.train_cameras)]
    return {"test_psnr": float(np.mean(test_psnr)), "test_ssim": float(np.mean(test_ssim)),
            "depth_mae": float(np.mean(mae)), "train_psnr": float(np.mean(train)),
            "test_coverage": float(np.mean(cover)), "needle_share": model.needle_share()}


class CoherentGSReproduction(Reproduction):
    """CoherentGS vs 3DGS baselines and its ablations on sparse views of procedural scenes."""

    slug = "coherentgs"
    config_type = CoherentGSReproConfig
    title = "CoherentGS: Sparse Novel View Synthesis with Coherent 3D Gaussians"
    plot_curves = (("test_psnr", "test PSNR (dB)"), ("train_psnr", "train PSNR (dB)"))
    arm_labels = {"vanilla_3dgs": "vanilla 3DGS", "depth_init_free": "depth init, free 3-D",
                  "coherentgs": "CoherentGS", "no_decoder": "CoherentGS w/o decoder",
                  "no_tv": "CoherentGS w/o TV", "no_flow": "CoherentGS w/o flow"}
    table_metrics = ("test_psnr", "test_ssim", "depth_mae", "train_psnr", "test_coverage",
                     "needle_share")
    extra_row_label = "novel view, depth: 3DGS | CoherentGS | truth"
    unit_axes = ("seeds", "arms", "settings")

    def curve_x(self, config: CoherentGSReproConfig, setting: str) -> tuple[str, Any, str]:
        epochs = config.iterations // config.steps_per_epoch
        xs = [e * config.steps_per_epoch for e in range(1, epochs + 1)
              if e % config.eval_every == 0]
        return "rendering step", xs, "linear"

    def units(self, config: CoherentGSReproConfig) -> list[Unit]:
        return [Unit(setting, arm, seed) for setting in config.settings
                for arm in config.arms for seed in config.seeds]

    def run_unit(self, config: CoherentGSReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        scene = multiview_scene(unit.seed, family=unit.setting, height=config.size,
                                width=config.size)
        views = sparse_views(scene, env.device)
        every = config.eval_every
        # Curves over rendering (phase-2) steps: the phase-1 epochs of fit_coherentgs are skipped.
        offset = 0 if unit.arm in ("vanilla_3dgs", "depth_init_free") else \
            config.phase_one_iterations // config.steps_per_epoch

        def evaluate(model: Any, epoch: int) -> dict[str, float]:
            step = epoch + 1 - offset
            if step <= 0 or step % every:
                return {}
            return evaluate_views(model, scene, config.size, env.device)

        common = {"evaluate": evaluate, "context": env.context,
                  "checkpoint_path": env.checkpoint_path, "resume": env.resume,
                  "progress": env.progress, "log": env.log}
        if unit.arm in ("vanilla_3dgs", "depth_init_free"):
            init = "random" if unit.arm == "vanilla_3dgs" else "depth"
            result = fit_gaussian_splatting(views, config=SplattingConfig(
                iterations=config.iterations, steps_per_epoch=config.steps_per_epoch,
                init=init, k=config.k, refresh_every=min(10, config.steps_per_epoch),
                phase_one=_coherent_config(config, "coherentgs", unit.seed), seed=unit.seed),
                **common)
        else:
            result = fit_coherentgs(views, config=_coherent_config(config, unit.arm, unit.seed),
                                    **common)
        model = result.model
        model.eval()
        metrics = evaluate_views(model, scene, config.size, env.device)
        curves = {name: [r[name] for r in result.history.records if name in r]
                  for name in ("test_psnr", "train_psnr")}
        if unit.seed == config.seeds[0] and unit.arm in ("vanilla_3dgs", "coherentgs"):
            with torch.no_grad():
                out = model.render(scene.test_cameras[0], config.size, config.size)
            curves["novel_view"] = out.rgb.clamp(0, 1).cpu().reshape(-1).tolist()
            rendered = (out.depth / (out.alpha + 1e-6)).clamp(0, 2 * float(scene.test_depth.max()))
            curves["novel_depth"] = rendered.cpu().reshape(-1).tolist()
            if unit.arm == "coherentgs":
                curves["true_view"] = scene.test_images[0].reshape(-1).tolist()
                curves["true_depth"] = scene.test_depth[0].reshape(-1).tolist()
        return UnitResult(metrics, curves)

    def claim(self, config: CoherentGSReproConfig) -> Claim:
        setting = "mixed" if "mixed" in config.settings else config.settings[0]
        return Claim(
            statement=f"From 3 views, CoherentGS's held-out-view PSNR exceeds vanilla 3DGS's by "
            f"at least 2 dB ({setting} scenes; paper: CoherentGS above 3DGS on LLFF / "
            "NVS-RGBD with 2–4 views).",
            metric="test_psnr", setting=setting, method="coherentgs", baseline="vanilla_3dgs",
            margin=2.0)

    def secondary_claims(self, config: CoherentGSReproConfig) -> list[Claim]:
        head = self.claim(config).setting
        claims = []
        if "vanilla_3dgs" in config.arms:
            claims += [Claim(
                statement=f"Same as the headline on the {setting} scenes.",
                metric="test_psnr", setting=setting, method="coherentgs",
                baseline="vanilla_3dgs", margin=2.0) for setting in config.settings
                if setting != head]
            claims += [Claim(
                statement=f"CoherentGS's held-out-view depth MAE is below vanilla 3DGS's "
                f"({setting} scenes; paper: coherent geometry, no floaters).",
                metric="depth_mae", setting=setting, method="coherentgs",
                baseline="vanilla_3dgs", margin=0.0, higher_is_better=False)
                for setting in config.settings]
        labels = {"depth_init_free": "per-pixel depth init with free 3-D motion",
                  "no_decoder": "CoherentGS without the decoder",
                  "no_tv": "CoherentGS without TV", "no_flow": "CoherentGS without flow"}
        claims += [Claim(
            statement=f"CoherentGS's held-out-view PSNR is at least that of {labels[arm]} "
            f"({head} scenes; paper's ablation; margin 0, the gap is recorded).",
            metric="test_psnr", setting=head, method="coherentgs", baseline=arm, margin=0.0)
            for arm in ("depth_init_free", "no_decoder", "no_tv", "no_flow")
            if arm in config.arms]
        return claims

    def draw_extra_row(self, ax: Any, setting: str, result: dict[str, Any]) -> bool:
        records = [r for r in result["metrics"]["per_seed"] if r["setting"] == setting]
        found = {r["arm"]: r["curves"] for r in records if "novel_view" in r.get("curves", {})}
        if "coherentgs" not in found or "vanilla_3dgs" not in found:
            return False
        side = round(len(found["coherentgs"]["novel_depth"]) ** 0.5)
        tiles = [np.asarray(found[a]["novel_view"]).reshape(side, side, 3)
                 for a in ("vanilla_3dgs", "coherentgs")]
        tiles.append(np.asarray(found["coherentgs"]["true_view"]).reshape(side, side, 3))
        depths = [np.asarray(found[a]["novel_depth"]).reshape(side, side)
                  for a in ("vanilla_3dgs", "coherentgs")]
        depths.append(np.asarray(found["coherentgs"]["true_depth"]).reshape(side, side))
        top = np.concatenate(tiles, axis=1)
        high = max(float(d.max()) for d in depths)
        bottom = np.concatenate([np.repeat((d / high)[..., None], 3, axis=2) for d in depths],
                                axis=1)
        ax.imshow(np.clip(np.concatenate([top, bottom], axis=0), 0, 1))
        ax.set_xticks([])
        ax.set_yticks([])
        return True

    def note(self, config: CoherentGSReproConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        parts = []
        for setting in config.settings:
            rows = []
            for arm in config.arms:
                if summary_mean(aggregate, setting, arm, "test_psnr") is None:
                    continue
                rows.append(f"{self.arm_labels[arm]}: test PSNR "
                            f"{summary_text(aggregate, setting, arm, 'test_psnr')} dB, train "
                            f"{summary_text(aggregate, setting, arm, 'train_psnr')} dB, depth MAE "
                            f"{summary_text(aggregate, setting, arm, 'depth_mae')}, needles "
                            f"{summary_text(aggregate, setting, arm, 'needle_share')}")
            parts.append(f"{setting}: " + "; ".join(rows) + ".")
        return (" ".join(parts) + f" Setting: {config.size}×{config.size} images, "
                f"{config.iterations} rendering steps per arm (after {config.phase_one_iterations}"
                f" phase-1 steps for the depth-initialised arms), depth_unit {config.depth_unit}, "
                f"decoder widths ngf {config.ngf_depth}/{config.ngf_opacity}, multisampling up to "
                f"{config.multisample_max}×; no VGG term (no offline weights); no densification "
                "in any arm (vanilla 3DGS densifies in the paper's baseline).")


REPRODUCTION = CoherentGSReproduction()
