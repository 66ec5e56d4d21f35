"""Contract of every implemented ``procedure``, parametrised over the registry.

A procedure owns its training loop (built on :func:`regzoo.train.fit`) and returns a result
record with the loop's ``history`` (:class:`regzoo.core.kinds.ProcedureResult`). Each one gives a
canonical tiny run in ``EXAMPLES`` (a function of the device, the checkpoint path, resume and
the epoch count, returning the result and the trained network); a newly registered procedure
fails here until it has one.
"""

import pytest
import torch

from regzoo.core.kinds import ProcedureResult
from regzoo.registry import cards

PROCEDURES = [pytest.param(c, id=c.slug) if c.implemented else
              pytest.param(c, id=c.slug, marks=pytest.mark.skip(reason="planned"))
              for c in cards(kind="procedure")]


def _stn(device, checkpoint=None, resume=False, epochs=3, init_seed=0, **config):
    from regzoo.data import TensorBatches
    from regzoo.methods.stn import (
        HyperMLP,
        Hyperparameter,
        HyperparameterSpace,
        STNConfig,
        fit_stn,
    )

    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    torch.manual_seed(init_seed)
    space = HyperparameterSpace({"d1": Hyperparameter(0.05, 0.0, 0.9)})
    net = HyperMLP(6, 3, (8,), ("d1",), hyper_dim=1)
    options = {"warmup_epochs": 1, "hyper_lr": 0.1, **config}
    result = fit_stn(net, space, TensorBatches(x[:16].to(device), y[:16].to(device), 8, seed=0),
                     TensorBatches(x[16:].to(device), y[16:].to(device), 8, seed=1),
                     config=STNConfig(epochs=epochs, **options), checkpoint_path=checkpoint,
                     resume=resume, progress=False)
    return result, net


def _adapt_unlearn(device, checkpoint=None, resume=False, epochs=3, init_seed=0, **config):
    from regzoo.generative.dcgan import DigitDiscriminator, DigitGenerator
    from regzoo.methods.adapt_unlearn import AdaptUnlearnConfig, GANStage, adapt_then_unlearn

    g = torch.Generator().manual_seed(0)
    negatives, positives = torch.rand(6, 64, generator=g), torch.rand(24, 64, generator=g)
    torch.manual_seed(init_seed)
    generator, discriminator = DigitGenerator(), DigitDiscriminator()
    options = {"num_adapted": 2, "adapt": GANStage(steps=2, batch_size=4, steps_per_epoch=1),
               "unlearn": GANStage(steps=epochs, batch_size=4, steps_per_epoch=1),
               "ewc_strength": 0.01, **config}
    result = adapt_then_unlearn(generator, generator, discriminator, negatives.to(device),
                                positives.to(device), AdaptUnlearnConfig(**options),
                                latent_dim=32, checkpoint_dir=checkpoint, resume=resume)
    return result, result.generator


def _gifd(device, checkpoint=None, resume=False, epochs=3, init_seed=0, **config):
    from regzoo.generative import DigitGenerator
    from regzoo.methods.gifd import GIFDAttack, GIFDConfig

    torch.manual_seed(0)
    generator = DigitGenerator(latent_dim=4, widths=(4, 3)).eval().to(device)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, 2, 1), torch.nn.Sigmoid(),
                              torch.nn.Flatten(), torch.nn.Linear(48, 5)).eval().to(device)
    x = generator.sample(1, generator=torch.Generator().manual_seed(1))
    loss = torch.nn.functional.cross_entropy(net(x), torch.tensor([2], device=device))
    grads = torch.autograd.grad(loss, net.parameters())
    # "epochs" = stages searched; init_seed seeds the restarts' starting points.
    attack = GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(
        num_stages=epochs, steps=5, restarts=2, **config))
    result = attack.invert(grads, seed=init_seed, checkpoint_path=checkpoint, resume=resume,
                           progress=False)
    return result, torch.nn.ParameterList([torch.nn.Parameter(result.stage_images)])


def _coherentgs(device, checkpoint=None, resume=False, epochs=3, init_seed=0, **config):
    from regzoo.data.views import multiview_scene
    from regzoo.methods.coherentgs import CoherentGSConfig, SparseViews, fit_coherentgs

    scene = multiview_scene(0, height=8, width=8)
    views = SparseViews(scene.train_images.to(device), scene.train_cameras,
                        scene.mono_depth.to(device), scene.depth_layers.to(device),
                        {k: v.to(device) for k, v in scene.flows.items()},
                        {k: v.to(device) for k, v in scene.flow_masks.items()})
    # One phase-1 epoch, then phase 2; a schedule that does not depend on the run's length, so
    # a shorter run is the prefix of a longer one. init_seed seeds the decoders.
    options = {"iterations": 2 * (epochs - 1), "phase_one_iterations": 2, "steps_per_epoch": 2,
               "refresh_every": 1, "ngf_depth": 2, "ngf_opacity": 2, "multisample_start": 1.0,
               "tv_ramp_start": 1.0, "init_seed": init_seed, **config}
    result = fit_coherentgs(views, config=CoherentGSConfig(**options), checkpoint_path=checkpoint,
                            resume=resume, progress=False)
    return result, result.model


def _latent_quantization(device, checkpoint=None, resume=False, epochs=3, init_seed=0,
                         **config):
    from regzoo.methods.latent_quantization.qlae import LatentAutoencoder, QLAEConfig, fit_qlae

    images = (torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    torch.manual_seed(init_seed)
    model = LatentAutoencoder(16, 3, hidden=(8,))
    result = fit_qlae(model, images.to(device), config=QLAEConfig(epochs=epochs, batch_size=8,
                                                                    **config),
                      checkpoint_path=checkpoint, resume=resume, progress=False)
    return result, result.model


def _quantnas(device, checkpoint=None, resume=False, epochs=3, init_seed=0, **config):
    from regzoo.methods.quantnas import QuantNASConfig, QuantNASSuperNet, fit_quantnas

    g = torch.Generator().manual_seed(0)
    lr, hr = torch.rand(16, 1, 4, 4, generator=g), torch.rand(16, 1, 8, 8, generator=g)
    torch.manual_seed(init_seed)
    net = QuantNASSuperNet(channels=4, body_cells=1, body_layers=1).to(device)
    # Schedules of a fixed length E = 3, so a shorter run is the prefix of a longer one.
    options = {"warmup": 0, "batch_size": 8, "subsample": 1.0, "schedule_epochs": 3, **config}
    result = fit_quantnas(net, lr.to(device), hr.to(device),
                          config=QuantNASConfig(epochs=epochs, **options),
                          checkpoint_path=checkpoint, resume=resume, progress=False)
    return result, result.supernet


EXAMPLES = {"latent_quantization": (_latent_quantization, {"clip": -1.0}),
            "stn": (_stn, {"epochs": 0}), "adapt_unlearn": (_adapt_unlearn, {"num_adapted": 0}),
            "gifd": (_gifd, {"radii": -1.0}), "coherentgs": (_coherentgs, {"tv_weight": -1.0}),
            "quantnas": (_quantnas, {"entropy_weight": -1.0})}
"""Per slug: the tiny run (``init_seed`` seeds the network's initialisation) and config options
that are invalid (refused before training)."""


def _example(card):
    if card.slug not in EXAMPLES:
        pytest.fail(f"procedure {card.slug!r} has no canonical run in {__name__}.EXAMPLES")
    return EXAMPLES[card.slug]


def _parameters(net):
    return [p.detach().clone() for p in net.parameters()]


@pytest.mark.parametrize("card", PROCEDURES)
def test_returns_a_result_record_with_the_loop_history(card):
    run, _ = _example(card)
    result, _ = run("cpu")
    assert isinstance(result, ProcedureResult)
    assert len(result.history.records) >= 1


@pytest.mark.parametrize("card", PROCEDURES)
def test_same_seed_same_network(card):
    run, _ = _example(card)
    first, again = _parameters(run("cpu")[1]), _parameters(run("cpu")[1])
    assert all(torch.equal(a, b) for a, b in zip(first, again))


@pytest.mark.parametrize("card", PROCEDURES)
def test_resume_from_a_checkpoint_continues_exactly(card, tmp_path):
    run, _ = _example(card)
    straight = _parameters(run("cpu", epochs=3)[1])
    run("cpu", checkpoint=str(tmp_path / "ckpt.pt"), epochs=2)
    # Another initialisation: only a resume that loads the checkpoint ends where `straight` does.
    resumed = _parameters(run("cpu", checkpoint=str(tmp_path / "ckpt.pt"), resume=True,
                              epochs=3, init_seed=1)[1])
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))
    fresh = _parameters(run("cpu", epochs=3, init_seed=1)[1])
    assert not all(torch.equal(a, b) for a, b in zip(straight, fresh))


@pytest.mark.parametrize("card", PROCEDURES)
def test_an_invalid_config_is_refused_before_training(card):
    run, invalid = _example(card)
    with pytest.raises(ValueError, match=next(iter(invalid))):
        run("cpu", **invalid)


@pytest.mark.parametrize("card", PROCEDURES)
def test_trains_on_the_test_device(card, device):
    run, _ = _example(card)
    _, net = run(device)
    assert all(p.device.type == device.type for p in net.parameters())
