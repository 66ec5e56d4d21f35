"""Hessian alignment (Hemati et al., ICCV 2023, arXiv 2308.11778) and the baselines it is tested on.

* :class:`HessianAlignment` — the HGP and Hutchinson penalties (paper §5), :class:`PenaltySchedule`
  and :data:`CMNIST_RECIPE` (the official Colored-MNIST recipe); module ``penalty``.
* :class:`IRMv1`, :class:`VREx`, :class:`CORAL`, :class:`Fishr` — the domain-generalisation
  penalties the paper compares with (§4.3), with the same call; module ``baselines``.
"""

from regzoo.methods.hessian_alignment.baselines import BASELINES, CORAL, Fishr, IRMv1, VREx
from regzoo.methods.hessian_alignment.penalty import (
    CMNIST_RECIPE,
    DEFAULTS,
    LOSSES,
    MODES,
    REDUCTIONS,
    HessianAlignment,
    PenaltySchedule,
    check_domains,
    check_losses,
    domain_loss,
    hessian_gradient_product,
    hutchinson_diagonal,
)

__all__ = [
    "BASELINES",
    "CMNIST_RECIPE",
    "CORAL",
    "DEFAULTS",
    "LOSSES",
    "MODES",
    "REDUCTIONS",
    "Fishr",
    "HessianAlignment",
    "IRMv1",
    "PenaltySchedule",
    "VREx",
    "check_domains",
    "check_losses",
    "domain_loss",
    "hessian_gradient_product",
    "hutchinson_diagonal",
]
