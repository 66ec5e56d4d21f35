"""Atomic, safe checkpoints: tensors and plain types only, written through a rename.

A checkpoint is written to a temporary file in the same folder, then renamed, so a run killed
while writing leaves the previous checkpoint intact. It may hold tensors, numbers, strings,
``None``, ``torch.Size``/dtype/device and lists, tuples and dicts of these; anything else is
refused when saving, and loading uses ``torch.load(..., weights_only=True)``, so resuming from a
run folder someone shared cannot execute code pickled into it.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


@contextmanager
def _atomic_target(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the final file gets the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    with _atomic_target(path) as tmp:
        Path(tmp).write_bytes(data)


_PLAIN_LEAVES = (torch.Tensor, torch.Size, torch.dtype, torch.device, bool, int, float, complex,
                 str, bytes, type(None))


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds (or would hold) a pickled Python object besides tensors and plain data."""


def check_plain(value: Any, where: str = "state") -> None:
    """Raise :class:`UnsafeCheckpointError` naming the first entry that is not plain data."""
    if isinstance(value, _PLAIN_LEAVES):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise UnsafeCheckpointError(f"{where} has a key of type {type(key).__name__}; "
                                            "checkpoint dicts are keyed by str or int")
            check_plain(item, f"{where}[{key!r}]")
        return
    raise UnsafeCheckpointError(
        f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a checkpoint holds "
        "tensors, numbers, strings, None and lists/tuples/dicts of these, so that it loads with "
        "weights_only=True. Make the object's state_dict() return plain data."
    )


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """``torch.save(state)`` to ``path`` atomically, after :func:`check_plain` accepts it."""
    check_plain(state)
    with _atomic_target(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, with ``weights_only=True``.

    Raises:
        UnsafeCheckpointError: the file holds a pickled Python object (written by something else,
            or by regzoo before 2026-12 when RNG states were NumPy arrays); it is not executed.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f"refusing to load the checkpoint {os.fspath(path)!r}: it holds a pickled Python "
            "object besides tensors and plain data, which loading could execute. Delete it (and "
            "re-run without --resume) unless you wrote it and trust it; a trusted file loads with "
            f"torch.load(path, weights_only=False). Detail: {str(error).splitlines()[0]}"
        ) from error
