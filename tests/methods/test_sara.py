"""SaRA: selection rule, nuclear-norm term, progressive step, and the official code's three bugs."""

import math

import pytest
import torch
from torch import nn

from regzoo.methods.sara import SaRA, SaRAAdamW
from regzoo.models import MLP


def _model(seed=0, hidden=(80, 80)):
    torch.manual_seed(seed)
    return MLP(12, 5, hidden=hidden).double()


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(32, 12, generator=g, dtype=torch.float64),
            torch.randint(0, 5, (32,), generator=g))


def _train(model, handle, steps, lr=0.01, optimizer=None):
    optimizer = optimizer or handle.optimizer(lr=lr)
    x, y = _batch()
    for _ in range(steps):
        optimizer.zero_grad()
        (nn.functional.cross_entropy(model(x), y) + handle.penalty()).backward()
        optimizer.step()
    return optimizer


def _weights(handle):
    return {n: layer.effective_weight().detach().clone() for n, layer in handle.layers.items()}


def test_fraction_selects_the_smallest_magnitudes_per_matrix_exactly():
    model = _model()
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules()
               if isinstance(m, nn.Linear)}
    handle = SaRA.apply(model)
    for name, layer in handle.layers.items():
        w = weights[name].reshape(-1)
        assert layer.num_selected == int(0.1 * w.numel())
        chosen = w[layer.index].abs()
        others = torch.ones_like(w, dtype=torch.bool)
        others[layer.index] = False
        assert chosen.max() <= w[others].abs().min()
        assert handle.thresholds[name] == float(chosen.max())


def test_threshold_selects_every_entry_below_tau():
    model = _model()
    weights = {n: m.weight.detach().clone() for n, m in model.named_modules()
               if isinstance(m, nn.Linear)}
    handle = SaRA.apply(model, threshold=0.02)
    for name, layer in handle.layers.items():
        assert layer.num_selected == int((weights[name].abs() < 0.02).sum())


def test_bug2_regression_values_keep_their_sign_so_applying_keeps_the_outputs():
    # Official adamw.py initialises the trainable values as |W0[M]|, flipping ~half the signs.
    model = _model()
    x, _ = _batch()
    before = model(x)
    handle = SaRA.apply(model)
    values = torch.cat([layer.values.detach() for layer in handle.layers.values()])
    assert (values < 0).sum() > 0.3 * values.numel()
    for layer in handle.layers.values():
        assert torch.equal(layer.values.detach(), layer.weight_matrix().reshape(-1)[layer.index])
    assert torch.equal(model(x), before)


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_bug1_regression_the_nuclear_norm_changes_the_update_and_lowers_the_norm(mode):
    # Official adamw.py (the default UB path): λ_rank = 0 and 1 gave bit-identical weights.
    runs = {}
    for lam in (0.0, 0.05):
        model = _model()
        handle = SaRA.apply(model, fraction=0.3, lambda_rank=lam, progressive_iter=None,
                            mode=mode)
        _train(model, handle, 30)
        runs[lam] = (_weights(handle), handle.nuclear_norms())
    assert not torch.equal(runs[0.0][0]["body.2"], runs[0.05][0]["body.2"])
    assert runs[0.05][1]["body.2"] < runs[0.0][1]["body.2"] - 0.05


def test_penalty_is_lambda_times_the_nuclear_norm_of_one_eligible_masked_weight():
    model = _model(hidden=(80, 70))
    handle = SaRA.apply(model, lambda_rank=0.3)
    assert handle.rank_eligible() == ["body.2"]
    layer = handle.layers["body.2"]
    masked = torch.zeros(70 * 80, dtype=torch.float64)
    masked[layer.index] = layer.values.detach()
    expected = 0.3 * torch.linalg.matrix_norm(masked.view(70, 80), ord="nuc")
    penalty = handle.penalty()
    torch.testing.assert_close(penalty.detach(), expected)
    penalty.backward()
    assert layer.values.grad is not None and layer.values.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    small = SaRA.apply(_model(hidden=(8,)))
    assert small.rank_eligible() == [] and float(small.penalty()) == 0.0


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_progressive_step_keeps_a_subset_once_and_freezes_grown_entries(mode):
    model = _model()
    handle = SaRA.apply(model, fraction=0.3, progressive_iter=4, mode=mode)
    initial = {n: layer.index.clone() for n, layer in handle.layers.items()}
    opt = _train(model, handle, 3, lr=0.003)
    assert not handle.reselected
    _train(model, handle, 1, optimizer=opt)
    assert handle.reselected
    counts = handle.counts()
    assert 0 < sum(counts.values()) < sum(i.numel() for i in initial.values())
    left = {}
    for name, layer in handle.layers.items():
        assert set(layer.index.tolist()) <= set(initial[name].tolist())
        assert (layer.selected_values().detach().abs() <= handle.thresholds[name]).all()
        gone = sorted(set(initial[name].tolist()) - set(layer.index.tolist()))
        left[name] = torch.tensor(gone, dtype=torch.int64)
        frozen = layer.effective_weight().detach().reshape(-1)[left[name]]
        assert (frozen.abs() > handle.thresholds[name]).all()
        left[name] = (left[name], frozen)
    _train(model, handle, 5, optimizer=opt)
    assert handle.counts() == counts
    for name, (index, frozen) in left.items():
        weight = handle.layers[name].effective_weight().detach().reshape(-1)
        assert torch.equal(weight[index], frozen)


def test_progressive_step_keeps_adam_state_unless_reset_is_asked():
    kept, reset = {}, {}
    for flag, store in ((False, kept), (True, reset)):
        model = _model()
        handle = SaRA.apply(model, fraction=0.3, progressive_iter=2)
        opt = handle.optimizer(lr=0.003, reset_state=flag)
        _train(model, handle, 2, optimizer=opt)
        store.update({n: opt.state.get(layer.values, {}) for n, layer in handle.layers.items()})
    assert all(int(s["step"]) == 2 and s["exp_avg"].numel() for s in kept.values())
    assert all(s == {} for s in reset.values())


def test_bug3_regression_default_and_disabled_schedules_train_without_error():
    # Official adamw.py crashes with its default progressive_iter=-1.
    for progressive_iter in (None, 2500):
        model = _model()
        handle = SaRA.apply(model, progressive_iter=progressive_iter)
        x, y = _batch()
        before = nn.functional.cross_entropy(model(x), y).item()
        _train(model, handle, 10)
        after = nn.functional.cross_entropy(model(x), y).item()
        assert after < before and not handle.reselected


def test_sparse_and_dense_sara_follow_the_same_trajectory_in_float64():
    runs = {}
    for mode in ("sparse", "dense"):
        model = _model()
        handle = SaRA.apply(model, fraction=0.3, lambda_rank=0.01, progressive_iter=6,
                            mode=mode, seed=3)
        _train(model, handle, 12, lr=0.003)
        runs[mode] = _weights(handle)
    for name in runs["sparse"]:
        torch.testing.assert_close(runs["sparse"][name], runs["dense"][name], rtol=0,
                                   atol=1e-12)


def test_sparse_path_optimizer_state_is_three_floats_per_selected_entry():
    model = _model()
    handle = SaRA.apply(model)
    opt = _train(model, handle, 1)
    tensors = [v for s in opt.state.values() for v in s.values() if v.ndim > 0]
    grads = [p.grad for p in handle.trainable_parameters()]
    assert sum(t.numel() for t in tensors + grads) == 3 * handle.num_selected


def test_official_learning_rate_rule_needs_an_absolute_threshold():
    handle = SaRA.apply(_model(), threshold=2e-2)
    opt = handle.optimizer()
    assert isinstance(opt, SaRAAdamW)
    assert math.isclose(opt.param_groups[0]["lr"], 1e-3 * math.exp(-350 * 2e-2))
    assert opt.param_groups[0]["weight_decay"] == 1e-2
    with pytest.raises(ValueError, match="pass lr explicitly"):
        SaRA.apply(_model()).optimizer()


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="lambda_rank"):
        SaRA.apply(_model(), lambda_rank=-1.0)
    with pytest.raises(ValueError, match="progressive_iter"):
        SaRA.apply(_model(), progressive_iter=0)
    with pytest.raises(TypeError, match="progressive_iter"):
        SaRA.apply(_model(), progressive_iter=2.5)
    with pytest.raises(ValueError, match="mode"):
        SaRA.apply(_model(), mode="coo")
    with pytest.raises(ValueError, match="fraction"):
        SaRA.apply(_model(), fraction=None)
    with pytest.raises(ValueError, match="fraction"):
        SaRA.apply(_model(), fraction=0.0)
    with pytest.raises(ValueError, match="target_modules"):
        SaRA.apply(_model(), target_modules=["decoder"])
    with pytest.raises(ValueError, match="lr"):
        SaRA.apply(_model()).optimizer(lr=-1.0)
