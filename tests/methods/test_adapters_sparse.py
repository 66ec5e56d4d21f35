"""Properties of the sparse-value adapter layer (regzoo.adapters.sparse)."""

import pytest
import torch
from torch import nn

from regzoo.adapters.sparse import (
    SparseValueLinear,
    apply_sparse,
    select_below,
    select_entries,
    training_state_bytes,
)
from regzoo.models import MLP


def _model(seed=0):
    torch.manual_seed(seed)
    return MLP(12, 5, hidden=(16, 16)).double()


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(20, 12, generator=g, dtype=torch.float64),
            torch.randint(0, 5, (20,), generator=g))


def _train(model, params, steps, optimizer=None, lr=0.05):
    optimizer = optimizer or torch.optim.AdamW(params, lr=lr, weight_decay=0.1)
    x, y = _batch()
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return optimizer


def test_selected_count_is_exact_and_ties_break_by_lower_index():
    weight = torch.tensor([[0.5, -0.1, 0.1], [0.0, 0.1, -0.5], [0.1, 0.0, 2.0]])
    reference = sorted(range(9), key=lambda i: (abs(float(weight.view(-1)[i])), i))
    for count in range(10):
        chosen = select_entries(weight, count, "smallest")
        assert chosen.tolist() == sorted(reference[:count])
    largest = sorted(range(9), key=lambda i: (-abs(float(weight.view(-1)[i])), i))
    assert select_entries(weight, 4, "largest").tolist() == sorted(largest[:4])
    a = select_entries(weight, 5, "random", torch.Generator().manual_seed(3))
    b = select_entries(weight, 5, "random", torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.unique().numel() == 5
    assert select_below(weight, 0.1).tolist() == [3, 7]


def test_fraction_selects_floor_of_fraction_times_size_per_layer():
    model = _model()
    handle = apply_sparse(model, fraction=0.15)
    assert handle.counts() == {"body.0": int(0.15 * 16 * 12), "body.2": int(0.15 * 256),
                               "head": int(0.15 * 80)}


@pytest.mark.parametrize("mode", ["sparse", "dense"])
@pytest.mark.parametrize("rule", ["smallest", "largest", "random"])
def test_wrapping_leaves_the_outputs_unchanged(mode, rule):
    model = _model()
    x, _ = _batch()
    before = model(x)
    apply_sparse(model, fraction=0.3, rule=rule, mode=mode)
    assert torch.equal(model(x), before)


@pytest.mark.parametrize("mode", ["sparse", "dense"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_entries_outside_the_mask_stay_bit_identical(mode, optimizer):
    model = _model()
    originals = {name: m.weight.detach().clone() for name, m in model.named_modules()
                 if isinstance(m, nn.Linear)}
    handle = apply_sparse(model, fraction=0.25, mode=mode)
    params = handle.trainable_parameters()
    opt = (torch.optim.AdamW(params, lr=0.05, weight_decay=0.1) if optimizer == "adamw" else
           torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.1))
    _train(model, params, 25, opt)
    for name, layer in handle.layers.items():
        weight = layer.effective_weight().detach().reshape(-1)
        off = torch.ones_like(weight, dtype=torch.bool)
        off[layer.index] = False
        assert torch.equal(weight[off], originals[name].reshape(-1)[off])
        assert not torch.equal(weight[layer.index], originals[name].reshape(-1)[layer.index])
        assert not any(p.requires_grad for p in layer.base.parameters())


def _trajectory(mode, restrict_at=None):
    model = _model()
    handle = apply_sparse(model, fraction=0.3, mode=mode)
    opt = torch.optim.AdamW(handle.trainable_parameters(), lr=0.02, weight_decay=0.05)
    x, y = _batch()
    snapshots = []
    for step in range(12):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if step == restrict_at:
            keep = {name: torch.arange(layer.num_selected) % 3 != 0
                    for name, layer in handle.layers.items()}
            handle.restrict(keep, opt)
        snapshots.append({n: layer.effective_weight().detach().clone()
                          for n, layer in handle.layers.items()})
    return snapshots


@pytest.mark.parametrize("restrict_at", [None, 5])
def test_sparse_and_dense_paths_follow_the_same_trajectory_in_float64(restrict_at):
    sparse, dense = _trajectory("sparse", restrict_at), _trajectory("dense", restrict_at)
    for a, b in zip(sparse, dense):
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-13)


def test_sparse_path_holds_gradients_and_adam_state_for_the_selected_entries_only():
    sizes = {}
    for mode in ("sparse", "dense"):
        model = _model()
        handle = apply_sparse(model, fraction=0.1, mode=mode)
        params = handle.trainable_parameters()
        opt = _train(model, params, 1)
        sizes[mode] = training_state_bytes(params, opt)
        nnz, numel = handle.num_selected, sum(layer.weight_matrix().numel()
                                              for layer in handle.layers.values())
    assert sizes["sparse"] == {"gradient_bytes": 8 * nnz, "optimizer_bytes": 16 * nnz,
                               "trainable_bytes": 8 * nnz}
    assert sizes["dense"]["optimizer_bytes"] == 16 * numel


def test_restrict_keeps_a_subset_and_freezes_leaving_entries_at_their_trained_value():
    model = _model()
    handle = apply_sparse(model, fraction=0.3)
    opt = _train(model, handle.trainable_parameters(), 5)
    layer = handle.layers["body.2"]
    before_index = layer.index.clone()
    trained = layer.effective_weight().detach().clone()
    moments = opt.state[layer.values]["exp_avg"].clone()
    keep = torch.zeros(layer.num_selected, dtype=torch.bool)
    keep[::2] = True
    handle.restrict({"body.2": keep}, opt)
    assert set(layer.index.tolist()) <= set(before_index.tolist())
    assert layer.num_selected == int(keep.sum())
    assert torch.equal(opt.state[layer.values]["exp_avg"], moments[keep])
    assert any(p is layer.values for g in opt.param_groups for p in g["params"])
    assert torch.equal(layer.effective_weight(), trained)
    left = before_index[~keep]
    _train(model, handle.trainable_parameters(), 5, opt)
    assert torch.equal(layer.effective_weight().detach().reshape(-1)[left],
                       trained.reshape(-1)[left])


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_save_and_load_only_the_sparse_values_round_trips(mode):
    model = _model()
    pretrained = {k: v.clone() for k, v in model.state_dict().items()}
    handle = apply_sparse(model, fraction=0.2, mode=mode)
    opt = _train(model, handle.trainable_parameters(), 4)
    handle.restrict({"head": torch.arange(handle.layers["head"].num_selected) % 2 == 0}, opt)
    _train(model, handle.trainable_parameters(), 3, opt)
    state = handle.adapter_state_dict()
    assert sum(v.numel() for k, v in state.items() if "values" in k) == sum(
        handle.layers[n].num_selected + handle.layers[n].fixed_index.numel()
        for n in handle.layers)
    fresh = _model()
    fresh.load_state_dict(pretrained)
    other = apply_sparse(fresh, fraction=0.2, mode=mode)
    other.load_adapter_state_dict(state)
    x, _ = _batch(5)
    assert torch.equal(fresh(x), model(x))
    with pytest.raises(ValueError, match="missing keys"):
        other.load_adapter_state_dict({k: v for k, v in state.items() if "head" not in k})


def test_merge_unmerge_are_exact_and_remove_restores_plain_layers():
    model = _model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    handle = apply_sparse(model, fraction=0.3)
    _train(model, handle.trainable_parameters(), 5)
    x, _ = _batch(2)
    trained = model(x)
    handle.merge()
    assert torch.equal(model(x), trained)
    handle.unmerge()
    for name, layer in handle.layers.items():
        assert torch.equal(layer.base.weight, original[f"{name}.weight"])
    handle.remove()
    assert all(type(m) in (nn.Linear, nn.ReLU, nn.Sequential, MLP) for m in model.modules())
    assert torch.equal(model(x), trained)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="exactly one of fraction"):
        apply_sparse(_model())
    with pytest.raises(ValueError, match="exactly one of fraction"):
        apply_sparse(_model(), fraction=0.1, threshold=0.1)
    with pytest.raises(ValueError, match="fraction"):
        apply_sparse(_model(), fraction=1.5)
    with pytest.raises(ValueError, match="mode"):
        apply_sparse(_model(), fraction=0.1, mode="csr")
    with pytest.raises(ValueError, match="rule"):
        apply_sparse(_model(), fraction=0.1, rule="median")
    with pytest.raises(ValueError, match="selection is empty"):
        apply_sparse(_model(), threshold=1e-12)
    with pytest.raises(ValueError, match="count"):
        select_entries(torch.ones(2, 2), 5)
    with pytest.raises(ValueError, match="strictly increasing"):
        SparseValueLinear(nn.Linear(3, 2), torch.tensor([2, 1]))
    with pytest.raises(TypeError, match="int64"):
        SparseValueLinear(nn.Linear(3, 2), torch.tensor([0.0, 1.0]))
    handle = apply_sparse(_model(), fraction=0.2)
    with pytest.raises(ValueError, match="keep must be a bool"):
        handle.restrict({"head": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="unknown layer"):
        handle.restrict({"nope": torch.ones(3, dtype=torch.bool)})
