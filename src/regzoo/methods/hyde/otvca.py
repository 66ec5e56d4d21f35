"""OTVCA: orthogonal total-variation component analysis.

Rasti, Ulfarsson & Sveinsson, "Hyperspectral Feature Extraction Using Total Variation Component
Analysis", IEEE TGRS 54(12), 2016. The cube ``Y`` (N pixels × L bands) is fitted by r feature
images ``F`` (N × r) with orthonormal loadings ``V`` (L × r):

    min_{F, V} ½‖Y − F Vᵀ‖²_F + λ Σ_i TV(f_i)   s.t. VᵀV = I_r                        (eq. 5)

by cyclic descent (Algorithm 1): with V fixed, ``‖Y − FVᵀ‖² = ‖YV − F‖² + const``, so each
feature is the TV denoising of ``Y v_i`` with weight λ; with F fixed, ``V = C Gᵀ`` from
``YᵀF = C S Gᵀ`` (orthogonal Procrustes). Both steps minimise the objective, so it does not
increase. V starts from the first r principal directions. Defaults (HyDe 0.4.3 / official
code): λ = 0.01 for data in [0, 1], 10 iterations (the docstring recommends 200); the official
code denoises the features with split Bregman (skimage), we use FGP (:mod:`.tv`), which solves
the same subproblem on any device.
"""

from __future__ import annotations

import torch

from regzoo.core.arrays import ArrayLike, restore
from regzoo.core.checks import check_positive_int, check_range
from regzoo.core.progress import progress_bar
from regzoo.methods.hyde.lowlevel import DenoiseResult, check_cube, finish, procrustes
from regzoo.methods.hyde.tv import total_variation, tv_denoise


def otvca_objective(y: torch.Tensor, features: torch.Tensor, v: torch.Tensor, lam: float
                    ) -> float:
    """½‖Y − F Vᵀ‖²_F + λ Σ_i TV(f_i) for Y (rows×cols×L), F (rows×cols×r), V (L×r)."""
    _rows, _cols, bands = y.shape
    fit = y.reshape(-1, bands) - features.reshape(-1, v.shape[1]) @ v.T
    return float(0.5 * (fit**2).sum() + lam * total_variation(features.permute(2, 0, 1)).sum())


def otvca(cube: ArrayLike, features: int, *, lam: float = 0.01, num_iter: int = 10,
          tv_iter: int = 200, full_output: bool = False, progress: bool | None = None
          ) -> ArrayLike | DenoiseResult:
    """Denoise ``cube`` (rows×cols×bands) with OTVCA and ``features`` components; same type out.

    Args:
        features: number of components r (1 ≤ r ≤ bands).
        lam: TV weight λ (official: 0.01 for data in [0, 1]).
        num_iter: cyclic-descent iterations (official default 10; 200 recommended there).
        tv_iter: FGP iterations per TV subproblem.
        full_output: return a :class:`DenoiseResult` whose ``history`` records the objective
            and ‖VᵀV − I‖ after every iteration.
        progress: a bar over the iterations (``None``: only on a terminal).
    """
    y, kind = check_cube(cube)
    rows, cols, bands = y.shape
    check_positive_int("features", features)
    if features > bands:
        raise ValueError(f"features must be <= bands ({bands}), got {features}")
    check_range("lam", lam, 0.0)
    check_positive_int("num_iter", num_iter)
    check_positive_int("tv_iter", tv_iter)
    flat = y.reshape(-1, bands)
    v = torch.linalg.svd(flat, full_matrices=False).Vh[:features].T
    eye = torch.eye(features, dtype=y.dtype, device=y.device)
    history = []
    for _ in progress_bar(range(num_iter), desc="otvca", progress=progress):
        projected = (flat @ v).T.reshape(features, rows, cols)
        f = tv_denoise(projected, lam, n_iter=tv_iter).reshape(features, -1).T
        v = procrustes(flat.T @ f)
        fe = f.reshape(rows, cols, features)
        history.append({"objective": otvca_objective(y, fe, v, lam),
                        "orthonormality": float(torch.linalg.norm(v.T @ v - eye))})
    restored = (f @ v.T).reshape(rows, cols, bands)
    out = restore(finish(restored, kind), kind)
    if not full_output:
        return out
    return DenoiseResult(out, history[-1]["objective"], num_iter, True, tuple(history),
                         restore(finish(fe, kind), kind), restore(finish(v, kind), kind),
                         features)
