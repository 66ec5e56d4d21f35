"""Total variation in any number of spatial dimensions: its value and its constrained prox.

- ``total_variation``: anisotropic TV Σ_axes mean|D_a u| (forward differences; the depth
  smoothness loss of CoherentGS, mean|∂x| + mean|∂y| in 2-D) or isotropic TV
  Σ_voxels ‖∇u‖₂ (the ROF regulariser). Differentiable.
- ``tv_prox``: u* = argmin_{l ≤ u ≤ h} ½‖u − v‖² + w·TV_iso(u), by the fast gradient projection
  (FGP) on the dual of Beck & Teboulle (IEEE TIP 18(11), 2009, Algorithm GP/FGP with the box
  constraint): for a dual field p with ‖p_i‖₂ ≤ 1,
      u(p) = P_[l,h](v − w ∇ᵀp),   p ← Π_{‖·‖≤1}(r + ∇u(r) / (4d·w)),
  with Nesterov extrapolation of r, where 4d bounds ‖∇‖² for d spatial axes (8 in 2-D as in the
  paper). Projecting inside u(p) makes the constraint exact, which clipping the unconstrained
  prox is not for isotropic TV: PnP-MIMO's magnitude prox needs u ≥ 0 exactly.

Boundaries are Neumann (the last difference along each axis is zero), as scikit-image's
``denoise_tv_chambolle``, which minimises the same unconstrained objective with ``weight = w``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _check_dims(u: torch.Tensor, spatial_dims: int) -> None:
    if spatial_dims < 1:
        raise ValueError(f"spatial_dims must be a positive integer, got {spatial_dims}")
    if u.ndim < spatial_dims:
        raise ValueError(f"the array of shape {tuple(u.shape)} has fewer than "
                         f"spatial_dims={spatial_dims} axes")


def forward_differences(u: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """∇u: a stacked (spatial_dims, *u.shape) tensor of forward differences, zero at the end."""
    parts = []
    for axis in range(u.ndim - spatial_dims, u.ndim):
        diff = torch.diff(u, dim=axis)
        pad = torch.zeros_like(u.narrow(axis, 0, 1))
        parts.append(torch.cat((diff, pad), dim=axis))
    return torch.stack(parts)


def forward_differences_adjoint(p: torch.Tensor) -> torch.Tensor:
    """∇ᵀp for a stacked field p of shape (spatial_dims, *shape) (minus the divergence)."""
    spatial_dims = p.shape[0]
    out = torch.zeros_like(p[0])
    ndim = out.ndim
    for index, axis in enumerate(range(ndim - spatial_dims, ndim)):
        component = p[index]
        length = component.shape[axis]
        head = component.narrow(axis, 0, length - 1)
        out.narrow(axis, 0, length - 1).sub_(head)
        out.narrow(axis, 1, length - 1).add_(head)
    return out


def total_variation(u: torch.Tensor, *, spatial_dims: int = 2, isotropic: bool = False,
                    reduction: str = "mean") -> torch.Tensor:
    """TV of ``u`` over its last ``spatial_dims`` axes (see the module docstring).

    ``reduction``: ``"mean"`` (anisotropic: the sum over axes of the mean absolute difference;
    isotropic: the mean gradient norm) or ``"sum"``; the value is pooled over leading axes.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    _check_dims(u, spatial_dims)
    if isotropic:
        norms = forward_differences(u, spatial_dims).pow(2).sum(0).sqrt()
        return norms.mean() if reduction == "mean" else norms.sum()
    total = u.new_zeros(())
    for axis in range(u.ndim - spatial_dims, u.ndim):
        diff = torch.diff(u, dim=axis).abs()
        total = total + (diff.mean() if reduction == "mean" else diff.sum())
    return total


def _as_float_tensor(v: ArrayLike) -> tuple[torch.Tensor, bool]:
    if isinstance(v, np.ndarray):
        if np.iscomplexobj(v):
            raise TypeError("tv_prox: v must be real; denoise the magnitude of complex data")
        return torch.from_numpy(np.array(v, dtype=np.float64)), True
    if isinstance(v, torch.Tensor):
        if v.is_complex():
            raise TypeError("tv_prox: v must be real; denoise the magnitude of complex data")
        return (v.detach().clone() if v.is_floating_point() else v.double()), False
    raise TypeError(f"tv_prox: v must be a numpy array or a torch tensor, got {type(v).__name__}")


def tv_prox(v: ArrayLike, weight: float, *, spatial_dims: int = 3, lower: float | None = None,
            upper: float | None = None, n_iter: int = 100, tol: float = 1e-5) -> ArrayLike:
    """argmin_{lower ≤ u ≤ upper} ½‖u − v‖² + weight·TV_iso(u), over the last spatial axes.

    Leading axes are independent problems solved in one batch. Stops after ``n_iter`` FGP
    iterations or once max|u_k − u_{k−1}| ≤ tol·max(1, max|v|). ``weight = 0`` returns the
    projection of ``v`` onto the box. Numpy in gives numpy out; torch in gives torch out.
    """
    if not (math.isfinite(weight) and weight >= 0):
        raise ValueError(f"tv_prox: weight must be a finite number ≥ 0, got {weight}")
    if n_iter < 1:
        raise ValueError(f"tv_prox: n_iter must be ≥ 1, got {n_iter}")
    if lower is not None and upper is not None and lower > upper:
        raise ValueError(f"tv_prox: lower={lower} exceeds upper={upper}; the box is empty")
    b, is_numpy = _as_float_tensor(v)
    _check_dims(b, spatial_dims)
    if not bool(torch.isfinite(b).all()):
        raise ValueError("tv_prox: v contains NaN or infinite values")

    def project(u: torch.Tensor) -> torch.Tensor:
        return u.clamp(min=lower, max=upper) if lower is not None or upper is not None else u

    if weight == 0:
        out = project(b)
        return out.numpy() if is_numpy else out
    step = 1.0 / (4 * spatial_dims * weight)
    p = torch.zeros((spatial_dims, *b.shape), dtype=b.dtype, device=b.device)
    r, t = p, 1.0
    threshold = tol * max(1.0, float(b.abs().max()))
    u_old = project(b)
    for _ in range(n_iter):
        u = project(b - weight * forward_differences_adjoint(r))
        q = r + step * forward_differences(u, spatial_dims)
        p_new = q / q.pow(2).sum(0, keepdim=True).sqrt().clamp_min(1.0)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        r = p_new + ((t - 1) / t_new) * (p_new - p)
        p, t = p_new, t_new
        u_new = project(b - weight * forward_differences_adjoint(p))
        if float((u_new - u_old).abs().max()) <= threshold:
            u_old = u_new
            break
        u_old = u_new
    return u_old.numpy() if is_numpy else u_old
