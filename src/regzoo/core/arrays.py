"""Array-type round trip and result records shared by every ``estimator`` (design.md §3).

An estimator accepts numpy arrays or torch tensors and returns the caller's type: numpy in gives
numpy out, torch in gives torch out on the caller's device. Inside, it computes in torch (CPU or
CUDA, batched where the method allows). :func:`as_tensor` validates and converts one argument and
returns the :class:`ArrayKind` needed to convert results back with :func:`restore`. The caller's
array is never modified: the tensor handed to the solver is always a copy or a fresh conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class ArrayKind:
    """Where an input came from: numpy or torch, and for torch its device and dtype."""

    is_numpy: bool
    device: torch.device
    dtype: torch.dtype


def as_tensor(
    name: str,
    value: object,
    *,
    ndim: int | tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    finite: bool = True,
    nonempty: bool = True,
) -> tuple[torch.Tensor, ArrayKind]:
    """Validate ``value`` and return a private floating tensor copy plus its :class:`ArrayKind`.

    Args:
        name: the argument's name, used in every error message.
        value: a numpy array or torch tensor (lists are refused: the output type would be
            ambiguous).
        ndim: required number of dimensions (an int or a tuple of allowed ones).
        dtype: the computation dtype; default float64 for numpy input and the tensor's own
            floating dtype (float32 for integer tensors) for torch input.
        device: where to compute; default the tensor's device, CPU for numpy.
        finite: refuse NaN and infinite entries.
        nonempty: refuse arrays with no entries.
    """
    if isinstance(value, np.ndarray):
        if np.iscomplexobj(value) or not (np.issubdtype(value.dtype, np.number)
                                          or value.dtype == np.bool_):
            raise TypeError(f"{name} must be a real numeric array, got dtype {value.dtype}")
        kind = ArrayKind(True, torch.device("cpu"), torch.float64)
        tensor = torch.from_numpy(np.array(value, dtype=np.float64, copy=True))
    elif isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be a real tensor, got dtype {value.dtype}")
        own = value.dtype if value.is_floating_point() else torch.float32
        kind = ArrayKind(False, value.device, own)
        tensor = value.detach().clone()
    else:
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got "
                        f"{type(value).__name__}; wrap lists with np.asarray(...)")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and tensor.ndim not in allowed:
        want = " or ".join(str(n) for n in allowed)
        raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(tensor.shape)}")
    if nonempty and tensor.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)})")
    tensor = tensor.to(dtype=dtype or kind.dtype, device=device or kind.device)
    if finite and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} contains NaN or infinite values; clean or impute them first")
    return tensor, kind


def restore(value: Any, kind: ArrayKind) -> Any:
    """Return ``value`` (a tensor, or a tuple/list/dict of them) in the caller's array type.

    Floating tensors come back in the caller's dtype (float64 for numpy) and on its device, so
    a method may compute in float64 inside and still give a float32 caller float32; integer
    and boolean tensors keep their dtype.
    """
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            value = value.to(kind.dtype)
        if kind.is_numpy:
            return value.detach().cpu().numpy()
        return value.to(kind.device)
    if isinstance(value, tuple | list):
        return type(value)(restore(v, kind) for v in value)
    if isinstance(value, dict):
        return {k: restore(v, kind) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class SolverResult:
    """What a POT-style estimator function returns (design.md §3).

    Methods subclass it to add their extras (marginal errors, a fitted scale, ...). ``solution``
    and every tensor-valued extra are in the caller's array type; ``history`` holds one record
    per outer iteration (plain floats, so a result pickles and serialises without torch).
    """

    solution: Any
    objective: float
    n_iter: int
    converged: bool
    history: tuple[dict[str, float], ...] = ()
