"""SaRA: selection rule, nuclear-norm term, progressive step, and the official code's three bugs."""

import math

import pytest
import torch
from torch import nn

from regzoo.methods.sara import SaRA, SaRAAdamW, fused_adamw_available
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
        assert handle.thresholds[f"{name}.weight"] == float(chosen.max())


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
    handle = SaRA.apply(model, lambda_rank=0.3, penalty_in_optimizer=False)
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
    small = SaRA.apply(_model(hidden=(8,)), penalty_in_optimizer=False)
    assert small.rank_eligible() == [] and float(small.penalty()) == 0.0
    # Default: the optimizer owns the term; the loss-side penalty is zero.
    default = SaRA.apply(_model(hidden=(80, 70)), lambda_rank=0.3)
    assert float(default.penalty()) == 0.0
    torch.testing.assert_close(default.rank_term().detach(), expected)


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
        assert (layer.selected_values().detach().abs() <= handle.thresholds[f"{name}.weight"]).all()
        gone = sorted(set(initial[name].tolist()) - set(layer.index.tolist()))
        left[name] = torch.tensor(gone, dtype=torch.int64)
        frozen = layer.effective_weight().detach().reshape(-1)[left[name]]
        assert (frozen.abs() > handle.thresholds[f"{name}.weight"]).all()
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


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_fused_and_loop_adamw_follow_the_same_trajectory(mode):
    # The fused kernel (the default where torch has it) is the loop's update, rounded differently.
    runs, opts = {}, {}
    for fused in (False, True):
        model = _model()
        handle = SaRA.apply(model, fraction=0.3, lambda_rank=0.01, progressive_iter=6,
                            mode=mode, seed=3)
        opts[fused] = _train(model, handle, 12, lr=0.003,
                             optimizer=handle.optimizer(lr=0.003, fused=fused))
        runs[fused] = _weights(handle)
    assert [g["fused"] for g in opts[True].param_groups] == [True]
    assert [g["fused"] for g in opts[False].param_groups] == [False]
    for name in runs[False]:
        assert not torch.equal(runs[False][name], _weights_at_start(name))
        torch.testing.assert_close(runs[True][name], runs[False][name], rtol=0, atol=1e-12)
    default = SaRA.apply(_model(), progressive_iter=None).optimizer(lr=0.01)
    assert default.param_groups[0]["fused"] is fused_adamw_available(
        default.handle.trainable_parameters())


def _weights_at_start(name):
    return _weights(SaRA.apply(_model(), fraction=0.3, progressive_iter=None))[name]


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
    with pytest.raises(TypeError, match="fused"):
        SaRA.apply(_model()).optimizer(lr=0.01, fused="yes")


# --- convolutions, biases and norms ----------------------------------------------------------


def _conv_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
        nn.Conv2d(8, 66, 3), nn.BatchNorm2d(66), nn.ReLU(), nn.Flatten(),
        nn.Linear(66 * 4 * 4, 80), nn.LayerNorm(80), nn.ReLU(), nn.Linear(80, 70), nn.ReLU(),
        nn.Linear(70, 5)).double()


def _images(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(8, 3, 6, 6, generator=g, dtype=torch.float64),
            torch.randint(0, 5, (8,), generator=g))


def _train_images(model, handle, steps, optimizer):
    x, y = _images()
    for _ in range(steps):
        optimizer.zero_grad()
        (nn.functional.cross_entropy(model(x), y) + handle.penalty()).backward()
        optimizer.step()


def test_convolution_kernels_are_selected_by_default_and_outputs_are_unchanged():
    model = _conv_model()
    kernels = {n: m.weight.detach().clone() for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d | nn.Linear)}
    x, _ = _images()
    before = model(x)
    handle = SaRA.apply(model)
    assert torch.equal(model(x), before)
    assert set(handle.layers) == set(kernels) == {"0", "3", "7", "10", "12"}
    for name, layer in handle.layers.items():
        flat = kernels[name].reshape(-1)
        assert layer.num_selected == int(0.1 * flat.numel())
        others = torch.ones_like(flat, dtype=torch.bool)
        others[layer.index] = False
        assert flat[layer.index].abs().max() <= flat[others].abs().min()
        assert handle.thresholds[f"{name}.weight"] == float(flat[layer.index].abs().max())
    # Official set_mask_param: only 2-D weights are drawn for the nuclear norm.
    assert handle.rank_eligible() == ["7", "10"]


def test_rank_kernels_penalises_the_kernel_as_an_out_by_in_k_k_matrix():
    model = _conv_model()
    handle = SaRA.apply(model, lambda_rank=0.2, rank_kernels=True, target_modules=["3"])
    assert handle.rank_eligible() == ["3"]  # (66, 8·3·3): min 66 > 64
    layer = handle.layers["3"]
    masked = torch.zeros(66 * 8 * 3 * 3, dtype=torch.float64)
    masked[layer.index] = layer.values.detach()
    expected = 0.2 * torch.linalg.matrix_norm(masked.view(66, 72), ord="nuc")
    torch.testing.assert_close(handle.rank_term().detach(), expected)


def test_biases_and_norms_option_selects_them_with_a_threshold_per_tensor():
    model = _conv_model()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    handle = SaRA.apply(model, fraction=0.3, include_biases_and_norms=True, progressive_iter=3)
    assert set(handle.layers) == {"0", "1", "3", "4", "7", "8", "10", "12"}
    for name, layer in handle.layers.items():
        assert layer.tensor_counts() == {t: int(0.3 * params[f"{name}.{t}"].numel())
                                         for t in ("weight", "bias")}
        for position, t in enumerate(layer.tensors):
            own = layer.origin[layer.tensor_of(layer.index) == position]
            assert handle.thresholds[f"{name}.{t}"] == float(own.abs().max())
    _train_images(model, handle, 3, handle.optimizer(lr=0.01))
    assert handle.reselected
    for name, layer in handle.layers.items():
        taus = torch.tensor([handle.thresholds[f"{name}.{t}"] for t in layer.tensors],
                            dtype=torch.float64)
        limit = taus[layer.tensor_of(layer.index)]
        assert (layer.selected_values().detach().abs() <= limit).all()


def test_sparse_and_dense_sara_agree_on_convolutions_biases_and_norms():
    runs = {}
    for mode in ("sparse", "dense"):
        model = _conv_model()
        handle = SaRA.apply(model, fraction=0.3, lambda_rank=0.01, progressive_iter=3,
                            rank_kernels=True, include_biases_and_norms=True, mode=mode, seed=2)
        _train_images(model, handle, 6, handle.optimizer(lr=0.003))
        runs[mode] = {n: torch.cat([t.detach().reshape(-1) for t in layer.effective_tensors()])
                      for n, layer in handle.layers.items()}
    for name in runs["sparse"]:
        torch.testing.assert_close(runs["sparse"][name], runs["dense"][name], rtol=0,
                                   atol=1e-12)


# --- the official step order -----------------------------------------------------------------


def _sara_run(steps, **options):
    model = _model()
    handle = SaRA.apply(model, fraction=0.3, lambda_rank=0.05, progressive_iter=2, seed=5,
                        **options)
    _train(model, handle, steps, lr=0.003)
    return _weights(handle)


def test_the_call_after_the_reselection_makes_no_update_unless_asked():
    # Official adamw.py re-selects at the start of call progressive_iter + 1 and returns.
    skip = {steps: _sara_run(steps) for steps in (2, 3, 4)}
    plain = {steps: _sara_run(steps, skip_reselection_step=False) for steps in (2, 3)}
    for name in skip[2]:
        assert torch.equal(skip[3][name], skip[2][name])
        assert torch.equal(plain[2][name], skip[2][name])
        assert not torch.equal(plain[3][name], plain[2][name])
        # The skipped call consumed no draw and no Adam step: one call behind, same path.
        assert torch.equal(skip[4][name], plain[3][name])


def test_the_drawn_matrix_is_penalised_only_above_one_hundred_selected_entries():
    # Official adamw2.py: `if mask.sum() > 100`. body.2 keeps ⌊0.015·80·70⌋ = 84 entries.
    def run(lam, **options):
        model = _model(hidden=(80, 70))
        handle = SaRA.apply(model, fraction=0.015, lambda_rank=lam, progressive_iter=None,
                            **options)
        assert handle.layers["body.2"].num_selected == 84
        first = handle.rank_term()
        _train(model, handle, 5)
        return first, _weights(handle)

    guarded, weights = run(0.5)
    _, unpenalised = run(0.0)
    unguarded, free = run(0.5, rank_min_selected=0)
    assert guarded is None and unguarded is not None and float(unguarded.detach()) > 0
    assert all(torch.equal(weights[n], unpenalised[n]) for n in weights)
    assert not torch.equal(free["body.2"], unpenalised["body.2"])


def _clipped_step(penalty_in_optimizer, max_norm):
    model = _model(hidden=(80, 70))
    handle = SaRA.apply(model, fraction=0.3, lambda_rank=0.5, progressive_iter=None,
                        penalty_in_optimizer=penalty_in_optimizer)
    opt = handle.optimizer(lr=0.003)
    x, y = _batch()
    opt.zero_grad()
    (nn.functional.cross_entropy(model(x), y) + handle.penalty()).backward()
    params = handle.trainable_parameters()
    task = [p.grad.clone() for p in params]
    nn.utils.clip_grad_norm_(params, max_norm)
    clipped = [p.grad.clone() for p in params]
    layer = handle.layers["body.2"]  # the one eligible matrix: every draw picks it
    values = layer.values.detach().clone().requires_grad_(True)
    masked = torch.zeros(70 * 80, dtype=torch.float64).index_put((layer.index,), values)
    (term_grad,) = torch.autograd.grad(
        0.5 * torch.linalg.matrix_norm(masked.view(70, 80), ord="nuc"), values)
    opt.step()
    used = [p.grad.clone() for p in params]
    return list(handle.layers).index("body.2"), term_grad, task, clipped, used, _weights(handle)


def test_the_nuclear_norm_gradient_is_added_after_clipping_unless_asked():
    # Official: the term's backward runs inside step(), after the loop's clip_grad_norm_.
    body2, term_grad, _, clipped, used, _ = _clipped_step(True, 1e-3)
    torch.testing.assert_close(used[body2] - clipped[body2], term_grad, rtol=0, atol=1e-12)
    assert torch.linalg.vector_norm(torch.cat(used)) > 1e-2
    _, _, task, clipped, used, _ = _clipped_step(False, 1e-3)
    assert all(torch.equal(a, b) for a, b in zip(clipped, used))  # the term was in the loss
    assert torch.linalg.vector_norm(torch.cat(used)) <= 1e-3 + 1e-12
    assert torch.linalg.vector_norm(torch.cat(task)) > 1e-2
    # Without clipping the two orders compute the same step.
    after, before = _clipped_step(True, math.inf)[-1], _clipped_step(False, math.inf)[-1]
    for name in after:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=1e-12)
