"""CoherentGS (Paliwal et al., ECCV 2024, arXiv 2403.19495).

"CoherentGS: Sparse Novel View Synthesis with Coherent 3D Gaussians".

* :func:`render_gaussians` — a differentiable pure-torch 3DGS rasteriser (:mod:`.rasterizer`).
* :class:`SparseViews`, :class:`CoherentGaussians`, :class:`FreeGaussians`, the losses
  (:mod:`.model`).
* :func:`fit_coherentgs` (the method, two phases), :func:`align_depth` (phase 1 alone),
  :func:`fit_gaussian_splatting` (vanilla 3DGS and per-pixel depth init with free 3-D motion)
  (:mod:`.procedure`).
"""

from regzoo.methods.coherentgs.model import (
    CoherentGaussians,
    FreeGaussians,
    ImplicitDecoder,
    SparseViews,
    backward_warp,
    disparity_tv,
    flow_loss,
    multiscale_l1,
    photometric_loss,
    positional_code,
)
from regzoo.methods.coherentgs.procedure import (
    CoherentGSConfig,
    CoherentGSResult,
    SplattingConfig,
    align_depth,
    fit_coherentgs,
    fit_gaussian_splatting,
    phase_two_terms,
)
from regzoo.methods.coherentgs.rasterizer import (
    CameraTensors,
    Rendering,
    covariance_3d,
    project_gaussians,
    quaternion_to_rotation,
    render_gaussians,
)

__all__ = [
    "CameraTensors",
    "CoherentGSConfig",
    "CoherentGSResult",
    "CoherentGaussians",
    "FreeGaussians",
    "ImplicitDecoder",
    "Rendering",
    "SparseViews",
    "SplattingConfig",
    "align_depth",
    "backward_warp",
    "covariance_3d",
    "disparity_tv",
    "fit_coherentgs",
    "fit_gaussian_splatting",
    "flow_loss",
    "multiscale_l1",
    "phase_two_terms",
    "photometric_loss",
    "positional_code",
    "project_gaussians",
    "quaternion_to_rotation",
    "render_gaussians",
]
