"""Our LoRA and PiSSA layers (regzoo.adapters.lowrank) and SORSA's L_orth agree with peft."""

import copy

import pytest
import torch
from torch import nn

from regzoo.adapters import apply_low_rank
from regzoo.models import MLP

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.slow  # importing peft (and transformers) takes ~10 s of CPU

TARGETS = ["body.0", "body.2", "head"]


def _model():
    torch.manual_seed(0)
    return MLP(12, 5, hidden=(16, 8))


def _peft_model(model, init, rank=4, alpha=8):
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS,
                             init_lora_weights=init, lora_dropout=0.0)
    return peft.get_peft_model(copy.deepcopy(model), config)


def _peft_layers(peft_model):
    modules = dict(peft_model.base_model.model.named_modules())
    return {name: modules[name] for name in TARGETS}


def _randomise(handle, peft_layers, seed=4):
    """Give both the same non-trivial factors, as after some training."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, layer in handle.layers.items():
            layer.A.add_(0.2 * torch.randn(layer.A.shape, generator=generator))
            layer.B.add_(0.2 * torch.randn(layer.B.shape, generator=generator))
            peft_layers[name].lora_A["default"].weight.copy_(layer.A)
            peft_layers[name].lora_B["default"].weight.copy_(layer.B)


def test_lora_matches_peft_given_the_same_factors():
    model = _model()
    reference = _peft_model(model, True)
    ours = copy.deepcopy(model)
    handle = apply_low_rank(ours, target_modules=TARGETS, rank=4, alpha=8)
    peft_layers = _peft_layers(reference)
    for name, layer in handle.layers.items():
        assert layer.scale == pytest.approx(peft_layers[name].scaling["default"])
        # B = 0: the adapted model starts as the base model.
        assert float(layer.B.detach().abs().max()) == 0.0
        with torch.no_grad():
            layer.A.copy_(peft_layers[name].lora_A["default"].weight)
    x = torch.randn(9, 12)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-6, atol=1e-6)
    _randomise(handle, peft_layers)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours(x), model(x), atol=1e-3)
    merged = reference.merge_and_unload()
    handle.remove()
    for name in TARGETS:
        torch.testing.assert_close(ours.get_submodule(name).weight,
                                   merged.get_submodule(name).weight, rtol=1e-5, atol=1e-6)


def test_pissa_matches_peft_initialisation_and_forward():
    model = _model()
    reference = _peft_model(model, "pissa")
    ours = copy.deepcopy(model)
    handle = apply_low_rank(ours, target_modules=TARGETS, rank=4, alpha=8, init="pissa")
    peft_layers = _peft_layers(reference)
    for name, layer in handle.layers.items():
        theirs = peft_layers[name]
        # Same SVD of the same float32 matrix: the factors and the residual agree.
        torch.testing.assert_close(layer.A, theirs.lora_A["default"].weight,
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.B, theirs.lora_B["default"].weight,
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer.weight_matrix(), theirs.base_layer.weight,
                                   rtol=1e-5, atol=1e-5)
    x = torch.randn(9, 12)
    torch.testing.assert_close(ours(x), model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)
    _randomise(handle, peft_layers)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-5, atol=1e-5)


def test_trainable_parameter_counts_match_peft():
    model = _model()
    reference = _peft_model(model, True)
    ours = copy.deepcopy(model)
    handle = apply_low_rank(ours, target_modules=TARGETS, rank=4, alpha=8)
    theirs = sum(p.numel() for p in reference.parameters() if p.requires_grad)
    assert sum(p.numel() for p in handle.trainable_parameters()) == theirs


def test_sorsa_orthonormal_penalty_equals_peft_adalora_regulariser():
    """SORSA's L_orth is AdaLoRA's ``orth_reg_weight`` term (same norms, same averaging)."""
    import types

    from regzoo.methods.sorsa import SORSA

    class WithLoss(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return types.SimpleNamespace(loss=self.net(x).sum() * 0.0)

    model = _model()
    config = peft.AdaLoraConfig(init_r=4, target_r=2, total_step=10, orth_reg_weight=1.0,
                                target_modules=TARGETS)
    reference = peft.get_peft_model(WithLoss(copy.deepcopy(model)), config)
    handle = SORSA.apply(model, target_modules=TARGETS, rank=4)
    generator = torch.Generator().manual_seed(5)
    modules = dict(reference.base_model.model.net.named_modules())
    with torch.no_grad():
        for name, layer in handle.layers.items():
            layer.A.add_(0.1 * torch.randn(layer.A.shape, generator=generator))
            layer.B.add_(0.1 * torch.randn(layer.B.shape, generator=generator))
            modules[name].lora_A["default"].copy_(layer.A)
            modules[name].lora_B["default"].copy_(layer.B)
    theirs = reference.base_model(torch.randn(3, 12)).loss
    torch.testing.assert_close(handle.penalty(), theirs, rtol=1e-6, atol=1e-7)
    assert float(theirs.detach()) > 0.01


def test_every_layer_means_every_layer_the_rank_fits_and_the_rest_are_named_in_a_warning():
    from regzoo.methods.sorsa import SORSA

    model = MLP(16, 3, hidden=(32,))
    with pytest.warns(UserWarning, match=r"left unadapted: head \(3, 32\)"):
        handle = SORSA.apply(model, rank=4)
    assert set(handle.layers) == {"body.0"}
    with pytest.raises(ValueError, match=r"layer 'head'.*leave that layer out"):
        apply_low_rank(MLP(16, 3, hidden=(32,)), target_modules=["head"], rank=4)
    with pytest.raises(ValueError, match="no linear layer"):
        apply_low_rank(MLP(2, 3, hidden=(2,)), rank=4)
