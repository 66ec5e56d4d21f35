"""Properties of PnP-MIMO: the Born operator, the magnitude prox, CG, the ball and C-SALSA."""

import numpy as np
import pytest
import torch

from regzoo.methods.pnp_mimo import (
    NearFieldMIMO,
    complex_prox,
    conjugate_gradient,
    magnitude_prox,
    network_denoiser,
    pnp_csalsa,
    project_ball,
    soft_threshold,
    tv_denoiser,
    x_array_positions,
)


def small_op(**options):
    return NearFieldMIMO.x_array(3, (4, 5, 6), **options)


def crandn(*shape, seed=0, dtype=torch.complex128):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=dtype, generator=g)


# ---------------------------------------------------------------------------- operator


def test_x_array_is_two_crossing_diagonals_on_the_aperture_plane():
    tx, rx = x_array_positions()
    assert tx.shape == (12, 3) and rx.shape == (13, 3)
    assert np.allclose(rx[:, 0], rx[:, 1]) and np.allclose(tx[:, 0], -tx[:, 1])
    assert np.allclose(rx[[0, -1], :2], [[-0.15, -0.15], [0.15, 0.15]])
    assert np.all(tx[:, 2] == 0) and np.all(rx[:, 2] == 0)


def test_born_kernel_matches_its_formula_entry_by_entry():
    op = small_op()
    A = op.matrix.reshape(*op.meas_shape, -1)
    k, t, r, v = 2, 5, 7, 33
    s = op.voxel_positions[v]
    rt, rr = np.linalg.norm(s - op.tx[t].numpy()), np.linalg.norm(s - op.rx[r].numpy())
    kappa = 2 * np.pi * op.freqs[k].item() / 299_792_458.0
    expected = np.exp(-1j * kappa * (rt + rr)) / (4 * np.pi * rt * rr)
    assert complex(A[k, t, r, v]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("mode", ["dense", "matrix_free"])
def test_adjoint_identity_holds_to_1e10_in_complex128(mode):
    op = small_op(mode=mode, chunk=2)
    x, y = crandn(2, 4, 5, 6, seed=1), crandn(2, 3, 12, 13, seed=2)
    lhs = torch.vdot(op(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), op.adjoint(y).flatten())
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_dense_and_matrix_free_products_agree():
    dense, free = small_op(mode="dense"), small_op(mode="matrix_free", chunk=2)
    x, y = crandn(4, 5, 6, seed=3), crandn(3, 12, 13, seed=4)
    assert torch.allclose(dense(x), free(x), rtol=1e-12, atol=1e-14)
    assert torch.allclose(dense.adjoint(y), free.adjoint(y), rtol=1e-12, atol=1e-14)
    for name in ("back_projection", "kirchhoff_migration"):
        assert torch.allclose(getattr(dense, name)(y), getattr(free, name)(y), rtol=1e-10)


def test_complex64_operator_agrees_with_complex128_to_single_precision():
    x = crandn(4, 5, 6, seed=5)
    y64 = small_op(dtype=torch.complex64)(x)
    assert y64.dtype == torch.complex64
    assert torch.allclose(y64.to(torch.complex128), small_op()(x), rtol=1e-4, atol=1e-6)


def test_numpy_in_gives_numpy_out_and_leading_axes_are_a_batch():
    op = small_op()
    x = crandn(2, 4, 5, 6, seed=6)
    out = op(x.numpy())
    assert isinstance(out, np.ndarray) and out.shape == (2, 3, 12, 13)
    assert np.allclose(out[1], op(x[1]).numpy())


@pytest.mark.parametrize("imager", ["adjoint", "back_projection", "kirchhoff_migration"])
def test_a_point_scatterer_images_at_its_voxel(imager):
    op = NearFieldMIMO.x_array(10, (12, 12, 12))
    for voxel in [(2, 9, 3), (6, 6, 10), (10, 1, 6)]:
        x = torch.zeros(12, 12, 12, dtype=torch.complex128)
        x[voxel] = np.exp(1j * 0.7)
        image = getattr(op, imager)(op(x)).abs()
        assert np.unravel_index(int(image.argmax()), image.shape) == voxel


def test_noise_has_the_requested_snr_and_the_ball_radius_of_the_notebook():
    op = NearFieldMIMO.x_array(10, (8, 8, 8))
    clean = op(crandn(8, 8, 8, seed=7))
    noisy = op.add_noise(clean, 10.0, generator=torch.Generator().manual_seed(0))
    power = clean.abs().pow(2).mean()
    assert noisy.noise_var == pytest.approx(float(power) / 10, rel=1e-12)
    measured = (noisy.y - clean).abs().pow(2).mean()
    assert float(measured) == pytest.approx(noisy.noise_var, rel=0.1)
    assert noisy.eps == pytest.approx(np.sqrt(noisy.noise_var * op.n_meas))
    again = op.add_noise(clean, 10.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy.y, again.y)


def test_bad_operator_input_is_refused_by_name():
    tx, rx = x_array_positions()
    grid = [np.linspace(-0.1, 0.1, 4)] * 2 + [np.linspace(0.4, 0.6, 4)]
    freqs = np.array([4e9, 8e9])
    with pytest.raises(ValueError, match="grid"):
        NearFieldMIMO(tx, rx, freqs, grid[:2])
    with pytest.raises(ValueError, match="grid"):
        NearFieldMIMO(tx, rx, freqs, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="tx is empty"):
        NearFieldMIMO(np.zeros((0, 3)), rx, freqs, grid)
    with pytest.raises(ValueError, match="rx is empty"):
        NearFieldMIMO(tx, np.zeros((0, 3)), freqs, grid)
    with pytest.raises(ValueError, match="freqs must be > 0"):
        NearFieldMIMO(tx, rx, np.array([4e9, 0.0]), grid)
    with pytest.raises(ValueError, match="rx must have shape"):
        NearFieldMIMO(tx, rx[:, :2], freqs, grid)
    with pytest.raises(TypeError, match="dtype"):
        NearFieldMIMO(tx, rx, freqs, grid, dtype=torch.float64)
    op = NearFieldMIMO(tx, rx, freqs, grid)
    with pytest.raises(TypeError, match="x must be a real or complex floating"):
        op(torch.zeros(4, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="x must have shape"):
        op(torch.zeros(4, 4, 5, dtype=torch.complex128))
    with pytest.raises(TypeError, match="y must be"):
        op.adjoint([0.0])


# ------------------------------------------------------------------------- magnitude prox


def test_l1_on_the_magnitude_is_the_complex_soft_threshold():
    v = crandn(50, seed=8)
    out = magnitude_prox(soft_threshold)(v, 0.7)
    expected = torch.where(v.abs() > 0.7, v - 0.7 * v / v.abs(), 0)
    assert torch.allclose(out, expected, atol=1e-15)


def test_magnitude_prox_matches_a_brute_force_search_over_magnitude_and_phase():
    # R(u) = Σ c_i u_i + ½ Σ d_i u_i² (convex, separable): its non-negative prox is closed form.
    g = torch.Generator().manual_seed(9)
    c = torch.randn(3, generator=g, dtype=torch.float64)
    d = torch.rand(3, generator=g, dtype=torch.float64)
    lam = 0.4

    def real_prox(m, weight):
        return ((m - weight * c) / (1 + weight * d)).clamp_min(0)

    v = crandn(3, seed=10)
    out = magnitude_prox(real_prox)(v, lam)
    radii = torch.linspace(0, 3, 1501, dtype=torch.float64)
    phases = torch.linspace(-np.pi, np.pi, 721, dtype=torch.float64)
    for i in range(3):
        z = torch.polar(radii[:, None].expand(-1, 721), phases[None, :].expand(1501, -1))
        cost = 0.5 * (z - v[i]).abs() ** 2 + lam * (c[i] * radii + 0.5 * d[i] * radii**2)[:, None]
        best = z.flatten()[cost.argmin()]
        assert abs(complex(out[i]) - complex(best)) < 5e-3


def test_magnitude_prox_is_phase_equivariant():
    v = crandn(4, 5, 6, seed=11)
    phi = torch.rand(4, 5, 6, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    rotation = torch.polar(torch.ones_like(phi), 2 * np.pi * phi)
    for prox in (magnitude_prox(soft_threshold), magnitude_prox(tv_denoiser())):
        assert torch.allclose(prox(v * rotation, 0.3), prox(v, 0.3) * rotation, atol=1e-12)


def test_the_magnitude_stays_non_negative_whatever_the_denoiser_returns():
    v = crandn(4, 5, 6, seed=13)
    out = magnitude_prox(lambda m, w: m - 2.0)(v, 0.0)
    mask = v.abs() <= 2
    assert torch.all(out[mask] == 0)
    assert torch.allclose(out[~mask], v[~mask] * (1 - 2 / v[~mask].abs()))


def test_tv_on_the_magnitude_is_non_negative_and_flattens_a_noisy_constant():
    m = torch.full((6, 6, 6), 0.5, dtype=torch.float64) + 0.05 * crandn(6, 6, 6, seed=14).real
    out = tv_denoiser()(m, 1.0)
    assert torch.all(out >= 0) and out.std() < 0.01 * m.std()


def test_the_official_five_step_tv_prox_barely_moves_its_input_where_the_exact_one_does():
    v = torch.zeros(16, 16, 16, dtype=torch.float64)
    v[4:9, 4:12, 2:6], v[9:, :8, 9:] = 1.0, 0.6
    v = v + 0.1 * crandn(16, 16, 16, seed=24).real
    moved = {}
    for solver, steps in (("official", 5), ("official", 200), ("fgp", 100)):
        u = tv_denoiser(solver=solver, n_iter=steps, nonnegative=False)(v, 0.039)
        moved[(solver, steps)] = float((u - v).norm() / v.norm())
    # measured 0.015, 0.23 and 0.26 (module docstring)
    assert moved[("official", 5)] < 0.05 < 0.2 < moved[("fgp", 100)]
    assert abs(moved[("official", 200)] - moved[("fgp", 100)]) < 0.1


def test_complex_domain_prox_treats_real_and_imaginary_parts_separately():
    v = crandn(10, seed=15)
    out = complex_prox(lambda u, w: u * w)(v, 0.5)
    assert torch.allclose(out, 0.5 * v)


# ------------------------------------------------------------------------ CG and the ball


def test_cg_returns_x_unchanged_at_zero_residual():
    Q = torch.eye(5, dtype=torch.complex128) * 3
    x = crandn(5, seed=16)
    out, steps = conjugate_gradient(lambda u: Q @ u, Q @ x, x)
    assert steps == 0 and torch.equal(out, x)


def test_cg_solves_a_hermitian_positive_definite_system_per_problem():
    B = crandn(6, 6, seed=17)
    Q = B.conj().T @ B + torch.eye(6)
    b = crandn(2, 6, seed=18)
    x, _ = conjugate_gradient(lambda u: u @ Q.T, b, torch.zeros_like(b), max_iter=50,
                              tol=1e-14, dims=1)
    assert torch.allclose(x @ Q.T, b, atol=1e-10)


def test_ball_projection_is_identity_inside_and_lands_on_the_sphere_outside():
    v = crandn(20, seed=19)
    norm = float(v.norm())
    assert torch.equal(project_ball(v, norm + 1), v)
    out = project_ball(v, norm / 3)
    assert float(out.norm()) == pytest.approx(norm / 3)
    assert torch.allclose(out * 3, v)
    both = project_ball(torch.stack([v, 0.01 * v]), torch.tensor([1.0, 1.0]), dims=1)
    assert float(both[0].norm()) == pytest.approx(1.0) and torch.equal(both[1], 0.01 * v)


# --------------------------------------------------------------------------- C-SALSA


def test_identity_denoiser_csalsa_converges_to_a_least_squares_point_in_the_ball():
    op = NearFieldMIMO.x_array(4, (5, 5, 5))
    y = op(crandn(5, 5, 5, seed=20))
    noisy = op.add_noise(y, 20.0, generator=torch.Generator().manual_seed(1))
    res = pnp_csalsa(noisy.y, op, lambda m, w: m, noisy.eps, K=1.0, max_iter=400, tol=1e-9,
                     cg_max_iter=20, cg_tol=1e-12)
    x = torch.as_tensor(res.solution)
    misfit = float((op(x) - noisy.y).norm())
    assert misfit <= noisy.eps * 1.01
    residuals = [h["split_residual"] for h in res.history]
    assert residuals[-1] < 1e-3 * residuals[0]
    assert all(b <= a * 1.5 for a, b in zip(residuals[::20], residuals[20::20]))


def test_csalsa_numpy_in_numpy_out_and_a_batch_equals_problems_one_by_one():
    op = NearFieldMIMO.x_array(3, (4, 4, 4))
    ys = op(crandn(2, 4, 4, 4, seed=21)).numpy()
    one = [pnp_csalsa(ys[i], op, "l1", 0.01, alpha=0.01, K=5.0, max_iter=6) for i in range(2)]
    both = pnp_csalsa(ys, op, "l1", [0.01, 0.01], alpha=0.01, K=5.0, max_iter=6)
    assert isinstance(both.solution, np.ndarray) and both.solution.dtype == np.complex128
    assert isinstance(both.magnitude, np.ndarray) and both.magnitude.dtype == np.float64
    for i in range(2):
        assert np.allclose(both.solution[i], one[i].solution, atol=1e-10)
        assert one[i].magnitude.max() == pytest.approx(1.0)


def test_zero_phase_option_returns_a_real_non_negative_image():
    op = NearFieldMIMO.x_array(3, (4, 4, 4))
    y = op(crandn(4, 4, 4, seed=22))
    res = pnp_csalsa(y, op, "l1", 0.1, alpha=0.01, K=5.0, max_iter=4, zero_phase=True)
    assert torch.all(res.solution.imag == 0) and torch.all(res.solution.real >= 0)
    assert res.solution.dtype == torch.complex128


def test_network_denoiser_feeds_a_constant_sqrt_alpha_map():
    seen = {}

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, inputs):
            seen["map"] = inputs[:, 1]
            return inputs[:, :1]

    out = network_denoiser(Probe())(torch.ones(2, 4, 4, 4, dtype=torch.float64), 0.04)
    assert torch.allclose(seen["map"], torch.full((2, 4, 4, 4), 0.2))
    assert out.dtype == torch.float64 and out.shape == (2, 4, 4, 4)


def test_bad_solver_input_is_refused_by_name():
    op = NearFieldMIMO.x_array(3, (4, 4, 4))
    y = op(crandn(4, 4, 4, seed=23))
    with pytest.raises(ValueError, match="eps"):
        pnp_csalsa(y, op, "l1", -1.0)
    with pytest.raises(ValueError, match="eps is required"):
        pnp_csalsa(y, op, "l1")
    with pytest.raises(ValueError, match="y must have"):
        pnp_csalsa(y[:2], op, "l1", 0.1)
    with pytest.raises(TypeError, match="y must be a complex"):
        pnp_csalsa(np.zeros(op.meas_shape, dtype=np.int64), op, "l1", 0.1)
    with pytest.raises(ValueError, match="denoiser"):
        pnp_csalsa(y, op, "bm3d", 0.1)
    with pytest.raises(TypeError, match="op must be"):
        pnp_csalsa(y, op.matrix, "l1", 0.1)
    with pytest.raises(ValueError, match="domain"):
        pnp_csalsa(y, op, "l1", 0.1, domain="phase")
    with pytest.raises(ValueError, match="K must"):
        pnp_csalsa(y, op, "l1", 0.1, K=0.0)


def test_the_denoiser_keeps_any_grid_shape_and_refuses_a_missing_noise_map():
    from regzoo.models.pnp_mimo_denoiser import MagnitudeDenoiser3D

    torch.manual_seed(0)
    net = MagnitudeDenoiser3D(4)
    for shape in [(8, 8, 8), (5, 7, 9)]:
        out = net(torch.rand(2, 2, *shape))
        assert out.shape == (2, 1, *shape)
    with pytest.raises(ValueError, match="noise map"):
        net(torch.rand(2, 1, 8, 8, 8))
