"""HyDe: hyperspectral denoising toolbox (Coquelin et al., IGARSS 2022), rebuilt in PyTorch.

HyDe is a package of classical *regularised* HSI denoisers plus DNN denoisers; its claim is
parity with the original MATLAB methods at a fraction of the time. Every function takes a cube
rows×cols×bands as a numpy array or a torch tensor (CPU or CUDA; work follows the input's
device) and returns the same type, dtype and device.

Denoisers (one module each, papers in their docstrings):

* :func:`hyres` — HyRes: whitening, PCA, wavelet ℓ1 with SURE thresholds and SURE rank.
* :func:`forpdn` — FORPDN_SURE: spectral first-order roughness penalty per wavelet level.
* :func:`hyminor` — HyMiNoR: HyRes, then ℓ1 fit with ℓ1 spectral roughness (sparse noise).
* :func:`wsrrr` — WSRRR: wavelet-sparse reduced-rank regression (Procrustes + soft threshold).
* :func:`otvca` — OTVCA: orthogonal TV component analysis.
* :func:`fasthyde`, :func:`fasthyie` — FastHyDe / FastHyIe: HySime subspace + BM3D
  eigen-images (denoising / inpainting); BM3D is the optional extra ``bm3d``.
* :func:`l1hymixde` — L1HyMixDe: ℓ1 ADMM with FastHyDe inside, for mixed noise.
* :func:`denoise` — ``denoise(cube, method=..., **options)``, the registered entry point.

Measured cost of ``denoise(cube, method)`` with default options on a 64×64×64 cube (float32,
one thread, this project's 2-core CPU, 2026-12-07; WSRRR rank 10, OTVCA 10 features; Gaussian
σ = 0.1, mixed noise for HyMiNoR and L1HyMixDe), CPU seconds: HyRes 0.10, FORPDN 0.09,
WSRRR 0.14, HyMiNoR 0.52, OTVCA 0.60, FastHyDe 3.1 (three BM3D calls), L1HyMixDe 424 (400
BM3D calls: see :mod:`.l1hymixde`). The methods that can run longer than a few seconds
(FastHyDe, FastHyIe, L1HyMixDe, HyMiNoR, OTVCA, WSRRR) take ``progress=`` and show a bar on a
terminal, as training does.

Low-level pieces (:mod:`.lowlevel`, :mod:`.wavelets`, :mod:`.tv`): per-band normalisation,
noise estimation by band regression, HySime, soft thresholding and its SURE, the orthogonal
2-D DWT of every band (PyWavelets), batched TV denoising. The DNN part (``train_denoiser``,
``denoise_sliding``) lives in :mod:`.dnn` and is re-exported here on first access.
"""

from typing import Any

from regzoo.methods.hyde.api import METHODS, denoise
from regzoo.methods.hyde.fasthyde import fasthyde, fasthyie
from regzoo.methods.hyde.forpdn import forpdn
from regzoo.methods.hyde.hyminor import hyminor
from regzoo.methods.hyde.hyres import hyres
from regzoo.methods.hyde.l1hymixde import adaptive_median, l1hymixde
from regzoo.methods.hyde.lowlevel import (
    DenoiseResult,
    estimate_noise,
    hysime,
    normalize_bands,
    soft_threshold,
    sure_soft,
    sure_threshold,
    sure_thresholds,
    undo_normalize_bands,
)
from regzoo.methods.hyde.otvca import otvca
from regzoo.methods.hyde.tv import tv_denoise
from regzoo.methods.hyde.wavelets import Wavelet2D
from regzoo.methods.hyde.wsrrr import wsrrr

_DNN_NAMES = ("train_denoiser", "denoise_sliding")


def __getattr__(name: str) -> Any:
    # The DNN module pulls in the QRNN3D model; import it only when its names are asked for.
    if name in _DNN_NAMES:
        from regzoo.methods.hyde import dnn

        return getattr(dnn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "METHODS",
    "DenoiseResult",
    "Wavelet2D",
    "adaptive_median",
    "denoise",
    "denoise_sliding",
    "estimate_noise",
    "fasthyde",
    "fasthyie",
    "forpdn",
    "hyminor",
    "hyres",
    "hysime",
    "l1hymixde",
    "normalize_bands",
    "otvca",
    "soft_threshold",
    "sure_soft",
    "sure_threshold",
    "sure_thresholds",
    "train_denoiser",
    "tv_denoise",
    "undo_normalize_bands",
    "wsrrr",
]
