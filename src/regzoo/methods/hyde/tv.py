"""Isotropic total-variation denoising of a batch of images by FGP (Beck & Teboulle 2009).

Solves, for each image b of a batch,  min_u ½‖u − b‖² + λ TV(u),  TV(u) = Σ_ij |∇u_ij|₂
(forward differences, Neumann boundary), by the fast gradient projection on the dual:
``u = b − λ ∇ᵀp``, ``p ← Π_{|p|≤1}(r + ∇(b − λ∇ᵀr)/(8λ))`` with Nesterov extrapolation of r
(Beck & Teboulle, IEEE TIP 18(11), 2009, Algorithm FGP with no box constraint). Pure torch, so
it runs on the cube's device and denoises all OTVCA features in one batch. HyDe 0.4.3 calls
scikit-image's split-Bregman solver (``denoise_tv_bregman``, stop tolerance 0.1) on the CPU for
the same model; the minimiser is the same, the stopping point differs.
"""

from __future__ import annotations

import torch


def gradient(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along rows and columns (last row/column zero)."""
    gx = torch.zeros_like(u)
    gy = torch.zeros_like(u)
    gx[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    gy[..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
    return gx, gy


def gradient_adjoint(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """``∇ᵀ(p_x, p_y)`` (minus the discrete divergence)."""
    out = torch.zeros_like(px)
    out[..., :-1, :] -= px[..., :-1, :]
    out[..., 1:, :] += px[..., :-1, :]
    out[..., :, :-1] -= py[..., :, :-1]
    out[..., :, 1:] += py[..., :, :-1]
    return out


def total_variation(u: torch.Tensor) -> torch.Tensor:
    """Isotropic TV of each image of the batch (sum over the last two axes)."""
    gx, gy = gradient(u)
    return torch.sqrt(gx * gx + gy * gy).sum(dim=(-2, -1))


def tv_denoise(images: torch.Tensor, lam: float, *, n_iter: int = 200, tol: float = 1e-6
               ) -> torch.Tensor:
    """Return ``argmin_u ½‖u − b‖² + lam·TV(u)`` for every image ``b`` of ``images`` (..., H, W).

    Stops after ``n_iter`` FGP iterations or when the largest change of u relative to the
    images' scale falls below ``tol``.
    """
    if lam <= 0:
        return images.clone()
    px, py = torch.zeros_like(images), torch.zeros_like(images)
    rx, ry = px, py
    t = 1.0
    scale = images.abs().amax().clamp_min(1e-30)
    u_old = images
    for _ in range(n_iter):
        gx, gy = gradient(images - lam * gradient_adjoint(rx, ry))
        qx, qy = rx + gx / (8 * lam), ry + gy / (8 * lam)
        norm = torch.sqrt(qx * qx + qy * qy).clamp_min(1.0)
        px_new, py_new = qx / norm, qy / norm
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        rx = px_new + (t - 1) / t_new * (px_new - px)
        ry = py_new + (t - 1) / t_new * (py_new - py)
        px, py, t = px_new, py_new, t_new
        u = images - lam * gradient_adjoint(px, py)
        if float((u - u_old).abs().amax()) < tol * float(scale):
            break
        u_old = u
    return images - lam * gradient_adjoint(px, py)
