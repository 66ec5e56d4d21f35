"""QLAE: loss terms and their gradients, the optimiser groups, value clipping, the baselines."""

import math

import pytest
import torch
import torch.nn.functional as F

from regzoo.methods.latent_quantization.qlae import (
    LatentAutoencoder,
    QLAEConfig,
    encode,
    fit_qlae,
    qlae_loss,
    qlae_param_groups,
)
from regzoo.quantizers import ScalarQuantizer


def _images(n=24, side=6, seed=0):
    return (torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed)) > 0.5
            ).float()


def _model(latent="quantized", seed=0):
    torch.manual_seed(seed)
    return LatentAutoencoder(36, 4, latent=latent, hidden=(16,))


def test_the_card_registers_the_qlae_procedure():
    from regzoo.registry import card

    assert card("latent_quantization").obj is fit_qlae


def test_loss_is_pixel_bce_plus_weighted_quantisation_and_commitment():
    model, x = _model(), _images()
    loss = qlae_loss(model, x, quantization_weight=0.3, commitment_weight=0.7)
    z_c = model.encoder(x.reshape(len(x), -1))
    quantized = model.quantizer(z_c)
    logits = model.decoder(quantized.z_hat)
    expected = (F.binary_cross_entropy_with_logits(logits, x.reshape(len(x), -1))
                + 0.3 * ((z_c - quantized.z_q) ** 2).mean()
                + 0.7 * ((z_c - quantized.z_q) ** 2).mean())
    torch.testing.assert_close(loss.total, expected)
    assert set(loss.parts) == {"bce", "quantization", "commitment"}


def test_decoder_sees_only_codebook_values_and_codebooks_learn_only_from_quantisation():
    model, x = _model(), _images()
    codes = encode(model, x)
    books = model.quantizer.codebooks()
    z = torch.gather(books.expand(len(x), -1, -1), 2, codes[..., None]).squeeze(-1)
    torch.testing.assert_close(model(x).logits, model.decoder(z))
    qlae_loss(model, x, quantization_weight=0.0, commitment_weight=0.0).total.backward()
    grad = model.quantizer.values.grad
    assert grad is None or float(grad.abs().max()) == 0


def test_param_groups_put_decay_on_weights_only():
    model = _model()
    weights, rest = qlae_param_groups(model, 0.1)
    assert weights["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in weights["params"])
    assert any(p is model.quantizer.values for p in rest["params"])
    assert all(p.ndim == 1 or p is model.quantizer.values for p in rest["params"])
    assert (len(weights["params"]) + len(rest["params"])
            == len(list(model.parameters())))


def test_adamw_without_decay_is_adam_and_decay_shrinks_only_weights():
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
    b.data.copy_(a.data)
    adamw = torch.optim.AdamW([{"params": [a], "weight_decay": 0.0}], lr=0.1)
    adam = torch.optim.Adam([b], lr=0.1)
    for _ in range(3):
        for opt, p in ((adamw, a), (adam, b)):
            opt.zero_grad()
            (p ** 3).sum().backward()
            opt.step()
    torch.testing.assert_close(a, b)


def test_weight_gradients_are_value_clipped_and_biases_are_not():
    model, x = _model(), _images()
    seen = {}

    def capture(_, epoch):
        return {}

    original = torch.nn.utils.clip_grad_value_

    def spy(params, clip):
        original(params, clip)
        seen["max"] = max(float(p.grad.abs().max()) for p in params if p.grad is not None)
        seen["count"] = len(list(params))

    torch.nn.utils.clip_grad_value_ = spy
    try:
        fit_qlae(model, x * 1.0, config=QLAEConfig(epochs=1, batch_size=24, clip=1e-4),
                 evaluate=capture, progress=False)
    finally:
        torch.nn.utils.clip_grad_value_ = original
    assert seen["max"] <= 1e-4 + 1e-12
    assert seen["count"] == len(qlae_param_groups(model)[0]["params"])


def test_beta_vae_weighs_the_kl_by_latents_over_pixels():
    model, x = _model("gaussian"), _images()
    model.eval()
    loss = qlae_loss(model, x, beta=4.0)
    assert loss.weights["kl"] == pytest.approx(4 * 4 / 36)
    mu, log_var = model.encoder(x.reshape(len(x), -1)).chunk(2, -1)
    kl = 0.5 * (mu ** 2 + log_var.exp() - 1 - log_var).mean(-1).mean()
    torch.testing.assert_close(loss.parts["kl"], 4 * 4 / 36 * kl)
    torch.testing.assert_close(encode(model, x), mu)


@pytest.mark.parametrize("latent", ["quantized", "global", "frozen", "vector", "continuous",
                                    "gaussian"])
def test_every_latent_trains_and_lowers_the_reconstruction_loss(latent):
    model, x = _model(latent), _images(64)
    before = float(qlae_loss(model.eval(), x).parts["bce"].detach())
    model.train()
    result = fit_qlae(model, x, config=QLAEConfig(epochs=30, batch_size=32,
                                                  weight_decay=0.0), progress=False)
    after = float(qlae_loss(model.eval(), x).parts["bce"].detach())
    assert after < before
    assert len(result.history.records) == 30
    rep = encode(model, x)
    assert rep.dtype == (torch.long if model.discrete else torch.float32)
    if latent == "frozen":
        assert torch.equal(model.quantizer.codebooks(), ScalarQuantizer(4).codebooks())


def test_global_codebook_is_one_row_shared_by_all_dimensions():
    model = _model("global")
    assert model.quantizer.values.shape == (1, 10)
    assert torch.equal(model.quantizer.codebooks()[0], model.quantizer.codebooks()[3])


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: LatentAutoencoder(36, 4, latent="discrete"), ValueError, "latent must be one of"),
    (lambda: QLAEConfig(weight_decay=-0.1), ValueError, "weight_decay"),
    (lambda: QLAEConfig(epochs=0), ValueError, "epochs"),
    (lambda: QLAEConfig(clip=0.0), ValueError, "clip"),
    (lambda: fit_qlae(_model(), _images() * 2), ValueError, r"\[0, 1\]"),
    (lambda: fit_qlae(_model(), _images(side=5)), ValueError, "36 values per image"),
    (lambda: fit_qlae(torch.nn.Linear(3, 3), _images()), TypeError, "LatentAutoencoder"),
    (lambda: _model()(torch.zeros(2, 35)), ValueError, "input_dim=36"),
    (lambda: qlae_param_groups(_model(), math.nan), ValueError, "weight_decay"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
