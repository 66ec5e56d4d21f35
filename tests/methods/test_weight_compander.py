"""Properties of the Weight Compander (paper §III): Ψ, initialisation, folding, decay, errors."""

import math

import pytest
import torch
from torch import nn

from regzoo.methods.weight_compander import COMPANDERS, WeightCompander, _Compand, _Shape
from regzoo.models import CNN, MLP


def _psi(a=0.7, b=0.7, name="arctan"):
    return _Compand(COMPANDERS[name], _Shape(a, b, learn=False)).double()


def test_psi_is_odd_monotone_and_bounded_by_a_pi_over_two():
    psi = _psi(0.6, 0.8)
    v = torch.linspace(-50, 50, 2001, dtype=torch.float64)
    w = psi(v)
    torch.testing.assert_close(psi(-v), -w)
    assert bool((w.diff() > 0).all())
    assert float(w.abs().max()) < 0.6 * math.pi / 2


def test_psi_derivative_is_ab_over_b_squared_plus_v_squared():
    a, b = 0.9, 0.6
    psi = _psi(a, b)
    v = torch.linspace(-3, 3, 41, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(psi(v).sum(), v)
    torch.testing.assert_close(grad, a * b / (b**2 + v.detach() ** 2))
    assert torch.autograd.gradcheck(psi, (v[:5].detach().clone().requires_grad_(),))


@pytest.mark.parametrize("name", ["arctan", "arsinh", "erf"])
def test_right_inverse_reproduces_the_initial_weights(name):
    psi = _psi(0.8, 0.5, name)
    w0 = torch.empty(30, 20, dtype=torch.float64).uniform_(-0.5, 0.5)
    torch.testing.assert_close(psi(psi.right_inverse(w0)), w0)


def test_wrapped_network_equals_the_plain_one_at_initialisation():
    torch.manual_seed(0)
    model = MLP(8, 3, hidden=(16, 16)).double()
    x = torch.randn(5, 8, dtype=torch.float64)
    before = model(x)
    WeightCompander.apply(model, a=0.7, b=0.7)
    torch.testing.assert_close(model(x), before, rtol=1e-12, atol=1e-12)


def test_only_linear_and_conv_weights_are_companded():
    torch.manual_seed(0)
    model = CNN((8, 8), 10, channels=(4,))
    handle = WeightCompander.apply(model)
    assert len(handle.layers) == 2
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert hasattr(module, "parametrizations") and "bias" not in module.parametrizations
        if isinstance(module, nn.BatchNorm2d):
            assert not hasattr(module, "parametrizations")


def test_merge_gives_plain_layers_with_identical_outputs_and_unmerge_restores():
    torch.manual_seed(1)
    model = MLP(6, 2, hidden=(8,)).double()
    handle = WeightCompander.apply(model, a=0.9, b=0.6)
    with torch.no_grad():
        for v in handle.raw_weights():
            v.mul_(3.0)
    x = torch.randn(4, 6, dtype=torch.float64)
    wrapped = model(x)
    handle.merge()
    assert type(model.body[0]) is nn.Linear and type(model.head) is nn.Linear
    torch.testing.assert_close(model(x), wrapped)
    handle.unmerge()
    torch.testing.assert_close(model(x), wrapped)
    handle.remove()
    assert type(model.head) is nn.Linear
    with pytest.raises(RuntimeError, match="removed"):
        handle.penalty()


def test_fixed_variant_decays_the_effective_weights():
    torch.manual_seed(2)
    model = MLP(4, 2, hidden=(5,)).double()
    handle = WeightCompander.apply(model, a=0.8, b=0.5)
    effective = [layer.weight for _, layer in handle.layers]
    torch.testing.assert_close(handle.penalty(), 0.5 * sum(w.square().sum() for w in effective))
    raw = list(handle.raw_weights())
    grads = torch.autograd.grad(handle.penalty(), raw)
    for v, g in zip(raw, grads):
        w = 0.8 * torch.atan(v.detach() / 0.5)
        torch.testing.assert_close(g, w * 0.8 * 0.5 / (0.25 + v.detach() ** 2))


def test_learned_variant_decays_the_raw_weights_and_never_a_or_b():
    torch.manual_seed(3)
    model = MLP(4, 2, hidden=(5,))
    handle = WeightCompander.apply(model, learn=True)
    raw = list(handle.raw_weights())
    torch.testing.assert_close(handle.penalty(), 0.5 * sum(v.square().sum() for v in raw))
    groups = handle.param_groups(5e-4, shape_lr=0.01)
    exempt = {id(p) for g in groups[:2] for p in g["params"]}
    assert [g["weight_decay"] for g in groups] == [0.0, 0.0, 5e-4]
    assert groups[1]["lr"] == 0.01 and "lr" not in groups[0]
    assert {id(p) for p in raw} | {id(p) for p in handle.shape_parameters()} == exempt
    assert all(id(p) not in exempt for p in groups[2]["params"])
    assert len(WeightCompander.apply(MLP(4, 2, hidden=(5,))).param_groups(1e-3)) == 2


def test_learned_a_and_b_get_gradients_and_stay_positive():
    torch.manual_seed(4)
    model = MLP(4, 3, hidden=(6,))
    handle = WeightCompander.apply(model, learn=True)
    assert handle.shapes_now()[0] == pytest.approx((0.5, 1.0))
    optimizer = torch.optim.SGD(handle.trainable_parameters(), lr=50.0)
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0
                   for p in handle.shape_parameters())
        optimizer.step()
    assert all(a > 0 and b > 0 for a, b in handle.shapes_now())


def test_network_sharing_uses_one_pair_for_every_layer():
    model = MLP(4, 3, hidden=(6, 6))
    handle = WeightCompander.apply(model, learn=True, share="network")
    assert len(handle.shape_parameters()) == 2
    layer_wise = WeightCompander.apply(MLP(4, 3, hidden=(6, 6)), learn=True)
    assert len(layer_wise.shape_parameters()) == 6


def test_large_a_and_b_approach_the_identity():
    psi = _psi(1e4, 1e4)
    v = torch.linspace(-1, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(psi(v), v, rtol=1e-8, atol=1e-8)


def test_state_dict_round_trip_with_the_parametrisation():
    torch.manual_seed(5)
    source = MLP(4, 2, hidden=(5,))
    WeightCompander.apply(source, learn=True)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01)
    target = MLP(4, 2, hidden=(5,))
    WeightCompander.apply(target, learn=True)
    target.load_state_dict(source.state_dict())
    x = torch.randn(3, 4)
    torch.testing.assert_close(target(x), source(x))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"a": 0.0}, "a must"), ({"b": -1.0}, "b must"), ({"compander": "tanh"}, "compander"),
     ({"share": "block"}, "share")],
)
def test_bad_hyperparameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightCompander.apply(MLP(4, 2, hidden=(5,)), **kwargs)


def test_weights_beyond_the_bound_are_rejected_and_the_model_left_plain():
    model = MLP(4, 2, hidden=(5,))
    with torch.no_grad():
        model.head.weight[0, 0] = 2.0
    with pytest.raises(ValueError, match="raise a"):
        WeightCompander.apply(model, a=0.5)
    assert type(model.body[0]) is nn.Linear and type(model.head) is nn.Linear


def test_a_model_without_eligible_layers_or_already_companded_is_rejected():
    with pytest.raises(ValueError, match="nothing to compand"):
        WeightCompander.apply(nn.Sequential(nn.ReLU()))
    model = MLP(4, 2, hidden=(5,))
    WeightCompander.apply(model)
    with pytest.raises(ValueError, match="already parametrized"):
        WeightCompander.apply(model)


@pytest.mark.parametrize("learn", [False, True])
def test_a_float64_model_gets_float64_shape_parameters_and_an_exact_round_trip(learn):
    model = MLP(8, 3, hidden=(16,)).double()
    before = [m.weight.detach().clone() for m in model.modules() if isinstance(m, nn.Linear)]
    handle = WeightCompander.apply(model, learn=learn)
    a, b = handle.shapes[0]()
    assert a.dtype == b.dtype == torch.float64
    after = [m.weight.detach() for m in model.modules() if isinstance(m, nn.Linear)]
    for w0, w1 in zip(before, after):  # W = a·g(V/b) with V = b·g⁻¹(W₀/a): W₀ back in float64
        torch.testing.assert_close(w1, w0, rtol=1e-12, atol=1e-12)
