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
    tv_denoise,
    wsrrr,
)
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


@pytest.mark.slow
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
