"""The adapter machinery: target selection, freezing, merge/unmerge/remove, adapter state dicts."""

import pytest
import torch
from torch import nn

from regzoo.adapters import AdapterLayer, LowRankLinear, apply_low_rank, find_targets
from regzoo.models import MLP


def _model():
    torch.manual_seed(0)
    return MLP(16, 10, hidden=(32, 24)).double()


class Conv1D(nn.Module):
    """GPT-2's layout (weight stored in × out), as transformers.pytorch_utils.Conv1D."""

    def __init__(self, nf: int, nx: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf, dtype=torch.float64))
        self.bias = nn.Parameter(torch.randn(nf, dtype=torch.float64))

    def forward(self, x):
        flat = torch.addmm(self.bias, x.reshape(-1, x.size(-1)), self.weight)
        return flat.reshape(*x.shape[:-1], self.nf)


def test_none_selects_every_linear_and_names_select_by_suffix_or_glob():
    model = _model()
    assert [n for n, _ in find_targets(model)] == ["body.0", "body.2", "head"]
    assert [n for n, _ in find_targets(model, ["head"])] == ["head"]
    assert [n for n, _ in find_targets(model, "body.*")] == ["body.0", "body.2"]


def test_unknown_and_non_linear_targets_are_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match=r"target_modules.*'attn'"):
        find_targets(model, ["attn"])
    with pytest.raises(TypeError, match=r"'body\.1' is a ReLU"):
        find_targets(model, ["body.1"])
    with pytest.raises(ValueError, match="empty"):
        find_targets(model, [])
    with pytest.raises(ValueError, match=r"rank must be .* = \[1, 10\]"):
        apply_low_rank(model, target_modules=["head"], rank=11)


def test_only_adapter_and_saved_parameters_train_and_remove_restores_the_flags():
    model = _model()
    model.body[0].bias.requires_grad_(False)
    handle = apply_low_rank(model, target_modules=["body.0", "body.2"], rank=3,
                            modules_to_save=["head"])
    trainable = {id(p) for p in handle.trainable_parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == trainable
    assert len(trainable) == 2 * 2 + 2
    handle.remove()
    assert not model.body[0].bias.requires_grad
    assert model.body[0].weight.requires_grad and model.head.weight.requires_grad
    with pytest.raises(RuntimeError, match="removed"):
        handle.merge()


def test_a_target_cannot_be_wrapped_twice_nor_be_saved_in_full():
    model = _model()
    apply_low_rank(model, target_modules=["head"], rank=2)
    with pytest.raises(ValueError, match="already carries an adapter"):
        apply_low_rank(model, target_modules=["head"], rank=2)
    again = apply_low_rank(model, rank=2)
    assert sorted(again.layers) == ["body.0", "body.2"]
    with pytest.raises(ValueError, match=r"modules_to_save.*also an adapter target"):
        apply_low_rank(_model(), target_modules=["head"], rank=2, modules_to_save=["head"])


@pytest.mark.parametrize("init", ["lora", "pissa", "sorsa"])
def test_transposed_conv1d_layout_gives_the_same_map_as_linear(init):
    torch.manual_seed(1)
    conv = Conv1D(7, 12)
    linear = nn.Linear(12, 7).double()
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        linear.bias.copy_(conv.bias)
    torch.manual_seed(2)
    a = LowRankLinear(conv, 3, init=init)
    torch.manual_seed(2)
    b = LowRankLinear(linear, 3, init=init)
    for p, q in zip(a.adapter_parameters(), b.adapter_parameters(), strict=True):
        with torch.no_grad():
            noise = torch.randn_like(p)
            p.add_(noise)
            q.add_(noise)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x))
    a.merge()
    torch.testing.assert_close(a.base(x), b(x))


def test_adapter_state_dict_round_trip_and_mismatch_errors():
    model = _model()
    handle = apply_low_rank(model, rank=2, init="sorsa")
    for p in handle.adapter_parameters():
        with torch.no_grad():
            p.add_(0.1)
    state = handle.adapter_state_dict()
    assert set(state) == {f"{n}.{k}" for n in ("body.0", "body.2", "head") for k in "ABS"}
    x = torch.randn(3, 16, dtype=torch.float64)
    expected = model(x)
    with torch.no_grad():
        for p in handle.adapter_parameters():
            p.zero_()
    handle.load_adapter_state_dict(state)
    torch.testing.assert_close(model(x), expected)
    with pytest.raises(ValueError, match="missing keys"):
        handle.load_adapter_state_dict({k: v for k, v in state.items() if k != "head.S"})
    with pytest.raises(ValueError, match="shape"):
        handle.load_adapter_state_dict({**state, "head.S": torch.zeros(5)})


def test_half_precision_base_keeps_float32_adapter_parameters():
    layer = LowRankLinear(nn.Linear(8, 6).to(torch.bfloat16), 2, init="pissa")
    assert layer.A.dtype == layer.B.dtype == torch.float32
    assert layer(torch.randn(3, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


class _Zero(AdapterLayer):
    def delta_weight(self):
        return torch.zeros_like(self.weight_matrix())


def test_wrapping_a_non_linear_module_is_a_type_error_and_the_base_is_abstract():
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        _Zero(nn.ReLU())
    with pytest.raises(TypeError, match="abstract"):
        AdapterLayer(nn.Linear(3, 2))
    layer = _Zero(nn.Linear(3, 2))
    x = torch.randn(4, 3)
    torch.testing.assert_close(layer(x), layer.base(x))


def test_a_rank_too_large_for_one_layer_leaves_the_model_untouched():
    model = _model()
    weights = [p.detach().clone() for p in model.parameters()]
    # A named layer the rank does not fit is an error, raised before any layer is wrapped.
    with pytest.raises(ValueError, match=r"layer 'head' of shape \(10, 24\)"):
        apply_low_rank(model, target_modules=["body.0", "head"], rank=12, init="pissa")
    assert all(type(m) in (nn.Linear, nn.ReLU, nn.Sequential, MLP) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights, strict=True))
