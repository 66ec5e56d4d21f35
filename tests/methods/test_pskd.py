"""Properties of PS-KD (spec pskd.md §6): closed forms, limiting cases, schedule, state, errors."""

import pytest
import torch
import torch.nn.functional as F

from regzoo import Objective
from regzoo.methods.elr import EarlyLearningRegularization
from regzoo.methods.pskd import ProgressiveSelfKnowledgeDistillation as PSKD

N, C, B = 36, 5, 12


def _batch(n=B, c=C, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=dtype) * 2
    target = torch.randint(0, c, (n,), generator=g)
    index = torch.randperm(3 * n, generator=g)[:n]
    return logits, target, index


def _filled(epoch, seed=100, alpha_T=0.8, total_epochs=10, **kwargs):
    """A double criterion whose whole table holds random distributions, at ``epoch``."""
    crit = PSKD(N, C, alpha_T=alpha_T, total_epochs=total_epochs, **kwargs).double()
    g = torch.Generator().manual_seed(seed)
    crit.predictions.copy_(torch.randn(N, C, generator=g, dtype=torch.float64).softmax(1))
    crit.set_epoch(epoch)
    return crit


def _loss_and_grad(fn, logits):
    z = logits.clone().requires_grad_()
    loss = fn(z)
    (grad,) = torch.autograd.grad(loss, z)
    return loss.detach(), grad


@pytest.mark.parametrize("epoch", [0, 3, 9])
def test_pskd_with_zero_alpha_equals_cross_entropy(epoch):
    logits, target, index = _batch()
    crit = _filled(epoch, alpha_T=0.0)
    loss, grad = _loss_and_grad(lambda z: crit(z, target, index), logits)
    ref, ref_grad = _loss_and_grad(lambda z: F.cross_entropy(z, target), logits)
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-14)


def test_first_epoch_equals_cross_entropy_whatever_the_table_holds():
    logits, target, index = _batch(seed=1)
    crit = _filled(0)
    loss, grad = _loss_and_grad(lambda z: crit(z, target, index), logits)
    ref, ref_grad = _loss_and_grad(lambda z: F.cross_entropy(z, target), logits)
    assert torch.equal(loss, ref)
    assert torch.equal(grad, ref_grad)
    torch.testing.assert_close(crit.soft_targets(target, index),
                               F.one_hot(target, C).double(), rtol=0, atol=0)


def test_alpha_grows_linearly_to_alpha_T_at_the_last_epoch():
    crit = PSKD(N, C, alpha_T=0.8, total_epochs=5)
    alphas = []
    for epoch in range(5):
        crit.set_epoch(epoch)
        alphas.append(crit.alpha)
    assert alphas == pytest.approx([0.16, 0.32, 0.48, 0.64, 0.8], abs=1e-15)
    assert crit.alpha == 0.8


@pytest.mark.parametrize("epoch", [1, 4, 9])
def test_target_is_the_convex_mix_of_label_and_previous_prediction(epoch):
    logits, target, index = _batch(seed=2)
    crit = _filled(epoch)
    alpha = 0.8 * (epoch + 1) / 10
    previous = crit.predictions[index].clone()
    want = (1 - alpha) * F.one_hot(target, C).double() + alpha * previous
    soft = crit.soft_targets(target, index)
    torch.testing.assert_close(soft, want, rtol=0, atol=1e-15)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(B, dtype=torch.float64))
    loss = crit(logits, target, index)
    ref = -(want * logits.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(loss, ref, rtol=1e-14, atol=1e-14)


def test_gradient_is_softmax_minus_target_over_the_batch():
    logits, target, index = _batch(seed=3)
    crit = _filled(6)
    soft = crit.soft_targets(target, index)
    _, grad = _loss_and_grad(lambda z: crit(z, target, index), logits)
    torch.testing.assert_close(grad, (logits.softmax(dim=1) - soft) / B, rtol=1e-12,
                               atol=1e-15)


def test_loss_passes_gradcheck():
    logits, target, index = _batch(n=4, c=3, seed=4)
    crit = PSKD(12, 3, total_epochs=4).double()
    crit.predictions.copy_(torch.rand(12, 3, dtype=torch.float64).softmax(1))
    crit.set_epoch(2)
    crit.eval()  # keep the table fixed across gradcheck's evaluations
    assert torch.autograd.gradcheck(lambda z: crit(z, target, index),
                                    (logits.clone().requires_grad_(),))


def test_table_update_writes_only_the_batch_rows_with_the_step_softmax():
    logits, target, index = _batch(seed=5)
    crit = _filled(4)
    before = crit.predictions.clone()
    crit(logits.clone().requires_grad_(), target, index)
    torch.testing.assert_close(crit.predictions[index], logits.softmax(dim=1), rtol=0,
                               atol=1e-15)
    torch.testing.assert_close(crit.predictions.sum(dim=1), torch.ones(N, dtype=torch.float64))
    untouched = torch.ones(N, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(crit.predictions[untouched], before[untouched])


def test_next_epoch_uses_the_predictions_stored_in_the_previous_one():
    logits, target, index = _batch(seed=6)
    crit = PSKD(N, C, total_epochs=4).double()
    crit.set_epoch(0)
    crit(logits, target, index)
    crit.set_epoch(1)
    alpha = 0.8 * 2 / 4
    want = (1 - alpha) * F.one_hot(target, C).double() + alpha * logits.softmax(dim=1)
    torch.testing.assert_close(crit.soft_targets(target, index), want, rtol=0, atol=1e-15)


def test_rows_never_written_are_read_as_the_label():
    _, target, index = _batch(seed=7)
    crit = PSKD(N, C, total_epochs=4).double()
    crit.set_epoch(2)
    torch.testing.assert_close(crit.soft_targets(target, index), F.one_hot(target, C).double(),
                               rtol=0, atol=0)


def test_rows_unwritten_in_a_loaded_table_are_read_as_the_label_again():
    # The criterion remembers, per epoch, whether any row is still unwritten (rows are only
    # ever written, so "none" stays true); loading a table must forget it.
    _, target, index = _batch(seed=8)
    crit = _filled(2)
    crit.soft_targets(target, index)
    empty = PSKD(N, C, alpha_T=0.8, total_epochs=10).double()
    empty.set_epoch(2)
    crit.load_state_dict(empty.state_dict())
    torch.testing.assert_close(crit.soft_targets(target, index), F.one_hot(target, C).double(),
                               rtol=0, atol=0)


def test_a_perfect_confident_table_gives_cross_entropy():
    logits, target, index = _batch(seed=8)
    labels = torch.randint(0, C, (N,), generator=torch.Generator().manual_seed(8))
    labels[index] = target
    crit = PSKD(N, C, total_epochs=10).double()
    crit.predictions.copy_(F.one_hot(labels, C).double())
    crit.set_epoch(7)
    loss, grad = _loss_and_grad(lambda z: crit(z, target, index), logits)
    ref, ref_grad = _loss_and_grad(lambda z: F.cross_entropy(z, target), logits)
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-14)


def test_target_is_constant_for_the_parameters():
    logits, target, index = _batch(seed=9)
    crit = _filled(5)
    z = logits.clone().requires_grad_()
    crit(z, target, index).backward()
    assert not crit.predictions.requires_grad and crit.predictions.grad_fn is None
    assert not crit.soft_targets(target, index).requires_grad


def test_eval_mode_leaves_the_table_untouched():
    logits, target, index = _batch(seed=10)
    crit = _filled(3).eval()
    before = crit.predictions.clone()
    crit(logits, target, index)
    assert torch.equal(crit.predictions, before)


def test_clean_refresh_option_stores_only_through_store_predictions():
    logits, target, index = _batch(seed=11)
    crit = _filled(3, update_on_forward=False)
    before = crit.predictions.clone()
    crit(logits, target, index)
    assert torch.equal(crit.predictions, before)
    clean = logits * 0.5
    crit.store_predictions(clean, index)
    torch.testing.assert_close(crit.predictions[index], clean.softmax(dim=1), rtol=0,
                               atol=1e-15)
    with pytest.raises(ValueError, match="logits"):
        crit.store_predictions(torch.full((B, C), float("nan"), dtype=torch.float64), index)


def test_shuffled_batch_updates_the_same_rows_as_a_per_example_loop():
    logits, target, index = _batch(n=10, seed=12)
    batched, looped = _filled(2), _filled(2)
    batched_loss = batched(logits, target, index)
    losses = [looped(logits[i : i + 1], target[i : i + 1], index[i : i + 1]) for i in range(10)]
    torch.testing.assert_close(batched.predictions, looped.predictions, rtol=0, atol=0)
    torch.testing.assert_close(batched_loss, torch.stack(losses).mean())


def test_state_dict_round_trip_restores_the_table_and_the_epoch():
    logits, target, index = _batch(seed=13, dtype=torch.float32)
    crit = PSKD(N, C, total_epochs=10)
    crit(logits, target, index)
    crit.set_epoch(6)
    crit(logits + 1.0, target, index)
    state = crit.state_dict()
    assert set(state) == {"predictions", "epoch"}
    restored = PSKD(N, C, total_epochs=10)
    restored.load_state_dict(state)
    assert int(restored.epoch) == 6 and restored.alpha == crit.alpha
    assert torch.equal(restored.predictions, crit.predictions)
    assert torch.equal(crit(logits, target, index), restored(logits, target, index))
    # Non-vacuous: the epoch alone changes the loss.
    stale = PSKD(N, C, total_epochs=10)
    stale.predictions.copy_(state["predictions"])
    assert not torch.equal(stale(logits, target, index), restored(logits, target, index))


def test_float32_logits_give_float32_loss():
    logits, target, index = _batch(seed=14, dtype=torch.float32)
    crit = PSKD(N, C, total_epochs=3)
    crit(logits, target, index)
    crit.set_epoch(1)
    assert crit(logits, target, index).dtype == torch.float32


def test_composes_with_elr_in_an_objective_as_plain_arithmetic():
    logits, target, index = _batch(seed=15)
    pskd_a, pskd_b = _filled(2), _filled(2)
    elr_a = EarlyLearningRegularization(N, C).double()
    elr_b = EarlyLearningRegularization(N, C).double()
    objective = Objective().add("pskd", pskd_a).add("elr", elr_a.penalty, weight=3.0)
    objective.set_epoch(5)
    pskd_b.set_epoch(5)
    out = objective(logits=logits, target=target, index=index)
    manual = pskd_b(logits, target, index) + 3.0 * elr_b.penalty(logits, index)
    torch.testing.assert_close(out.total, manual, rtol=1e-14, atol=1e-14)
    assert int(pskd_a.epoch) == 5
    assert torch.equal(pskd_a.predictions, pskd_b.predictions)
    assert torch.equal(elr_a.targets, elr_b.targets)
    assert "modules_by_name.pskd.predictions" in objective.state_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha_T": 1.5}, "alpha_T"),
        ({"alpha_T": -0.1}, "alpha_T"),
        ({"alpha_T": float("nan")}, "alpha_T"),
        ({"alpha_T": "0.8"}, "alpha_T"),
        ({"total_epochs": 0}, "total_epochs"),
        ({"total_epochs": 2.5}, "total_epochs"),
        ({"num_examples": 0}, "num_examples"),
        ({"num_classes": 1}, "num_classes"),
        ({"update_on_forward": 1}, "update_on_forward"),
    ],
)
def test_impossible_hyperparameters_are_rejected(kwargs, message):
    args = {"num_examples": 10, "num_classes": 3, **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        PSKD(**args)


@pytest.mark.parametrize("epoch", [-1, 5, 7, 2.0, True])
def test_set_epoch_rejects_epochs_outside_the_schedule(epoch):
    crit = PSKD(10, 3, total_epochs=5)
    with pytest.raises((ValueError, TypeError), match="epoch"):
        crit.set_epoch(epoch)
    assert int(crit.epoch) == 0


def test_registry_card_points_to_the_criterion():
    from regzoo.registry import card

    c = card("pskd")
    assert c.obj is PSKD
    assert c.kind == "criterion"
    defaults = {d.name: d.value for d in c.defaults}
    assert defaults["alpha_T"] == 0.8 and defaults["total_epochs"] == 300


def test_soft_targets_validates_its_arguments():
    _, target, index = _batch(seed=16)
    crit = _filled(2)
    with pytest.raises(ValueError, match="index must lie"):
        crit.soft_targets(target, index + 100)
    with pytest.raises(ValueError, match="index must share the batch size of target"):
        crit.soft_targets(target[:-1], index)
    with pytest.raises(TypeError, match="target"):
        crit.soft_targets(target.double(), index)


def test_forgetting_set_epoch_is_warned_about_once():
    crit = PSKD(8, 3, total_epochs=5)
    logits, target, index = torch.randn(8, 3), torch.randint(0, 3, (8,)), torch.arange(8)
    crit(logits, target, index)
    crit(logits, target, index)
    with pytest.warns(UserWarning, match="set_epoch"):
        crit(logits, target, index)
    crit(logits, target, index)  # once is enough
