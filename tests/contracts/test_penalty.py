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


def _dr_tune(dtype, seed):
    """DR-Tune on a small MLP encoder after warm-up; the DR term's gradient reaches the head."""
    import copy

    from regzoo.methods.dr_tune import DRTune

    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 5)).to(dtype)
    head = nn.Linear(5, 3).to(dtype)
    penalty = DRTune(encoder, copy.deepcopy(encoder), head, 3, queue_size=8).to(dtype)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 4, generator=g, dtype=dtype)
    y = torch.arange(8) % 3
    penalty.warm_up([(x[:4], y[:4]), (x[4:], y[4:])])
    features = encoder(x[:4])
    bad = [((features, x[:4], y[:4] + 3), ValueError, r"target must lie in \[0, 3\)"),
           ((features[:, :4], x[:4], y[:4]), ValueError, r"features must have shape \(B, 5\)"),
           ((encoder(torch.cat([x, x[:1]])), torch.cat([x, x[:1]]), torch.arange(9) % 3),
            ValueError, "queue_size K=8 is smaller than the batch B=9")]
    return penalty, (features, x[:4], y[:4]), head, bad


def _vgnn_ehr(dtype, seed):
    """VGNN's KL on the node states of a small VGNN (evaluation mode: z = μ)."""
    from regzoo.methods.vgnn_ehr import VGNN, VariationalRegularization

    torch.manual_seed(seed)
    model = VGNN(12, dim=4).to(dtype).eval()
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 12, (3, 5), generator=g)
    mask = torch.rand(3, 5, generator=g) < 0.7
    encoding = model.encode(codes, mask)
    mu, logvar = encoding.mu[:, :-1], encoding.logvar[:, :-1]
    bad = [((mu, logvar[:, :2], mask), ValueError, "logvar must have the shape of mu"),
           ((mu, logvar, mask[:, :2]), ValueError, r"weight must have shape \(batch, nodes\)"),
           ((mu, logvar, -mask.to(dtype)), ValueError, "weight must be non-negative")]
    return VariationalRegularization(), (mu, logvar, mask), model, bad


def _nde_solver_reg(dtype, seed):
    """ERNODE on the step trace of a small MLP neural ODE solved by regzoo's dopri5."""
    from regzoo.methods.nde_solver_reg import SolverHeuristicsPenalty, StepTrace, solve

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)
    g = torch.Generator().manual_seed(seed)
    z0 = torch.randn(5, 3, generator=g, dtype=dtype)
    trace = solve(lambda t, z: net(z), z0, torch.tensor([0.0, 1.0]), rtol=1e-5, atol=1e-5).trace
    broken = StepTrace(trace.t, trace.h[:1], trace.error_ratio, trace.stiffness, trace.accepted,
                       trace.nfe)
    bad = [((z0,), TypeError, "trace must be a StepTrace"),
           ((broken,), ValueError, "trace.h must have one entry per step")]
    return SolverHeuristicsPenalty("error"), (trace,), net, bad


def _gigatok(dtype, seed):
    """GigaTok's semantic regulariser on a linear "decoder" with a frozen linear teacher."""
    from regzoo.methods.gigatok import SemanticRegularizer

    torch.manual_seed(seed)
    decoder = nn.Linear(3, 8).to(dtype)
    teacher = nn.Linear(3, 6).to(dtype)
    penalty = SemanticRegularizer(8, 6, teacher=teacher).to(dtype)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 3, generator=g, dtype=dtype)
    hidden = decoder(x)
    bad = [((hidden[..., :5], x), ValueError, "hidden has width 5 but student_dim is 8"),
           ((hidden[:, :6], x), ValueError, "not a square grid"),
           ((hidden, x[:1]), ValueError, "hidden has batch 2")]
    return penalty, (hidden, x), decoder, bad


EXAMPLES = {"hessian_alignment": _hessian_alignment, "soft_equivariance": _soft_equivariance,
            "dr_tune": _dr_tune, "vgnn_ehr": _vgnn_ehr, "nde_solver_reg": _nde_solver_reg,
            "gigatok": _gigatok}


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
