"""Total variation and its constrained prox: closed forms, optimality, the peer solver."""

import numpy as np
import pytest
import torch

from regzoo.imaging import total_variation, tv_prox
from regzoo.imaging.tv import forward_differences, forward_differences_adjoint


def _objective(u, v, weight, dims):
    tv = total_variation(torch.as_tensor(u), spatial_dims=dims, isotropic=True,
                         reduction="sum")
    return 0.5 * float(((u - v) ** 2).sum()) + weight * float(tv)


def test_total_variation_closed_forms():
    assert float(total_variation(torch.ones(5, 6))) == 0.0
    ramp = torch.arange(6.0).repeat(5, 1)            # ∂x = 1 everywhere, ∂y = 0
    assert float(total_variation(ramp)) == pytest.approx(1.0)
    iso = total_variation(ramp, isotropic=True, reduction="sum")
    assert float(iso) == pytest.approx(5 * 5)        # the last column's difference is zero
    cube = torch.zeros(4, 4, 4)
    cube[2:] = 1.0
    assert float(total_variation(cube, spatial_dims=3, reduction="sum")) == pytest.approx(16)


def test_difference_operator_adjoint():
    rng = np.random.default_rng(0)
    u = torch.from_numpy(rng.standard_normal((2, 5, 6, 7)))
    p = torch.from_numpy(rng.standard_normal((3, 2, 5, 6, 7)))
    lhs = (forward_differences(u, 3) * p).sum()
    rhs = (u * forward_differences_adjoint(p)).sum()
    assert float(lhs) == pytest.approx(float(rhs), rel=1e-12)


def test_prox_matches_scikit_image_minimiser():
    restoration = pytest.importorskip("skimage.restoration")
    v = np.random.default_rng(1).random((10, 10, 10))
    ours = tv_prox(v, 0.1, n_iter=3000, tol=0)
    peer = restoration.denoise_tv_chambolle(v, weight=0.1, max_num_iter=20000, eps=1e-12)
    assert np.abs(ours - peer).max() < 5e-4
    assert _objective(ours, v, 0.1, 3) <= _objective(peer, v, 0.1, 3) + 1e-6


def test_prox_is_optimal_against_perturbations_and_respects_the_box():
    rng = np.random.default_rng(2)
    v = rng.standard_normal((8, 8, 8)) * 0.5 + 0.2
    u = tv_prox(v, 0.3, lower=0.0, n_iter=2000, tol=0)
    assert u.min() >= 0.0
    best = _objective(u, v, 0.3, 3)
    for _ in range(20):
        candidate = np.clip(u + 1e-3 * rng.standard_normal(u.shape), 0, None)
        assert _objective(candidate, v, 0.3, 3) >= best - 1e-9
    # Clipping the unconstrained prox is a feasible point but not the constrained minimiser.
    clipped = np.clip(tv_prox(v, 0.3, n_iter=2000, tol=0), 0, None)
    assert _objective(clipped, v, 0.3, 3) >= best - 1e-9


def test_prox_limits_batching_and_types():
    v = np.random.default_rng(3).random((3, 6, 6))
    assert np.array_equal(tv_prox(v, 0.0, spatial_dims=2, lower=0.2), np.clip(v, 0.2, None))
    constant = np.full((6, 6), 0.4)
    assert np.allclose(tv_prox(constant, 1.0, spatial_dims=2), constant)
    batched = tv_prox(v, 0.05, spatial_dims=2, n_iter=300, tol=0)
    single = tv_prox(v[1], 0.05, spatial_dims=2, n_iter=300, tol=0)
    assert np.allclose(batched[1], single, atol=1e-12)
    out = tv_prox(torch.from_numpy(v).float(), 0.05, spatial_dims=2)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    # A huge weight flattens each problem to its mean (TV = 0 is then optimal).
    flat = tv_prox(v, 1e3, spatial_dims=2, n_iter=5000, tol=0)
    assert np.allclose(flat, v.mean(axis=(1, 2), keepdims=True), atol=1e-3)


@pytest.mark.parametrize(("args", "kwargs", "error", "match"), [
    ((np.zeros((4, 4, 4)), -1.0), {}, ValueError, "weight"),
    ((np.zeros((4, 4)), 0.1), {"spatial_dims": 3}, ValueError, "spatial_dims"),
    ((np.zeros((4, 4, 4)), 0.1), {"lower": 1.0, "upper": 0.0}, ValueError, "box is empty"),
    ((np.full((4, 4, 4), np.nan), 0.1), {}, ValueError, "NaN"),
    ((np.zeros((4, 4, 4), complex), 0.1), {}, TypeError, "magnitude"),
])
def test_prox_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        tv_prox(*args, **kwargs)
