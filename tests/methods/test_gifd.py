"""GIFD (regzoo.methods.gifd): projection, gradient loss, labels, the staged search, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.kinds import ProcedureResult
from regzoo.generative import DigitGenerator
from regzoo.methods.gifd import (
    GIFDAttack,
    GIFDConfig,
    PixelInversion,
    PixelInversionConfig,
    cosine_gradient_loss,
    infer_labels,
    lr_ramp,
    project_l1_ball,
)
from regzoo.train.checkpoint import load_checkpoint


def _bisection_projection(v: torch.Tensor, radius: float) -> torch.Tensor:
    """The l1-ball projection by bisection on the soft threshold θ (float64 reference).

    The projection is sign(v)·max(|v| − θ, 0) with θ ≥ 0 the root of Σ max(|v| − θ, 0) = r
    (the KKT conditions of min ½‖w − v‖² s.t. ‖w‖₁ ≤ r), or v itself inside the ball.
    """
    v = v.double()
    if v.abs().sum() <= radius:
        return v
    low, high = 0.0, float(v.abs().max())
    for _ in range(200):
        theta = (low + high) / 2
        if (v.abs() - theta).clamp_min(0).sum() > radius:
            low = theta
        else:
            high = theta
    return torch.sign(v) * (v.abs() - (low + high) / 2).clamp_min(0)


def _fl_net(classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, 2, 1), nn.Sigmoid(), nn.Flatten(),
                         nn.Linear(48, classes)).eval()


def _generator() -> DigitGenerator:
    torch.manual_seed(1)
    return DigitGenerator(latent_dim=4, widths=(4, 3)).eval()


def _observation(net: nn.Module, images: torch.Tensor, labels: torch.Tensor):
    return [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(images), labels),
                                                    net.parameters())]


@pytest.fixture
def problem():
    net, generator = _fl_net(), _generator()
    x = generator.sample(2, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([1, 3])
    return net, generator, x, labels, _observation(net, x, labels)


# --- the l1-ball projection ---------------------------------------------------------------------

def test_projection_is_feasible_and_matches_the_bisection_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 5, generator=g) * 2
    for radius in (0.1, 1.0, 4.0):
        out = project_l1_ball(x, radius)
        assert out.shape == x.shape
        assert (out.flatten(1).abs().sum(1) <= radius * (1 + 1e-6)).all()
        for row, got in zip(x, out):
            expected = _bisection_projection(row.flatten(), radius)
            assert torch.allclose(got.flatten().double(), expected, atol=1e-5)


def test_projection_is_the_nearest_point_of_the_ball():
    g = torch.Generator().manual_seed(1)
    v = torch.randn(1, 12, generator=g, dtype=torch.float64)
    projected = project_l1_ball(v, 1.5)
    distance = (v - projected).norm()
    for _ in range(500):  # random feasible points are never closer
        point = torch.randn(1, 12, generator=g, dtype=torch.float64)
        point = point / point.abs().sum() * 1.5 * float(torch.rand(1, generator=g))
        assert (v - point).norm() >= distance - 1e-12


def test_projection_is_the_identity_inside_the_ball_and_keeps_signs():
    x = torch.tensor([[0.2, -0.3, 0.1], [3.0, -2.0, 0.5]])
    out = project_l1_ball(x, 1.0)
    assert torch.equal(out[0], x[0])
    assert torch.all((out[1] == 0) | (torch.sign(out[1]) == torch.sign(x[1])))
    assert torch.equal(project_l1_ball(x, math.inf), x)


def test_projection_takes_one_radius_per_sample_and_radius_zero_gives_zeros():
    x = torch.tensor([[3.0, -1.0], [3.0, -1.0], [0.5, 0.5]])
    out = project_l1_ball(x, torch.tensor([0.0, 2.0, 2.0]))
    assert torch.equal(out[0].abs(), torch.zeros(2))
    assert torch.allclose(out[1], torch.tensor([2.0, 0.0]))
    assert torch.equal(out[2], x[2])


@pytest.mark.parametrize("radius", [-0.5, torch.tensor([1.0, -1.0]), torch.tensor([1.0])])
def test_projection_refuses_a_bad_radius(radius):
    with pytest.raises(ValueError, match="radius"):
        project_l1_ball(torch.ones(2, 3), radius)


# --- the gradient loss, labels and schedule ---------------------------------------------------

def test_cosine_loss_is_zero_for_equal_two_for_opposite_and_scale_free():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    other = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
    assert float(cosine_gradient_loss(grads, grads)) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_gradient_loss(grads, [-t for t in grads])) == pytest.approx(2.0)
    base = float(cosine_gradient_loss(grads, other))
    assert 0 < base < 2
    assert float(cosine_gradient_loss([7 * t for t in grads], [0.01 * t for t in other])) \
        == pytest.approx(base, rel=1e-5)


def test_cosine_loss_is_one_global_cosine_over_all_tensors():
    grads = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    target = [torch.tensor([1.0, 0.0]), torch.tensor([1.0])]
    # Global: 1 − 1/(1·√2); a mean of per-tensor cosines would give something else.
    assert float(cosine_gradient_loss(grads, target)) == pytest.approx(1 - 1 / math.sqrt(2))


def test_the_matching_loss_backpropagates_to_the_image_like_finite_differences():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, 2, 1), nn.Sigmoid(), nn.Flatten(),
                        nn.Linear(32, 4)).double()
    labels = torch.tensor([2])
    target = _observation(net, torch.rand(1, 1, 8, 8, dtype=torch.float64), labels)

    def loss(image):
        grads = torch.autograd.grad(F.cross_entropy(net(image), labels), net.parameters(),
                                    create_graph=True)
        return cosine_gradient_loss(grads, target)

    image = torch.rand(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (image,), eps=1e-6, atol=1e-6)


def test_labels_are_inferred_exactly_on_a_linear_softmax_model():
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        net = nn.Linear(20, 10)
        labels = torch.randperm(10, generator=g)[:4]
        x = torch.rand(4, 20, generator=g)  # non-negative features, as after a ReLU
        grads = _observation(net, x, labels)
        assert torch.equal(infer_labels(grads, batch_size=4), torch.sort(labels).values)


def test_label_inference_needs_a_linear_layer_and_enough_classes():
    with pytest.raises(ValueError, match="labels="):
        infer_labels([torch.zeros(3)])
    with pytest.raises(ValueError, match="batch_size"):
        infer_labels([torch.zeros(3, 2)], batch_size=4)


def test_the_lr_ramp_warms_up_then_decays_to_zero():
    assert lr_ramp(0.0) == 0.0
    assert lr_ramp(0.05) == pytest.approx(1.0)
    assert lr_ramp(0.25) == pytest.approx(1.0)
    assert lr_ramp(1.0) == pytest.approx(0.0)
    assert 0 < lr_ramp(0.6) < 1


# --- the staged search --------------------------------------------------------------------------

def test_the_result_is_a_procedure_record_with_one_history_entry_per_stage(problem, device):
    net, generator, _, labels, grads = problem
    attack = GIFDAttack(net.to(device), generator.to(device).stages, (4,),
                        config=GIFDConfig(steps=(6, 4, 3), restarts=3))
    result = attack.invert([g.to(device) for g in grads], batch_size=2)
    assert isinstance(result, ProcedureResult)
    assert [r["epoch"] for r in result.history.records] == [0, 1, 2]
    assert torch.equal(result.labels.cpu(), labels)
    assert result.images.shape == (2, 1, 8, 8) and result.images.device.type == device.type
    assert result.stage_images.shape == (3, 2, 1, 8, 8)
    assert result.restart_scores.shape == (3, 3)
    assert float(result.images.min()) >= 0 and float(result.images.max()) <= 1
    assert result.best_stage == min(range(3), key=result.stage_scores.__getitem__)
    assert torch.equal(result.images, result.stage_images[result.best_stage])


def test_the_attack_leaves_the_model_and_the_generator_untouched(problem):
    net, generator, _, labels, grads = problem
    before = [p.detach().clone() for p in [*net.parameters(), *generator.parameters()]]
    GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(steps=3, restarts=2)).invert(
        grads, labels)
    after = [*net.parameters(), *generator.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.grad is None for p in after)


def test_the_returned_image_is_the_best_restarts_not_the_last(problem):
    # The official choose_optimal pairs the best score with the last restart's image.
    net, generator, _, labels, grads = problem
    result = GIFDAttack(net, generator.stages, (4,),
                        config=GIFDConfig(steps=5, restarts=4)).invert(grads, labels)
    for k, score in enumerate(result.stage_scores):
        assert score == pytest.approx(float(result.restart_scores[k].min()))
        image_grads = torch.autograd.grad(F.cross_entropy(net(result.stage_images[k]), labels),
                                          net.parameters())
        assert float(cosine_gradient_loss(image_grads, grads)) == pytest.approx(score, abs=1e-5)


def test_a_diverged_restart_is_skipped_without_shifting_the_choice(problem):
    # The official choose_optimal drops NaN scores before its argmin, which shifts the index.
    net, generator, _, labels, _ = problem
    attack = GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(num_stages=1))
    images = torch.arange(4.0).view(1, 4, 1, 1, 1, 1).expand(1, 4, 2, 1, 8, 8)
    done = {"images": [images], "scores": [torch.tensor([[math.nan, 0.5, 0.2, 0.3]])],
            "losses": [torch.tensor([0.4])], "seconds": [1.0]}
    (result,) = attack._results(done, labels[None])
    assert result.stage_scores == [pytest.approx(0.2)]
    assert torch.equal(result.images, torch.full((2, 1, 8, 8), 2.0))


@pytest.mark.parametrize("latent_free", [False, True])
def test_radius_zero_returns_the_previous_stage_solution_exactly(problem, latent_free):
    net, generator, _, labels, grads = problem
    result = GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(
        steps=8, radii=0.0, restarts=2, latent_free=latent_free)).invert(grads, labels)
    assert torch.equal(result.stage_images[1], result.stage_images[0])
    assert torch.equal(result.stage_images[2], result.stage_images[0])
    assert torch.equal(result.restart_scores[2], result.restart_scores[0])


def test_one_stage_is_the_latent_search_gifd_starts_with(problem):
    net, generator, _, labels, grads = problem
    config = dict(restarts=3, lr=0.05)
    gifd = GIFDAttack(net, generator.stages, (4,),
                      config=GIFDConfig(steps=(7, 5, 5), **config)).invert(grads, labels, seed=4)
    latent = GIFDAttack(net, generator.stages, (4,),
                        config=GIFDConfig(steps=7, num_stages=1, **config)).invert(grads, labels,
                                                                                     seed=4)
    assert len(latent.stage_scores) == 1
    assert torch.equal(latent.stage_images[0], gifd.stage_images[0])
    assert latent.stage_scores[0] == gifd.stage_scores[0]


def test_one_stage_matches_a_plain_latent_search_written_out(problem):
    # Restart by restart, autograd.grad with create_graph, Adam, the ramp, the sphere.
    net, generator, _, labels, grads = problem
    steps, restarts, lr = 6, 2, 0.1
    result = GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(
        steps=steps, num_stages=1, restarts=restarts, lr=lr)).invert(grads, labels, seed=2)
    draws = torch.randn(restarts * 2, 4, generator=torch.Generator().manual_seed(2))
    finals, scores = [], []
    for r in range(restarts):
        z = draws[2 * r:2 * r + 2].clone().requires_grad_(True)
        sphere = z.detach().pow(2).sum(1).add(1e-9).sqrt()
        optimizer = torch.optim.Adam([z], lr=lr)
        for i in range(steps):
            optimizer.param_groups[0]["lr"] = lr * lr_ramp(i / steps)
            x = generator(z)
            trial = torch.autograd.grad(F.cross_entropy(net(x), labels), net.parameters(),
                                        create_graph=True)
            x_flat = x.flatten(1)
            loss = (cosine_gradient_loss(trial, grads)
                    + 1e-4 * ((x[..., :, 1:] - x[..., :, :-1]).abs().mean()
                              + (x[..., 1:, :] - x[..., :-1, :]).abs().mean())
                    + 1e-6 * x_flat.norm() / 64)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                z.mul_((sphere / z.pow(2).sum(1).add(1e-9).sqrt())[:, None])
        with torch.no_grad():
            final = generator(z).clamp(0, 1)
        trial = torch.autograd.grad(F.cross_entropy(net(final), labels), net.parameters())
        finals.append(final)
        scores.append(float(cosine_gradient_loss(trial, grads)))
    best = min(range(restarts), key=scores.__getitem__)
    assert torch.allclose(result.images, finals[best], atol=1e-5)
    assert result.stage_scores[0] == pytest.approx(scores[best], abs=1e-5)


@pytest.mark.parametrize(("mode", "radius"), [("relative", 0.05), ("absolute", 0.3)])
def test_each_stage_stays_in_its_l1_ball(problem, tmp_path, mode, radius):
    net, generator, _, labels, grads = problem
    path = tmp_path / "gifd.pt"
    GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(
        steps=10, radii=radius, radius_mode=mode, restarts=2)).invert(
        grads, labels, checkpoint_path=path)
    state = load_checkpoint(path)["space"]
    z, (delta1, delta2) = state["z"], state["offsets"]
    anchor1 = generator.stages[0](z)
    anchor2 = generator.stages[1](anchor1 + delta1)
    for delta, anchor in ((delta1, anchor1), (delta2, anchor2)):
        limit = radius * anchor.flatten(1).abs().sum(1) if mode == "relative" else radius
        assert (delta.flatten(1).abs().sum(1) <= limit * (1 + 1e-5) + 1e-7).all()
        assert float(delta.abs().sum()) > 0  # the stage moved


def test_a_free_latent_moves_inside_its_l1_ball_around_the_stage_start(problem, tmp_path):
    net, generator, _, labels, grads = problem
    path = tmp_path / "gifd.pt"

    def attack(stages):
        return GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(
            steps=10, radii=0.2, restarts=2, latent_free=True, num_stages=stages))

    attack(1).invert(grads, labels, checkpoint_path=path)
    start = load_checkpoint(path)["space"]["z"]
    attack(2).invert(grads, labels, checkpoint_path=path, resume=True)
    end = load_checkpoint(path)["space"]["z"]
    moved = (end - start).abs().sum(1)
    assert (moved <= 0.2 * start.abs().sum(1) * (1 + 1e-5)).all()
    assert float(moved.max()) > 0  # z is trained in stage 1 too
    fixed = GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(
        steps=10, radii=0.2, restarts=2, num_stages=2))
    fixed.invert(grads, labels, checkpoint_path=tmp_path / "fixed.pt")
    fixed_z = load_checkpoint(tmp_path / "fixed.pt")["space"]["z"]
    assert torch.equal(fixed_z, start)  # by default z stays where stage 0 left it


def test_pixel_inversion_shares_the_harness_and_stays_in_range(problem):
    net, _, x, labels, grads = problem
    result = PixelInversion(net, (1, 8, 8), config=PixelInversionConfig(
        steps=40, restarts=2)).invert(grads, labels)
    assert result.images.shape == x.shape and len(result.stage_scores) == 1
    assert float(result.images.min()) >= 0 and float(result.images.max()) <= 1
    assert result.stage_scores[0] < 1.0


def test_pixel_inversion_recovers_a_single_image_from_a_clean_gradient():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    grads = _observation(net, x, torch.tensor([4]))
    result = PixelInversion(net, (1, 8, 8), config=PixelInversionConfig(
        steps=300, restarts=2, tv=0.0)).invert(grads)
    # A linear layer's weight gradient is (p − y) xᵀ: its direction gives x exactly.
    assert torch.allclose(result.images, x, atol=0.05)


def test_many_observations_run_as_one_search_with_one_result_each(problem):
    net, generator, x, labels, grads = problem
    other = _observation(net, x.flip(0), labels)
    attack = GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(steps=3, restarts=2))
    results = attack.invert_many([grads, other], [labels, labels])
    assert len(results) == 2
    assert all(r.images.shape == (2, 1, 8, 8) for r in results)
    inferred = attack.invert_many([grads, other], batch_size=2)
    assert all(torch.equal(r.labels, labels) for r in inferred)


def test_same_seed_same_reconstruction_other_seed_another(problem):
    net, generator, _, labels, grads = problem
    attack = GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(steps=4, restarts=2))
    first, again = attack.invert(grads, labels, seed=1), attack.invert(grads, labels, seed=1)
    other = attack.invert(grads, labels, seed=2)
    assert torch.equal(first.stage_images, again.stage_images)
    assert not torch.equal(first.stage_images, other.stage_images)


def test_resume_continues_after_the_last_finished_stage(problem, tmp_path):
    net, generator, _, labels, grads = problem
    path = tmp_path / "gifd.pt"

    def attack(stages):
        return GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(
            steps=4, restarts=2, num_stages=stages))

    straight = attack(3).invert(grads, labels, seed=0)
    attack(2).invert(grads, labels, seed=0, checkpoint_path=path)
    # Another seed: only a resume that loads the checkpoint ends where `straight` does.
    resumed = attack(3).invert(grads, labels, seed=9, checkpoint_path=path, resume=True)
    assert torch.equal(resumed.stage_images, straight.stage_images)
    assert resumed.stage_scores == straight.stage_scores
    with pytest.raises(ValueError, match="checkpoint_path"):
        attack(3).invert([2 * g for g in grads], labels, checkpoint_path=path, resume=True)
    with pytest.raises(ValueError, match="checkpoint_path"):
        attack(2).invert(grads, labels, resume=True)


# --- bad input ------------------------------------------------------------------------------------

def test_an_empty_stage_list_is_refused(problem):
    net = problem[0]
    with pytest.raises(ValueError, match="stages is empty"):
        GIFDAttack(net, [], (4,))


def test_gradients_that_do_not_match_the_model_are_refused_naming_the_fix(problem, tmp_path):
    net, generator, _, labels, grads = problem
    before = [p.detach().clone() for p in net.parameters()]
    attack = GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(steps=2))
    path = tmp_path / "never.pt"
    with pytest.raises(ValueError, match=r"grads holds 3 tensors but the model has 4 "
                                         r"parameters.*model\.parameters\(\)"):
        attack.invert(grads[:3], labels, checkpoint_path=path)
    with pytest.raises(ValueError, match=r"grads\[0\] has shape \(2, 1, 3, 3\).*model"):
        attack.invert([torch.zeros(2, 1, 3, 3), *grads[1:]], labels, checkpoint_path=path)
    with pytest.raises(TypeError, match="grads must be a list"):
        attack.invert(grads[0], labels)
    assert not path.exists()
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_nan_gradients_are_refused(problem):
    net, generator, _, labels, grads = problem
    broken = [g.clone() for g in grads]
    broken[1][0] = math.nan
    attack = GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(steps=2))
    with pytest.raises(ValueError, match=r"grads\[1\] contains NaN"):
        attack.invert(broken, labels)


@pytest.mark.parametrize(("options", "match"), [
    ({"radii": -0.1}, "radii"),
    ({"radii": (0.1, -1.0)}, r"radii\[1\]"),
    ({"steps": 0}, "steps"),
    ({"lr": 0.0}, "lr"),
    ({"radius_mode": "fraction"}, "radius_mode"),
    ({"restarts": 0}, "restarts"),
    ({"num_stages": 2, "steps": (5, 5, 5)}, "steps has 3 entries"),
    ({"image_range": (1.0, 0.0)}, "image_range"),
])
def test_an_invalid_config_is_refused(options, match):
    with pytest.raises(ValueError, match=match):
        GIFDConfig(**options)


def test_config_lengths_are_checked_against_the_generator(problem):
    net, generator = problem[0], problem[1]
    with pytest.raises(ValueError, match="num_stages=4 exceeds"):
        GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(num_stages=4))
    with pytest.raises(ValueError, match="radii has 1 entries but 2"):
        GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(radii=(0.1,)))


def test_bad_labels_and_models_are_refused(problem):
    net, generator, _, labels, grads = problem
    attack = GIFDAttack(net, generator.stages, (4,), config=GIFDConfig(steps=2))
    with pytest.raises(ValueError, match="labels must lie in"):
        attack.invert(grads, torch.tensor([1, 7]))
    with pytest.raises(ValueError, match="batch_size=3 disagrees"):
        attack.invert(grads, labels, batch_size=3)
    with pytest.raises(TypeError, match="labels must be an integer"):
        attack.invert(grads, labels.float())
    with_bn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(),
                            nn.Linear(72, 3))
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        GIFDAttack(with_bn, generator.stages, (4,))
