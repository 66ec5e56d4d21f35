"""Contract of every implemented ``criterion`` (design.md §3), parametrised over the registry.

A criterion is built as ``cls(num_examples=N, num_classes=C)`` and called as
``forward(logits, target, index)``; these checks apply to each one the moment it registers.
"""

import pytest
import torch

from regzoo.registry import cards

CRITERIA = [c for c in cards(kind="criterion")]
IMPLEMENTED = [pytest.param(c, id=c.slug) if c.implemented else
               pytest.param(c, id=c.slug, marks=pytest.mark.skip(reason="planned"))
               for c in CRITERIA]
N, C, B = 20, 4, 6


def _inputs(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, C, generator=g, dtype=dtype, requires_grad=True)
    return logits, torch.randint(0, C, (B,), generator=g), torch.randperm(N, generator=g)[:B]


@pytest.mark.parametrize("method", IMPLEMENTED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_returns_a_finite_scalar_of_the_logits_dtype_with_gradient(method, dtype):
    criterion = method.obj(num_examples=N, num_classes=C).to(dtype)
    logits, target, index = _inputs(dtype)
    loss = criterion(logits, target, index)
    assert loss.ndim == 0 and loss.dtype == dtype and torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())


@pytest.mark.parametrize("method", IMPLEMENTED)
def test_state_dict_round_trip_restores_the_per_example_state(method):
    criterion = method.obj(num_examples=N, num_classes=C)
    for seed in range(3):
        criterion(*_inputs(seed=seed))
    restored = method.obj(num_examples=N, num_classes=C)
    restored.load_state_dict(criterion.state_dict())
    logits, target, index = _inputs(seed=9)
    assert torch.equal(criterion(logits, target, index), restored(logits, target, index))


@pytest.mark.parametrize("method", IMPLEMENTED)
@pytest.mark.parametrize("case", ["nan", "empty", "index_range", "batch_mismatch"])
def test_bad_input_raises_a_clear_error(method, case):
    criterion = method.obj(num_examples=N, num_classes=C)
    logits, target, index = _inputs()
    logits = logits.detach()
    if case == "nan":
        logits[0, 0] = float("nan")
    elif case == "empty":
        logits, target, index = logits[:0], target[:0], index[:0]
    elif case == "index_range":
        index = index + N
    else:
        target = target[:-1]
    with pytest.raises((ValueError, TypeError)):
        criterion(logits, target, index)


@pytest.mark.parametrize("method", IMPLEMENTED)
def test_moves_to_the_test_device(method, device):
    criterion = method.obj(num_examples=N, num_classes=C).to(device)
    logits, target, index = (t.to(device) for t in _inputs())
    assert criterion(logits, target, index).device.type == device.type
