"""Properties of PER: exact projectors, exact equivariance after projection, the penalty, λ rule."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from regzoo.methods.soft_equivariance import (
    O2,
    O3,
    SO2,
    SO3,
    MatrixGroup,
    PermutationLayerProjector,
    SoftEquivariance,
    TensorLayerProjector,
    TensorRep,
    adjust_strengths,
    equivariant_projector,
    make_hard_equivariant,
    modified_inertia,
    tensor_lie,
    tensor_power,
)
from regzoo.registry import card


def _order_projector(group, a, b):
    return equivariant_projector([tensor_lie(x, a) for x in group.lie],
                                 [tensor_lie(x, b) for x in group.lie],
                                 [tensor_power(h, a) for h in group.discrete],
                                 [tensor_power(h, b) for h in group.discrete])


def test_registered_as_a_penalty():
    c = card("soft_equivariance")
    assert c.kind == "penalty" and c.obj is SoftEquivariance


# Hand-derived dimensions of Hom_G(T_a, T_b): O(3) commutant of T1 is multiples of I, inversion
# kills odd-to-even maps, Hom(T2, T2) = span{identity, transpose, trace·I}; SO(3) adds the
# Levi-Civita maps T1 ↔ T2; O(2)_z on T1 = R² ⊕ R gives a·I_2 ⊕ b (SO(2) adds the rotation J).
@pytest.mark.parametrize(("group", "a", "b", "dim"), [
    (O3(), 1, 1, 1), (O3(), 1, 2, 0), (O3(), 0, 2, 1), (O3(), 2, 2, 3), (O3(), 0, 1, 0),
    (SO3(), 1, 2, 1), (O2(2), 1, 1, 2), (SO2(2), 1, 1, 3), (O2(2), 0, 1, 1), (O2(0), 0, 0, 1),
])
def test_projector_is_symmetric_idempotent_with_the_known_rank(group, a, b, dim):
    p = _order_projector(group, a, b)
    np.testing.assert_allclose(p @ p, p, atol=1e-10)
    np.testing.assert_allclose(p, p.T, atol=1e-12)
    eig = np.linalg.eigvalsh(p)
    assert np.all(np.minimum(np.abs(eig), np.abs(eig - 1)) < 1e-9)
    assert round(float(np.trace(p))) == dim


def _layer(rep_in, rep_out, group, seed=0):
    proj = TensorLayerProjector(rep_in, rep_out, group)
    w = torch.randn(rep_out.dim, rep_in.dim, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    return proj, w


def test_layer_projector_is_an_orthogonal_projector_on_vec_w():
    proj, _ = _layer(TensorRep((2, 2, 1)), TensorRep((3, 2, 1)), O2(2))
    dense = proj.matrix.to_dense()
    torch.testing.assert_close(dense @ dense, dense, atol=1e-12, rtol=0)
    torch.testing.assert_close(dense, dense.T, atol=1e-14, rtol=0)


@pytest.mark.parametrize("group", [O3(), O2(2), O2(0), SO2(1)], ids=lambda g: g.name)
def test_projected_layer_is_exactly_equivariant_and_random_layer_is_not(group):
    rep_in, rep_out = TensorRep((2, 3, 2)), TensorRep((3, 2, 2))
    proj, w = _layer(rep_in, rep_out, group)
    pw = proj.project_weight(w)
    rng = np.random.default_rng(1)
    for _ in range(3):
        g = group.sample(rng)
        a, b = torch.from_numpy(rep_out.rho(g)), torch.from_numpy(rep_in.rho(g))
        x = torch.randn(5, rep_in.dim, dtype=torch.float64)
        torch.testing.assert_close(x @ b.T @ pw.T, x @ pw.T @ a.T, rtol=1e-10, atol=1e-10)
        assert float((x @ b.T @ w.T - x @ w.T @ a.T).abs().max()) > 1e-2
    pb = proj.project_bias(torch.randn(rep_out.dim, dtype=torch.float64))
    torch.testing.assert_close(a @ pb, pb, rtol=1e-10, atol=1e-10)


def test_subgroup_projector_contains_the_group_projector_so_its_penalty_is_smaller():
    rep = TensorRep((2, 2, 2))
    big, w = _layer(rep, rep, O3())
    small, _ = _layer(rep, rep, O2(2))
    torch.testing.assert_close(small.project_weight(big.project_weight(w)),
                               big.project_weight(w), atol=1e-12, rtol=0)
    layer = nn.Linear(rep.dim, rep.dim).double()
    reg = SoftEquivariance([layer], {"O3": [big], "O2z": [small]}, {"O3": 1.0, "O2z": 1.0})
    values = reg.values()
    assert float(values["O2z"].detach()) < float(values["O3"].detach())


def test_reynolds_and_null_space_projectors_agree_for_a_finite_group():
    # C4 acting on 4 points by cycling (input) and on 2 points by parity (output).
    cyc, par = np.array([[1, 2, 3, 0]]), np.array([[1, 0]])
    reyn = PermutationLayerProjector(cyc, par)
    perm = lambda p: np.eye(len(p))[:, p]  # noqa: E731 (ρ(h) e_j = e_{π(j)})
    null = equivariant_projector([], [], [perm(cyc[0])], [perm(par[0])])
    dense = reyn.matrices()[0].to_dense().numpy()
    np.testing.assert_allclose(dense, null, atol=1e-10)
    assert reyn.order == 4
    w = torch.randn(2, 4, dtype=torch.float64)
    np.testing.assert_allclose(reyn.project_weight(w).reshape(-1).numpy(),
                               null @ w.reshape(-1).numpy(), atol=1e-12)


def test_reynolds_average_matches_haar_monte_carlo_for_o2():
    rep_in, rep_out = TensorRep((0, 1)), TensorRep((0, 0, 1))
    proj, w = _layer(rep_in, rep_out, O2(2))
    rng = np.random.default_rng(0)
    acc = torch.zeros_like(w)
    n = 4000
    for _ in range(n):  # Haar on O(2)_z: uniform angle, reflection with probability 1/2
        theta = rng.uniform(0, 2 * np.pi)
        g = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0],
                      [0, 0, 1.0]])
        if rng.random() < 0.5:
            g = g @ np.diag([1.0, -1.0, 1.0])
        a, b = torch.from_numpy(rep_out.rho(g)), torch.from_numpy(rep_in.rho(g))
        acc += a @ w @ b.T
    torch.testing.assert_close(acc / n, proj.project_weight(w), atol=0.15, rtol=0)


def _tiny_net():
    torch.manual_seed(0)
    reps = [TensorRep((1, 2)), TensorRep((2, 2, 1)), TensorRep((0, 0, 1))]
    layers = [nn.Linear(reps[0].dim, reps[1].dim).double(),
              nn.Linear(reps[1].dim, reps[2].dim).double()]
    groups = {"O3": O3(), "O2z": O2(2), "O2x": O2(0)}
    projectors = {n: [TensorLayerProjector(a, b, g) for a, b in itertools.pairwise(reps)]
                  for n, g in groups.items()}
    return layers, projectors, reps


def test_penalty_is_the_sum_of_weighted_squared_distances_and_its_gradient_is_i_minus_p():
    layers, projectors, _ = _tiny_net()
    reg = SoftEquivariance(layers, projectors, {"O3": 0.5, "O2z": 2.0, "O2x": 3.0})
    values = reg.values()
    manual = 0.0
    for name, lam in reg.strength().items():
        for proj, layer in zip(projectors[name], layers):
            manual += lam * 0.5 * ((layer.weight - proj.project_weight(layer.weight)).square()
                                   .sum() + (layer.bias - proj.project_bias(layer.bias))
                                   .square().sum())
    torch.testing.assert_close(reg().detach(), manual.detach(), rtol=1e-10, atol=1e-10)
    assert set(values) == {"O3", "O2z", "O2x"}
    grad = torch.autograd.grad(values["O2z"], layers[0].weight)[0]
    w = layers[0].weight.detach()
    torch.testing.assert_close(grad, w - projectors["O2z"][0].project_weight(w), rtol=1e-10,
                               atol=1e-12)


def test_penalty_is_zero_on_projected_weights_and_the_projected_net_is_equivariant():
    layers, projectors, reps = _tiny_net()
    reg = SoftEquivariance(layers, projectors, {"O3": 0.0, "O2z": 1.0, "O2x": 1.0})
    reg.project_("O2z")
    values = {n: float(v.detach()) for n, v in reg.values().items()}
    assert values["O2z"] < 1e-24
    assert values["O2x"] > 1e-3

    def net(x):  # tanh on the (scalar-free) hidden layer would break equivariance: keep linear
        return layers[1](layers[0](x))

    rng = np.random.default_rng(3)
    x = torch.randn(7, reps[0].dim, dtype=torch.float64)
    g = O2(2).sample(rng)
    a, b = torch.from_numpy(reps[2].rho(g)), torch.from_numpy(reps[0].rho(g))
    torch.testing.assert_close(net(x @ b.T), net(x) @ a.T, rtol=1e-10, atol=1e-10)


def test_hard_equivariant_parametrisation_stays_in_the_subspace_during_training():
    layers, projectors, _ = _tiny_net()
    make_hard_equivariant(layers, projectors["O3"])
    reg = SoftEquivariance(layers, projectors, {"O3": 1.0, "O2z": 1.0, "O2x": 1.0})
    opt = torch.optim.Adam([p for layer in layers for p in layer.parameters()], lr=0.1)
    for _ in range(3):
        loss = layers[1](layers[0](torch.randn(4, layers[0].in_features,
                                               dtype=torch.float64))).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(float(v.detach()) < 1e-20 for v in reg.values().values())


def test_strength_rule_on_the_specs_example():
    new = adjust_strengths(torch.tensor([5.0, 5.0, 5.0, 0.0]),
                           torch.tensor([1.0, 4.0, 9.0, 0.1]), power=2.0)
    torch.testing.assert_close(new, torch.tensor([5.0, 5.0 / 16, 5.0 / 81, 0.0]))
    assert torch.equal(adjust_strengths(torch.zeros(2), torch.ones(2)), torch.zeros(2))
    torch.testing.assert_close(adjust_strengths(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0])),
                               torch.tensor([1.0, 1.0]))


def test_auto_rule_records_after_warmup_keeps_the_minimum_vector_and_adjusts_once():
    layers, projectors, _ = _tiny_net()
    reg = SoftEquivariance(layers, projectors, {"O3": 0.0, "O2z": 10.0, "O2x": 10.0},
                           adjust_at=10, window=5, warmup=2)
    records = [torch.tensor([9.0, 1.0, 2.0])] * 2 + [torch.tensor([9.0, 1.0, 3.0]),
                                                     torch.tensor([9.0, 2.0, 4.0])]
    for r in records:
        reg.observe(r)
    # [9, 2, 4] improves no entry of [9, 1, 3]: the whole vector stays.
    torch.testing.assert_close(reg.min_record, torch.tensor([9.0, 1.0, 3.0], dtype=torch.float64))
    reg.adjust()
    torch.testing.assert_close(reg.strengths, torch.tensor([0.0, 10.0, 10.0 / 9],
                                                           dtype=torch.float64))
    before = reg.strengths.clone()
    reg.set_epoch(10)  # already adjusted: nothing changes
    assert torch.equal(reg.strengths, before)
    # state travels with the state dict
    other = SoftEquivariance(layers, projectors, {"O3": 0.0, "O2z": 10.0, "O2x": 10.0},
                             adjust_at=10, window=5, warmup=2)
    other.load_state_dict(reg.state_dict())
    assert torch.equal(other.strengths, reg.strengths) and bool(other.adjusted)


def test_strengths_move_towards_the_symmetry_the_data_obeys():
    # Linear regression T1 → T1 whose true map is O(2)_z- but not O(2)_x-equivariant.
    torch.manual_seed(0)
    rep = TensorRep((0, 1))
    layer = nn.Linear(3, 3).double()
    projectors = {"O3": [TensorLayerProjector(rep, rep, O3())],
                  "O2z": [TensorLayerProjector(rep, rep, O2(2))],
                  "O2x": [TensorLayerProjector(rep, rep, O2(0))]}
    reg = SoftEquivariance([layer], projectors, adjust_at=60, window=20, warmup=5)
    truth = torch.diag(torch.tensor([1.0, 1.0, 3.0], dtype=torch.float64))
    x = torch.randn(256, 3, dtype=torch.float64)
    y = x @ truth.T
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for epoch in range(80):
        reg.set_epoch(epoch)
        loss = (layer(x) - y).square().mean() + 1e-3 * reg()
        opt.zero_grad()
        loss.backward()
        opt.step()
    lam = reg.strength()
    assert lam["O3"] == 0.0 and lam["O2z"] == 100.0
    assert lam["O2x"] < 1e-2 * lam["O2z"]


def test_permutation_projector_on_d4_digits_layers_is_exact():
    from regzoo.repro.soft_equivariance import d4_apply, d4_net, d4_pixel_generators, d4_projectors

    torch.manual_seed(0)
    net = d4_net(2).double()
    projs = d4_projectors(2)
    linears = [m for m in net if isinstance(m, nn.Linear)]
    reg = SoftEquivariance(linears, projs, {n: 1.0 for n in projs})
    reg.project_("hflip")
    x = torch.rand(5, 64, dtype=torch.float64)
    flip = d4_pixel_generators()["hflip"]
    torch.testing.assert_close(net(d4_apply(x, flip)), net(x), rtol=1e-10, atol=1e-10)
    with torch.no_grad():
        broken = float((net(d4_apply(x, d4_pixel_generators()["vflip"])) - net(x)).abs().max())
    assert broken > 1e-6
    for p in projs["C4"]:
        pw = p.matrices()[0].to_dense()
        torch.testing.assert_close(pw @ pw, pw, atol=1e-12, rtol=0)
        torch.testing.assert_close(pw, pw.T)


def test_modified_inertia_is_o2z_equivariant_but_not_o3_equivariant():
    x, y = modified_inertia(64, seed=1, dtype=torch.float64)
    rep_in, rep_out = TensorRep((5, 5)), TensorRep((0, 0, 1))
    rng = np.random.default_rng(0)

    def gap(group):
        g = group.sample(rng)
        xg = x @ torch.from_numpy(rep_in.rho(g)).T
        _, yg = _inertia_of(xg)
        return float((yg - y @ torch.from_numpy(rep_out.rho(g)).T).abs().max())

    assert gap(O2(2)) < 1e-9
    assert gap(O3()) > 1e-2


def _inertia_of(x, noise=0.3):
    """The modified-inertia target recomputed from given inputs (same formula as the data)."""
    k = 5
    m, r = x[:, :k], x[:, k:].reshape(-1, k, 3)
    eye = torch.eye(3, dtype=x.dtype)
    inertia = (m[:, :, None, None] * ((r * r).sum(-1)[..., None, None] * eye
                                      - r[..., :, None] * r[..., None, :])).sum(1)
    g = eye[2]
    y = inertia + noise * (inertia @ g)[:, :, None] * g[None, None, :]
    return x, y.reshape(-1, 9)


def test_modified_inertia_matches_its_formula_and_is_deterministic():
    x, y = modified_inertia(16, seed=4, dtype=torch.float64)
    torch.testing.assert_close(_inertia_of(x)[1], y)
    first, again, other = (modified_inertia(16, seed=s)[1] for s in (4, 4, 5))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert bool((x[:, :5] > 0).all())


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: TensorRep((2, -1)), ValueError, "multiplicities"),
    (lambda: O2(axis=3), ValueError, "axis"),
    (lambda: MatrixGroup("bad", 3, (np.eye(2),)), ValueError, r"lie\[0\]"),
    (lambda: PermutationLayerProjector([[0, 0, 1]], [[0]]), ValueError, "not a permutation"),
    (lambda: PermutationLayerProjector([[1, 0]], [[0], [0]]), ValueError, "same generators"),
    (lambda: adjust_strengths(torch.ones(2), torch.tensor([1.0, -1.0])), ValueError,
     "non-negative"),
    (lambda: modified_inertia(0), ValueError, "n must be"),
])
def test_bad_constructor_input_raises_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_bad_penalty_configuration_raises_a_clear_error():
    layers, projectors, _ = _tiny_net()
    with pytest.raises(ValueError, match="give one per layer"):
        SoftEquivariance(layers, {"O3": projectors["O3"][:1]})
    with pytest.raises(ValueError, match="does not fit layers"):
        SoftEquivariance(layers[::-1], projectors)
    with pytest.raises(ValueError, match="strengths must give one value per type"):
        SoftEquivariance(layers, projectors, {"O3": 1.0})
    with pytest.raises(ValueError, match=r"strengths\['O2z'\] must lie"):
        SoftEquivariance(layers, projectors, {"O3": 1.0, "O2z": -1.0, "O2x": 1.0})
    with pytest.raises(ValueError, match="warmup"):
        SoftEquivariance(layers, projectors, adjust_at=10, window=5, warmup=5)
    with pytest.raises(TypeError, match=r"2-d \.weight"):
        SoftEquivariance([nn.ReLU()], {"O3": [projectors["O3"][0]]})
    with pytest.raises(ValueError, match="weight must have shape"):
        projectors["O3"][0].project_weight(torch.zeros(2, 2))
    reg = SoftEquivariance(layers, projectors)
    with pytest.raises(ValueError, match="name must be one of"):
        reg.project_("SO5")


def test_moves_to_the_test_device_and_follows_the_weights_dtype(device):
    layers, projectors, _ = _tiny_net()
    layers = [layer.float().to(device) for layer in layers]
    reg = SoftEquivariance(layers, projectors).to(device)
    value = reg()
    assert value.device.type == device.type and value.dtype == torch.float32
    value.backward()
    assert layers[0].weight.grad is not None
