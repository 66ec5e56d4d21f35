"""QLInfoWGAN-GP and InfoWGAN-GP: penalty, losses and their gradients, latents, step ratio,
optimiser groups, bad input, and the procedure contract (determinism, exact resume, device)."""

import pytest
import torch
import torch.nn.functional as F

from regzoo.methods.latent_quantization.qlinfowgan import (
    InfoWGAN,
    InfoWGANConfig,
    build_optimizers,
    critic_loss,
    encode_real,
    fit_qlinfowgan,
    generator_loss,
    gradient_penalty,
)


def _images(n=16, side=4, seed=0):
    return (torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed)) > 0.5
            ).float()


def _model(latent="quantized", seed=0, num_latents=3):
    torch.manual_seed(seed)
    return InfoWGAN(16, num_latents, latent=latent, hidden=(8,))


def test_gradient_penalty_equals_a_hand_computation_for_a_quadratic_critic():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(5, 2, 3, generator=g), torch.randn(5, 2, 3, generator=g)
    eps = torch.rand(5, generator=g)
    a = torch.randn(2, 3, generator=g)
    penalty = gradient_penalty(lambda x: (a * x ** 2).sum(dim=(1, 2)), real, fake, eps)
    mixed = eps[:, None, None] * real + (1 - eps[:, None, None]) * fake
    norms = (2 * a * mixed).reshape(5, -1).norm(dim=1)
    torch.testing.assert_close(penalty, ((norms - 1) ** 2).mean())


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic_and_its_gradient_is_exact():
    g = torch.Generator().manual_seed(1)
    real, fake, eps = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g), torch.rand(4)
    w = torch.randn(6, generator=g)
    unit = w / w.norm()
    assert float(gradient_penalty(lambda x: x @ unit + 3.0, real, fake, eps)) == pytest.approx(
        0.0, abs=1e-12)
    # (‖w‖ − 1)² for any input; its gradient in w is 2(‖w‖ − 1) w/‖w‖ (the double backward).
    w = (2.5 * unit).requires_grad_(True)
    penalty = gradient_penalty(lambda x: x @ w, real, fake, eps)
    assert float(penalty.detach()) == pytest.approx(1.5 ** 2)
    penalty.backward()
    torch.testing.assert_close(w.grad, 2 * 1.5 * unit)


def test_critic_loss_is_the_weighted_sum_of_value_penalty_info_and_latent_terms():
    model, x = _model(), _images(8)
    config = InfoWGANConfig(gradient_penalty_weight=3.0, info_weight=7.0, value_weight=2.0,
                            quantization_weight=0.5, commitment_weight=0.25)
    g = torch.Generator().manual_seed(0)
    z, eps = model.sample_latents(8, g).detach(), torch.rand(8, generator=g)
    loss = critic_loss(model, x, z, eps, config)
    fake = model.generate(z).detach()
    out_fake, out_real = model(fake), model(x)
    z_c = out_fake.z_continuous
    z_q = model.quantizer(z_c).z_q
    expected = (2.0 * (out_fake.value - out_real.value).mean()
                + 3.0 * gradient_penalty(model.value, x.reshape(8, -1), fake, eps)
                + 7.0 * ((z_q - z) ** 2).mean() + 0.75 * ((z_c - z_q) ** 2).mean())
    torch.testing.assert_close(loss.total, expected)
    assert set(loss.parts) == {"value", "gradient_penalty", "info", "quantization",
                               "commitment"}
    continuous = _model("continuous")
    assert set(critic_loss(continuous, x, continuous.sample_latents(8, g), eps, config).parts
               ) == {"value", "gradient_penalty", "info"}


def test_generator_loss_is_minus_the_value_plus_info_and_latent_terms():
    model = _model("continuous")
    z = model.sample_latents(6, torch.Generator().manual_seed(0))
    config = InfoWGANConfig(info_weight=5.0)
    out = model(model.generate(z))
    expected = -out.value.mean() + 5.0 * F.mse_loss(out.z_continuous, z)
    torch.testing.assert_close(generator_loss(model, z, config).total, expected)


def _grads(params):
    return [p.grad for p in params]


def test_the_info_loss_trains_the_head_in_the_critic_step_and_never_the_generator():
    model, x = _model(), _images(8)
    info_only = InfoWGANConfig(value_weight=0.0, gradient_penalty_weight=0.0,
                               quantization_weight=0.0, commitment_weight=0.0)
    g = torch.Generator().manual_seed(0)
    critic_loss(model, x, model.sample_latents(8, g).detach(), torch.rand(8, generator=g),
                info_only).total.backward()
    assert model.encoder.head.weight.grad.abs().sum() > 0
    assert model.encoder.body[0].weight.grad.abs().sum() > 0
    assert all(grad is None for grad in _grads(model.generator.parameters()))
    assert model.critic.weight.grad is None or not model.critic.weight.grad.any()


def test_the_info_loss_reaches_the_generator_and_the_codebooks_in_the_generator_step():
    model = _model()
    info_only = InfoWGANConfig(value_weight=0.0, quantization_weight=0.0,
                               commitment_weight=0.0)
    generator_loss(model, model.sample_latents(8, torch.Generator().manual_seed(0)),
                   info_only).total.backward()
    assert all(grad is not None and grad.abs().sum() > 0
               for grad in _grads(model.generator.parameters()))
    # Through the sampled z (a differentiable pick of the codebook values), as officially.
    assert model.quantizer.values.grad.abs().sum() > 0


def test_the_quantisation_loss_reaches_only_the_codebooks_in_the_generator_step():
    model = _model()
    quantization_only = InfoWGANConfig(value_weight=0.0, info_weight=0.0,
                                       commitment_weight=0.0, quantization_weight=1.0)
    generator_loss(model, model.sample_latents(8, torch.Generator().manual_seed(0)),
                   quantization_only).total.backward()
    assert model.quantizer.values.grad.abs().sum() > 0
    assert all(grad is None or not grad.any() for grad in _grads(model.generator.parameters()))
    assert all(grad is None or not grad.any() for grad in _grads(model.critic_parameters()))


def test_each_optimiser_moves_only_its_network():
    model, x = _model(), _images(8)
    critic_opt, generator_opt = build_optimizers(model, InfoWGANConfig())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(0)
    critic_loss(model, x, model.sample_latents(8, g).detach(), torch.rand(8, generator=g),
                InfoWGANConfig()).total.backward()
    critic_opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith(("encoder.", "critic.")) for n in moved)
    generator_opt.zero_grad()
    critic_opt.zero_grad()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    generator_loss(model, model.sample_latents(8, g), InfoWGANConfig()).total.backward()
    generator_opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert "quantizer.values" in moved
    assert all(n.startswith(("generator.", "quantizer.")) for n in moved)


def test_quantised_latents_and_head_codes_lie_in_the_codebooks():
    model = _model(num_latents=4)
    with torch.no_grad():
        model.quantizer.values.add_(torch.arange(4.0)[:, None] * 10)  # distinct per dimension
    z = model.sample_latents(500, torch.Generator().manual_seed(0)).detach()
    books = model.quantizer.codebooks().detach()
    for j in range(4):
        assert torch.isin(z[:, j], books[j]).all()
        assert len(torch.unique(z[:, j])) == 10  # every value drawn (uniform pick)
    out = model(_images(8))
    for j in range(4):
        assert torch.isin(out.z_hat[:, j].detach(), books[j]).all()
    codes = encode_real(model, _images(8))
    assert codes.dtype == torch.long and codes.min() >= 0 and codes.max() < 10
    torch.testing.assert_close(books.gather(1, codes.T).T, out.z_hat.detach())


def test_continuous_latents_are_uniform_on_the_unit_cube_and_evaluated_unquantised():
    model = _model("continuous")
    z = model.sample_latents(2000, torch.Generator().manual_seed(0))
    assert z.min() >= 0 and z.max() < 1 and abs(float(z.mean()) - 0.5) < 0.02
    assert not model.discrete
    x = _images(8)
    torch.testing.assert_close(encode_real(model, x), model(x).z_continuous.detach())


@pytest.mark.parametrize("period", [1, 3, 5])
def test_one_generator_step_per_period_critic_steps(period):
    model, x = _model(), _images(16)
    # 16 images, batch 8: 2 critic steps per epoch, 7 epochs = 14 critic steps.
    result = fit_qlinfowgan(model, x, config=InfoWGANConfig(epochs=7, batch_size=8,
                                                            generator_period=period),
                            progress=False)
    assert result.generator_steps == 14 // period


def test_the_run_steps_each_optimiser_the_expected_number_of_times(tmp_path):
    model, x = _model(), _images(16)
    fit_qlinfowgan(model, x, config=InfoWGANConfig(epochs=5, batch_size=8,
                                                   generator_period=4),
                   checkpoint_path=str(tmp_path / "c.pt"), progress=False)
    saved = torch.load(tmp_path / "c.pt", weights_only=False)
    critic_steps = {int(s["step"]) for s in saved["optimizer"]["state"].values()}
    generator_steps = {int(s["step"])
                       for s in saved["state"]["generator_optimizer"]["state"].values()}
    assert critic_steps == {10} and generator_steps == {2}
    assert saved["state"]["gan"]["steps"] == 10


def test_weight_decay_reaches_weights_only_with_the_official_adam_settings():
    model = _model()
    critic_opt, generator_opt = build_optimizers(model, InfoWGANConfig(weight_decay=0.3))
    names = {id(p): n for n, p in model.named_parameters()}
    for opt, owner in ((critic_opt, ("encoder.", "critic.")),
                       (generator_opt, ("generator.", "quantizer."))):
        decayed, plain = opt.param_groups
        assert decayed["weight_decay"] == 0.3 and plain["weight_decay"] == 0.0
        assert all(names[id(p)].endswith("weight") for p in decayed["params"])
        assert all(not names[id(p)].endswith("weight") for p in plain["params"])
        assert all(names[id(p)].startswith(owner) for g in opt.param_groups
                   for p in g["params"])
        assert opt.defaults["lr"] == 2e-4 and opt.defaults["betas"] == (0.0, 0.9)
    assert any(names[id(p)] == "quantizer.values" for p in generator_opt.param_groups[1]["params"])
    covered = [id(p) for opt in (critic_opt, generator_opt) for g in opt.param_groups
               for p in g["params"]]
    assert sorted(covered) == sorted(id(p) for p in model.parameters())


def test_weight_gradients_are_value_clipped_before_each_step(monkeypatch):
    seen = []
    original = torch.nn.utils.clip_grad_value_

    def spy(params, clip_value):
        params = list(params)
        seen.append((len(params), clip_value))
        return original(params, clip_value)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_value_", spy)
    model = _model()
    fit_qlinfowgan(model, _images(16), config=InfoWGANConfig(epochs=1, batch_size=8,
                                                             generator_period=2, clip=0.5),
                   progress=False)
    # Two critic steps (critic weights: trunk, head, value head), one generator step.
    assert seen == [(3, 0.5), (3, 0.5), (2, 0.5)]


@pytest.mark.parametrize(("options", "match"), [
    ({"gradient_penalty_weight": -1.0}, "gradient_penalty_weight"),
    ({"info_weight": float("nan")}, "info_weight"),
    ({"generator_period": 0}, "generator_period"),
    ({"betas": (0.0, 1.0)}, "betas"),
    ({"clip": 0.0}, "clip"),
    ({"lr": 0.0}, "lr"),
])
def test_invalid_options_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        InfoWGANConfig(**options)


def test_bad_inputs_get_clear_errors():
    model = _model()
    with pytest.raises(ValueError, match="latent must be one of"):
        InfoWGAN(16, 3, latent="gaussian")
    with pytest.raises(ValueError, match="num_latents=3"):
        model.generate(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="NaN"):
        model.generate(torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="input_dim=16"):
        model(torch.zeros(2, 25))
    with pytest.raises(ValueError, match="n must be a positive integer"):
        model.sample_latents(0)
    with pytest.raises(ValueError, match="same shape"):
        gradient_penalty(model.value, torch.zeros(2, 16), torch.zeros(3, 16), torch.rand(2))
    with pytest.raises(ValueError, match="epsilon"):
        gradient_penalty(model.value, torch.zeros(2, 16), torch.zeros(2, 16), torch.rand(3))
    nan_images = _images(4)
    nan_images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        fit_qlinfowgan(model, nan_images, progress=False)
    with pytest.raises(ValueError, match="16 values per image"):
        fit_qlinfowgan(model, torch.zeros(4, 1, 5, 5), progress=False)
    with pytest.raises(TypeError, match="InfoWGAN"):
        fit_qlinfowgan(torch.nn.Linear(16, 3), _images(4), progress=False)


def _run(device, checkpoint=None, resume=False, epochs=3, init_seed=0, latent="quantized"):
    torch.manual_seed(init_seed)
    model = InfoWGAN(16, 3, latent=latent, hidden=(8,))
    result = fit_qlinfowgan(model.to(device), _images(16).to(device),
                            config=InfoWGANConfig(epochs=epochs, batch_size=8,
                                                  generator_period=3),
                            checkpoint_path=checkpoint, resume=resume, progress=False)
    return result, model


def _parameters(net):
    return [p.detach().cpu().clone() for p in net.parameters()]


@pytest.mark.parametrize("latent", ["quantized", "continuous"])
def test_same_seed_same_network_and_resume_continues_exactly(latent, tmp_path):
    straight = _parameters(_run("cpu", latent=latent)[1])
    assert all(torch.equal(a, b) for a, b in zip(straight, _parameters(
        _run("cpu", latent=latent)[1])))
    _run("cpu", checkpoint=str(tmp_path / "c.pt"), epochs=2, latent=latent)
    resumed = _parameters(_run("cpu", checkpoint=str(tmp_path / "c.pt"), resume=True,
                               init_seed=1, latent=latent)[1])
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))
    fresh = _parameters(_run("cpu", init_seed=1, latent=latent)[1])
    assert not all(torch.equal(a, b) for a, b in zip(straight, fresh))


def test_trains_on_the_test_device(device):
    result, model = _run(device)
    assert all(p.device.type == device.type for p in model.parameters())
    assert len(result.history.records) == 3
