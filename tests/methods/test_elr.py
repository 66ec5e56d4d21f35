"""Properties of ELR (spec elr.md §6): closed forms, limiting cases, state, bad hyperparameters.

Bad batches (indices, targets, logits) are checked for every criterion in
tests/contracts/test_criterion.py.
"""

import pytest
import torch
import torch.nn.functional as F

from regzoo.methods.elr import EarlyLearningRegularization, elr_regularizer
from regzoo.methods.elr.loss import CLAMP


def _batch(n=12, c=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=dtype) * 2
    target = torch.randint(0, c, (n,), generator=g)
    index = torch.randperm(3 * n, generator=g)[:n]
    return logits, target, index


def test_elr_with_zero_lambda_equals_cross_entropy():
    logits, target, index = _batch()
    crit = EarlyLearningRegularization(36, 5, lam=0.0).double()
    z1 = logits.clone().requires_grad_()
    z2 = logits.clone().requires_grad_()
    loss = crit(z1, target, index)
    ref = F.cross_entropy(z2, target)
    (g1,) = torch.autograd.grad(loss, z1)
    (g2,) = torch.autograd.grad(ref, z2)
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-14)


def test_regularizer_gradient_matches_closed_form():
    # d/dz_c log(1 - <t, softmax(z)>) = -p_c (t_c - <t,p>) / (1 - <t,p>), clamp inactive.
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 6, generator=g, dtype=torch.float64).requires_grad_()
    t = torch.rand(8, 6, generator=g, dtype=torch.float64).softmax(dim=1) * 0.9
    p = z.softmax(dim=1)
    assert bool(((p > CLAMP) & (p < 1 - CLAMP)).all())
    value = torch.log1p(-(t * p).sum(dim=1)).sum()
    (grad,) = torch.autograd.grad(value, z)
    p = p.detach()
    inner = (t * p).sum(dim=1, keepdim=True)
    closed = -p * (t - inner) / (1 - inner)
    torch.testing.assert_close(grad, closed, rtol=1e-10, atol=1e-12)


def test_regularizer_passes_gradcheck():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.rand(4, 3, generator=g, dtype=torch.float64).softmax(dim=1) * 0.5

    def fn(logits):
        return elr_regularizer(logits.softmax(dim=1).clamp(CLAMP, 1 - CLAMP), t)

    assert torch.autograd.gradcheck(fn, (z,))


def test_criterion_loss_and_gradient_match_the_paper_formula():
    logits, target, index = _batch(seed=3)
    crit = EarlyLearningRegularization(36, 5, lam=3.0, beta=0.7).double()
    crit.targets.copy_(torch.rand(36, 5, dtype=torch.float64).softmax(1) * 0.6)
    before = crit.targets.clone()
    z = logits.clone().requires_grad_()
    loss = crit(z, target, index)
    (grad,) = torch.autograd.grad(loss, z)

    zr = logits.clone().requires_grad_()
    p = zr.softmax(dim=1).clamp(CLAMP, 1 - CLAMP)
    p_hat = p.detach() / p.detach().sum(dim=1, keepdim=True)
    t = 0.7 * before[index] + 0.3 * p_hat
    ref = F.cross_entropy(zr, target) + 3.0 * torch.log(1 - (t * p).sum(dim=1)).mean()
    (ref_grad,) = torch.autograd.grad(ref, zr)
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_target_update_is_ema_of_clamped_renormalised_probabilities():
    logits, target, index = _batch(seed=4)
    beta = 0.6
    crit = EarlyLearningRegularization(36, 5, beta=beta).double()
    p = logits.softmax(dim=1).clamp(CLAMP, 1 - CLAMP)
    p_hat = p / p.sum(dim=1, keepdim=True)
    for k in range(1, 4):
        crit(logits, target, index)
        torch.testing.assert_close(crit.targets[index], (1 - beta**k) * p_hat)
        torch.testing.assert_close(crit.targets[index].sum(dim=1),
                                   torch.full((12,), 1 - beta**k, dtype=torch.float64))
    untouched = torch.ones(36, dtype=torch.bool)
    untouched[index] = False
    assert bool((crit.targets[untouched] == 0).all())


def test_clamp_keeps_loss_finite_for_confident_prediction_equal_to_target():
    crit = EarlyLearningRegularization(2, 3)
    logits = torch.tensor([[100.0, 0.0, 0.0], [0.0, 100.0, 0.0]])
    target = torch.tensor([0, 1])
    index = torch.tensor([0, 1])
    crit.targets.copy_(torch.eye(3)[:2])
    loss = crit(logits.requires_grad_(), target, index)
    assert torch.isfinite(loss)
    loss.backward()
    assert bool(torch.isfinite(logits.grad).all())


def test_target_is_detached_so_history_does_not_change_the_gradient_path():
    logits, target, index = _batch(seed=5)
    crit = EarlyLearningRegularization(36, 5).double()
    z = logits.clone().requires_grad_()
    crit(z, target, index).backward()
    assert not crit.targets.requires_grad
    assert crit.targets.grad_fn is None


def test_shuffled_batch_updates_the_same_rows_as_a_per_example_loop():
    logits, target, index = _batch(n=10, seed=6)
    batched = EarlyLearningRegularization(30, 5).double()
    batched(logits, target, index)
    looped = EarlyLearningRegularization(30, 5).double()
    for i in range(10):
        looped(logits[i : i + 1], target[i : i + 1], index[i : i + 1])
    torch.testing.assert_close(batched.targets, looped.targets)


def test_eval_mode_leaves_the_memory_untouched():
    logits, target, index = _batch(seed=7)
    crit = EarlyLearningRegularization(36, 5).double().eval()
    crit(logits, target, index)
    assert bool((crit.targets == 0).all())


def test_state_dict_round_trip_gives_bit_identical_loss():
    logits, target, index = _batch(seed=8)
    crit = EarlyLearningRegularization(36, 5)
    crit(logits.float(), target, index)
    restored = EarlyLearningRegularization(36, 5)
    restored.load_state_dict(crit.state_dict())
    assert "targets" in crit.state_dict()
    a = crit(logits.float(), target, index)
    b = restored(logits.float(), target, index)
    assert torch.equal(a, b)
    assert torch.equal(crit.targets, restored.targets)


def test_float32_logits_give_float32_loss():
    logits, target, index = _batch(seed=9, dtype=torch.float32)
    loss = EarlyLearningRegularization(36, 5)(logits, target, index)
    assert loss.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 1.0}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"lam": -1.0}, "lam"),
        ({"lam": float("nan")}, "lam"),
        ({"num_examples": 0}, "num_examples"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_impossible_hyperparameters_are_rejected(kwargs, message):
    args = {"num_examples": 10, "num_classes": 3, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        EarlyLearningRegularization(**args)


def test_registry_card_points_to_the_criterion():
    from regzoo.registry import card

    c = card("elr")
    assert c.obj is EarlyLearningRegularization
    assert c.kind == "criterion"
    assert {d.name for d in c.defaults} >= {"beta", "lam"}


def test_penalty_is_the_unweighted_regulariser_and_updates_the_memory():
    logits, target, index = _batch(seed=10)
    full = EarlyLearningRegularization(36, 5, lam=2.0).double()
    part = EarlyLearningRegularization(36, 5, lam=2.0).double()
    total = full(logits, target, index)
    penalty = part.penalty(logits, index)
    torch.testing.assert_close(total, F.cross_entropy(logits, target) + 2.0 * penalty)
    torch.testing.assert_close(full.targets, part.targets)
    with pytest.raises(ValueError, match="index"):
        part.penalty(logits, index + 100)
