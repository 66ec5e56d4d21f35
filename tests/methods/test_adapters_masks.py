"""Binary-mask adapter layer: exact start, straight-through gradient, threshold, merge, state."""

import math

import pytest
import torch
from torch import nn

from regzoo.adapters.masks import BinaryMaskConv, BinaryMaskLinear, apply_binary_masks, binarize


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))


def test_masks_at_init_leave_the_output_bit_identical():
    model = _mlp()
    x = torch.randn(11, 5)
    before = model(x)
    apply_binary_masks(model)
    assert torch.equal(model(x), before)


def test_straight_through_gradient_equals_the_hand_derived_one():
    torch.manual_seed(1)
    base = nn.Linear(4, 3)
    layer = BinaryMaskLinear(base, scale=1e-2, threshold=5e-3)
    with torch.no_grad():
        layer.scores[0, 1] = 0.0  # one weight masked: its gradient still flows (STE)
    x, c = torch.randn(6, 4), torch.randn(6, 3)
    (layer(x) * c).sum().backward()
    # L = Σ c ⊙ (x W_effᵀ + b)  ⇒  ∂L/∂W_eff = cᵀ x  ⇒  ∂L/∂M = (cᵀ x) ⊙ W.
    expected = (c.t() @ x) * base.weight.detach()
    torch.testing.assert_close(layer.scores.grad, expected)
    assert base.weight.grad is None


def test_binarize_is_strict_at_the_threshold_and_passes_gradients_through():
    scores = torch.tensor([4e-3, 5e-3, 5.0001e-3, 1e-2], requires_grad=True)
    mask = binarize(scores, 5e-3)
    assert mask.tolist() == [0.0, 0.0, 1.0, 1.0]
    mask.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert scores.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_masked_fraction_counts_scores_at_or_below_the_threshold():
    model = _mlp()
    handle = apply_binary_masks(model)
    first = handle.layers["0"]
    with torch.no_grad():
        first.scores[0, :3] = 5e-3            # exactly τ: masked
        first.scores[1, 0] = 5e-3 + 1e-6      # above τ: kept
    assert handle.masked_count() == (3, 5 * 7 + 7 * 3)
    assert handle.masked_fraction() == pytest.approx(3 / 56)
    x = torch.randn(2, 5)
    expected = x @ (first.base.weight * (first.scores > 5e-3)).t() + first.base.bias
    torch.testing.assert_close(first(x), expected)


def test_with_a_constant_gradient_adam_cannot_flip_a_mask_before_scale_minus_tau_over_lr():
    torch.manual_seed(2)
    layer = BinaryMaskLinear(nn.Linear(6, 4), scale=1e-2, threshold=5e-3)
    direction = torch.sign(torch.randn(4, 6))
    lr = 1e-3
    optimizer = torch.optim.Adam([layer.scores], lr=lr)
    bound = (1e-2 - 5e-3) / lr  # 5 steps of exactly lr each
    flips_at = None
    for step in range(1, 12):
        optimizer.zero_grad()
        # A loss whose score gradient is constant: direction ⊙ W / W = direction.
        (layer.masked_weight() * direction / layer.base.weight.detach()).sum().backward()
        optimizer.step()
        if flips_at is None and bool((layer.scores <= 5e-3).any()):
            flips_at = step
    assert flips_at is not None and flips_at >= math.floor(bound)
    assert flips_at <= math.ceil(bound) + 1
    # Exactly the entries pushed down (positive gradient) are masked.
    assert torch.equal(layer.scores <= 5e-3, direction > 0)


def test_merge_bakes_the_binary_mask_into_the_weights_and_unmerge_restores_them():
    model = _mlp()
    original = [m.weight.detach().clone() for m in (model[0], model[2])]
    handle = apply_binary_masks(model)
    with torch.no_grad():
        for layer in handle.layers.values():
            layer.scores.copy_(torch.rand(layer.scores.shape, generator=torch.Generator()
                                          .manual_seed(3)) * 1e-2)
    x = torch.randn(4, 5)
    wrapped = model(x)
    masks = handle.binary_masks()
    handle.merge()
    assert torch.equal(model[0].base.weight, original[0] * masks["0"])
    torch.testing.assert_close(model(x), wrapped)
    handle.unmerge()
    assert torch.equal(model[0].base.weight, original[0])
    assert torch.equal(model[2].base.weight, original[1])
    handle.remove()
    assert type(model[0]) is nn.Linear and torch.equal(model[2].weight, original[1] * masks["2"])
    torch.testing.assert_close(model(x), wrapped)


def test_only_mask_scores_train_and_weights_outside_masked_layers_never_change():
    model = _mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    handle = apply_binary_masks(model, target_modules=["0"])
    assert handle.trainable_parameters() == [handle.layers["0"].scores]
    assert all(not p.requires_grad for n, p in model.named_parameters() if "scores" not in n)
    optimizer = torch.optim.Adam(handle.trainable_parameters(), lr=5e-3)
    for _ in range(5):
        optimizer.zero_grad()
        model(torch.randn(8, 5)).square().mean().backward()
        optimizer.step()
    assert handle.masked_fraction() > 0
    state = model.state_dict()
    for name in ("0.weight", "0.bias"):
        assert torch.equal(state[name.replace("0.", "0.base.")], before[name])
    for name in ("2.weight", "2.bias"):
        assert torch.equal(state[name], before[name])


def test_packed_masks_round_trip_the_binary_masks():
    model = _mlp()
    handle = apply_binary_masks(model, init="uniform", generator=torch.Generator().manual_seed(4))
    masks = handle.binary_masks()
    packed = handle.packed_masks()
    assert packed["0"].dtype == torch.uint8 and packed["0"].numel() == math.ceil(35 / 8)
    with torch.no_grad():
        for layer in handle.layers.values():
            layer.scores.fill_(1.0)
    handle.load_packed_masks(packed)
    assert all(torch.equal(handle.binary_masks()[k], masks[k]) for k in masks)
    with pytest.raises(ValueError, match="layer names"):
        handle.load_packed_masks({"0": packed["0"]})


def test_uniform_init_masks_exactly_the_scores_drawn_at_or_below_tau():
    layer = BinaryMaskLinear(nn.Linear(30, 20), init="uniform",
                             generator=torch.Generator().manual_seed(5))
    fraction = float((layer.scores <= 5e-3).float().mean())
    assert 0.4 < fraction < 0.6  # U(0, 1e-2) below 5e-3 about half the time
    again = BinaryMaskLinear(nn.Linear(30, 20), init="uniform",
                             generator=torch.Generator().manual_seed(5))
    assert torch.equal(layer.scores, again.scores)


def test_transformers_conv1d_is_masked_in_its_own_layout():
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(6)
    conv = Conv1D(7, 5)  # weight stored (in=5, out=7)
    x = torch.randn(2, 3, 5)
    before = conv(x)
    layer = BinaryMaskLinear(conv)
    assert torch.equal(layer(x), before)
    with torch.no_grad():
        layer.scores[2, 4] = 0.0  # out 2, in 4
    weight = conv.weight.detach().clone()
    weight[4, 2] = 0.0
    torch.testing.assert_close(layer(x), x @ weight + conv.bias)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"scale": 5e-3, "threshold": 5e-3}, ValueError, "must exceed threshold"),
    ({"init": "zeros"}, ValueError, "init must be one of"),
    ({"scale": -1.0}, ValueError, "scale must lie in"),
    ({"threshold": float("nan")}, ValueError, "threshold must be finite"),
    ({"target_modules": ["missing"]}, ValueError, "no module of the model matches"),
])
def test_bad_arguments_raise_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        apply_binary_masks(_mlp(), **kwargs)


def _convnet() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1),
                         nn.Flatten(), nn.Linear(4 * 36, 3))


@pytest.mark.parametrize("conv", [nn.Conv1d(3, 5, 3, padding=1), nn.Conv2d(3, 4, 3, stride=2),
                                  nn.Conv3d(2, 3, 2, groups=1), nn.Conv2d(4, 4, 3, groups=2)])
def test_a_masked_convolution_equals_the_convolution_with_the_masked_kernel(conv):
    torch.manual_seed(4)
    layer = BinaryMaskConv(conv)
    spatial = {nn.Conv1d: (9,), nn.Conv2d: (9, 9), nn.Conv3d: (5, 5, 5)}[type(conv)]
    x = torch.randn(2, conv.in_channels, *spatial)
    assert torch.equal(layer(x), conv(x))
    with torch.no_grad():
        layer.scores.view(-1)[::3] = 0.0
    kernel = conv.weight.detach() * (layer.scores.detach() > layer.threshold)
    expected = conv._conv_forward(x, kernel, conv.bias)
    torch.testing.assert_close(layer(x), expected)
    layer.merge()
    torch.testing.assert_close(layer(x), expected)
    original = conv.weight.detach().clone()
    layer.unmerge()
    assert not torch.equal(original, conv.weight)  # merged kernel had zeros; unmerge restored
    torch.testing.assert_close(layer(x), expected)


def test_conv_mask_gradient_is_the_straight_through_kernel_gradient():
    torch.manual_seed(5)
    conv = nn.Conv2d(2, 3, 3)
    layer = BinaryMaskConv(conv)
    x = torch.randn(4, 2, 6, 6)
    kernel = conv.weight.detach().clone().requires_grad_(True)
    conv._conv_forward(x, kernel, conv.bias).square().sum().backward()
    layer(x).square().sum().backward()
    torch.testing.assert_close(layer.scores.grad, kernel.grad * conv.weight.detach())
    assert conv.weight.grad is None


def test_named_convolutions_are_masked_and_none_keeps_linear_layers_only():
    model = _convnet()
    assert list(apply_binary_masks(_convnet()).layers) == ["4"]
    x = torch.randn(2, 2, 6, 6)
    before = model(x)
    handle = apply_binary_masks(model, target_modules=["0", "4"])
    assert isinstance(handle.layers["0"], BinaryMaskConv)
    assert isinstance(handle.layers["4"], BinaryMaskLinear)
    assert torch.equal(model(x), before)
    model(x).sum().backward()
    assert handle.layers["0"].scores.grad is not None
    packed = handle.packed_masks()
    handle.load_packed_masks(packed)
    handle.remove()
    assert type(model[0]) is nn.Conv2d
    torch.testing.assert_close(model(x), before)


def test_a_layer_masks_cannot_wrap_is_refused_by_name():
    model = nn.Sequential(nn.ConvTranspose2d(2, 2, 3), nn.Linear(3, 3))
    with pytest.raises(TypeError, match="binary masks wrap"):
        apply_binary_masks(model, target_modules=["0"])
    with pytest.raises(TypeError, match="BinaryMaskConv wraps"):
        BinaryMaskConv(nn.Linear(3, 3))
