"""The digits DCGAN: stages compose to the generator, spectral norm, EMA, determinism, errors."""

import pytest
import torch

from regzoo.generative.dcgan import (
    DigitDiscriminator,
    DigitGenerator,
    ema_update,
    train_dcgan,
)


def test_the_stages_compose_to_the_generator_and_from_stage_resumes_anywhere():
    torch.manual_seed(0)
    generator = DigitGenerator()
    z = torch.randn(5, 32)
    h1 = generator.stages[0](z)
    h2 = generator.stages[1](h1)
    image = generator(z).detach()
    assert [tuple(h.shape[1:]) for h in (z, h1, h2)] == generator.feature_shapes()
    assert torch.equal(generator.from_stage(1, h1), image)
    assert torch.equal(generator.from_stage(2, h2), image)
    assert image.shape == (5, 1, 8, 8) and 0 <= float(image.min()) <= float(image.max()) <= 1
    assert sum(p.numel() for p in generator.parameters()) == 50089


def test_every_discriminator_layer_is_spectrally_normalised():
    torch.manual_seed(0)
    discriminator = DigitDiscriminator()
    for _ in range(30):  # power iterations converge in training mode
        discriminator(torch.rand(4, 1, 8, 8))
    discriminator.eval()
    weights = [m.weight for m in discriminator.modules() if hasattr(m, "parametrizations")]
    assert len(weights) == 3
    for weight in weights:
        top = torch.linalg.matrix_norm(weight.reshape(weight.shape[0], -1), ord=2)
        assert float(top) == pytest.approx(1.0, abs=0.02)


def test_ema_update_is_the_convex_combination():
    average, model = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = [p.clone() for p in average.parameters()]
    ema_update(average, model, 0.9)
    for avg, old, new in zip(average.parameters(), before, model.parameters()):
        assert torch.allclose(avg, 0.9 * old + 0.1 * new)


def test_training_is_deterministic_given_the_seed_and_moves_the_ema():
    images = torch.rand(80, 64)
    first = train_dcgan(images, steps=5, batch_size=16, seed=3, progress=False)
    second = train_dcgan(images, steps=5, batch_size=16, seed=3, progress=False)
    for a, b in zip(first.generator_ema.state_dict().values(),
                    second.generator_ema.state_dict().values()):
        assert torch.equal(a, b)
    torch.manual_seed(3)
    initial = DigitGenerator()
    moved = [not torch.equal(p, q) for p, q in zip(initial.parameters(),
                                                    first.generator_ema.parameters())]
    assert all(moved) and first.history[-1]["step"] == 4


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_dcgan(torch.full((80, 64), 2.0), steps=1)
    with pytest.raises(ValueError, match="8×8 digits"):
        train_dcgan(torch.rand(80, 50), steps=1)
    with pytest.raises(ValueError, match="fewer than batch_size=64"):
        train_dcgan(torch.rand(10, 64), steps=1)
    with pytest.raises(ValueError, match="z must have shape"):
        DigitGenerator()(torch.randn(2, 16))
    with pytest.raises(ValueError, match="stage in"):
        DigitGenerator().from_stage(3, torch.randn(1, 32))
