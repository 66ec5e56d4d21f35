"""FORPDN: first-order spectral roughness penalty denoising in the wavelet domain, SURE-tuned.

Rasti, Sveinsson, Ulfarsson & Benediktsson, "Hyperspectral Image Denoising Using First Order
Spectral Roughness Penalty in Wavelet Domain", IEEE JSTARS 7(6), 2014. Each band gets the same
orthogonal 2-D DWT; the coefficient spectra ``c`` (one L-vector per wavelet position) of subband
group g (approximation, then detail levels coarse → fine) are estimated by

    min_x ½(c − x)ᵀ Σ⁻¹ (c − x) + (λ_g/2)‖D x‖²  ⇒  x̂ = H_λ c,  H_λ = (I + λ_g Σ DᵀD)⁻¹   (eq. 7)

with ``D`` the (L−1)×L first-difference matrix and ``Σ = diag(σ_b²)`` the estimated band noise.
With ``Σ^{1/2} DᵀD Σ^{1/2} = U S Uᵀ``, ``H_λ = Σ^{1/2} U (I + λS)⁻¹ Uᵀ Σ^{-1/2}``. ``λ_g`` minimises
over a grid the SURE of the group's mean squared error

    SURE(λ) = ‖C_g − C_g H_λᵀ‖²/n_g + 2 tr(H_λ Σ) − tr Σ                                 (eq. 9)

Defaults (HyDe 0.4.3 ``forpdn.py`` / the official MATLAB): 3 levels of db6 (the number of grids
minus one), grids ``[0, 0.01]`` step 0.001 for the approximation and ``[0, 0.1]``, ``[0, 1]``,
``[0, 10]`` with steps 0.01, 0.1, 1 for the details (coarse → fine), and the cube scaled per band
by 255/(max − min) first (the grids refer to that scale; undone at the end).
Differences from HyDe: SURE is minimised over the whole grid (HyDe stops at the first increase
and, for the detail levels, divides the residual by ``n_g + 2 tr`` — a misplaced parenthesis);
grids include their end point; the transform is orthogonal (see :mod:`.wavelets`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from regzoo.core.arrays import ArrayLike, restore
from regzoo.methods.hyde.lowlevel import DenoiseResult, check_cube, estimate_noise, finish
from regzoo.methods.hyde.wavelets import Wavelet2D

DEFAULT_GRIDS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.001, 0.01), (0.0, 0.01, 0.1), (0.0, 0.1, 1.0), (0.0, 1.0, 10.0))
"""(start, step, end) of the λ grid per subband group: approximation, then coarse → fine."""


def _difference_matrix(bands: int, like: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(bands, dtype=like.dtype, device=like.device)
    return eye[1:] - eye[:-1]


def forpdn(cube: ArrayLike, *, grids: Sequence[tuple[float, float, float]] = DEFAULT_GRIDS,
           wavelet: str = "db6", scale: float | None = 255.0, full_output: bool = False
           ) -> ArrayLike | DenoiseResult:
    """Denoise ``cube`` (rows×cols×bands) with FORPDN_SURE; same type out.

    Args:
        grids: one (start, step, end) λ grid per subband group; ``len(grids) − 1`` levels.
        wavelet: PyWavelets orthogonal wavelet (official: db6).
        scale: scale every band to range ``scale`` before denoising (official: 255); None keeps
            the data's own scale (then adapt the grids).
        full_output: return a :class:`DenoiseResult`; ``history`` holds the chosen λ per group.
    """
    y, kind = check_cube(cube)
    if len(grids) < 2:
        raise ValueError(f"grids needs at least 2 (start, step, end) triples, got {len(grids)}")
    for g in grids:
        if len(g) != 3 or g[1] <= 0 or g[2] < g[0] or g[0] < 0:
            raise ValueError(f"every grid must be (start >= 0, step > 0, end >= start), got {g}")
    rows, cols, bands = y.shape
    factor = torch.ones(bands, dtype=y.dtype, device=y.device)
    if scale is not None:
        factor = scale / (y.amax(dim=(0, 1)) - y.amin(dim=(0, 1)))
    y = y * factor
    _, r_w = estimate_noise(y.reshape(-1, bands).T)
    var = torch.diagonal(r_w).clamp_min(1e-30)
    root = torch.sqrt(var)
    d = _difference_matrix(bands, y)
    s, u = torch.linalg.eigh(root[:, None] * (d.T @ d) * root[None, :])
    s = s.clamp_min(0.0)
    left = root[:, None] * u  # Σ^{1/2} U
    right = u.T / root[None, :]  # Uᵀ Σ^{-1/2}
    trace_weights = torch.diagonal(u.T @ torch.diag(var) @ u)  # diag(Uᵀ Σ U)
    dwt = Wavelet2D(rows, cols, wavelet, len(grids) - 1)
    coef = dwt.forward(y)
    estimate = torch.empty_like(coef)
    chosen: list[dict[str, float]] = []
    total_sure = 0.0
    for group, (start, step, end) in zip(dwt.groups, grids):
        c = coef[torch.as_tensor(group, device=y.device)]
        rotated = c @ right.T  # rows: Uᵀ Σ^{-1/2} c
        best = None
        for lam in torch.arange(start, end + step / 2, step, dtype=y.dtype).tolist():
            shrink = 1.0 / (1.0 + lam * s)
            x = (rotated * shrink) @ left.T
            sure = float(((c - x) ** 2).sum() / c.shape[0] + 2 * (shrink * trace_weights).sum()
                         - var.sum())
            if best is None or sure < best[0]:
                best = (sure, lam, x)
        estimate[torch.as_tensor(group, device=y.device)] = best[2]
        chosen.append({"lambda": best[1], "sure": best[0]})
        total_sure += best[0] * c.shape[0]
    restored = dwt.inverse(estimate) / factor
    out = restore(finish(restored, kind), kind)
    if not full_output:
        return out
    return DenoiseResult(out, total_sure, 1, True, tuple(chosen), None, None, bands,
                         restore(finish(root / factor, kind), kind))
