"""WSRRR: wavelet-based sparse reduced-rank regression.

Rasti, Sveinsson & Ulfarsson, "Wavelet-Based Sparse Reduced-Rank Regression for Hyperspectral
Image Restoration", IEEE TGRS 52(10), 2014. Bands are whitened by the MAD noise estimate of
their finest diagonal wavelet subband (σ_b = median|HH₁| / 0.6745), then the whitened cube's
wavelet coefficients ``W`` (P × L) are fitted by a rank-r model with orthonormal loadings:

    min_{X, V} ½‖W − X Vᵀ‖²_F + Σ_{i, g} λ_{i,g} ‖x_{i,g}‖₁   s.t. VᵀV = I_r            (eq. 9)

by cyclic descent: ``X ← soft(W V, λ)`` (per component i and subband group g) and
``V ← C Gᵀ`` with ``Wᵀ X = C S Gᵀ`` (orthogonal Procrustes). ``λ_{i,g}`` minimise SURE of the
soft threshold on the first iteration's coefficients (PCA initialisation), then stay fixed;
by default over the official grid ``[0, √log 15]`` (as HyRes), ``threshold_search="exact"``
takes the exact SURE minimiser (64³, σ = 0.1, r = 10: grid 37.8 dB, exact 38.6 dB).
Output: ``σ ⊙ D₂(X Vᵀ)``. Defaults: db5, 3 levels (HyDe 0.4.3); ``rank`` is required.
Differences from HyDe 0.4.3: HyDe keeps ``rank + 1`` components, runs a fixed 200 iterations
and overwrites the approximation-band threshold with the first detail level's after the first
sweep; we use ``rank`` components, stop when V changes by less than ``tol`` (at most
``max_iter`` = 200), and keep one threshold per (component, group).
Cost: two DWTs of L images (the whitened coefficients are the first DWT's divided by σ, the
transform acting band by band) and per iteration two P×L×r products and an L×r SVD; on the
128³ benchmark cube the 200 iterations run to the end and the products dominate.
"""

from __future__ import annotations

import torch

from regzoo.core.arrays import ArrayLike, restore
from regzoo.core.checks import check_positive_int, check_range
from regzoo.core.progress import progress_bar
from regzoo.methods.hyde.lowlevel import (
    DenoiseResult,
    check_cube,
    finish,
    principal_directions,
    procrustes,
    soft_threshold,
    sure_thresholds,
    transposed_product,
)
from regzoo.methods.hyde.wavelets import Wavelet2D


def wsrrr(cube: ArrayLike, rank: int, *, wavelet: str = "db5", levels: int = 3,
          max_iter: int = 200, tol: float = 1e-6, threshold_search: str = "grid",
          full_output: bool = False, progress: bool | None = None
          ) -> ArrayLike | DenoiseResult:
    """Denoise ``cube`` (rows×cols×bands) with WSRRR at the given ``rank``; same type out.

    Args:
        rank: number of components r (1 ≤ r ≤ bands).
        wavelet, levels: the 2-D DWT (defaults db5, 3 levels).
        max_iter, tol: cyclic-descent budget and stop rule (‖V_k − V_{k−1}‖_F < tol).
        threshold_search: the official ``"grid"`` or the ``"exact"`` SURE minimiser.
        full_output: return a :class:`DenoiseResult` (components, basis V, history).
        progress: a bar over the iterations (``None``: only on a terminal).
    """
    y, kind = check_cube(cube)
    rows, cols, bands = y.shape
    check_positive_int("rank", rank)
    if rank > bands:
        raise ValueError(f"rank must be <= bands ({bands}), got {rank}")
    check_positive_int("max_iter", max_iter)
    check_range("tol", tol, 0.0)
    dwt = Wavelet2D(rows, cols, wavelet, levels)
    coefficients = dwt.forward(y)
    diag = coefficients[torch.as_tensor(dwt.finest_diagonal, device=y.device)]
    sigma = (diag.abs().median(dim=0).values / 0.6745).clamp_min(1e-30)
    yw = y / sigma
    w = coefficients / sigma  # the DWT acts band by band, so D₂ᵀ(Y/σ) = (D₂ᵀY)/σ
    v = principal_directions(yw.reshape(-1, bands), rank)
    groups = [torch.as_tensor(g, device=y.device) for g in dwt.groups]
    first = w @ v
    thresholds = torch.zeros(w.shape[0], rank, dtype=y.dtype, device=y.device)
    for g in groups:
        thresholds[g] = sure_thresholds(first[g], threshold_search)[0]
    history = []
    converged = False
    for _ in progress_bar(range(max_iter), desc="wsrrr", progress=progress):
        x = soft_threshold(w @ v, thresholds)
        v_new = procrustes(transposed_product(w, x))
        change = float(torch.linalg.norm(v_new - v))
        v = v_new
        history.append({"v_change": change})
        if change < tol:
            converged = True
            break
    x = soft_threshold(w @ v, thresholds)
    objective = float(0.5 * ((w - x @ v.T) ** 2).sum() + (thresholds * x.abs()).sum())
    restored = dwt.inverse(x @ v.T) * sigma
    out = restore(finish(restored, kind), kind)
    if not full_output:
        return out
    return DenoiseResult(out, objective, len(history), converged, tuple(history),
                         restore(finish(dwt.inverse(x), kind), kind),
                         restore(finish(v, kind), kind), rank,
                         restore(finish(sigma, kind), kind))
