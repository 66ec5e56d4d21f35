"""HGP and Hutchinson (and the baselines): exact Hessian products, estimator convergence,
invariances, limiting cases, gradient flow and bad input."""

import pytest
import torch
from torch import nn
from torch.autograd.functional import hessian, hvp

from regzoo.methods.hessian_alignment import (
    CMNIST_RECIPE,
    CORAL,
    Fishr,
    HessianAlignment,
    IRMv1,
    PenaltySchedule,
    VREx,
    hessian_gradient_product,
    hutchinson_diagonal,
)
from regzoo.registry import card

D, C = 4, 3


def _head(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(D, C).double()


def _domains(n_domains: int = 3, n: int = 12, seed: int = 1, grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(n, D, generator=g, dtype=torch.float64) + e for e in range(n_domains)]
    if grad:
        feats = [f.requires_grad_() for f in feats]
    targets = [torch.randint(0, C, (n,), generator=g) for _ in range(n_domains)]
    return feats, targets


def _loss_of_flat(head: nn.Linear, x: torch.Tensor, y: torch.Tensor):
    """The head's CE loss as a function of its flattened (weight, bias)."""
    def f(theta: torch.Tensor) -> torch.Tensor:
        w = theta[: C * D].reshape(C, D)
        b = theta[C * D:]
        return nn.functional.cross_entropy(x @ w.T + b, y)
    theta = torch.cat([head.weight.detach().reshape(-1), head.bias.detach()])
    return f, theta


def test_hgp_product_equals_exact_hessian_times_gradient():
    head = _head()
    (x, *_), (y, *_) = _domains()
    g, hg = hessian_gradient_product(nn.functional.cross_entropy(head(x), y),
                                     list(head.parameters()))
    f, theta = _loss_of_flat(head, x, y)
    _, exact = hvp(f, theta, g.detach())
    assert torch.allclose(hg, exact, atol=1e-10, rtol=1e-6)
    # and against the full Hessian matrix, including the closed form of a softmax head
    h = hessian(f, theta)
    assert torch.allclose(hg, h @ g.detach(), atol=1e-10, rtol=1e-6)
    p = torch.softmax(head(x), 1).detach()
    phi = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    blocks = torch.stack([torch.kron(torch.diag(pi) - torch.outer(pi, pi), torch.outer(f_, f_))
                          for pi, f_ in zip(p, phi)]).mean(0)
    # reorder the [class, feature+bias] layout to the (weight, bias) flattening
    order = [c * (D + 1) + d for c in range(C) for d in range(D)] + [c * (D + 1) + D
                                                                     for c in range(C)]
    assert torch.allclose(h, blocks[order][:, order], atol=1e-12)


def test_penalty_hgp_statistics_are_the_per_domain_and_mean_products():
    head = _head()
    feats, targets = _domains()
    pen = HessianAlignment(head, "hgp")
    flat, stats, g_bar, q_bar = pen.statistics(feats, targets)
    for x, y, g, q in zip(feats, targets, flat, stats):
        f, theta = _loss_of_flat(head, x, y)
        assert torch.allclose(q, hvp(f, theta, g.detach())[1], atol=1e-10)

    def mean_loss(theta):
        return sum(_loss_of_flat(head, x, y)[0](theta) for x, y in zip(feats, targets)) / 3

    _, theta = _loss_of_flat(head, feats[0], targets[0])
    assert torch.allclose(g_bar, torch.autograd.functional.jacobian(mean_loss, theta))
    assert torch.allclose(q_bar, hvp(mean_loss, theta, g_bar.detach())[1], atol=1e-10)


def test_hutchinson_converges_to_the_exact_diagonal_as_probes_grow():
    head = _head()
    (x, *_), (y, *_) = _domains()
    f, theta = _loss_of_flat(head, x, y)
    h = hessian(f, theta)
    params = list(head.parameters())
    grads = torch.autograd.grad(nn.functional.cross_entropy(head(x), y), params,
                                create_graph=True)
    gen = torch.Generator().manual_seed(0)
    errors = {}
    for s in (10, 100, 10_000):
        z = torch.randint(0, 2, (s, theta.numel()), generator=gen).double() * 2 - 1
        est = hutchinson_diagonal(grads, params, z)
        # Var of one probe's entry i is Σ_{j≠i} H_ij²: the estimate lies within 4 SE
        se = ((h.pow(2).sum(1) - h.diag().pow(2)) / s).sqrt()
        assert ((est - h.diag()).abs() <= 4 * se + 1e-12).all(), s
        errors[s] = float((est.detach() - h.diag()).abs().max())
    assert errors[10_000] < errors[10] / 5


def test_hutchinson_is_exact_for_a_diagonal_hessian_with_one_probe():
    w = torch.randn(5, dtype=torch.float64, requires_grad=True)
    a = torch.rand(5, dtype=torch.float64) + 0.5
    (g,) = torch.autograd.grad((a * w.pow(2) + w.pow(4)).sum(), [w], create_graph=True)
    z = torch.tensor([[1.0, -1.0, -1.0, 1.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(hutchinson_diagonal([g], [w], z), 2 * a + 12 * w.detach().pow(2))


@pytest.mark.parametrize("make", [
    lambda h: HessianAlignment(h, "hgp"),
    lambda h: HessianAlignment(h, "hutchinson", probes=4,
                               generator=torch.Generator().manual_seed(0)),
    lambda h: HessianAlignment(h, "hgp", **CMNIST_RECIPE),
    VREx, Fishr, lambda h: CORAL(),
])
def test_alignment_penalties_vanish_on_identical_domains_and_not_otherwise(make):
    # IRMv1 is left out: it measures each domain's distance from optimality, not a
    # difference between domains, so identical domains do not zero it.
    head = _head()
    pen = make(head)
    feats, targets = _domains(n_domains=1)
    assert float(pen(feats * 3, targets * 3).detach()) == pytest.approx(0.0, abs=1e-20)
    feats, targets = _domains(n_domains=3)
    assert float(pen(feats, targets).detach()) > 1e-8


@pytest.mark.parametrize("mode", ["hgp", "hutchinson"])
def test_penalty_is_invariant_to_domain_order_and_sum_is_e_times_mean(mode):
    head = _head()
    feats, targets = _domains()

    def pen(reduction):
        return HessianAlignment(head, mode, probes=5, reduction=reduction,
                                generator=torch.Generator().manual_seed(3))

    base = pen("mean")(feats, targets)
    perm = [2, 0, 1]
    shuffled = pen("mean")([feats[i] for i in perm], [targets[i] for i in perm])
    assert torch.allclose(base, shuffled, rtol=1e-10)
    assert torch.allclose(pen("sum")(feats, targets), 3 * base, rtol=1e-10)


def test_penalty_formula_from_its_statistics():
    head = _head()
    feats, targets = _domains()
    pen = HessianAlignment(head, "hgp", alpha=0.3, beta=0.7)
    flat, stats, g_bar, q_bar = pen.statistics(feats, targets)
    expected = sum(0.3 * (q - q_bar).pow(2).sum() + 0.7 * (g - g_bar).pow(2).sum()
                   for g, q in zip(flat, stats)) / 3
    assert torch.allclose(pen(feats, targets), expected)


def test_zero_weights_give_the_erm_update():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(D, 6), nn.Tanh()).double()
    head = nn.Linear(6, C).double()
    feats_in, targets = _domains()

    def grads(with_penalty: bool):
        body.zero_grad()
        head.zero_grad()
        feats = [body(x) for x in feats_in]
        loss = sum(nn.functional.cross_entropy(head(f), y) for f, y in zip(feats, targets)) / 3
        if with_penalty:
            loss = loss + HessianAlignment(head, "hgp", alpha=0.0, beta=0.0)(feats, targets)
        loss.backward()
        return [p.grad.clone() for p in [*body.parameters(), *head.parameters()]]

    for a, b in zip(grads(False), grads(True)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("detach", [True, False])
def test_penalty_gradient_reaches_the_featurizer_and_matches_finite_differences(detach):
    head = _head()
    feats, targets = _domains(grad=True)
    pen = HessianAlignment(head, "hgp", alpha=1.0, beta=1.0, detach_mean=detach)
    (grad,) = torch.autograd.grad(pen(feats, targets), [feats[0]])
    assert grad.abs().sum() > 0
    _, _, g0, q0 = pen.statistics([f.detach() for f in feats], targets)

    def value(shifted):
        flat, stats, g_bar, q_bar = pen.statistics(shifted, targets)
        if detach:  # a stop-gradient holds the averages at the unperturbed point
            g_bar, q_bar = g0.detach(), q0.detach()
        return float(sum((q - q_bar).pow(2).sum() + (g - g_bar).pow(2).sum()
                         for g, q in zip(flat, stats)).detach() / 3)

    i, j, eps = 2, 1, 1e-6
    values = []
    for sign in (1, -1):
        shifted = [f.detach().clone() for f in feats]
        shifted[0][i, j] += sign * eps
        values.append(value(shifted))
    fd = (values[0] - values[1]) / (2 * eps)
    assert float(grad[i, j]) == pytest.approx(fd, rel=1e-5, abs=1e-10)


def test_fishr_closed_form_per_example_gradients_match_autograd():
    head = _head()
    (x, *_), (y, *_) = _domains()
    per = Fishr(head).per_example_gradients(x, y)
    for k in range(3):
        loss = nn.functional.cross_entropy(head(x[k:k + 1]), y[k:k + 1])
        gw, gb = torch.autograd.grad(loss, [head.weight, head.bias])
        assert torch.allclose(per[k], torch.cat([gw.reshape(-1), gb]))
    bin_head = nn.Linear(D, 1).double()
    yb = (y % 2).double()
    per = Fishr(bin_head, loss="binary").per_example_gradients(x, yb)
    loss = nn.functional.binary_cross_entropy_with_logits(bin_head(x[:1]).reshape(-1), yb[:1])
    gw, gb = torch.autograd.grad(loss, [bin_head.weight, bin_head.bias])
    assert torch.allclose(per[0], torch.cat([gw.reshape(-1), gb]))


def test_vrex_and_irm_closed_forms_on_two_domains():
    head = _head()
    feats, targets = _domains(n_domains=2)
    risks = [nn.functional.cross_entropy(head(f), y) for f, y in zip(feats, targets)]
    assert torch.allclose(VREx(head, scale=4.0)(feats, targets), (risks[0] - risks[1]) ** 2)
    # d/ds CE(s z, y) at s = 1 is mean_i (p_i − onehot_i)·z_i
    expected = []
    for f, y in zip(feats, targets):
        z = head(f)
        r = torch.softmax(z, 1) - nn.functional.one_hot(y, C)
        expected.append((r * z).sum(1).mean() ** 2)
    assert torch.allclose(IRMv1(head)(feats, targets), sum(expected) / 2)


def test_schedule_is_the_cmnist_annealing_with_rescaling():
    s = PenaltySchedule()
    risk, pen = torch.tensor(2.0), torch.tensor(3.0)
    assert s.weight_at(189) == 1.0 and s.weight_at(190) == pytest.approx(91257.18613115903)
    assert float(s.combine(risk, pen, 0)) == 5.0
    assert float(s.combine(risk, pen, 500)) == pytest.approx(2.0 / 91257.18613115903 + 3.0)
    assert not s.resets_optimizer(190)
    assert PenaltySchedule(reset_optimizer=True).resets_optimizer(190)


def test_registered_card_and_defaults():
    c = card("hessian_alignment")
    assert c.obj is HessianAlignment and c.kind == "penalty"
    pen = HessianAlignment(_head())
    assert (pen.alpha, pen.beta) == (1e-4, 5e-3)
    hut = HessianAlignment(_head(), "hutchinson")
    assert (hut.alpha, hut.beta, hut.probes) == (1e-3, 5e-3, 300)
    assert HessianAlignment.needs_higher_order_grad and HessianAlignment.batch_coupled


@pytest.mark.parametrize(("features", "targets", "error", "match"), [
    ([torch.randn(4, D)], [torch.zeros(4, dtype=torch.long)], ValueError, "at least 2"),
    ([torch.randn(4, D)] * 2, [torch.zeros(4, dtype=torch.long)], ValueError, "targets has 1"),
    ([torch.randn(4, D), torch.randn(3, D)], [torch.zeros(4, dtype=torch.long)] * 2,
     ValueError, r"targets\[1\] has 4 examples"),
    ([torch.randn(4, D), torch.randn(0, D)],
     [torch.zeros(4, dtype=torch.long), torch.zeros(0, dtype=torch.long)], ValueError,
     r"features\[1\] is empty"),
    ([torch.randn(4, D), torch.randn(4, D + 1)], [torch.zeros(4, dtype=torch.long)] * 2,
     ValueError, "width"),
    (torch.randn(4, D), torch.zeros(4, dtype=torch.long), TypeError, "one tensor per domain"),
    ([torch.randn(4, D)] * 2, [torch.zeros(4)] * 2, TypeError, "integer class targets"),
])
def test_bad_input_raises_clear_errors(features, targets, error, match):
    pen = HessianAlignment(nn.Linear(D, C))
    with pytest.raises(error, match=match):
        pen(features, targets)


def test_bad_options_raise():
    with pytest.raises(ValueError, match="mode must be one of"):
        HessianAlignment(_head(), "sam")
    with pytest.raises(ValueError, match="alpha must lie"):
        HessianAlignment(_head(), alpha=-1.0)
    with pytest.raises(ValueError, match="probes must be >= 1"):
        HessianAlignment(_head(), "hutchinson", probes=0)
    with pytest.raises(TypeError, match=r"head must be an nn\.Module"):
        HessianAlignment(lambda x: x)
    with pytest.raises(TypeError, match=r"nn\.Linear head"):
        Fishr(nn.Sequential(nn.Linear(D, C)))
    with pytest.raises(ValueError, match="probes must have shape"):
        hutchinson_diagonal([torch.zeros(3)], [torch.zeros(3, requires_grad=True)],
                            torch.ones(2, 4))


def test_raw_inputs_instead_of_features_get_an_error_that_names_the_fix():
    head = nn.Linear(4, 3)
    penalty = HessianAlignment(head, "hgp")
    g = torch.Generator().manual_seed(0)
    raw = [torch.randn(6, 7, generator=g) for _ in range(2)]
    targets = [torch.randint(0, 3, (6,), generator=g) for _ in range(2)]
    with pytest.raises(ValueError, match=r"width 7 but the head takes 4 inputs.*model.features"):
        penalty(raw, targets)


@pytest.mark.parametrize("make", [
    lambda h: HessianAlignment(h, "hgp", alpha=0.3, beta=0.7),
    lambda h: HessianAlignment(h, "hutchinson", probes=4,
                               generator=torch.Generator().manual_seed(0)),
    lambda h: HessianAlignment(h, "hgp", **CMNIST_RECIPE),
    VREx,
])
def test_the_loops_losses_give_the_same_penalty_and_training_gradient(make):
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(D, 6), nn.Tanh()).double()
    head = nn.Linear(6, C).double()
    feats_in, targets = _domains()
    params = [*body.parameters(), *head.parameters()]

    def value_and_grads(reuse: bool):
        feats = [body(x) for x in feats_in]
        losses = [nn.functional.cross_entropy(head(f), y) for f, y in zip(feats, targets)]
        penalty = make(head)(feats, targets, losses=losses if reuse else None)
        return penalty, torch.autograd.grad(torch.stack(losses).mean() + penalty, params)

    (own, own_grads), (reused, reused_grads) = value_and_grads(False), value_and_grads(True)
    assert float(reused.detach()) == pytest.approx(float(own.detach()), rel=1e-12)
    for a, b in zip(own_grads, reused_grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def test_bad_losses_name_the_argument_and_the_fix():
    head = _head()
    feats, targets = _domains(n_domains=2)
    losses = [nn.functional.cross_entropy(head(f), y) for f, y in zip(feats, targets)]
    pen = HessianAlignment(head)
    with pytest.raises(ValueError, match="losses has 1 entries but there are 2 domains"):
        pen(feats, targets, losses=losses[:1])
    with pytest.raises(TypeError, match="one scalar loss per domain"):
        pen(feats, targets, losses=torch.stack(losses))
    with pytest.raises(TypeError, match=r"losses\[1\] must be a floating scalar.*shape \(12,\)"):
        pen(feats, targets, losses=[losses[0], nn.functional.cross_entropy(
            head(feats[1]), targets[1], reduction="none")])
    with pytest.raises(ValueError, match=r"losses\[0\] carries no graph.*\.detach\(\)"):
        VREx(head)(feats, targets, losses=[losses[0].detach(), losses[1]])
    with pytest.raises(ValueError, match="does not depend on every trainable parameter"):
        pen(feats, targets, losses=[losses[0], (head.weight.sum() * 0 + feats[1].sum())])
    losses[0].backward(retain_graph=False)
    with pytest.raises(ValueError, match=r"call the penalty before loss\.backward\(\)"):
        pen(feats, targets, losses=losses)
