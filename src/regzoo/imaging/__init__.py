"""Imaging helpers shared by the 3-D inverse-problem methods (PnP-MIMO, CoherentGS).

- :mod:`regzoo.imaging.metrics`: PSNR and Gaussian-window SSIM for images and volumes.
- :mod:`regzoo.imaging.tv`: total variation (value, differentiable) and its constrained prox
  in any number of spatial dimensions.
- :mod:`regzoo.imaging.scenes`: one procedural 3-D scene generator (boxes, spheres, planes)
  that both voxelises (radar reflectivity) and ray-casts (multi-view images with depth).
"""

from regzoo.imaging.metrics import psnr, ssim
from regzoo.imaging.scenes import (
    Box,
    PinholeCamera,
    Plane,
    RayHits,
    Scene,
    Sphere,
    look_at,
    pixel_rays,
    random_scene,
    raycast,
    voxelize,
)
from regzoo.imaging.tv import total_variation, tv_prox

__all__ = [
    "Box",
    "PinholeCamera",
    "Plane",
    "RayHits",
    "Scene",
    "Sphere",
    "look_at",
    "pixel_rays",
    "psnr",
    "random_scene",
    "raycast",
    "ssim",
    "total_variation",
    "tv_prox",
    "voxelize",
]
