"""Temporarily evaluating a module without losing its submodules' own training flags."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` in eval mode for the block, then restore every submodule's own flag.

    ``module.train(previous)`` afterwards would not do: it sets one flag on every submodule,
    wiping a frozen part kept in eval mode inside a training model (a pretrained encoder, a
    batch-norm a user froze).
    """
    modes = [(submodule, submodule.training) for submodule in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for submodule, training in modes:
            submodule.training = training
