import builtins
import itertools
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage

from regzoo.data.hyperspectral import add_noise, psnr, synthetic_cube
from regzoo.methods.hyde import (
    METHODS,
    Wavelet2D,
    denoise,
    estimate_noise,
    fasthyde,
    fasthyie,
    forpdn,
    hyminor,
    hyres,
    hysime,
    l1hymixde,
    otvca,
    soft_threshold,
    sure_soft,
    sure_threshold,
    sure_thresholds,
    tv_denoise,
    wsrrr,
)
from regzoo.methods.hyde.lowlevel import principal_directions
from regzoo.methods.hyde.tv import total_variation
from regzoo.registry import card


def identity(image, sigma):
    return image


def blur(image, sigma):
    return ndimage.gaussian_filter(image, 0.8)


@pytest.fixture(scope="module")
def cube():
    return synthetic_cube(32, 32, 64, rank=5, seed=0)


def test_soft_threshold_is_the_closed_form_prox():
    x = torch.linspace(-3, 3, 61, dtype=torch.float64)
    expected = torch.sign(x) * torch.clamp(x.abs() - 1.2, min=0)
    torch.testing.assert_close(soft_threshold(x, 1.2), expected)
    # The prox minimises ½(z − x)² + t|z|: compare with a fine grid search at a few points.
    grid = torch.linspace(-4, 4, 80001, dtype=torch.float64)
    for value in (-2.5, -0.3, 0.9, 2.0):
        cost = 0.5 * (grid - value) ** 2 + 1.2 * grid.abs()
        assert float(soft_threshold(torch.tensor(value), 1.2)) == pytest.approx(
            float(grid[torch.argmin(cost)]), abs=1e-3)


def test_sure_is_unbiased_for_the_soft_threshold_risk():
    gen = torch.Generator().manual_seed(0)
    n, draws = 400, 600
    mu = torch.zeros(n, dtype=torch.float64)
    mu[:40] = torch.linspace(1, 6, 40, dtype=torch.float64)
    t = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    sure_mean = torch.zeros(3, dtype=torch.float64)
    risk_mean = torch.zeros(3, dtype=torch.float64)
    for _ in range(draws):
        x = mu + torch.randn(n, generator=gen, dtype=torch.float64)
        sure_mean += sure_soft(x, t) / draws
        risk_mean += torch.stack([((soft_threshold(x, ti) - mu) ** 2).sum() for ti in t]) / draws
    torch.testing.assert_close(sure_mean, risk_mean, rtol=0.02, atol=0)


def test_exact_sure_threshold_minimises_sure_and_is_near_the_oracle():
    gen = torch.Generator().manual_seed(1)
    mu = torch.zeros(2000, dtype=torch.float64)
    mu[:100] = 4.0
    x = mu + torch.randn(2000, generator=gen, dtype=torch.float64)
    t_star, value = sure_threshold(x)
    grid = torch.linspace(0, 5, 5001, dtype=torch.float64)
    assert value <= float(sure_soft(x, grid).min()) + 1e-9
    assert value == pytest.approx(float(sure_soft(x, torch.tensor([t_star]))[0]), abs=1e-6)
    risk = torch.stack([((soft_threshold(x, g) - mu) ** 2).sum() for g in grid])
    chosen = ((soft_threshold(x, t_star) - mu) ** 2).sum()
    assert float(chosen) <= 1.1 * float(risk.min())
    grid_t, _ = sure_threshold(x, "grid")
    assert 0 <= grid_t <= np.sqrt(np.log(15)) + 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("search", ["grid", "exact"])
def test_column_batched_sure_equals_the_per_column_search(dtype, search):
    # Same thresholds as one sure_threshold call per column; the batched grid sums SURE in
    # another order (measured 1.3e-6 relative in float32 on 16384×128, 0 in float64 here).
    gen = torch.Generator().manual_seed(2)
    scale = torch.linspace(0.2, 8.0, 12, dtype=torch.float64)
    x = (torch.randn(3000, 12, generator=gen, dtype=torch.float64) * scale).to(dtype)
    x[:, 0] = 0.0  # an all-zero column: t = 0
    thresholds, values = sure_thresholds(x, search)
    for i in range(x.shape[1]):
        t_ref, v_ref = sure_threshold(x[:, i], search)
        assert float(thresholds[i]) == pytest.approx(t_ref, rel=1e-6, abs=1e-12)
        assert float(values[i]) == pytest.approx(v_ref, rel=1e-5 if dtype == torch.float32
                                                 else 1e-12)


def test_soft_threshold_equals_the_sign_times_shrink_formula_bit_for_bit():
    gen = torch.Generator().manual_seed(3)
    for dtype in (torch.float64, torch.float32):
        x = torch.randn(500, 7, generator=gen, dtype=torch.float64).to(dtype)
        t = torch.rand(500, 7, generator=gen, dtype=torch.float64).to(dtype)
        for threshold in (t, 0.7, 0.0):
            assert torch.equal(soft_threshold(x, threshold),
                               torch.sign(x) * torch.clamp(x.abs() - threshold, min=0.0))


def test_wavelet_transform_commutes_with_per_band_scaling(cube):
    # WSRRR whitens in the wavelet domain, D₂ᵀ(Y/σ) = (D₂ᵀY)/σ: one DWT instead of two.
    dwt = Wavelet2D(30, 28, "db5", 3)
    y = torch.from_numpy(cube[:30, :28, :9])
    sigma = torch.linspace(0.5, 3.0, 9, dtype=torch.float64)
    torch.testing.assert_close(dwt.forward(y / sigma), dwt.forward(y) / sigma, atol=1e-13,
                               rtol=0)


def _estimated_sigma(noisy):
    _, r_w = estimate_noise(torch.from_numpy(noisy).reshape(-1, noisy.shape[-1]).T)
    return torch.sqrt(torch.diagonal(r_w)).numpy()


def test_noise_estimator_recovers_a_known_sigma_within_ten_percent(cube):
    # Measured at σ = 0.01: pooled within 1%, every band within 16% (the edge band, regressed
    # on neighbours from one side only, is the worst).
    for sigma in (0.01, 0.05, 0.1):
        estimated = _estimated_sigma(add_noise(cube, "gaussian", seed=3, sigma=sigma))
        assert np.sqrt(np.mean(estimated**2)) == pytest.approx(sigma, rel=0.05)
        assert np.median(np.abs(estimated / sigma - 1)) < 0.1
        np.testing.assert_allclose(estimated, sigma, rtol=0.25)


def test_noise_estimator_tracks_band_dependent_sigmas(cube):
    # Measured: median error 2-3%, worst 15-24% on the quietest bands, whose regression
    # residual also carries the other bands' noise (the estimator's known upward bias).
    noisy = add_noise(cube, "band_gaussian", seed=3, sigma_min=0.02, sigma_max=0.1)
    ratio = _estimated_sigma(noisy) / np.std(noisy - cube, axis=(0, 1))
    assert np.median(np.abs(ratio - 1)) < 0.1
    assert np.all(np.abs(ratio - 1) < 0.35)
    assert np.corrcoef(_estimated_sigma(noisy), np.std(noisy - cube, axis=(0, 1)))[0, 1] > 0.98


def test_hysime_finds_the_true_rank():
    for rank in (3, 6):
        clean = synthetic_cube(32, 32, 40, rank=rank, seed=rank)
        y = torch.from_numpy(add_noise(clean, "gaussian", seed=0, sigma=0.005)).reshape(-1, 40).T
        w, r_w = estimate_noise(y)
        k, e = hysime(y, w, r_w)
        assert k == rank
        torch.testing.assert_close(e.T @ e, torch.eye(rank, dtype=e.dtype), atol=1e-8, rtol=0)


@pytest.mark.parametrize(("rows", "cols", "level"), [(32, 32, 5), (37, 50, 3), (20, 33, 4)])
def test_wavelet_round_trip_is_exact_with_padding(rows, cols, level):
    x = torch.randn(rows, cols, 5, dtype=torch.float64)
    dwt = Wavelet2D(rows, cols, "db5", level)
    coef = dwt.forward(x)
    assert coef.shape == (dwt.padded[0] * dwt.padded[1], 5)
    assert dwt.padded[0] % 2**level == 0 and dwt.padded[1] % 2**level == 0
    torch.testing.assert_close(dwt.inverse(coef), x, atol=1e-10, rtol=0)
    assert sum(len(g) for g in dwt.groups) == coef.shape[0]


def test_wavelet_transform_is_orthogonal_without_padding():
    x = torch.randn(32, 32, 3, dtype=torch.float64)
    coef = Wavelet2D(32, 32, "db5", 5).forward(x)
    assert float(coef.norm()) == pytest.approx(float(x.norm()), rel=1e-12)


def test_tv_denoise_solves_the_rof_problem():
    gen = torch.Generator().manual_seed(0)
    b = torch.randn(2, 16, 16, generator=gen, dtype=torch.float64)
    u = tv_denoise(b, 0.3, n_iter=2000, tol=0)

    def cost(v):
        return 0.5 * ((v - b) ** 2).sum() + 0.3 * total_variation(v).sum()

    for _ in range(5):  # no random perturbation improves the objective
        bump = 1e-3 * torch.randn(u.shape, generator=gen, dtype=torch.float64)
        assert float(cost(u + bump)) >= float(cost(u)) - 1e-8


def reference_fgp(b, lam, n_iter):
    """Plain FGP (Beck & Teboulle 2009) with fresh tensors every step, the pre-fusion code."""
    def grad(u):
        gx, gy = torch.zeros_like(u), torch.zeros_like(u)
        gx[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
        gy[..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
        return gx, gy

    def adjoint(px, py):
        out = torch.zeros_like(px)
        out[..., :-1, :] -= px[..., :-1, :]
        out[..., 1:, :] += px[..., :-1, :]
        out[..., :, :-1] -= py[..., :, :-1]
        out[..., :, 1:] += py[..., :, :-1]
        return out

    px = py = rx = ry = torch.zeros_like(b)
    t = 1.0
    for _ in range(n_iter):
        gx, gy = grad(b - lam * adjoint(rx, ry))
        qx, qy = rx + gx / (8 * lam), ry + gy / (8 * lam)
        norm = torch.sqrt(qx * qx + qy * qy).clamp_min(1.0)
        nx, ny = qx / norm, qy / norm
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        rx, ry = nx + (t - 1) / t_new * (nx - px), ny + (t - 1) / t_new * (ny - py)
        px, py, t = nx, ny, t_new
    return b - lam * adjoint(px, py)


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float64, 1e-13), (torch.float32, 2e-6)])
def test_fused_tv_iteration_equals_the_plain_fgp(dtype, atol):
    # Same iterates as the unfused FGP to rounding (measured: 7e-16 in float64, 2.4e-7 in
    # float32 over 3 seeds), and float32 stays within float32 rounding of float64.
    for seed in range(3):
        b = torch.randn(3, 20, 24, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)
        fast = tv_denoise(b.to(dtype), 0.3, n_iter=100, tol=0)
        torch.testing.assert_close(fast, reference_fgp(b.to(dtype), 0.3, 100), atol=atol,
                                   rtol=0)
        torch.testing.assert_close(fast.double(), tv_denoise(b, 0.3, n_iter=100, tol=0),
                                   atol=1e-5, rtol=0)


def test_tv_warm_start_reaches_the_same_minimiser():
    gen = torch.Generator().manual_seed(0)
    b = torch.randn(2, 16, 16, generator=gen, dtype=torch.float64)
    exact = tv_denoise(b, 0.3, n_iter=3000, tol=0)
    _, dual = tv_denoise(b + 0.1 * torch.randn(b.shape, generator=gen, dtype=torch.float64),
                         0.3, n_iter=3000, tol=0, return_dual=True)
    warm, _ = tv_denoise(b, 0.3, n_iter=3000, tol=0, dual=dual, return_dual=True)
    torch.testing.assert_close(warm, exact, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="dual must have shape"):
        tv_denoise(b, 0.3, dual=dual[:, :1])


@pytest.mark.slow
def test_otvca_warm_start_and_float32_agree_with_the_cold_float64_path(cube):
    # Warm-starting FGP changes where it meets its tolerance, not the minimiser. Measured over
    # seeds 1-3 (cube values up to 1): warm vs cold 4.9e-6..1.0e-5; warm vs a 3000-step solve
    # 5.4e-6..1.3e-5 (cold: 5.0e-6..8.5e-6); float32 vs float64 8.6e-7..1.2e-6.
    noisy = add_noise(cube[:, :, :16], "gaussian", seed=1, sigma=0.05)
    warm = otvca(noisy, 5, num_iter=6)
    cold = otvca(noisy, 5, num_iter=6, warm_start=False)
    exact = otvca(noisy, 5, num_iter=6, tv_iter=3000, tv_tol=0.0, warm_start=False)
    assert np.abs(warm - cold).max() < 5e-5
    assert np.abs(warm - exact).max() < 5e-5
    single = otvca(torch.from_numpy(noisy.astype(np.float32)), 5, num_iter=6)
    assert single.dtype == torch.float32
    assert np.abs(single.double().numpy() - warm).max() < 1e-5


def test_otvca_bregman_option_stops_early_and_smooths_more_than_the_tv_solution(cube):
    pytest.importorskip("skimage")
    clean = cube[:, :, :16]
    noisy = add_noise(clean, "gaussian", seed=1, sigma=0.1)
    fgp = otvca(noisy, 4, full_output=True)
    bregman = otvca(noisy, 4, tv_solver="bregman", full_output=True)
    # The early-stopped split Bregman is not the TV minimiser: its penalised cost is higher.
    assert bregman.objective > fgp.objective
    with pytest.raises(ValueError, match="tv_solver must be one of"):
        otvca(noisy, 4, tv_solver="chambolle")


def test_bm3d_on_one_thread_matches_the_package_default():
    pytest.importorskip("bm3d")
    from regzoo.methods.hyde.eigen_denoiser import bm3d_denoiser

    image = ndimage.gaussian_filter(np.random.default_rng(0).random((32, 32)), 2.0)
    noisy = image + 0.05 * np.random.default_rng(1).standard_normal(image.shape)
    # Measured: 6.6e-7 (32²), 8.3e-7 (64²) between 1 thread and the package's default pool.
    one = bm3d_denoiser()(noisy, 0.05)
    np.testing.assert_allclose(one, bm3d_denoiser(num_threads=0)(noisy, 0.05), atol=1e-5)
    assert np.abs(one - image).mean() < np.abs(noisy - image).mean()
    with pytest.raises(ValueError, match="num_threads must be >= 0"):
        bm3d_denoiser(num_threads=-1)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_principal_directions_span_the_svds_leading_right_singular_vectors(dtype):
    generator = torch.Generator().manual_seed(0)
    left = torch.linalg.qr(torch.randn(500, 12, generator=generator, dtype=torch.float64))[0]
    right = torch.linalg.qr(torch.randn(12, 12, generator=generator, dtype=torch.float64))[0]
    spectrum = torch.logspace(3, -2, 12, dtype=torch.float64)  # gaps of 2.85× between values
    flat = ((left * spectrum) @ right.T).to(dtype)
    v = principal_directions(flat, 4)
    assert v.dtype == dtype and v.shape == (12, 4)
    reference = right[:, :4]
    cosines = (v.double().T @ reference).abs()  # each direction ± its SVD counterpart
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(cosines, torch.eye(4, dtype=torch.float64), atol=tol, rtol=0)


def test_otvca_keeps_v_orthonormal_and_objective_non_increasing(cube):
    noisy = add_noise(cube, "gaussian", seed=1, sigma=0.05)
    result = otvca(noisy, 5, lam=0.05, num_iter=6, tv_iter=1500, full_output=True)
    objectives = [h["objective"] for h in result.history]
    assert all(h["orthonormality"] < 1e-10 for h in result.history)
    assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(objectives))
    v = result.basis
    np.testing.assert_allclose(v.T @ v, np.eye(5), atol=1e-10)


def test_wsrrr_basis_is_orthonormal_and_converges(cube):
    noisy = add_noise(cube, "gaussian", seed=1, sigma=0.05)
    result = wsrrr(noisy, 5, full_output=True)
    np.testing.assert_allclose(result.basis.T @ result.basis, np.eye(5), atol=1e-10)
    changes = [h["v_change"] for h in result.history]
    assert changes[-1] < 0.1 * changes[0]
    assert psnr(cube, result.solution) > psnr(cube, noisy) + 10


def test_hyres_chooses_a_low_rank_and_beats_the_noisy_cube(cube):
    noisy = add_noise(cube, "gaussian", seed=2, sigma=0.05)
    result = hyres(noisy, full_output=True)
    assert 3 <= result.rank < 32  # measured 16 here, 4 on the 64³ cube at σ = 0.1
    # The exact SURE minimiser can always zero a noise component at no SURE cost: full rank.
    assert hyres(noisy, threshold_search="exact", full_output=True).rank == 64
    assert psnr(cube, result.solution) > psnr(cube, noisy) + 10
    assert result.noise_std == pytest.approx(np.full(64, 0.05), rel=0.1)


def test_forpdn_and_fasthyde_denoise(cube):
    noisy = add_noise(cube, "gaussian", seed=2, sigma=0.05)
    assert psnr(cube, forpdn(noisy)) > psnr(cube, noisy) + 5
    assert psnr(cube, fasthyde(noisy, denoiser=blur)) > psnr(cube, noisy) + 8


def test_hyminor_and_l1hymixde_remove_impulses_better_than_hyres(cube):
    noisy = add_noise(cube, "mixed", seed=4)
    base = psnr(cube, hyres(noisy))
    assert psnr(cube, hyminor(noisy)) > base + 1
    assert psnr(cube, l1hymixde(noisy, denoiser=blur)) > base + 1


def test_hyminor_difference_operators_are_the_dense_first_difference():
    from regzoo.methods.hyde.hyminor import _times_difference

    eye = torch.eye(9, dtype=torch.float64)
    d = eye[1:] - eye[:-1]
    w = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(_times_difference(w, out=torch.full((5, 9), 7.0,
                                                                   dtype=torch.float64)),
                               w @ d, rtol=0, atol=1e-15)


def test_hyminor_in_float32_follows_the_float64_run(cube, monkeypatch):
    # float32 zeroes the ADMM system inverse's subnormal entries (a speed fix); the ADMM must
    # still follow the float64 run up to float32 rounding. Both start from the same float64
    # HyRes step: HyRes's own float32 run can flip its SURE rank choice on a near tie (seen on
    # one of 3 noise seeds on an AVX-512 machine, mean |diff| 5.5e-4), which is not the ADMM's.
    # Measured on 8 noise seeds, 1 and 2 threads: mean |diff| ≤ 4e-8, max ≤ 1.6e-6, objective
    # ≤ 1.3e-7 relative.
    noisy = add_noise(cube, "mixed", seed=5)
    first_step = hyres(torch.tensor(noisy, dtype=torch.float64))
    monkeypatch.setattr(sys.modules["regzoo.methods.hyde.hyminor"], "hyres",
                        lambda y, **options: first_step.to(y.dtype))
    double = hyminor(torch.tensor(noisy, dtype=torch.float64), full_output=True)
    single = hyminor(torch.tensor(noisy, dtype=torch.float32), full_output=True)
    assert single.solution.dtype == torch.float32 and len(single.history) == 50
    diff = (single.solution.double() - double.solution).abs()
    assert float(diff.mean()) < 1e-6 and float(diff.max()) < 2e-5
    assert single.objective == pytest.approx(double.objective, rel=1e-6)


def jittered_blur():
    """A denoiser whose output wanders a little from call to call, as BM3D's does."""
    rng = np.random.default_rng(0)
    return lambda image, sigma: blur(image, sigma) + 0.01 * rng.standard_normal(image.shape)


def test_l1hymixde_hyde_stop_rule_is_a_prefix_of_the_official_run(cube):
    # The relative change of Z levels off near 2% (measured), so the official rule runs to
    # max_iter while HyDe's stall test stops at iteration 9.
    noisy = add_noise(cube[:, :, :24], "mixed", seed=4)
    official = l1hymixde(noisy, k_subspace=4, max_iter=12, denoiser=jittered_blur(),
                         full_output=True)
    early = l1hymixde(noisy, k_subspace=4, max_iter=12, denoiser=jittered_blur(),
                      stop_rule="hyde", full_output=True)
    assert early.n_iter < official.n_iter == 12
    # Same iterates up to the stop, and the stop is where the stall test first holds.
    assert early.history == official.history[: early.n_iter]
    changes = [h["z_change"] for h in official.history[1:]]
    stalls = [i + 2 for i in range(1, len(changes))
              if sum(changes[max(0, i - 4): i + 1]) / len(changes[max(0, i - 4): i + 1])
              - changes[i] < 1e-4 or changes[i] < 1e-3]
    assert early.n_iter == min([*stalls, official.n_iter])
    with pytest.raises(ValueError, match="stop_rule must be one of"):
        l1hymixde(noisy, denoiser=blur, stop_rule="never")


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(set(METHODS) - {"fasthyie"}))
def test_every_denoiser_nearly_returns_a_clean_input(cube, method):
    almost_clean = add_noise(cube, "gaussian", seed=0, sigma=1e-3)
    options = {"wsrrr": {"rank": 5}, "otvca": {"features": 5},
               "fasthyde": {"denoiser": identity},
               "l1hymixde": {"denoiser": identity}}.get(method, {})
    out = denoise(almost_clean, method, **options)
    assert psnr(cube, out) > 44.0


def test_fasthyie_fills_missing_pixels(cube):
    noisy = add_noise(cube, "gaussian", seed=5, sigma=0.02)
    rng = np.random.default_rng(0)
    mask = np.ones_like(noisy)
    mask[rng.random(noisy.shape[:2]) < 0.2, :20] = 0  # 20% of pixels lose 20 bands
    damaged = np.where(mask > 0, noisy, 0.0)
    out = fasthyie(damaged, mask, denoiser=identity)
    missing = mask == 0
    assert np.abs(out[missing] - cube[missing]).mean() < 0.02
    assert np.abs(damaged[missing] - cube[missing]).mean() > 0.2


@pytest.mark.parametrize(("method", "options", "unit"), [
    ("l1hymixde", {"denoiser": identity, "max_iter": 3}, "l1hymixde ADMM"),
    ("fasthyde", {"denoiser": identity}, "eigen-images"),
    ("hyminor", {"iterations": 3}, "hyminor ADMM"),
    ("otvca", {"features": 3, "num_iter": 2}, "otvca"),
    ("wsrrr", {"rank": 3, "max_iter": 3}, "wsrrr"),
])
def test_long_denoisers_report_progress_only_when_asked(cube, capsys, method, options, unit):
    small = add_noise(cube[:16, :16, :16], "mixed", seed=0)
    quiet = denoise(small, method, progress=False, **options)
    assert capsys.readouterr().err == ""
    shown = denoise(small, method, progress=True, **options)
    assert unit in capsys.readouterr().err
    np.testing.assert_array_equal(quiet, shown)


def test_numpy_in_numpy_out_and_torch_in_torch_out(cube, device):
    small = add_noise(cube[:16, :16, :16], "gaussian", seed=0, sigma=0.02)
    assert isinstance(hyres(small), np.ndarray)
    tensor = torch.from_numpy(small).to(device=device, dtype=torch.float32)
    out = hyres(tensor)
    assert isinstance(out, torch.Tensor)
    assert out.dtype == torch.float32 and out.device == tensor.device
    np.testing.assert_allclose(out.cpu().numpy(), hyres(small), atol=1e-4)
    assert torch.equal(tensor.cpu(), torch.from_numpy(small).float())  # input untouched


def test_registry_card_lists_every_method():
    hyde_card = card("hyde")
    assert hyde_card.implemented
    assert set(hyde_card.variants) == set(METHODS)
    assert hyde_card.obj is denoise


def test_bad_input_raises_clear_errors(cube):
    small = cube[:8, :8, :6]
    with pytest.raises(ValueError, match="3 dimensions"):
        hyres(small[..., 0])
    nan = small.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        hyres(nan)
    flat = small.copy()
    flat[..., 2] = 0.5
    with pytest.raises(ValueError, match=r"constant band\(s\) \[2\]"):
        hyres(flat)
    with pytest.raises(ValueError, match="rank must be <= bands"):
        wsrrr(small, 7)
    with pytest.raises(ValueError, match="features must be <= bands"):
        otvca(small, 7)
    with pytest.raises(ValueError, match="k_subspace must be <= bands"):
        fasthyde(small, k_subspace=7, denoiser=identity)
    with pytest.raises(ValueError, match="method must be one of"):
        denoise(small, "bm4d")
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        hyres(small.tolist())
    with pytest.raises(ValueError, match="mask must have the cube's shape"):
        fasthyie(small, np.ones((8, 8, 5)), k_subspace=3, denoiser=identity)


def test_missing_bm3d_raises_an_import_error_naming_the_extra(cube, monkeypatch):
    real_import = builtins.__import__

    def no_bm3d(name, *args, **kwargs):
        if name == "bm3d":
            raise ImportError("No module named 'bm3d'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "bm3d", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_bm3d)
    with pytest.raises(ImportError, match=r"regzoo\[bm3d\]"):
        fasthyde(cube[:16, :16, :16])


def test_a_2d_array_gets_a_hint_that_works():
    import numpy as np

    from regzoo.methods.hyde import hyres

    with pytest.raises(ValueError, match=r"at least 2 bands.*x\.reshape\(rows, cols, bands\)"):
        hyres(np.random.default_rng(0).random((16, 16)))
