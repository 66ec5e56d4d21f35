"""The small 3-D denoiser of the plug-and-play prior, trained on procedural magnitude volumes.

The paper trains a 3-D U-Net (3 levels, 32 channels at the top, input [magnitude, σ-map]) on
a synthetic data set of 3-D scenes (official ``trained_model/info.json`` at commit 3b8b15c,
removed since: MSE, Adam 1e-3, batch 16, noise std σ ~ U[0, 0.2] on max-normalised
magnitudes). Neither the data set nor the
weights can be downloaded here, so :class:`MagnitudeDenoiser3D` is a smaller U-Net of the same
shape trained in a few CPU minutes:

- conv 3×3×3 (2 → c) ReLU, conv (c → c) ReLU; max-pool 2; conv (c → 2c) ReLU, conv (2c → 2c)
  ReLU; transposed conv 2 (2c → c); concatenate the skip; conv (2c → c) ReLU, conv (c → c)
  ReLU; conv 1×1 (c → 1). Two levels (16³ volumes are small), c = 16.
- Residual output: D(m, σ) = m − net([m, σ·1]) (DnCNN's residual learning, which trains
  faster at this budget; the official network predicts the clean volume directly).
- Training volumes: ``voxelize(random_scene(seed, ...))`` on the reconstruction grid's
  physical box (2 boxes, 1 sphere, 1 plane, values in [0.3, 1], no background), max-normalised,
  random flips; noise m + σ n with σ ~ U[0, ``sigma_max``] per volume, n ~ N(0, 1). Scene
  seeds start at ``SEED_OFFSET`` so they never meet the reproduction's test scenes.

The trained network is the asset ``pnp_mimo_denoiser`` (:mod:`regzoo.assets`), registered by
the CLI through ``LATE_ASSET_PLUGINS``; :func:`pretrained_denoiser` builds it on first use
and loads it afterwards. Measured at the defaults (600 Adam steps of batch 8, one thread on a
shared, loaded 2-core machine): 170 s to build, training MSE 1.7e-3 over the last 60 steps
(the noisy inputs' mean MSE is E σ² = 0.2²/3 ≈ 1.3e-2).

The module lives in :mod:`regzoo.models`, outside :mod:`regzoo.methods.pnp_mimo`, so that the
asset's cache key (the import closure of its builder) does not change with the solver's code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from regzoo import assets
from regzoo.core.checks import check_positive_int

SEED_OFFSET = 1_000_000
"""Training scenes use seeds ``SEED_OFFSET + i``; reproductions draw test scenes below it."""
SCENE_BOUNDS = ((-0.15, 0.15), (-0.15, 0.15), (0.35, 0.65))
"""The paper's scene box in metres (x, y, z), official ``src/config.py``."""
SCENE_PRIMITIVES = {"n_boxes": 2, "n_spheres": 1, "n_planes": 1}


class MagnitudeDenoiser3D(nn.Module):
    """A two-level 3-D U-Net with a noise-level-map input channel and a residual output."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        c = check_positive_int("channels", channels)
        self.channels = c

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(cin, cout, 3, padding=1), nn.ReLU(),
                                 nn.Conv3d(cout, cout, 3, padding=1), nn.ReLU())

        self.encoder = block(2, c)
        self.middle = block(c, 2 * c)
        self.up = nn.ConvTranspose3d(2 * c, c, 2, stride=2)
        self.decoder = block(2 * c, c)
        self.out = nn.Conv3d(c, 1, 1)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, 2, nx, ny, nz) = [noisy magnitude, noise-level map] → (B, 1, nx, ny, nz)."""
        if inputs.ndim != 5 or inputs.shape[1] != 2:
            raise ValueError(f"inputs must be (B, 2, nx, ny, nz) (volume and noise map), got "
                             f"{tuple(inputs.shape)}")
        skip = self.encoder(inputs)
        low = self.middle(F.max_pool3d(skip, 2, ceil_mode=True))
        up = self.up(low)[..., :skip.shape[-3], :skip.shape[-2], :skip.shape[-1]]
        return inputs[:, :1] - self.out(self.decoder(torch.cat([up, skip], dim=1)))


def training_volumes(n: int, grid_shape: Sequence[int], *, offset: int = SEED_OFFSET
                     ) -> torch.Tensor:
    """``n`` max-normalised magnitude volumes (n, nx, ny, nz), scene seeds offset + 0..n−1."""
    from regzoo.imaging.scenes import random_scene, voxelize

    axes = [np.linspace(lo, hi, int(k)) for (lo, hi), k in zip(SCENE_BOUNDS, grid_shape)]
    volumes = []
    for i in range(n):
        scene = random_scene(offset + i, bounds=SCENE_BOUNDS, background=False,
                             **SCENE_PRIMITIVES)
        v = voxelize(scene, *axes)
        volumes.append(v / v.max() if v.max() > 0 else v)
    return torch.from_numpy(np.stack(volumes)).float()


def _build(config: Mapping[str, Any]) -> assets.Payload:
    generator = torch.Generator().manual_seed(config["seed"])
    torch.manual_seed(config["seed"])
    clean = training_volumes(config["n_volumes"], config["grid_shape"])
    net = MagnitudeDenoiser3D(config["channels"])
    optimizer = torch.optim.Adam(net.parameters(), lr=config["lr"])
    losses = []
    for _ in range(config["steps"]):
        index = torch.randint(0, clean.shape[0], (config["batch_size"],), generator=generator)
        batch = clean[index]
        for axis in (1, 2):  # lateral flips keep the depth axis (range) meaningful
            flip = torch.rand(batch.shape[0], generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(axis), batch)
        sigma = torch.rand(batch.shape[0], 1, 1, 1, generator=generator) * config["sigma_max"]
        noisy = batch + sigma * torch.randn(batch.shape, generator=generator)
        inputs = torch.stack([noisy, sigma.expand_as(noisy)], dim=1)
        loss = F.mse_loss(net(inputs)[:, 0], batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    tail = max(1, len(losses) // 10)
    return {"state_dict": net.state_dict(), "channels": config["channels"],
            "final_mse": float(np.mean(losses[-tail:]))}


def load_denoiser(payload: assets.Payload) -> MagnitudeDenoiser3D:
    """The network of a ``pnp_mimo_denoiser`` payload (CPU, eval mode)."""
    with torch.random.fork_rng(devices=[]):
        net = MagnitudeDenoiser3D(int(payload["channels"]))
    net.load_state_dict(payload["state_dict"])
    return net.eval()


DEFAULTS = {"seed": 0, "grid_shape": (16, 16, 16), "n_volumes": 2000, "channels": 16,
            "steps": 600, "batch_size": 8, "lr": 1e-3, "sigma_max": 0.2}

assets.register(assets.Asset(
    name="pnp_mimo_denoiser",
    summary="3-D U-Net (2 levels, 16 channels) with a noise-level-map channel, trained with "
            "Adam on procedural 16³ magnitude volumes, σ ~ U[0, 0.2] (PnP-MIMO's deep prior)",
    defaults=DEFAULTS,
    build=_build,
    check=load_denoiser,
))


def pretrained_denoiser(**config: Any) -> MagnitudeDenoiser3D:
    """The cached trained denoiser (built on first use, minutes); ``config`` overrides."""
    return load_denoiser(assets.get("pnp_mimo_denoiser", config))


def training_mse(**config: Any) -> float:
    """The mean training MSE of the last tenth of the steps (recorded at build)."""
    return float(assets.get("pnp_mimo_denoiser", config)["final_mse"])
