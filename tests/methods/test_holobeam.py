"""HoloBeam: the far-field HMT channel, its unimodal grid, and the fixed-budget policies."""

import math

import numpy as np
import pytest
import torch

from regzoo.methods.holobeam import (
    POLICIES,
    HMTChannel,
    HoloBeam,
    SequentialHalving,
    SuccessiveRejects,
    UniformAllocation,
    UnimodalSearch2D,
    arm_grid,
    dirichlet_gain,
    random_receivers,
    run_policy,
)


def _receivers(n: int, seed: int = 0, **options) -> HMTChannel:
    return random_receivers(n, torch.Generator().manual_seed(seed), **options)


def test_closed_form_gain_equals_the_explicit_element_sum():
    rng = np.random.default_rng(0)
    nx, ny, d = 7, 5, 0.25
    theta, phi = rng.uniform(0, np.pi / 2, 20), rng.uniform(0, 2 * np.pi, 20)
    distance = rng.uniform(0.5, 2.0, 20)
    psi_x, psi_y = rng.uniform(-np.pi, np.pi, 20), rng.uniform(-np.pi, np.pi, 20)
    channel = HMTChannel(theta, phi, distance, nx=nx, ny=ny, spacing=d)
    closed = channel.gain(psi_x, psi_y)
    assert isinstance(closed, np.ndarray)
    kd = 2 * np.pi * d
    m, n = np.arange(nx)[:, None], np.arange(ny)[None, :]
    for r in range(20):
        ux, uy = kd * np.sin(theta[r]) * np.cos(phi[r]), kd * np.sin(theta[r]) * np.sin(phi[r])
        field = np.exp(1j * (m * (psi_x[r] - ux) + n * (psi_y[r] - uy))).sum() / distance[r]
        assert closed[r] == pytest.approx(abs(field) ** 2, rel=1e-9, abs=1e-9)


def test_gain_peaks_at_the_steering_phases_with_value_n_squared():
    u = torch.tensor([0.0, 2 * math.pi, 1e-12], dtype=torch.float64)
    assert torch.allclose(dirichlet_gain(u, 9), torch.full((3,), 81.0, dtype=u.dtype))
    fine = torch.linspace(-math.pi, math.pi, 20001, dtype=torch.float64)
    assert float(dirichlet_gain(fine, 9).max()) <= 81.0 + 1e-9


def test_gain_is_separable():
    channel = _receivers(5, nx=16, ny=24)
    table = torch.as_tensor(channel.arm_snr())
    lhs = table[:, 1, 2] * table[:, 3, 4]
    rhs = table[:, 1, 4] * table[:, 3, 2]
    assert torch.allclose(lhs, rhs, rtol=1e-12)


def test_grid_spacing_and_range():
    grid = arm_grid(32, 0.25)
    assert grid.shape == (17,)
    assert torch.allclose(grid.diff(), torch.full((16,), 2 * math.pi / 32, dtype=grid.dtype))
    assert float(grid.abs().max()) == pytest.approx(math.pi / 2)


def _count_local_maxima(values: torch.Tensor) -> torch.Tensor:
    padded = torch.nn.functional.pad(values, (1, 1), value=-math.inf)
    left, mid, right = padded[:, :-2], padded[:, 1:-1], padded[:, 2:]
    return ((mid > left) & (mid > right)).sum(1)


@pytest.mark.parametrize("n", [8, 31, 64])
def test_gain_is_unimodal_on_the_grid_for_many_random_receivers(n):
    channel = _receivers(3000, seed=n, nx=n, ny=n, theta_max=math.pi / 2)
    table = torch.as_tensor(channel.arm_snr())
    rows = table[:, :, 0] / table[:, :, 0].amax(1, keepdim=True)
    cols = table[:, 0, :] / table[:, 0, :].amax(1, keepdim=True)
    assert bool((_count_local_maxima(rows) == 1).all())
    assert bool((_count_local_maxima(cols) == 1).all())


def test_continuous_gain_is_multimodal_off_the_grid():
    # The reason for the grid: between grid points the Dirichlet kernel has side lobes.
    u = torch.linspace(-math.pi / 2, math.pi / 2, 4001, dtype=torch.float64) - 0.3
    assert int(_count_local_maxima(dirichlet_gain(u, 16)[None])[0]) > 1


@pytest.mark.parametrize("budget", [36, 100, 400])
def test_noiseless_holobeam_finds_the_optimum(budget):
    channel = _receivers(500, nx=32, ny=32, snr_db=200.0)
    policy = HoloBeam(channel.arms, budget, channel.n_receivers)
    run = run_policy(channel, policy, torch.Generator().manual_seed(1))
    assert bool(run.correct.all())
    assert torch.equal(run.pairs, torch.as_tensor(channel.best_pair()))


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_noiseless_baselines_find_the_optimum(name):
    channel = _receivers(200, nx=8, ny=8, snr_db=200.0)
    policy = POLICIES[name](channel.arms, POLICIES[name].min_budget(channel.arms),
                            channel.n_receivers)
    assert bool(run_policy(channel, policy, torch.Generator().manual_seed(0)).correct.all())


@pytest.mark.parametrize("name", sorted(POLICIES))
@pytest.mark.parametrize("extra", [0, 1, 37, 500])
def test_every_policy_stays_within_its_budget(name, extra):
    channel = _receivers(30, nx=8, ny=12, snr_db=5.0)
    budget = POLICIES[name].min_budget(channel.arms) + extra
    policy = POLICIES[name](channel.arms, budget, channel.n_receivers)
    run = run_policy(channel, policy, torch.Generator().manual_seed(2))
    assert int(run.pulls.max()) <= budget
    assert int(policy.counts.sum(1).max()) <= budget
    # The structured searches spend all of it but the remainder of the final stage's split
    # (fewer pulls than final arms: ≤ 2 per HoloBeam phase, ≤ 8 for the 3 × 3 2-D stage).
    if name in ("holobeam", "unimodal_2d"):
        assert bool((run.pulls >= budget - 8).all())


def test_policy_step_protocol_errors():
    policy = UniformAllocation((2, 2), 4, 1)
    with pytest.raises(RuntimeError, match="select"):
        policy.update(1.0)
    policy.select()
    with pytest.raises(RuntimeError, match="twice"):
        policy.select()
    with pytest.raises(ValueError, match="one value per problem"):
        policy.update(torch.zeros(3))
    with pytest.raises(RuntimeError, match="not finished"):
        policy.recommend()


def test_policies_run_one_step_at_a_time_like_the_batched_harness():
    # Noiseless, so the noise draws cannot differ: one receiver at a time = the whole batch.
    noiseless = _receivers(6, nx=16, ny=16, snr_db=200.0)
    one_by_one = torch.cat([run_policy(noiseless.subset(i), HoloBeam(noiseless.arms, 120, 1),
                                       torch.Generator().manual_seed(0)).pairs
                            for i in range(6)])
    together = run_policy(noiseless, HoloBeam(noiseless.arms, 120, 6),
                          torch.Generator().manual_seed(0)).pairs
    assert torch.equal(one_by_one, together)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_seeded_runs_are_reproducible(name):
    def once(noise_seed: int) -> torch.Tensor:
        channel = _receivers(40, seed=5, nx=8, ny=8, snr_db=0.0)
        policy = POLICIES[name](channel.arms, 400, channel.n_receivers)
        return run_policy(channel, policy, torch.Generator().manual_seed(noise_seed)).pairs

    # Two separate runs agree; another pilot-noise seed (at 0 dB) changes some choices.
    assert torch.equal(once(9), once(9))
    assert not torch.equal(once(9), once(10))


def test_more_pilots_lower_the_error_of_holobeam():
    # Measured on seeds 0-3 (600 receivers, 16 × 16, rss at 30 dB): 0.15-0.16 / 0.06-0.10 /
    # 0.04-0.06 at T = 32 / 256 / 2048.
    channel = _receivers(600, nx=16, ny=16, snr_db=30.0)
    errors = [run_policy(channel, HoloBeam(channel.arms, t, 600),
                         torch.Generator().manual_seed(t)).error_rate for t in (32, 256, 2048)]
    assert errors[0] > errors[1] + 0.03 and errors[1] > errors[2] + 0.01


def test_oracle_phase1_psi_y_removes_the_side_lobe_penalty():
    # Measured on seeds 0-3 (400 receivers, 32 × 32, 20 dB, T = 512): broadside phase 1
    # 0.52-0.58, oracle phase 1 0.16-0.19.
    channel = _receivers(400, nx=32, ny=32, snr_db=20.0)
    best_y = torch.as_tensor(channel.best_pair())[:, 1]
    plain = run_policy(channel, HoloBeam(channel.arms, 512, 400),
                       torch.Generator().manual_seed(0)).error_rate
    oracle = run_policy(channel, HoloBeam(channel.arms, 512, 400, phase1_arm_y=best_y),
                        torch.Generator().manual_seed(0)).error_rate
    assert oracle < plain - 0.2


def test_numpy_in_numpy_out_and_torch_in_torch_out():
    theta, phi = np.array([0.3, 0.7]), np.array([1.0, 4.0])
    assert isinstance(HMTChannel(theta, phi).best_pair(), np.ndarray)
    best = HMTChannel(torch.tensor(theta), torch.tensor(phi)).best_pair()
    assert isinstance(best, torch.Tensor)
    assert isinstance(HMTChannel(theta, phi).throughput(np.array([[8, 8], [8, 8]])), np.ndarray)


@pytest.mark.parametrize(
    ("policy", "arms", "budget"),
    [(HoloBeam, (17, 17), 35), (SequentialHalving, (17, 17), 2600),
     (SuccessiveRejects, (17, 17), 288), (UniformAllocation, (3, 3), 8),
     (UnimodalSearch2D, (17, 17), 67)],
)
def test_budget_below_what_the_policy_needs_is_refused(policy, arms, budget):
    assert policy.min_budget(arms) == budget + 1
    with pytest.raises(ValueError, match=f"budget must be >= {budget + 1}"):
        policy(arms, budget)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"nx": 0}, "nx .*must be >= 1"), ({"ny": 0}, "ny .*must be >= 1"),
     ({"spacing": 0.5}, "spacing"), ({"reward": "snr"}, "reward"),
     ({"theta": np.array([2.0])}, r"theta \(elevation\) must lie in \[0, π/2\]"),
     ({"theta": np.array([-0.1])}, "theta"),
     ({"phi": np.array([0.0, 1.0])}, "phi must have the shape")],
)
def test_bad_channel_input_is_refused(kwargs, message):
    args = {"theta": np.array([0.2]), "phi": np.array([0.0])} | kwargs
    theta, phi = args.pop("theta"), args.pop("phi")
    with pytest.raises(ValueError, match=message):
        HMTChannel(theta, phi, **args)


def test_bad_policy_and_harness_input_is_refused():
    with pytest.raises(ValueError, match="arms must be"):
        HoloBeam((0, 5), 100)
    with pytest.raises(ValueError, match="phase1_arm_y must lie"):
        HoloBeam((5, 5), 100, phase1_arm_y=7)
    channel = _receivers(3, nx=8, ny=8)
    with pytest.raises(ValueError, match=r"policy\.batch"):
        run_policy(channel, HoloBeam(channel.arms, 100, 2), torch.Generator())
    with pytest.raises(ValueError, match="grid"):
        run_policy(channel, HoloBeam((4, 4), 100, 3), torch.Generator())
    with pytest.raises(ValueError, match="pairs must index the grid"):
        channel.throughput(np.array([[0, 0], [0, 0], [9, 0]]))
