"""PnP-MIMO benchmark: our Born operator and C-SALSA vs the official dense einsum formulation;
our 3-D TV prox vs scikit-image's ``denoise_tv_chambolle``.

1. Operator, at the reproduction's size (16³ voxels, X array, N_F = 10; complex128 as the
   official code): the official ``MVProd`` keeps A as a 6-D tensor [F, T, R, X, Y, Z] and
   applies it with ``torch.einsum('ktrxyz,xyz->ktr', ...)`` (adjoint: the conjugate with
   ``'ktrxyz,ktr->xyz'``); it is re-created here from the formula (not imported: the official
   repository is not a package). Ours: the flat dense matrix, and matrix-free per frequency.
   Time of one forward + adjoint (best of ``repeats``), the bytes the operator keeps (matrix
   and cached distances), and the largest deviation from the einsum result.
2. One C-SALSA iteration (5 CG steps, l1 magnitude prox, K = 500): ours against the same
   iteration written with the einsum operator (official ``PNP_CSALSA`` + ``cg3D`` structure).
3. 3-D TV prox on a noisy 32³ piecewise-constant volume: ``regzoo.imaging.tv.tv_prox`` (FGP,
   Beck & Teboulle) vs ``skimage.restoration.denoise_tv_chambolle`` (Chambolle's projection
   algorithm). Both minimise ½‖u − v‖² + w·TV_iso(u) with forward differences and Neumann
   boundaries, so ``weight = w`` maps one to one (checked here: the objective of each output,
   their largest difference). Unconstrained (``lower=None``) for a like-for-like comparison,
   then ours with ``lower=0`` (what the magnitude prox uses).

One process, one thread; ratios are the figures to quote. Run
``python benchmarks/pnp_mimo.py [--quick]`` or ``regzoo bench pnp_mimo``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from regzoo.methods.pnp_mimo import NearFieldMIMO, magnitude_prox, soft_threshold
from regzoo.methods.pnp_mimo.solver import conjugate_gradient, project_ball
from regzoo.train.timing import machine_line

C = 299_792_458.0


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    best, out = math.inf, None
    for _ in range(repeats):
        started = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - started)
    return best, out


def einsum_tensor(op: NearFieldMIMO) -> torch.Tensor:
    """The official layout: A[k, t, r, x, y, z] = e^{−jκ_k(R_t + R_r)} / (4π R_t R_r)."""
    grid = torch.stack(torch.meshgrid(*op.axes, indexing="ij"), -1)  # (X, Y, Z, 3)
    r_tx = torch.linalg.vector_norm(grid[None] - op.tx[:, None, None, None], dim=-1)
    r_rx = torch.linalg.vector_norm(grid[None] - op.rx[:, None, None, None], dim=-1)
    kappa = 2 * math.pi * op.freqs / C
    path = r_tx[:, None] + r_rx[None, :]  # (T, R, X, Y, Z)
    amplitude = 1 / (4 * math.pi * r_tx[:, None] * r_rx[None, :])
    return torch.polar(amplitude.expand(len(kappa), *amplitude.shape),
                       -kappa[:, None, None, None, None, None] * path)


def operator_rows(op: NearFieldMIMO, repeats: int) -> list[str]:
    A6 = einsum_tensor(op)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(op.grid_shape, dtype=torch.complex128, generator=g)
    y = torch.randn(op.meas_shape, dtype=torch.complex128, generator=g)

    def official() -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.einsum("ktrxyz,xyz->ktr", A6, x),
                torch.einsum("ktrxyz,ktr->xyz", A6.conj(), y))

    t_off, (fy, fx) = timed(official, repeats)
    rows = [f"| official einsum (6-D dense) | {t_off * 1e3:.1f} | 1.00 | "
            f"{A6.numel() * 16 / 2**20:.0f} | 0 |"]
    free = NearFieldMIMO(op.tx, op.rx, op.freqs, op.axes, mode="matrix_free")
    for name, ours in (("regzoo dense (flat matrix)", op),
                       ("regzoo matrix-free, 1 frequency per block", free)):
        t, (oy, ox) = timed(lambda ours=ours: (ours(x), ours.adjoint(y)), repeats)
        geometry = sum(t.numel() * t.element_size()
                       for t in (ours._path, ours._amplitude, ours._r_tx, ours._r_rx))
        matrix = ours.n_meas * ours.n_voxels * 16 if ours.mode == "dense" else 0
        stored = matrix + geometry
        error = max(float((oy - fy).abs().max()), float((ox - fx).abs().max()))
        rows.append(f"| {name} | {t * 1e3:.1f} | {t_off / t:.2f} | {stored / 2**20:.0f} | "
                    f"{error:.1e} |")
    return rows


def csalsa_rows(op: NearFieldMIMO, repeats: int) -> list[str]:
    """One C-SALSA iteration from the same state, ours vs the einsum formulation."""
    A6 = einsum_tensor(op)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(op.grid_shape, dtype=torch.complex128, generator=g)
    y = op(x) + 0.01 * torch.randn(op.meas_shape, dtype=torch.complex128, generator=g)
    K, alpha, eps = 500.0, 0.01, 1.0
    prox = magnitude_prox(soft_threshold)
    x0 = op.adjoint(y)
    x0 = x0 / x0.abs().max()
    v1, v2 = x0.clone(), op(x0)
    d1, d2 = 0.1 * x0, 0.1 * v2

    def forward(u: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ktrxyz,xyz->ktr", A6, u)

    def adjoint(u: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ktrxyz,ktr->xyz", A6.conj(), u)

    def iteration(fwd: Callable, adj: Callable) -> torch.Tensor:
        rhs = K * (v1 + d1) + adj(v2 + d2)
        xn, _ = conjugate_gradient(lambda u: K * u + adj(fwd(u)), rhs, x0, max_iter=5,
                                   tol=1e-5)
        v1n = prox(xn - d1, alpha)
        axn = fwd(xn)
        v2n = y + project_ball(axn - d2 - y, eps)
        return xn + 0 * (v1n.sum() + v2n.sum())

    t_off, ref = timed(lambda: iteration(forward, adjoint), repeats)
    t_ours, out = timed(lambda: iteration(op.forward, op.adjoint), repeats)
    op64 = NearFieldMIMO(op.tx, op.rx, op.freqs, op.axes, dtype=torch.complex64)
    t_64, _ = timed(lambda: iteration(op64.forward, op64.adjoint), repeats)
    deviation = float((out - ref).abs().max() / ref.abs().max())
    return [f"| official einsum, complex128 | {t_off * 1e3:.0f} | 1.00 | 0 |",
            f"| regzoo dense, complex128 | {t_ours * 1e3:.0f} | {t_off / t_ours:.2f} | "
            f"{deviation:.1e} |",
            f"| regzoo dense, complex64 (reproduction) | {t_64 * 1e3:.0f} | "
            f"{t_off / t_64:.2f} | – |"]


def tv_objective(u: np.ndarray, v: np.ndarray, w: float) -> float:
    grads = []
    for axis in range(u.ndim):
        d = np.zeros_like(u)
        d[tuple(slice(0, -1) if a == axis else slice(None) for a in range(u.ndim))] = \
            np.diff(u, axis=axis)
        grads.append(d)
    tv = np.sqrt(sum(d * d for d in grads)).sum()
    return 0.5 * float(((u - v) ** 2).sum()) + w * float(tv)


def tv_rows(size: int, repeats: int) -> list[str]:
    from skimage.restoration import denoise_tv_chambolle

    from regzoo.imaging.tv import tv_prox

    rng = np.random.default_rng(0)
    v = np.zeros((size,) * 3)
    v[size // 4:size // 2, size // 4:3 * size // 4, 2:size // 3] = 1.0
    v[size // 2:, : size // 2, size // 2:] = 0.6
    v += 0.1 * rng.standard_normal(v.shape)
    rows = []
    for w in (0.05, 0.2):
        t_sk, u_sk = timed(lambda w=w: denoise_tv_chambolle(v, weight=w, eps=1e-6,
                                                            max_num_iter=500), repeats)
        t_us, u_us = timed(lambda w=w: tv_prox(v, w, spatial_dims=3, n_iter=500, tol=1e-6),
                           repeats)
        t_nn, u_nn = timed(lambda w=w: tv_prox(v, w, spatial_dims=3, lower=0.0, n_iter=500,
                                               tol=1e-6), repeats)
        rows.append(f"| {w} | {t_sk:.2f} | {t_us:.2f} | {t_sk / t_us:.2f} | "
                    f"{tv_objective(u_sk, v, w):.3f} | {tv_objective(u_us, v, w):.3f} | "
                    f"{np.abs(u_sk - u_us).max():.1e} | {t_nn:.2f} | {u_nn.min():.1e} |")
    return rows


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one repeat, a 16³ TV volume")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 1 if args.quick else 3
    op = NearFieldMIMO.x_array(10, (16, 16, 16))
    print(f"{machine_line()}; X array 12 Tx × 13 Rx, N_F = 10, 16³ voxels "
          f"(M = {op.n_meas}, N = {op.n_voxels})\n")
    print("| operator (forward + adjoint) | ms | speed-up vs official | stored MiB | "
          "max deviation |")
    print("|---|---:|---:|---:|---:|")
    print("\n".join(operator_rows(op, repeats)), flush=True)
    print("\n| one C-SALSA iteration (5 CG steps, l1) | ms | speed-up vs official | "
          "relative deviation |")
    print("|---|---:|---:|---:|")
    print("\n".join(csalsa_rows(op, repeats)), flush=True)
    try:
        import skimage
    except ImportError:
        print("\nscikit-image is not installed (pip install 'regzoo[peers]'): TV rows skipped")
        return
    size = 16 if args.quick else 32
    print(f"\nTV prox on a noisy {size}³ volume, 500 iterations at most, tolerance 1e-6 "
          f"(scikit-image {skimage.__version__})\n")
    print("| w | skimage s | regzoo s | skimage / regzoo | objective skimage | objective regzoo "
          "| max |Δu| | regzoo lower=0 s | min u (lower=0) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(tv_rows(size, repeats)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
