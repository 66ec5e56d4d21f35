"""PnP regularisation on the magnitude for 3-D near-field MIMO imaging (Oral & Oktem, 2024).

The method, its equations, defaults and departures from the official code are documented in
:mod:`regzoo.methods.pnp_mimo.solver` (the registered :func:`pnp_csalsa`). Pieces:

* :mod:`.operator` — :class:`NearFieldMIMO`, the Born operator (dense or matrix-free per
  frequency), the X-array preset, noise at a given SNR, back-projection and Kirchhoff migration.
* :mod:`.solver` — :func:`magnitude_prox`, :func:`complex_prox`, the l1 / TV / network priors,
  CG, the ball projection and :func:`pnp_csalsa`.
* :mod:`regzoo.models.pnp_mimo_denoiser` (a module of its own, so that the cached network's
  key does not change with the solver's code) — the small 3-D denoiser with a noise-level
  map, trained on procedural magnitude volumes and cached as the asset ``pnp_mimo_denoiser``.
"""

from regzoo.methods.pnp_mimo.operator import (
    NearFieldMIMO,
    NoisyMeasurements,
    x_array_positions,
)
from regzoo.methods.pnp_mimo.solver import (
    PnPMIMOResult,
    complex_prox,
    conjugate_gradient,
    magnitude_prox,
    network_denoiser,
    pnp_csalsa,
    project_ball,
    signed_soft_threshold,
    soft_threshold,
    tv_denoiser,
)

__all__ = [
    "NearFieldMIMO",
    "NoisyMeasurements",
    "PnPMIMOResult",
    "complex_prox",
    "conjugate_gradient",
    "magnitude_prox",
    "network_denoiser",
    "pnp_csalsa",
    "project_ball",
    "signed_soft_threshold",
    "soft_threshold",
    "tv_denoiser",
    "x_array_positions",
]
