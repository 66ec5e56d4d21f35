"""VGNN: attention over recorded codes, the variational layer and its KL, the official bugs."""

import math

import pytest
import torch
import torch.nn.functional as F

from regzoo.data.ehr import synthetic_ehr
from regzoo.methods.vgnn_ehr import (
    VGNN,
    PaperLayerNorm,
    VariationalRegularization,
    _with_lonely_self_loops,
    balanced_pos_weight,
    kl_to_standard_normal,
    per_patient_reference,
    train_step,
    vgnn_loss,
)

V = 40


@pytest.fixture(scope="module")
def visits():
    return synthetic_ehr(24, seed=1, num_codes=V, num_conditions=4, num_interactions=3)


def _model(seed=0, **options):
    torch.manual_seed(seed)
    return VGNN(V, **{"dim": 8, **options}).double()


def test_paper_layer_norm_uses_the_unbiased_std_plus_eps():
    x = torch.randn(3, 5, dtype=torch.float64)
    norm = PaperLayerNorm(5).double()
    expected = (x - x.mean(-1, keepdim=True)) / (x.std(-1, unbiased=True, keepdim=True) + 1e-6)
    torch.testing.assert_close(norm(x), expected)


def test_attention_rows_sum_to_one_over_present_codes_and_padded_codes_get_zero(visits):
    model = _model().eval()
    layer = model.encoder[0]
    codes, mask = visits.codes, visits.mask
    x = model.embed(torch.where(mask, codes + 1, torch.zeros_like(codes)))
    allowed = _with_lonely_self_loops(mask[:, :, None] & mask[:, None, :])
    h = layer.project(x)
    weights = layer.attention_weights(h, h, allowed)[:, 0]  # (B, P, P)
    present_rows = weights[mask]  # rows of recorded codes
    torch.testing.assert_close(present_rows.sum(-1), torch.ones(len(present_rows),
                                                                  dtype=torch.float64))
    padded_columns = (~mask)[:, None, :].expand_as(weights) & mask[:, :, None]
    assert float(weights[padded_columns].detach().abs().max()) == 0.0
    # a padded row (no neighbour) puts its whole weight on itself: h'_i = W x_i + b
    lonely = weights[~mask]
    assert torch.equal(lonely.sum(-1), torch.ones(len(lonely), dtype=torch.float64))


@torch.no_grad()
def test_a_node_without_edges_returns_its_projection_then_norm_and_elu():
    model = _model().eval()
    layer = model.encoder[0]
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    allowed = _with_lonely_self_loops(torch.zeros(1, 3, 3, dtype=torch.bool))
    out, _ = layer(x, x, allowed)
    torch.testing.assert_close(out, F.elu(layer.norm(layer.W(x))))


def test_attention_weights_follow_the_scaled_leaky_relu_scores():
    model = _model(heads=2).eval()
    layer = model.encoder[0]
    h = torch.randn(1, 3, 2, 8, dtype=torch.float64)
    allowed = torch.ones(1, 3, 3, dtype=torch.bool)
    weights = layer.attention_weights(h, h, allowed)
    for k in range(2):
        a = layer.a[k]
        scores = torch.stack([torch.stack([
            F.leaky_relu(a @ torch.cat([h[0, i, k], h[0, j, k]]), 0.1) / math.sqrt(8 * 2)
            for j in range(3)]) for i in range(3)])
        torch.testing.assert_close(weights[0, k], torch.softmax(scores, -1))


@torch.no_grad()
def test_permuting_codes_permutes_node_states_and_keeps_the_logit(visits):
    model = _model(heads=2, enc_layers=2).eval()
    codes, mask = visits.codes, visits.mask
    perm = torch.randperm(codes.shape[1], generator=torch.Generator().manual_seed(3))
    first = model.encode(codes, mask)
    second = model.encode(codes[:, perm], mask[:, perm])
    torch.testing.assert_close(second.z[:, :-1][mask[:, perm]], first.z[:, :-1][:, perm][
        mask[:, perm]])
    torch.testing.assert_close(model(codes[:, perm], mask[:, perm])[0], model(codes, mask)[0])


@pytest.mark.parametrize("variational", [True, False])
@pytest.mark.parametrize(("heads", "layers"), [(1, 1), (2, 2)])
def test_dense_batch_equals_the_official_style_per_patient_loop(visits, variational, heads,
                                                                layers):
    model = _model(heads=heads, enc_layers=layers, variational=variational).eval()
    with torch.no_grad():
        logits, _ = model(visits.codes, visits.mask)
    reference = per_patient_reference(model, visits.multi_hot.double())
    assert float((logits - reference).abs().max()) < 1e-6


@torch.no_grad()
def test_padding_width_and_pad_values_do_not_change_the_logits(visits):
    model = _model().eval()
    wide = torch.cat([visits.codes, torch.full((len(visits), 3), 7)], dim=1)
    wide_mask = torch.cat([visits.mask, torch.zeros(len(visits), 3, dtype=torch.bool)], dim=1)
    torch.testing.assert_close(model(wide, wide_mask)[0], model(visits.codes, visits.mask)[0])


def test_a_visit_with_no_codes_gets_the_visit_node_logit_and_zero_kl(visits):
    model = _model().eval()
    codes = torch.zeros(2, 4, dtype=torch.long)
    mask = torch.zeros(2, 4, dtype=torch.bool)
    with torch.no_grad():
        logits, kl = model(codes, mask)
    assert torch.isfinite(logits).all() and logits[0] == logits[1] and float(kl) == 0.0
    # the stated rule: the visit node attends to itself only, as the official code does
    empty = torch.zeros(1, V, dtype=torch.float64)
    torch.testing.assert_close(logits[:1], per_patient_reference(model, empty))
    # and such a visit does not change its batch mates' logits
    mixed_codes = torch.cat([visits.codes[:3], torch.zeros(1, visits.codes.shape[1],
                                                           dtype=torch.long)])
    mixed_mask = torch.cat([visits.mask[:3], torch.zeros(1, visits.mask.shape[1],
                                                         dtype=torch.bool)])
    torch.testing.assert_close(model(mixed_codes, mixed_mask)[0][:3],
                               model(visits.codes[:3], visits.mask[:3])[0])


def test_kl_closed_form_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(4, dtype=torch.float64, generator=g)
    logvar = 0.5 * torch.randn(4, dtype=torch.float64, generator=g)
    std = (0.5 * logvar).exp()
    z = mu + std * torch.randn(200_000, 4, dtype=torch.float64, generator=g)
    log_q = (-0.5 * ((z - mu) / std) ** 2 - torch.log(std)).sum(-1)
    log_p = (-0.5 * z ** 2).sum(-1)
    samples = log_q - log_p
    closed = kl_to_standard_normal(mu, logvar)
    assert abs(float(samples.mean() - closed)) < 3 * float(samples.std()) / math.sqrt(200_000)


@torch.no_grad()
def test_kl_is_zero_at_the_prior_and_averages_over_weighted_nodes():
    penalty = VariationalRegularization()
    zeros = torch.zeros(2, 3, 4, dtype=torch.float64)
    assert float(penalty(zeros, zeros, torch.ones(2, 3, dtype=torch.bool))) == 0.0
    mu = torch.randn(2, 3, 4, dtype=torch.float64)
    logvar = torch.randn(2, 3, 4, dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    per_node = kl_to_standard_normal(mu, logvar)
    expected = (per_node[0, :2].mean() + 0.0) / 2  # the empty visit counts 0
    torch.testing.assert_close(penalty(mu, logvar, mask), expected)


def test_kl_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(2, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    logvar = torch.randn(2, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.5, 3.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda m, s: VariationalRegularization()(m, s, weight),
                                    (mu, logvar))


@torch.no_grad()
def test_eval_is_deterministic_and_training_is_stochastic(visits):
    model = _model()
    model.eval()
    assert torch.equal(model(visits.codes, visits.mask)[0], model(visits.codes, visits.mask)[0])
    encoding = model.encode(visits.codes, visits.mask)
    assert torch.equal(encoding.z, encoding.mu)  # z = μ in evaluation
    model.train()
    torch.manual_seed(0)
    first = model(visits.codes, visits.mask)[0]
    assert not torch.equal(first, model(visits.codes, visits.mask)[0])


def test_lambda_zero_without_sampling_equals_the_gnn(visits):
    # VGNN whose μ-map is the identity, with the GNN's weights, sampling off: z = μ = the GNN's
    # encoder states, so with λ = 0 the two losses (and gradients of shared weights) agree.
    gnn = _model(variational=False, dropout=0.0, node_dropout=0.0)
    vgnn = _model(sample=False, dropout=0.0, node_dropout=0.0)
    vgnn.load_state_dict(gnn.state_dict(), strict=False)
    with torch.no_grad():
        vgnn.parameterize.weight.zero_()
        vgnn.parameterize.bias.zero_()
        vgnn.parameterize.weight[:8].copy_(torch.eye(8))
    gnn.train()
    vgnn.train()
    y = visits.y.double()
    losses = {}
    for name, model in (("gnn", gnn), ("vgnn", vgnn)):
        logits, kl = model(visits.codes, visits.mask)
        losses[name] = vgnn_loss(logits, kl, y, lam=0.0)
        losses[name].backward()
    torch.testing.assert_close(losses["vgnn"], losses["gnn"])
    torch.testing.assert_close(vgnn.embed.weight.grad, gnn.embed.weight.grad)
    logits, kl = vgnn(visits.codes, visits.mask)
    assert float(kl.detach()) > 0
    assert float(vgnn_loss(logits, kl, y, lam=1.0).detach()) > float(losses["gnn"].detach())


def test_gnn_ablation_has_no_variational_layer_and_zero_kl(visits):
    gnn = _model(variational=False)
    assert gnn.parameterize is None
    gnn.train()
    _, kl = gnn(visits.codes, visits.mask)
    assert float(kl) == 0.0


@torch.no_grad()
def test_node_dropout_drops_about_five_percent_of_present_codes():
    data = synthetic_ehr(400, seed=2)
    model = VGNN(200, dim=4)
    model.train()
    torch.manual_seed(0)
    kept = sum(int(model.encode(data.codes, data.mask).kept.sum()) for _ in range(10))
    total = 10 * int(data.mask.sum())
    rate = 1 - kept / total
    assert abs(rate - 0.05) < 0.004, rate  # ≈ 40 000 draws: SE ≈ 0.001
    assert torch.equal(model.eval().encode(data.codes, data.mask).kept, data.mask)


# ---- the official code's bugs, each kept as an option -------------------------------------

@torch.no_grad()
def test_official_kl_reads_table_rows_zero_and_one_weighted_by_absent_and_present(visits):
    model = _model(kl_on="official").eval()
    _, kl = model(visits.codes, visits.mask)
    # by hand: rows 0 (padding) and 1 (the first code) as isolated nodes unless code 0 is in
    # the visit (then its graph state)
    table = model.embed(torch.tensor([0, 1]))[None]
    x = table
    for layer in model.encoder:
        x, _ = layer(x, x, torch.eye(2, dtype=torch.bool)[None])
    stats = model.parameterize(x)[0]
    row_kl = kl_to_standard_normal(stats[:, :8], stats[:, 8:])
    present = visits.mask.sum(1).double()
    graph = model.encode(visits.codes, visits.mask)
    row1 = []
    for b in range(len(visits)):
        slot = ((visits.codes[b] == 0) & visits.mask[b]).nonzero()
        if len(slot):
            i = int(slot[0])
            row1.append(kl_to_standard_normal(graph.mu[b, i], graph.logvar[b, i]))
        else:
            row1.append(row_kl[1])
    expected = ((V - present) * row_kl[0] + present * torch.stack(row1)) / V
    torch.testing.assert_close(kl, expected.mean())
    present_kl = _model(kl_on="present").eval()(visits.codes, visits.mask)[1]
    assert abs(float(present_kl - kl)) > 1e-3  # the bug changes the regulariser


def test_official_clip_order_leaves_the_gradient_unclipped(visits):
    y = visits.y.double()
    norms = {}
    for order in ("after_backward", "official"):
        model = _model(dropout=0.0, node_dropout=0.0, sample=False)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        train_step(model, optimizer, visits.codes, visits.mask, y, max_grad_norm=1e-3,
                   clip_order=order)
        norms[order] = float(torch.linalg.vector_norm(torch.stack(
            [p.grad.norm() for p in model.parameters() if p.grad is not None])))
    assert norms["after_backward"] == pytest.approx(1e-3, rel=1e-6)
    assert norms["official"] > 10 * 1e-3


def test_pos_weight_is_negatives_over_positives_and_official_inverts_it():
    target = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])
    assert float(balanced_pos_weight(target)) == pytest.approx(2.0)
    assert float(balanced_pos_weight(target, official=True)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both classes"):
        balanced_pos_weight(torch.zeros(4))


def test_lambda_is_a_real_number_and_weights_the_kl():
    logits = torch.tensor([0.3, -1.2], dtype=torch.float64)
    target = torch.tensor([1.0, 0.0], dtype=torch.float64)
    kl = torch.tensor(0.8, dtype=torch.float64)
    bce = F.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(vgnn_loss(logits, kl, target, lam=0.5), bce + 0.4)
    with pytest.raises(ValueError, match="lam must lie in"):
        vgnn_loss(logits, kl, target, lam=-0.1)
    with pytest.raises(TypeError, match="lam must be a real number"):
        vgnn_loss(logits, kl, target, lam="1")


# ---- bad input --------------------------------------------------------------------------

def test_bad_input_is_refused_with_the_argument_named(visits):
    model = _model()
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 39\]"):
        model(torch.full((1, 2), V), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="codes and mask must have the same shape"):
        model(visits.codes, visits.mask[:, :-1])
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        model(visits.codes, visits.mask.long())
    with pytest.raises(TypeError, match="codes must be an integer tensor"):
        model(visits.codes.double(), visits.mask)
    with pytest.raises(ValueError, match="kl_on must be one of"):
        VGNN(V, kl_on="rows")
    with pytest.raises(ValueError, match="node_dropout must lie in"):
        VGNN(V, node_dropout=1.0)
    with pytest.raises(ValueError, match="weight must be non-negative"):
        VariationalRegularization()(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3),
                                    -torch.ones(1, 2))
    with pytest.raises(ValueError, match="weight must have shape"):
        VariationalRegularization()(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3),
                                    torch.ones(1, 3))
    with pytest.raises(ValueError, match="lam must lie in"):
        train_step(model, torch.optim.SGD(model.parameters(), lr=0.1), visits.codes,
                   visits.mask, visits.y.double(), lam=-1.0)
    with pytest.raises(ValueError, match=r"call model\.eval\(\)"):
        per_patient_reference(model.train(), visits.multi_hot)


@torch.no_grad()
def test_a_padded_slot_may_hold_any_code_value(visits):
    model = _model().eval()
    codes = visits.codes.clone()
    codes[~visits.mask] = 10_000  # out of the vocabulary, but masked
    torch.testing.assert_close(model(codes, visits.mask)[0],
                               model(visits.codes, visits.mask)[0])
