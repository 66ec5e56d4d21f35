"""Adapt-then-Unlearn: the distance, the three repulsions, EWC, Fisher, stages, bad input."""

import pytest
import torch
from torch import nn

from regzoo.generative.dcgan import DigitDiscriminator, DigitGenerator
from regzoo.methods.adapt_unlearn import (
    AdaptUnlearnConfig,
    ElasticWeightConsolidation,
    GANStage,
    ParameterRepulsion,
    adapt_negatives,
    extrapolate,
    fisher_diagonal,
    parameter_distance,
    split_by_oracle,
    state_of,
    train_gan_stage,
)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1)).double()


def _anchors(model, count, scale=0.1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{k: v.detach() + scale * torch.randn(v.shape, generator=g, dtype=v.dtype)
             for k, v in model.named_parameters()} for _ in range(count)]


def test_distance_is_zero_at_the_anchor_and_matches_a_hand_value():
    model = _model()
    assert float(parameter_distance(model, [state_of(model)]).detach()) == 0.0
    theta = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([[2.0]])}
    anchors = [{"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([[0.0]])},
               {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([[1.0]])}]
    # mean squares: anchor 0: a (1 + 4)/2 = 2.5, b 4; anchor 1: a 0, b 1. Sum 7.5; M = P = 2.
    assert float(parameter_distance(theta, anchors)) == pytest.approx(7.5 / 8)
    assert float(parameter_distance(theta, anchors, "official")) == pytest.approx(7.5 * 2 / 4)


def test_distance_ignores_parameter_order_and_the_official_form_is_m_squared_times_it():
    model = _model()
    anchors = _anchors(model, 3)
    params = dict(model.named_parameters())
    reordered = dict(reversed(list(params.items())))
    assert torch.allclose(parameter_distance(params, anchors),
                          parameter_distance(reordered, anchors))
    ratio = parameter_distance(model, anchors, "official") / parameter_distance(model, anchors)
    assert float(ratio) == pytest.approx(9.0)


def test_nl2_gradient_has_the_closed_form():
    model = _model()
    anchors = _anchors(model, 2)
    gamma = 0.7
    ParameterRepulsion(anchors, kind="nl2", gamma=gamma)(model).backward()
    count_p = len(list(model.parameters()))
    for name, param in model.named_parameters():
        expected = -gamma / (2 * 2 * count_p) * sum(
            2 * (param.detach() - a[name]) / param.numel() for a in anchors)
        assert torch.allclose(param.grad, expected)


@pytest.mark.parametrize("kind", ["el2", "il2"])
def test_el2_and_il2_decrease_with_distance_and_push_away_from_the_anchor(kind):
    model = _model()
    anchor = state_of(model)
    values = []
    for scale in (0.05, 0.1, 0.2):
        moved = {k: v + scale for k, v in anchor.items()}
        values.append(float(ParameterRepulsion([anchor], kind=kind, gamma=2.0)(moved)))
    assert values[0] > values[1] > values[2]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    ParameterRepulsion([anchor], kind=kind, gamma=2.0)(model).backward()
    grad = torch.cat([p.grad.flatten() for p in model.parameters()])
    away = torch.cat([(p.detach() - anchor[n]).flatten() for n, p in model.named_parameters()])
    # Gradient descent moves along −∇R: away from the anchor means ∇R · (θ − θ_N) < 0.
    assert float(grad @ away) < 0


def test_initial_unit_measures_distance_in_units_of_the_reference():
    model = _model()
    anchors = _anchors(model, 2)
    repulsion = ParameterRepulsion(anchors, kind="nl2", gamma=1.0, gamma_unit="initial",
                                   reference=model)
    assert float(repulsion.distance(model)) == pytest.approx(1.0)
    assert float(repulsion(model)) == pytest.approx(-1.0)


def test_ewc_with_unit_fisher_is_half_lambda_times_the_squared_distance():
    model = _model()
    reference = _anchors(model, 1)[0]
    ewc = ElasticWeightConsolidation({k: torch.ones_like(v) for k, v in reference.items()},
                                     reference, strength=3.0)
    squared = sum(float((p - reference[n]).square().sum()) for n, p in model.named_parameters())
    assert float(ewc(model)) == pytest.approx(1.5 * squared)


def test_fisher_matches_per_sample_squared_gradients_on_a_linear_toy():
    generator = nn.Linear(1, 1).double()
    discriminator = nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        discriminator.weight.fill_(1.5)
    fisher = fisher_diagonal(generator.float(), discriminator.float(), samples=64,
                             latent_dim=1, rng=torch.Generator().manual_seed(3))
    z = torch.randn(64, 1, generator=torch.Generator().manual_seed(3))
    # D(G(z)) = w (a z + b): ∂/∂a = w z, ∂/∂b = w.
    assert float(fisher["weight"]) == pytest.approx(float((1.5 * z).square().mean()), rel=1e-5)
    assert float(fisher["bias"]) == pytest.approx(1.5**2, rel=1e-6)


def test_split_by_oracle_is_a_partition():
    images = torch.rand(50, 64)
    negatives, positives = split_by_oracle(images, lambda x: x[:, :3], unwanted=1)
    assert negatives.shape[0] + positives.shape[0] == 50
    flagged = images[:, :3].argmax(1) == 1
    assert torch.equal(negatives, images[flagged]) and torch.equal(positives, images[~flagged])


def test_extrapolation_limits():
    model = _model()
    anchors = _anchors(model, 2)
    same = extrapolate(model, anchors, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(same.parameters(), model.parameters()))
    out = extrapolate(model, anchors, 1.0)
    for name, param in out.named_parameters():
        mean = (anchors[0][name] + anchors[1][name]) / 2
        assert torch.allclose(param, 2 * dict(model.named_parameters())[name] - mean)


def _gan(seed=0):
    torch.manual_seed(seed)
    return DigitGenerator(), DigitDiscriminator()


def test_zero_gamma_makes_stage_two_bit_identical_to_fine_tuning():
    generator, discriminator = _gan()
    images = torch.rand(40, 1, 8, 8)
    stage = GANStage(steps=4, batch_size=8, steps_per_epoch=2)
    plain = train_gan_stage(generator, discriminator, images, stage, latent_dim=32, seed=5)
    anchors = [{k: v + 0.1 for k, v in state_of(generator).items()}]
    repelled = train_gan_stage(generator, discriminator, images, stage, latent_dim=32, seed=5,
                               penalty=ParameterRepulsion(anchors, kind="nl2", gamma=0.0))
    for a, b in zip(plain.generator.parameters(), repelled.generator.parameters()):
        assert torch.equal(a, b)
    moved = train_gan_stage(generator, discriminator, images, stage, latent_dim=32, seed=5,
                            penalty=ParameterRepulsion(anchors, kind="nl2", gamma=1e3))
    assert not all(torch.equal(a, b) for a, b in zip(plain.generator.parameters(),
                                                       moved.generator.parameters()))


def test_a_stage_leaves_its_inputs_untouched():
    generator, discriminator = _gan()
    before = [p.clone() for p in (*generator.parameters(), *discriminator.parameters())]
    train_gan_stage(generator, discriminator, torch.rand(20, 64), GANStage(steps=2,
                    batch_size=4, steps_per_epoch=1), latent_dim=32)
    after = [*generator.parameters(), *discriminator.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_bad_input_is_named():
    model = _model()
    with pytest.raises(ValueError, match="anchors is empty"):
        ParameterRepulsion([], kind="el2")
    with pytest.raises(ValueError, match="gamma"):
        ParameterRepulsion(_anchors(model, 1), gamma=-1.0)
    with pytest.raises(ValueError, match="kind"):
        ParameterRepulsion(_anchors(model, 1), kind="l3")
    with pytest.raises(ValueError, match="needs reference="):
        ParameterRepulsion(_anchors(model, 1), gamma_unit="initial")
    with pytest.raises(ValueError, match="has shape"):
        parameter_distance(model, [{k: torch.zeros(7) for k in state_of(model)}])
    with pytest.raises(ValueError, match="num_adapted"):
        AdaptUnlearnConfig(num_adapted=0)
    with pytest.raises(ValueError, match="multiple of steps_per_epoch"):
        GANStage(steps=75, steps_per_epoch=50)
    generator, discriminator = _gan()
    with pytest.raises(ValueError, match=r"negatives is empty.*draw more samples"):
        adapt_negatives(generator, discriminator, torch.zeros(0, 64), AdaptUnlearnConfig(),
                        latent_dim=32)
    with pytest.raises(ValueError, match="contains NaN"):
        train_gan_stage(generator, discriminator, torch.full((4, 64), float("nan")),
                        GANStage(steps=1, steps_per_epoch=1), latent_dim=32)


@pytest.mark.parametrize("normalize", ["mean", "official"])
def test_the_repulsion_distance_equals_the_direct_formula(normalize):
    model = _model()
    anchors = _anchors(model, 4)
    repulsion = ParameterRepulsion(anchors, kind="nl2", gamma=1.0, normalize=normalize)
    direct = parameter_distance(model, anchors, normalize)
    assert torch.allclose(repulsion.distance(model), direct, rtol=1e-9)
    fast_grad = torch.autograd.grad(repulsion.distance(model), list(model.parameters()))
    slow_grad = torch.autograd.grad(direct, list(model.parameters()))
    assert all(torch.allclose(a, b) for a, b in zip(fast_grad, slow_grad))
