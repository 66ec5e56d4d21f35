"""Contract of every implemented ``penalty``, parametrised over the registry.

A penalty is an ``nn.Module`` whose call returns a scalar added to the loss, with its traits
(``needs_higher_order_grad``, ``batch_coupled``) declared once, as class attributes
(:func:`regzoo.core.kinds.penalty_traits`). Call signatures differ (per-domain features and
targets, or nothing but the model's own weights), so each penalty gives a canonical example in
``EXAMPLES``; a newly registered penalty fails here until it has one.
"""

import pytest
import torch
from torch import nn

from regzoo.core.kinds import Penalty, penalty_traits
from regzoo.registry import cards

PENALTIES = [pytest.param(c, id=c.slug) if c.implemented else
             pytest.param(c, id=c.slug, marks=pytest.mark.skip(reason="planned"))
             for c in cards(kind="penalty")]


def _hessian_alignment(dtype, seed):
    """Hutchinson on a linear head over two domains (exercises the probes' generator)."""
    from regzoo.methods.hessian_alignment import HessianAlignment

    torch.manual_seed(seed)
    head = nn.Linear(4, 3).to(dtype)
    penalty = HessianAlignment(head, "hutchinson", probes=4,
                               generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    features = [torch.randn(6, 4, generator=g, dtype=dtype) for _ in range(2)]
    targets = [torch.randint(0, 3, (6,), generator=g) for _ in range(2)]
    bad = [((features[:1], targets), ValueError, "features has 1 domains"),
           ((features, [targets[0][:3], targets[1]]), ValueError, "targets\\[0\\] has 3")]
    return penalty, (features, targets), head, bad


def _soft_equivariance(dtype, seed):
    """PER with auto strengths on the modified-inertia tensor network of the reproduction."""
    from regzoo.repro.soft_equivariance import SoftEquivarianceConfig, build_inertia_arm

    torch.manual_seed(seed)
    model, penalty = build_inertia_arm(SoftEquivarianceConfig.tiny(), "per_auto")
    model.to(dtype)
    return penalty, (), model, []


EXAMPLES = {"hessian_alignment": _hessian_alignment, "soft_equivariance": _soft_equivariance}


def _example(card, dtype=torch.float32, seed=0):
    if card.slug not in EXAMPLES:
        pytest.fail(f"penalty {card.slug!r} has no canonical example in {__name__}.EXAMPLES")
    return EXAMPLES[card.slug](dtype, seed)


@pytest.mark.parametrize("card", PENALTIES)
def test_traits_are_declared_once_as_class_attributes(card):
    traits = penalty_traits(card.obj)
    assert isinstance(traits.needs_higher_order_grad, bool)
    assert not {"needs_higher_order_grad", "batch_coupled"} & set(card.extras), (
        "declare the traits on the class only, not again in @register")
    penalty, *_ = _example(card)
    assert isinstance(penalty, card.obj) and isinstance(penalty, Penalty)


@pytest.mark.parametrize("card", PENALTIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_finite_scalar_of_the_model_dtype_whose_gradient_reaches_the_model(card, dtype):
    penalty, args, model, _ = _example(card, dtype)
    value = penalty(*args)
    assert value.ndim == 0 and value.dtype == dtype and torch.isfinite(value)
    value.backward()
    # A penalty may act on some layers only (PER regularises the linear maps, not the gates).
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert any(bool(g.abs().sum() > 0) for g in grads)


@pytest.mark.parametrize("card", PENALTIES)
def test_same_seed_same_value(card):
    first = _example(card, seed=3)
    again = _example(card, seed=3)
    assert torch.equal(first[0](*first[1]), again[0](*again[1]))


@pytest.mark.parametrize("card", PENALTIES)
def test_state_dict_round_trip(card):
    penalty, args, *_ = _example(card, seed=1)
    fresh, *_ = _example(card, seed=1)
    if hasattr(penalty, "set_epoch"):  # let a stateful penalty evolve (PER adjusts at epoch 6)
        for epoch in range(8):
            penalty(*args)
            penalty.set_epoch(epoch)
        assert not all(torch.equal(a, b) for a, b in zip(penalty.state_dict().values(),
                                                          fresh.state_dict().values()))
    fresh.load_state_dict(penalty.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(penalty.state_dict().values(),
                                                  fresh.state_dict().values()))
    assert torch.equal(penalty(*args), fresh(*args))


@pytest.mark.parametrize("card", PENALTIES)
def test_bad_input_is_refused_with_the_state_unchanged(card):
    penalty, _, _, bad = _example(card)
    before = {k: v.clone() for k, v in penalty.state_dict().items()}
    for args, error, match in bad:
        with pytest.raises(error, match=match):
            penalty(*args)
    assert all(torch.equal(before[k], v) for k, v in penalty.state_dict().items())


@pytest.mark.parametrize("card", PENALTIES)
def test_follows_the_model_to_the_test_device(card, device):
    penalty, args, model, _ = _example(card)
    model.to(device)
    penalty.to(device)
    moved = [[t.to(device) for t in a] if isinstance(a, list) else a.to(device) for a in args]
    assert penalty(*moved).device.type == device.type
