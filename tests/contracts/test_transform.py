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


@pytest.mark.parametrize("method", TRANSFORMS)
def test_the_handle_is_the_kind_protocol(method):
    import inspect

    from regzoo.core.kinds import Transform, TransformHandle

    # nn.Module has an apply() too: the transform's must be a classmethod taking the model.
    assert isinstance(method.obj, Transform)
    assert isinstance(inspect.getattr_static(method.obj, "apply"), classmethod)
    assert isinstance(method.obj.apply(_model()), TransformHandle)


@pytest.mark.parametrize("method", TRANSFORMS)
def test_same_seed_same_transformed_model(method):
    def applied():
        model = _model()
        torch.manual_seed(1)  # a transform may draw (random masks, LoRA's A)
        method.obj.apply(model)
        return model.state_dict()

    first, again = applied(), applied()
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)


@pytest.mark.parametrize("method", TRANSFORMS)
def test_a_bad_option_is_refused_and_leaves_the_model_untouched(method):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    with pytest.raises((ValueError, TypeError), match=r"not_an_option|unexpected keyword"):
        method.obj.apply(model, not_an_option=1)
    assert [type(m) for m in model.modules()] == types
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("method", TRANSFORMS)
def test_state_dict_round_trip_of_the_transformed_model(method):
    model = _model()
    torch.manual_seed(1)
    handle = method.obj.apply(model)
    loss = model(torch.randn(4, 16, dtype=torch.float64)).square().mean() + handle.penalty()
    loss.backward()
    with torch.no_grad():
        for p in handle.trainable_parameters():
            p.add_(0.01 * p.grad if p.grad is not None else 0.0)  # state a fresh copy lacks
    fresh = _model()
    torch.manual_seed(2)
    method.obj.apply(fresh)
    fresh.load_state_dict(model.state_dict())
    x = torch.randn(3, 16, dtype=torch.float64)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("method", TRANSFORMS)
def test_follows_the_model_to_the_test_device(method, device):
    model = _model().to(device)
    handle = method.obj.apply(model)
    assert all(p.device.type == device.type for p in handle.trainable_parameters())
    assert model(torch.randn(2, 16, dtype=torch.float64, device=device)).device.type == (
        device.type)
