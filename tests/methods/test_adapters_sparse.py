"""Properties of the sparse-value adapter layer (regzoo.adapters.sparse)."""

import pytest
import torch
from torch import nn

from regzoo.adapters.sparse import (
    SparseValueLayer,
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
        SparseValueLayer(nn.Linear(3, 2), torch.tensor([2, 1]))
    with pytest.raises(TypeError, match="int64"):
        SparseValueLayer(nn.Linear(3, 2), torch.tensor([0.0, 1.0]))
    handle = apply_sparse(_model(), fraction=0.2)
    with pytest.raises(ValueError, match="keep must be a bool"):
        handle.restrict({"head": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="unknown layer"):
        handle.restrict({"nope": torch.ones(3, dtype=torch.bool)})


# --- convolutions, biases and norms ----------------------------------------------------------


def _conv_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2), nn.GroupNorm(2, 8), nn.ReLU(),
        nn.ConvTranspose2d(8, 4, 2, stride=2), nn.LayerNorm(8), nn.Flatten(),
        nn.Linear(4 * 8 * 8, 5)).double()


def _images(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64),
            torch.randint(0, 5, (6,), generator=g))


def _conv_trajectory(mode, include_biases_and_norms, restrict_at=None):
    model = _conv_model()
    handle = apply_sparse(model, fraction=0.3, mode=mode,
                          include_biases_and_norms=include_biases_and_norms)
    opt = torch.optim.AdamW(handle.trainable_parameters(), lr=0.02, weight_decay=0.05)
    x, y = _images()
    snapshots = []
    for step in range(8):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if step == restrict_at:
            handle.restrict({name: torch.arange(layer.num_selected) % 3 != 0
                             for name, layer in handle.layers.items()}, opt)
        snapshots.append({n: torch.cat([t.detach().reshape(-1)
                                        for t in layer.effective_tensors()])
                          for n, layer in handle.layers.items()})
    return snapshots


def test_convolution_kernels_are_covered_by_default_floor_fraction_per_flat_kernel():
    model = _conv_model()
    kernels = {n: m.weight.detach().clone() for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))}
    handle = apply_sparse(model, fraction=0.15)
    assert set(handle.layers) == {"0", "3", "6", "9"}  # the norms need the option
    for name, layer in handle.layers.items():
        flat = kernels[name].reshape(-1)
        assert layer.tensors == ("weight",)
        assert layer.num_selected == int(0.15 * flat.numel())
        assert torch.equal(layer.index, select_entries(kernels[name], layer.num_selected))
    for conv in (nn.Conv1d(3, 5, 3), nn.Conv3d(3, 5, 3)):
        handle = apply_sparse(nn.Sequential(conv), fraction=0.2)
        assert handle.counts() == {"0": int(0.2 * conv.weight.numel())}
    linear_only = apply_sparse(_conv_model(), fraction=0.15, include_convolutions=False)
    assert set(linear_only.layers) == {"9"}


def test_biases_and_norms_option_covers_each_tensor_with_its_own_count():
    model = _conv_model()
    params = dict(model.named_parameters())
    handle = apply_sparse(model, fraction=0.3, include_biases_and_norms=True)
    assert set(handle.layers) == {"0", "1", "3", "4", "6", "7", "9"}
    for name, layer in handle.layers.items():
        assert layer.tensors == ("weight", "bias")
        assert layer.tensor_counts() == {
            t: int(0.3 * params[f"{name}.{t}"].numel()) for t in ("weight", "bias")}
        bias_index = layer.index[layer.tensor_of(layer.index) == 1] - layer.sizes[0]
        assert torch.equal(bias_index, select_entries(params[f"{name}.bias"],
                                                      layer.tensor_counts()["bias"]))
    no_bias = apply_sparse(nn.Sequential(nn.Linear(4, 3, bias=False)), fraction=0.5,
                           include_biases_and_norms=True)
    assert no_bias.layers["0"].tensors == ("weight",)


@pytest.mark.parametrize("mode", ["sparse", "dense"])
@pytest.mark.parametrize("include_biases_and_norms", [False, True])
def test_wrapping_convolutions_and_norms_leaves_the_outputs_unchanged(mode,
                                                                      include_biases_and_norms):
    model = _conv_model()
    x, _ = _images()
    before = model(x)
    apply_sparse(model, fraction=0.3, rule="random", mode=mode,
                 include_biases_and_norms=include_biases_and_norms)
    assert torch.equal(model(x), before)


@pytest.mark.parametrize("restrict_at", [None, 3])
def test_sparse_and_dense_paths_agree_on_convolutions_biases_and_norms(restrict_at):
    sparse = _conv_trajectory("sparse", True, restrict_at)
    dense = _conv_trajectory("dense", True, restrict_at)
    for a, b in zip(sparse, dense):
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-13)


@pytest.mark.parametrize("mode", ["sparse", "dense"])
def test_convolution_entries_outside_the_mask_stay_bit_identical_and_merge_is_exact(mode):
    model = _conv_model()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    handle = apply_sparse(model, fraction=0.25, mode=mode, include_biases_and_norms=True)
    x, y = _images()
    opt = torch.optim.AdamW(handle.trainable_parameters(), lr=0.05, weight_decay=0.1)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for name, layer in handle.layers.items():
        flat = torch.cat([t.detach().reshape(-1) for t in layer.effective_tensors()])
        start = torch.cat([original[f"{name}.{t}"].reshape(-1) for t in layer.tensors])
        off = torch.ones_like(flat, dtype=torch.bool)
        off[layer.index] = False
        assert torch.equal(flat[off], start[off])
        assert not torch.equal(flat[layer.index], start[layer.index])
    model.eval()
    x, _ = _images(2)
    trained = model(x)
    handle.merge()
    assert torch.equal(model(x), trained)
    handle.unmerge()
    for name, layer in handle.layers.items():
        for t in layer.tensors:
            assert torch.equal(getattr(layer.base, t), original[f"{name}.{t}"])
    handle.remove()
    assert not any(isinstance(m, SparseValueLayer) for m in model.modules())
    assert torch.equal(model(x), trained)


def test_convolution_values_save_and_load_round_trip():
    model = _conv_model()
    pretrained = {k: v.clone() for k, v in model.state_dict().items()}
    handle = apply_sparse(model, fraction=0.2, include_biases_and_norms=True)
    x, y = _images()
    opt = torch.optim.AdamW(handle.trainable_parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    fresh = _conv_model()
    fresh.load_state_dict(pretrained)
    other = apply_sparse(fresh, fraction=0.2, include_biases_and_norms=True)
    other.load_adapter_state_dict(handle.adapter_state_dict())
    # Training mode: batch statistics, since the running ones are buffers, not adapter state.
    assert torch.equal(fresh(x), model(x))


def test_bad_targets_name_the_option_that_covers_them():
    with pytest.raises(TypeError, match="include_biases_and_norms=True"):
        apply_sparse(_conv_model(), fraction=0.1, target_modules=["1"])
    with pytest.raises(TypeError, match="include_convolutions=True"):
        apply_sparse(_conv_model(), fraction=0.1, target_modules=["0"],
                     include_convolutions=False)
    with pytest.raises(ValueError, match="the weight first"):
        SparseValueLayer(nn.Conv2d(2, 2, 1), torch.tensor([0]), tensors=("bias",))
    with pytest.raises(ValueError, match=r"selects none of the linear layers, convolutions$"):
        apply_sparse(nn.Sequential(nn.ReLU(), nn.LayerNorm(3)), fraction=0.5,
                     target_modules="*")
