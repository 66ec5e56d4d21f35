"""``denoise(cube, method=...)``: one entry point to every classical HyDe denoiser, registered."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from regzoo.core.arrays import ArrayLike
from regzoo.core.checks import check_choice
from regzoo.methods.hyde.fasthyde import fasthyde, fasthyie
from regzoo.methods.hyde.forpdn import DEFAULT_GRIDS, forpdn
from regzoo.methods.hyde.hyminor import hyminor
from regzoo.methods.hyde.hyres import hyres
from regzoo.methods.hyde.l1hymixde import l1hymixde
from regzoo.methods.hyde.otvca import otvca
from regzoo.methods.hyde.wsrrr import wsrrr
from regzoo.registry import Default, register

METHODS: dict[str, Callable[..., Any]] = {
    "hyres": hyres,
    "forpdn": forpdn,
    "hyminor": hyminor,
    "wsrrr": wsrrr,
    "otvca": otvca,
    "fasthyde": fasthyde,
    "fasthyie": fasthyie,
    "l1hymixde": l1hymixde,
}
"""Method name → function; every function takes the cube first and returns the caller's type."""

DEFAULTS = (
    Default("hyres.wavelet", "db5", "HyRes official code; HyDe transform_domain/hyres.py"),
    Default("hyres.levels", 5, "HyRes official code; HyDe transform_domain/hyres.py"),
    Default("forpdn.grids", DEFAULT_GRIDS,
            "HyDe transform_domain/forpdn.py (s_int_st/step/end)"),
    Default("forpdn.wavelet", "db6", "HyDe transform_domain/forpdn.py (wavelet_level=6)"),
    Default("hyminor.lam", 10.0, "HyDe transform_domain/hyminor.py"),
    Default("hyminor.iterations", 50, "HyDe transform_domain/hyminor.py"),
    Default("wsrrr.levels", 3, "HyDe transform_domain/wsrrr.py"),
    Default("otvca.lam", 0.01, "OTVCA official code (normalised HSI)"),
    Default("otvca.num_iter", 10, "HyDe transform_domain/otvca.py"),
    Default("fasthyde.k_subspace", 10, "FastHyDe paper §V; HyDe spatial_domain/fast_hyde.py"),
    Default("l1hymixde.k_subspace", 10, "L1HyMixDe official MATLAB code"),
    Default("l1hymixde.p", 0.05, "L1HyMixDe official MATLAB code"),
    Default("l1hymixde.max_iter", 40, "L1HyMixDe official MATLAB code (HyDe: 10)"),
)


@register(
    "hyde",
    kind="estimator",
    summary="HyDe's classical hyperspectral denoisers (HyRes, FORPDN, HyMiNoR, WSRRR, OTVCA, "
    "FastHyDe, FastHyIe, L1HyMixDe): low-rank subspaces with wavelet-ℓ1, spectral roughness, TV "
    "or BM3D priors, parameters by SURE and HySime; numpy or torch, CPU or CUDA.",
    equation="Y = D₂ X Vᵀ + N, min ½‖Y − D₂XVᵀ‖² + Σλᵢ‖xᵢ‖₁ (HyRes/WSRRR); "
    "min ½‖Y − FVᵀ‖² + λΣTV(fᵢ), VᵀV = I (OTVCA); Y = EZ (+V), Z by BM3D (FastHyDe/L1HyMixDe)",
    defaults=DEFAULTS,
    variants=tuple(METHODS),
)
def denoise(cube: ArrayLike, method: str = "hyres", *, progress: bool | None = None,
            **options: Any) -> Any:
    """Denoise ``cube`` (rows×cols×bands, numpy or torch) with ``method``; same type out.

    ``method`` is one of :data:`METHODS`; ``options`` go to that function (for example
    ``denoise(y, "wsrrr", rank=10)``, ``denoise(y, "fasthyie", mask=m)``). ``progress`` shows
    a bar over the iterations or eigen-images (``None``: only on a terminal) for every method
    but HyRes and FORPDN, which take under a second on a 64³ cube.
    """
    check_choice("method", method, tuple(METHODS))
    function = METHODS[method]
    if "progress" in inspect.signature(function).parameters:
        options["progress"] = progress
    return function(cube, **options)
