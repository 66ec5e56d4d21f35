"""Contract of every implemented ``transform`` (design.md §3), parametrised over the registry.

A transform is applied as ``cls.apply(model)`` with its defaults and returns a handle with
``merge``, ``unmerge``, ``remove``, ``trainable_parameters`` and ``penalty``.
"""

import pytest
import torch
from torch import nn

from regzoo.models import MLP
from regzoo.registry import cards

TRANSFORMS = [pytest.param(c, id=c.slug) if c.implemented else
              pytest.param(c, id=c.slug, marks=pytest.mark.skip(reason="planned"))
              for c in cards(kind="transform")]


def _model():
    torch.manual_seed(0)
    return MLP(16, 10, hidden=(32,)).double()


@pytest.mark.parametrize("method", TRANSFORMS)
def test_applying_with_default_settings_keeps_the_outputs(method):
    model = _model()
    x = torch.randn(4, 16, dtype=torch.float64)
    before = model(x)
    method.obj.apply(model)
    torch.testing.assert_close(model(x), before, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("method", TRANSFORMS)
def test_merge_unmerge_and_remove_keep_outputs_and_restore_module_types(method):
    model = _model()
    handle = method.obj.apply(model)
    x = torch.randn(4, 16, dtype=torch.float64)
    wrapped = model(x)
    handle.merge()
    torch.testing.assert_close(model(x), wrapped)
    handle.unmerge()
    torch.testing.assert_close(model(x), wrapped)
    handle.remove()
    assert all(type(m) in (nn.Linear, nn.ReLU, nn.Sequential, MLP) for m in model.modules())
    torch.testing.assert_close(model(x), wrapped)


@pytest.mark.parametrize("method", TRANSFORMS)
def test_trainable_parameters_get_gradients_and_penalty_is_a_finite_scalar(method):
    model = _model()
    handle = method.obj.apply(model)
    loss = model(torch.randn(4, 16, dtype=torch.float64)).square().mean() + handle.penalty()
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None for p in handle.trainable_parameters())
