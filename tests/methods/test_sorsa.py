"""SORSA: SVD initialisation, the orthonormal regulariser, its two update orders, bad input."""

import copy

import pytest
import torch
from torch import nn

from regzoo.adapters import LowRankLinear, apply_low_rank
from regzoo.methods.sorsa import (
    SORSA,
    orthonormal_gradients,
    orthonormal_penalty,
    orthonormality_errors,
)
from regzoo.models import MLP


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return MLP(12, 5, hidden=(16, 8)).to(dtype)


def _perturb(handle, scale=0.05, seed=1):
    """Move every factor off its SVD values, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in handle.adapter_parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def _task_loss(model, seed=2):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 12, generator=generator, dtype=torch.float64)
    return model(x).square().mean()


def test_principal_plus_residual_is_the_weight_and_the_factors_are_its_svd():
    model = _model()
    weights = {name: m.weight.detach().clone() for name, m in model.named_modules()
               if isinstance(m, nn.Linear)}
    handle = SORSA.apply(model, rank=3)
    for name, layer in handle.layers.items():
        W = weights[name]
        rebuilt = layer.weight_matrix() + layer.B @ torch.diag(layer.S) @ layer.A
        torch.testing.assert_close(rebuilt, W, rtol=0, atol=1e-13)
        sigma = torch.linalg.svdvals(W)
        torch.testing.assert_close(layer.S.detach(), sigma[:3], rtol=0, atol=1e-12)
        # The frozen residual keeps exactly the minor singular values σ_{r+1..}.
        residual = torch.linalg.svdvals(layer.weight_matrix())
        torch.testing.assert_close(residual[: len(sigma) - 3], sigma[3:], rtol=0, atol=1e-12)
        assert float(residual[len(sigma) - 3:].max()) < 1e-12


def test_delta_equals_the_official_init_from_the_svd_of_the_transpose():
    model = _model()
    W = model.body[0].weight.detach().clone()
    handle = SORSA.apply(model, rank=4, target_modules=["body.0"])
    # Official sorsa_init: u, s, vt = svd(Wᵀ); A = u[:, :r]ᵀ, S = s[:r], B = vt[:r]ᵀ.
    u, s, vt = torch.linalg.svd(W.t(), full_matrices=False)
    official = (vt[:4].t() * s[:4]) @ u[:, :4].t()
    torch.testing.assert_close(handle.layers["body.0"].delta_weight(), official,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_outputs_are_unchanged_at_init(dtype, tol):
    model = _model(dtype)
    x = torch.randn(7, 12, dtype=dtype)
    before = model(x)
    SORSA.apply(model, rank=4, alpha=8.0)
    torch.testing.assert_close(model(x), before, rtol=0, atol=tol)


def test_only_the_factors_and_saved_modules_train():
    model = _model()
    handle = SORSA.apply(model, rank=2, target_modules=["body.0", "body.2"],
                         modules_to_save=["head"])
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"body.0.A", "body.0.B", "body.0.S", "body.2.A", "body.2.B", "body.2.S",
                         "head.weight", "head.bias"}
    assert {id(p) for p in handle.trainable_parameters()} == {
        id(p) for p in model.parameters() if p.requires_grad}


def test_penalty_is_zero_with_zero_gradient_on_orthonormal_factors():
    eye = torch.eye(5, dtype=torch.float64)
    A = eye[[3, 0, 2]]                      # 3 × 5, orthonormal rows, exactly
    B = eye[:, [4, 1, 0]]                   # 5 × 3, orthonormal columns, exactly
    assert float(orthonormal_penalty([(A, B)])) == 0.0
    (grad_a, grad_b), = orthonormal_gradients([(A, B)])
    assert float(grad_a.abs().max()) == 0.0 and float(grad_b.abs().max()) == 0.0
    # At SVD init the error is rounding only.
    handle = SORSA.apply(_model(), rank=4)
    assert handle.orthonormality_error() < 1e-14


def test_penalty_closed_form_for_scaled_orthonormal_factors():
    # A = c·(orthonormal rows): ‖AAᵀ − I‖_F = |c² − 1|·√r; the mean over A and B matrices.
    Q, _ = torch.linalg.qr(torch.randn(6, 3, dtype=torch.float64))
    A, B = 2.0 * Q.t(), 0.5 * Q
    expected = ((4.0 - 1.0) * 3 ** 0.5 + (1.0 - 0.25) * 3 ** 0.5) / 2
    torch.testing.assert_close(orthonormal_penalty([(A, B)]),
                               torch.tensor(expected, dtype=torch.float64))
    errors = orthonormality_errors(A, B)
    torch.testing.assert_close(errors[0], torch.tensor(3 * 3 ** 0.5, dtype=torch.float64))


def test_penalty_gradient_matches_autograd_and_finite_differences():
    generator = torch.Generator().manual_seed(3)
    pairs = [(torch.randn(3, 7, generator=generator, dtype=torch.float64, requires_grad=True),
              torch.randn(5, 3, generator=generator, dtype=torch.float64, requires_grad=True))
             for _ in range(2)]
    flat = [t for pair in pairs for t in pair]
    assert torch.autograd.gradcheck(
        lambda a0, b0, a1, b1: orthonormal_penalty([(a0, b0), (a1, b1)]), flat)
    autograd = torch.autograd.grad(orthonormal_penalty(pairs), flat)
    closed = [g for pair in orthonormal_gradients(pairs) for g in pair]
    for ours, reference in zip(closed, autograd):
        torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)


def test_decoupled_step_is_a_gamma_gradient_step_on_A_and_B_only():
    model = _model()
    handle = SORSA.apply(model, rank=3, gamma=0.05)
    _perturb(handle)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    pairs = [(layer.A, layer.B) for layer in handle.layers.values()]
    grads = torch.autograd.grad(handle.penalty(), [t for pair in pairs for t in pair])
    expected = {}
    for name, grad_a, grad_b in zip(handle.layers, grads[::2], grads[1::2]):
        expected[f"{name}.A"] = before[f"{name}.A"] - 0.05 * grad_a
        expected[f"{name}.B"] = before[f"{name}.B"] - 0.05 * grad_b
    penalty_before = handle.orthonormality_error()
    handle.orthonormal_step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), expected.get(name, before[name]),
                                   rtol=1e-12, atol=1e-12)
    assert handle.orthonormality_error() < penalty_before


def test_loss_mode_adds_the_ortho_gradient_after_clipping_at_the_peak_lr():
    gamma, peak, clip = 0.02, 0.1, 0.05
    model = _model()
    handle = SORSA.apply(model, rank=3, gamma=gamma, ortho_mode="loss")
    _perturb(handle)
    reference = copy.deepcopy(model)
    ref_params = [p for p in reference.parameters() if p.requires_grad]
    params = handle.trainable_parameters()
    optimizer = torch.optim.SGD(params, lr=peak)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)  # lr = peak/2
    ref_opt = torch.optim.SGD(ref_params, lr=0.5 * peak)
    del scheduler

    # Official trainer.py order: backward, clip, backward((γ/lr_peak)·L_orth), step.
    _task_loss(reference).backward()
    nn.utils.clip_grad_norm_(ref_params, clip)
    ref_layers = [m for m in reference.modules() if isinstance(m, LowRankLinear)]
    ((gamma / peak) * orthonormal_penalty([(m.A, m.B) for m in ref_layers])).backward()
    ref_opt.step()

    _task_loss(model).backward()
    handle.step(optimizer, max_grad_norm=clip)
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)

    # Clipping after adding the ortho gradient gives another update: the order is visible.
    other = copy.deepcopy(reference)
    other_params = [p for p in other.parameters() if p.requires_grad]
    for p in other_params:
        p.grad = None
    _task_loss(other).backward()
    other_layers = [m for m in other.modules() if isinstance(m, LowRankLinear)]
    ((gamma / peak) * orthonormal_penalty([(m.A, m.B) for m in other_layers])).backward()
    nn.utils.clip_grad_norm_(other_params, clip)
    torch.optim.SGD(other_params, lr=0.5 * peak).step()
    assert not torch.allclose(next(iter(other_layers)).A, ref_layers[0].A, atol=1e-9)


def test_decoupled_mode_steps_the_optimizer_first_then_the_regulariser():
    model = _model()
    handle = SORSA.apply(model, rank=3, gamma=0.03)
    _perturb(handle)
    reference = copy.deepcopy(model)
    ref_params = [p for p in reference.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(handle.trainable_parameters(), lr=1e-2)
    ref_opt = torch.optim.Adam(ref_params, lr=1e-2)
    for _ in range(3):
        _task_loss(reference).backward()
        nn.utils.clip_grad_norm_(ref_params, 1.0)
        ref_opt.step()
        ref_opt.zero_grad()
        layers = [m for m in reference.modules() if isinstance(m, LowRankLinear)]
        with torch.no_grad():
            for m, (grad_a, grad_b) in zip(layers, orthonormal_gradients(
                    [(m.A, m.B) for m in layers])):
                m.A -= 0.03 * grad_a
                m.B -= 0.03 * grad_b
        _task_loss(model).backward()
        handle.step(optimizer, max_grad_norm=1.0)
        optimizer.zero_grad()
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_without_a_task_gradient_loss_mode_under_sgd_is_the_decoupled_step():
    # Loss mode divides γ by lr and SGD multiplies by it again: a γ-sized step, as the paper's.
    decoupled, loss = _model(), _model()
    handles = [SORSA.apply(m, rank=3, gamma=0.1, ortho_mode=mode)
               for m, mode in ((decoupled, "decoupled"), (loss, "loss"))]
    for h in handles:
        _perturb(h)
        h.step(torch.optim.SGD(h.trainable_parameters(), lr=0.3))
    for a, b in zip(decoupled.parameters(), loss.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gamma_zero_changes_nothing_beyond_the_optimizer_step():
    plain, sorsa = _model(), _model()
    h_plain = SORSA.apply(plain, rank=3, gamma=0.0)
    h_sorsa = SORSA.apply(sorsa, rank=3, gamma=0.0, ortho_mode="loss")
    for h, m in ((h_plain, plain), (h_sorsa, sorsa)):
        _perturb(h)
        _task_loss(m).backward()
    torch.optim.SGD(h_plain.trainable_parameters(), lr=0.1).step()
    h_sorsa.step(torch.optim.SGD(h_sorsa.trainable_parameters(), lr=0.1))
    for a, b in zip(plain.parameters(), sorsa.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_merge_unmerge_round_trip_after_training_like_changes():
    model = _model()
    handle = SORSA.apply(model, rank=3)
    _perturb(handle, scale=0.3)
    x = torch.randn(5, 12, dtype=torch.float64)
    residuals = {n: layer.weight_matrix().detach().clone() for n, layer in handle.layers.items()}
    wrapped = model(x)
    handle.merge()
    torch.testing.assert_close(model(x), wrapped, rtol=1e-12, atol=1e-12)
    handle.unmerge()
    for name, layer in handle.layers.items():
        torch.testing.assert_close(layer.weight_matrix(), residuals[name], rtol=0, atol=1e-14)
    torch.testing.assert_close(model(x), wrapped, rtol=1e-12, atol=1e-12)


def test_with_sigma_folded_into_B_the_start_equals_pissa():
    sorsa_model, pissa_model = _model(), _model()
    sorsa = SORSA.apply(sorsa_model, rank=3)
    pissa = apply_low_rank(pissa_model, rank=3, init="pissa")
    for name, layer in sorsa.layers.items():
        other = pissa.layers[name]
        torch.testing.assert_close(layer.delta_weight(), other.delta_weight(),
                                   rtol=0, atol=1e-12)
        torch.testing.assert_close(layer.weight_matrix(), other.weight_matrix(),
                                   rtol=0, atol=1e-12)


def test_penalty_is_differentiable_for_a_users_own_loop():
    model = _model()
    handle = SORSA.apply(model, rank=3)
    _perturb(handle)
    (_task_loss(model) + 0.1 * handle.penalty()).backward()
    assert all(p.grad is not None for p in handle.trainable_parameters())


def test_bad_input_names_the_argument_and_leaves_the_model_untouched():
    model = _model()
    with pytest.raises(ValueError, match=r"rank.*'body\.2'"):
        SORSA.apply(model, target_modules=["body.2"], rank=9)   # body.2 is 8×16
    assert all(type(m) in (nn.Linear, nn.ReLU, nn.Sequential, MLP) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="gamma"):
        SORSA.apply(model, gamma=-1e-4)
    with pytest.raises(ValueError, match="ortho_mode"):
        SORSA.apply(model, ortho_mode="clip_then_add")
    with pytest.raises(TypeError, match="rank"):
        SORSA.apply(model, rank=2.5)
    handle = SORSA.apply(model, rank=2)
    with pytest.raises(ValueError, match="lr"):
        handle.add_orthonormal_gradient(lr=0.0)
    with pytest.raises(ValueError, match="gamma"):
        handle.orthonormal_step(gamma=-1.0)
    with pytest.raises(ValueError, match="factors"):
        orthonormal_penalty([])
    handle.remove()
    with pytest.raises(RuntimeError, match="removed"):
        handle.penalty()
