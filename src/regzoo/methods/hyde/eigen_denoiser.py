"""The eigen-image denoiser of FastHyDe, FastHyIe and L1HyMixDe: BM3D, as an optional extra.

The papers denoise each eigen-image (one row of ``Z = EᵀY`` as a rows×cols image) with BM3D
(Dabov et al. 2007). We call the ``bm3d`` package (binary wheels from Tampere University), whose
licence allows non-commercial use only, so it is an optional extra: ``pip install
"regzoo[bm3d]"``. Nothing falls back silently: without it these methods raise ``ImportError``
naming the extra, unless the caller passes their own ``denoiser(image, sigma) -> image`` (for
example a TV or wavelet denoiser); the FastHyDe paper presents the eigen-image denoiser as a
plug-in, and results then belong to that denoiser, not to BM3D.

Each eigen-image is min–max scaled to [0, 1] before denoising, with ``σ_i = √(eᵢᵀ R_w eᵢ)``
scaled alike (the official code).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from regzoo.core.checks import check_positive_int
from regzoo.core.progress import progress_bar

EigenDenoiser = Callable[[np.ndarray, float], np.ndarray]
"""``denoiser(image, sigma) -> image`` on a 2-D float64 image in [0, 1] with noise std sigma."""


def bm3d_denoiser(num_threads: int = 1) -> EigenDenoiser:
    """Return ``bm3d.bm3d`` (default ``"np"`` profile) or raise ``ImportError`` naming the extra.

    ``num_threads`` is the profile's thread count (``0``: one per hardware thread, the package's
    default). We default to 1: the package's worker pool spins while it waits, so on the small
    eigen-images of these methods more threads cost CPU time and do not save wall time (one
    core, 2026-12-07: 0.43 s instead of 0.83 s CPU and wall per 32² image, 0.57 s instead of
    0.98 s per 64², 1.2 s instead of 1.6 s per 128²); the outputs agree to float32 rounding
    (the package notes that several threads may change the last digits). About 0.4 s of every
    call is a fixed cost inside the package's hard-thresholding stage, whatever the image size.
    """
    check_positive_int("num_threads", num_threads, minimum=0)
    try:
        import bm3d
    except ImportError as error:
        raise ImportError(
            "FastHyDe, FastHyIe and L1HyMixDe denoise eigen-images with BM3D: install it with "
            "pip install 'regzoo[bm3d]' (the bm3d package is free for non-commercial use only), "
            "or pass denoiser=your_function(image, sigma) -> image") from error

    profile = bm3d.BM3DProfile()
    profile.num_threads = int(num_threads)

    def run(image: np.ndarray, sigma: float) -> np.ndarray:
        return np.asarray(bm3d.bm3d(image, sigma, profile=profile), dtype=np.float64)

    return run


def denoise_eigen_images(z: torch.Tensor, sigmas: torch.Tensor, rows: int, cols: int,
                         denoiser: EigenDenoiser | None, progress: bool | None = False
                         ) -> torch.Tensor:
    """Denoise every row of ``z`` (k × rows·cols) as an image with noise std ``sigmas[i]``.

    ``progress`` shows a bar over the eigen-images (:mod:`regzoo.core.progress`): BM3D takes
    about 0.42 s per 32² image and 0.57 s per 64² image on one CPU core.
    """
    run = denoiser if denoiser is not None else bm3d_denoiser()
    out = torch.empty_like(z)
    for i in progress_bar(range(z.shape[0]), desc="eigen-images", progress=progress,
                          unit="image"):
        image = z[i].detach().cpu().numpy().astype(np.float64)
        low, high = float(image.min()), float(image.max())
        scale = max(high - low, 1e-30)
        scaled = ((image - low) / scale).reshape(rows, cols)
        clean = np.asarray(run(scaled, float(sigmas[i]) / scale), dtype=np.float64)
        if clean.shape != (rows, cols):
            raise ValueError(f"denoiser must return an image of shape {(rows, cols)}, got "
                             f"{clean.shape}")
        out[i] = torch.from_numpy(clean.reshape(-1) * scale + low).to(out)
    return out
