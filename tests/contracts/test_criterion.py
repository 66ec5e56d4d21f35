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


def _bad(case: str):
    """A batch that is wrong in exactly one way, named by ``case``."""
    logits, target, index = _inputs()
    logits = logits.detach()
    if case == "index_out_of_range":
        index = index + N
    elif case == "negative_index":
        index = index - N
    elif case == "float_index":
        index = index.float()
    elif case == "target_batch_mismatch":
        target = target[:-1]
    elif case == "index_batch_mismatch":
        index = index[:-1]
    elif case == "wrong_num_classes":
        logits = torch.randn(B, C + 1)
    elif case == "nan_logits":
        logits[1, 2] = float("nan")
    elif case == "inf_logits":
        logits[0, 0] = float("inf")
    elif case == "integer_logits":
        logits = torch.ones(B, C, dtype=torch.int64)
    elif case == "empty_batch":
        logits, target, index = logits[:0], target[:0], index[:0]
    elif case == "target_out_of_range":
        target = target.clone()
        target[0] = C
    elif case == "soft_target":
        target = torch.nn.functional.one_hot(target, C).float()
    elif case == "list_target":
        target = target.tolist()
    return logits, target, index


BAD_INPUT = [
    # One exception type per mistake (regzoo.core.kinds): TypeError for a wrong type or dtype,
    # ValueError for a wrong shape, range or value.
    ("index_out_of_range", ValueError, "index must lie"),
    ("negative_index", ValueError, "index must lie"),
    ("float_index", TypeError, "index must be an integer tensor"),
    ("target_batch_mismatch", ValueError, "target must share the batch size"),
    ("index_batch_mismatch", ValueError, "index must share the batch size"),
    ("wrong_num_classes", ValueError, "num_classes"),
    ("nan_logits", ValueError, "logits"),
    ("inf_logits", ValueError, "logits"),
    ("integer_logits", TypeError, "logits"),
    ("empty_batch", ValueError, "logits is empty"),
    ("target_out_of_range", ValueError, "target must lie"),
    ("soft_target", TypeError, "target must be a 1-D integer tensor"),
    ("list_target", TypeError, "target must be a torch.Tensor"),
]


def test_a_criterion_is_the_kind_protocol():
    from regzoo.core.kinds import Criterion

    for method in CRITERIA:
        if method.implemented:
            assert isinstance(method.obj(num_examples=N, num_classes=C), Criterion), method.slug


@pytest.mark.parametrize("method", IMPLEMENTED)
@pytest.mark.parametrize(("case", "error", "argument"), BAD_INPUT)
def test_bad_input_names_the_argument_and_leaves_the_state_alone(method, case, error, argument):
    criterion = method.obj(num_examples=N, num_classes=C)
    if hasattr(criterion, "set_epoch"):
        criterion.set_epoch(1)  # past any warm-up epoch, so the per-example state is in use
    before = {k: v.clone() for k, v in criterion.state_dict().items()}
    with pytest.raises(error, match=argument):
        criterion(*_bad(case))
    after = criterion.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a rejected batch changed state"


@pytest.mark.parametrize("method", IMPLEMENTED)
def test_same_seed_same_losses_and_state(method):
    def run():
        criterion = method.obj(num_examples=N, num_classes=C)
        losses = [criterion(*_inputs(seed=seed)).detach() for seed in range(3)]
        return torch.stack(losses), criterion.state_dict()

    (first, state), (again, state_again) = run(), run()
    assert torch.equal(first, again)
    assert all(torch.equal(state[k], state_again[k]) for k in state)


@pytest.mark.parametrize("method", IMPLEMENTED)
def test_moves_to_the_test_device(method, device):
    criterion = method.obj(num_examples=N, num_classes=C).to(device)
    logits, target, index = (t.to(device) for t in _inputs())
    assert criterion(logits, target, index).device.type == device.type


@pytest.mark.parametrize("method", IMPLEMENTED)
def test_a_state_dict_of_another_size_names_the_constructor_arguments(method):
    saved = method.obj(num_examples=N, num_classes=C).state_dict()
    other = method.obj(num_examples=N + 5, num_classes=C)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match=r"num_examples \(N\) and num_classes \(C\)"):
        other.load_state_dict(saved)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
