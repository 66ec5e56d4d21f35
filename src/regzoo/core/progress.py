"""One progress-bar convention for training loops, reproductions and long solvers.

A bar is shown on a terminal and hidden elsewhere (``progress=None``), or forced on or off with
``True``/``False``; it never shows on a non-main distributed rank. It refreshes at most once a
second and disappears when done, so logs stay readable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress_disabled(progress: bool | None, is_main: bool = True) -> bool | None:
    """The ``disable`` argument of tqdm: off on other ranks, auto (``None``) by default."""
    if not is_main:
        return True
    return None if progress is None else not progress


def progress_bar(iterable: Iterable[Any] | None = None, *, desc: str, total: int | None = None,
                 progress: bool | None = None, unit: str = "it") -> tqdm:
    """A tqdm bar over ``iterable`` (or ``total`` manual updates) following the convention."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=progress_disabled(progress),
                mininterval=1.0, leave=False, dynamic_ncols=True)
