r"""Random-feature ridge regression theory: when more features and samples are always better.

Simon, Karkada, Ghosh, Belkin. "More is Better in Modern Machine Learning: when Infinite
Overparameterization is Optimal and Overfitting is Obligatory", 2023, arXiv 2311.14646
(ICLR 2024). Official code: github.com/dkarkada/more-is-better (jax; read, not copied).

The method is a closed-form risk predictor (the paper's "omniscient risk estimate", §4) for
random-feature (RF) ridge regression, checked here against a Monte-Carlo simulator of the real
regression. From it the paper proves (Thm. 1): with the ridge tuned optimally, the test risk
never rises when the number of features k or of samples n grows, so infinite width is best; and
(§5) for power-law tasks the optimal ridge fits the training set far better than the test set.

**Setting (paper §3).** A kernel with eigenvalues λ_1 ≥ λ_2 ≥ … ≥ 0 and orthonormal
eigenfunctions φ_i, a target f*(x) = Σ_i v_i φ_i(x) with labels y = f*(x) + ε, ε ~ N(0, σ²).
RF regression draws k features g_j with E_g[g(x) g(x')] = K(x, x'), forms the RF kernel
K̂(x, x') = (1/k) Σ_j g_j(x) g_j(x') and fits kernel ridge regression with it on n samples:
f̂(x) = K̂(x, X) (K̂(X, X) + δ I_n)⁻¹ y. The ridge δ ≥ 0 is added to the *unnormalised* Gram
matrix (the paper's and official code's convention).

**KRR eigenframework (k = ∞; paper §3, eq. 2-4).** κ > 0 solves

.. math::  \sum_i \frac{\lambda_i}{\lambda_i+\kappa} + \frac{\delta}{\kappa} = n,

learnabilities L_i = λ_i/(λ_i+κ), overfitting coefficient Ω = n/(n − Σ_i L_i²), and

.. math::  E_{te} = Ω \Big(\sum_i (1-L_i)^2 v_i^2 + σ^2\Big), \qquad
           E_{tr} = \Big(\frac{\delta}{n\kappa}\Big)^2 E_{te}.

**RF eigenframework (paper §4, eqs. 5-7; official ``theory.py``).** Two unknowns κ, γ > 0 with

.. math::  n = \sum_i \frac{\lambda_i}{\lambda_i+\gamma} + \frac{\delta}{\kappa}  \quad (A), \qquad
           k = \sum_i \frac{\lambda_i}{\lambda_i+\gamma} + \frac{k\kappa}{\gamma}  \quad (B).

With L_i = λ_i/(λ_i+γ), z = Σ L_i, q = Σ L_i²:

.. math::  Ω = \frac{1}{1-x},\quad x = \frac{q(k-2z) + z^2}{n(k-q)}, \qquad
           b_i = (1-L_i) - \frac{\kappa k L_i}{(\lambda_i+\gamma)(k-q)},

.. math::  E_{te} = Ω\Big(\sum_i b_i v_i^2 + σ^2\Big), \qquad
           E_{tr} = \Big(\frac{\delta}{n\kappa}\Big)^2 E_{te}.

As k → ∞, (B) forces κ → γ and b_i → (1 − L_i)²: the KRR framework. The fitting ratio
R = E_tr/E_te = (δ/(nκ))² is computed as ((n − z)/n)², equal by (A) and finite as δ → 0.

**Solver (ours; the official code nests two bisections).** (B) gives κ = γ(k − z(γ))/k, valid
where z(γ) < k. Substituted into (A), γ solves the single equation
z(γ) + δk/(γ(k − z(γ))) = n whose left side falls strictly in γ, so one Brent root search in
log γ finds the unique root; κ follows in closed form. Both equations then hold to rounding
(:attr:`EigenframeworkRisk.residuals`). δ = 0 is the ridgeless limit: for k > n (or n < #modes
for KRR) the same equation without the δ term; for k ≤ n the limit γ → γ_k (z(γ_k) = k), κ → 0,
Ω = n/(n − k), infinite at k = n (the double-descent peak).

**Optimal ridge** (paper Thm. 1 is stated at δ*): minimise E_te over log δ, a coarse grid then a
bounded Brent refinement, with δ → 0 as a candidate. :func:`optimal_risks` tabulates δ* and
E_te(δ*) over grids of n and k: the "more is better" curves.

**Simulator** (paper §4 experiments, official ``rf-gaussian.py`` setting): Gaussian data
x ~ N(0, I_M) so φ_i(x) = x_i; y = x·v + ε; linear random features F = (x ⊙ √λ) Wᵀ with
W ∈ R^{k×M}, W_ji ~ N(0, 1/k), so E_W[F Fᵀ] = K. One eigendecomposition of the n×n Gram
serves every ridge; nested features (the first k rows of one W) and nested samples (the first n
rows of one X) give all (n, k) of a trial from one draw, so curves are paired within a trial.
The test MSE is the exact population risk ‖β̂ − v‖² + σ² of the fitted linear predictor
f̂(x) = x·β̂ (the official code estimates it on 1000 fresh points; the exact value removes
that noise without changing its expectation).

Defaults and their sources: the power-law task λ_i = i^-α, v_i² = i^-β with α = β = 1.5,
σ² = 0.5 and M = 10000 modes are the official ``rf-gaussian.py`` settings (the paper's synthetic
figure). Not implemented: the paper's power-law asymptotic closed form E(R) of §5, whose rescaled
noise convention σ̃² could not be pinned down from the sources available here; the exact
eigenframework above gives the same quantities at any finite n (:attr:`OptimalRidge.fitting_ratio`).

Cost: one theory point is ~50 scalar root iterations over M eigenvalues (about a millisecond for
M = 2000); a simulated trial costs one n×M×k product and one n×n eigh per n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import optimize

from regzoo.core.arrays import ArrayLike, SolverResult, as_tensor, restore
from regzoo.core.checks import check_positive_int, check_range, check_real
from regzoo.registry import Default, register

PAPER_ALPHA = 1.5
PAPER_BETA = 1.5
PAPER_NOISE = 0.5
PAPER_MODES = 10000
"""Synthetic task of the official ``scripts/rf-gaussian.py``: λ_i = i^-1.5, v_i² = i^-1.5, σ² = 0.5,
M = 10000 Gaussian modes."""

_LOG_GAMMA_MAX = 700.0  # exp(700) ~ 1e304: z(γ) ~ Σλ/γ is ~0 long before this


@dataclass(frozen=True)
class EigenframeworkRisk(SolverResult):
    """The eigenframework's prediction for one (n, k, δ, σ²) (paper §3-4).

    ``solution`` holds the learnabilities L_i = λ_i/(λ_i+γ) in the caller's array type,
    ``objective`` the predicted test MSE, ``n_iter`` the root-search iterations. ``residuals``
    are the relative misfits of (A) and (B) (of the KRR equation for k = ∞; zero by construction
    in the ridgeless limits).
    """

    test_mse: float = math.nan
    train_mse: float = math.nan
    kappa: float = math.nan
    gamma: float = math.nan
    omega: float = math.nan
    fitting_ratio: float = math.nan
    bias: float = math.nan
    n: float = math.nan
    k: float = math.inf
    ridge: float = math.nan
    noise: float = 0.0
    residuals: tuple[float, float] = (0.0, 0.0)


@dataclass(frozen=True)
class OptimalRidge:
    """The ridge δ* minimising the predicted test MSE and the prediction there."""

    ridge: float
    test_mse: float
    train_mse: float
    fitting_ratio: float
    risk: EigenframeworkRisk


@dataclass(frozen=True)
class RFSimulation:
    """Monte-Carlo RF ridge regression: errors of shape (trials, len(n), len(k), len(ridges)).

    ``test_mse`` is the exact population risk of each fitted predictor, ``train_mse`` the mean
    squared residual on its n noisy training labels; both in the caller's array type.
    """

    train_mse: Any
    test_mse: Any
    n: tuple[int, ...]
    k: tuple[float, ...]
    ridges: Any
    noise: float
    seed: int


def powerlaw_task(num_modes: int = PAPER_MODES, alpha: float = PAPER_ALPHA,
                  beta: float = PAPER_BETA) -> tuple[np.ndarray, np.ndarray]:
    """The power-law task of paper §5: eigenvalues λ_i = i^-α and coefficients v_i = i^-β/2.

    Args:
        num_modes: M, the number of modes kept (the task is truncated there).
        alpha: eigenvalue decay exponent, > 1 so that Σλ_i stays finite as M grows.
        beta: target decay exponent (v_i² = i^-β), > 1 so that the target has finite power.

    Returns:
        ``(eigenvalues, coefficients)``, float64 numpy arrays of length M.
    """
    check_positive_int("num_modes", num_modes)
    check_range("alpha", alpha, 1.0, None, low_inclusive=False)
    check_range("beta", beta, 1.0, None, low_inclusive=False)
    i = np.arange(1, num_modes + 1, dtype=np.float64)
    return i ** -float(alpha), i ** (-float(beta) / 2)


def _spectrum(eigenvalues: ArrayLike, coefficients: ArrayLike) -> tuple[np.ndarray, np.ndarray,
                                                                         Any]:
    lam, kind = as_tensor("eigenvalues", eigenvalues, ndim=1, dtype=torch.float64)
    v, _ = as_tensor("coefficients", coefficients, ndim=1, dtype=torch.float64)
    if v.shape != lam.shape:
        raise ValueError(f"coefficients must have one entry per eigenvalue: got "
                         f"{v.shape[0]} coefficients for {lam.shape[0]} eigenvalues")
    if bool((lam < 0).any()):
        raise ValueError(f"eigenvalues must be >= 0 (a kernel is positive semi-definite), got "
                         f"minimum {float(lam.min()):.3g}; clip round-off with np.maximum(l, 0)")
    if not bool((lam > 0).any()):
        raise ValueError("eigenvalues are all zero; the kernel must have a positive eigenvalue")
    return lam.cpu().numpy(), v.cpu().numpy() ** 2, kind


def _check_nk(n: object, k: object) -> tuple[float, float]:
    n = check_range("n", n, 0.0, None, low_inclusive=False)
    if isinstance(k, (int, float)) and not isinstance(k, bool) and k == math.inf:
        return n, math.inf
    return n, check_range("k", k, 0.0, None, low_inclusive=False)


def _z(lam: np.ndarray, gamma: float) -> float:
    return float(np.sum(lam / (lam + gamma)))


def _log_root(func: Any, lo: float, hi: float) -> tuple[float, int, bool]:
    """Root of a function of log γ that is positive at ``lo`` and negative at ``hi``."""
    root, info = optimize.brentq(func, lo, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps,
                                 maxiter=500, full_output=True, disp=False)
    # log γ has an absolute resolution of ~1e-15·|log γ|: polish on γ itself, whose relative
    # resolution is 1e-16, so the fixed point holds to rounding even where it is stiff.
    value, iterations = math.exp(root), info.iterations
    for width in (1e-12, 1e-9, 1e-6):
        a, b = value * (1 - width), value * (1 + width)
        fa, fb = func(math.log(a)), func(math.log(b))
        if math.isfinite(fa) and math.isfinite(fb) and fa > 0 > fb:
            value, extra = optimize.brentq(lambda g: func(math.log(g)), a, b, xtol=1e-300,
                                           rtol=4 * np.finfo(float).eps, maxiter=200,
                                           full_output=True, disp=False)
            iterations += extra.iterations
            break
    return float(value), iterations, bool(info.converged)


def _bracket_below(func: Any, lo: float) -> float:
    """Move ``lo`` up until ``func(lo) > 0`` is finite (func is +inf or undefined at lo)."""
    for step in (*(10.0**-e for e in range(13, 0, -2)), *(2.0**e for e in range(8))):
        value = func(lo + step)
        if math.isfinite(value) and value > 0:
            return lo + step
    raise RuntimeError("could not bracket the eigenframework root; report this input")


def _gamma_threshold(lam: np.ndarray, k: float) -> float:
    """Log γ_k with z(γ_k) = k; -inf when k ≥ the number of positive modes (z < k for γ > 0)."""
    modes = int(np.count_nonzero(lam))
    if k >= modes:
        return -math.inf
    scale = float(lam.max())
    lo = math.log(float(lam[lam > 0].min())) - 60.0
    hi = math.log(scale) + 60.0
    root = optimize.brentq(lambda u: _z(lam, math.exp(u)) - k, lo, hi, xtol=1e-15,
                           rtol=4 * np.finfo(float).eps, maxiter=500)
    return float(root)


def _krr(lam: np.ndarray, v2: np.ndarray, n: float, ridge: float,
         noise: float) -> dict[str, Any]:
    modes = int(np.count_nonzero(lam))
    if ridge == 0 and n >= modes:
        # Ridgeless with more samples than modes: κ → 0, every mode learned (L_i = 1).
        kappa, iters, converged = 0.0, 0, True
        learn = (lam > 0).astype(np.float64)
    else:
        def f(u: float) -> float:
            kap = math.exp(u)
            return _z(lam, kap) + ridge / kap - n

        lo = math.log(float(lam[lam > 0].min())) - 60.0
        hi = math.log(float(lam.sum()) + ridge) + 5.0
        kappa, iters, converged = _log_root(f, lo, hi)
        learn = lam / (lam + kappa)
    z, q = float(learn.sum()), float((learn**2).sum())
    omega = n / (n - q) if n > q else math.inf
    bias = float(np.sum((1 - learn) ** 2 * v2))
    residual = 0.0 if kappa == 0 else abs(z + ridge / kappa - n) / n
    return dict(kappa=kappa, gamma=kappa, learn=learn, z=z, omega=omega, bias=bias,
                iters=iters, converged=converged, residuals=(residual, 0.0))


def _rf(lam: np.ndarray, v2: np.ndarray, n: float, k: float, ridge: float) -> dict[str, Any]:
    log_gk = _gamma_threshold(lam, k)

    def f(u: float) -> float:
        gam = math.exp(u)
        z = _z(lam, gam)
        if z >= k:
            return math.inf
        return z - n + (ridge * k / (gam * (k - z)) if ridge > 0 else 0.0)

    if ridge == 0 and k <= n:
        # Ridgeless, under-parameterised: γ → γ_k, κ → 0 (spec §2; Ω → n/(n−k)).
        gamma, iters, converged = math.exp(log_gk), 0, True
        kappa = 0.0
    else:
        lo = math.log(float(lam[lam > 0].min())) - 60.0 if log_gk == -math.inf else log_gk
        lo = _bracket_below(f, lo)
        gamma, iters, converged = _log_root(f, lo, _LOG_GAMMA_MAX)
        kappa = gamma * (k - _z(lam, gamma)) / k
    learn = lam / (lam + gamma)
    z, q = float(learn.sum()), float((learn**2).sum())
    # Ridgeless under-parameterised: z = k exactly in the limit, so x = k/n (Ω = n/(n−k)).
    x = k / n if kappa == 0 else (q * (k - 2 * z) + z**2) / (n * (k - q))
    omega = 1.0 / (1.0 - x) if x < 1 else math.inf
    coeff = (1 - learn) - kappa * k * learn / ((lam + gamma) * (k - q))
    bias = float(np.sum(coeff * v2))
    if kappa > 0:
        residuals = (abs(z + ridge / kappa - n) / n, abs(z + k * kappa / gamma - k) / k)
    else:
        residuals = (0.0, 0.0)
    return dict(kappa=kappa, gamma=gamma, learn=learn, z=z, omega=omega, bias=bias,
                iters=iters, converged=converged, residuals=residuals)


@register(
    "more_is_better",
    kind="estimator",
    summary="Closed-form (eigenframework) test and train risk of random-feature ridge regression "
    "from the kernel spectrum, the optimal ridge, and a Monte-Carlo RF simulator to check it.",
    equation="n = Σλ/(λ+γ) + δ/κ, k = Σλ/(λ+γ) + kκ/γ; E_te = Ω(Σ b_i v_i² + σ²), "
    "Ω = 1/(1−x), x = (q(k−2z)+z²)/(n(k−q)); E_tr = (δ/(nκ))² E_te",
    defaults=(
        Default("k", math.inf, "paper §3: k = ∞ is kernel ridge regression"),
        Default("ridge", 0.0, "paper §4: the ridgeless limit"),
        Default("noise", 0.0, "paper eq. 5: a noiseless target unless σ² is given"),
    ),
    variants=("random features (finite k)", "kernel ridge regression (k = ∞)",
              "optimal ridge", "Monte-Carlo simulator",
              f"the paper's task (powerlaw_task; official scripts/rf-gaussian.py l. 83-85): λ_i = "
              f"i^-{PAPER_ALPHA}, v_i² = i^-{PAPER_BETA}, σ² = {PAPER_NOISE}, "
              f"{PAPER_MODES} modes"),
)
def rf_risk(eigenvalues: ArrayLike, coefficients: ArrayLike, n: float, k: float = math.inf,
            ridge: float = 0.0, noise: float = 0.0) -> EigenframeworkRisk:
    """Predicted test and train MSE of RF ridge regression (paper §4 eqs. 5-7; k = ∞: §3).

    Args:
        eigenvalues: λ_i ≥ 0 of the kernel (1-D numpy array or torch tensor).
        coefficients: v_i of the target in the kernel's eigenbasis (same length; signs unused).
        n: number of training samples (> 0; real values interpolate the theory).
        k: number of random features (> 0), ``math.inf`` for kernel ridge regression.
        ridge: δ ≥ 0 added to the unnormalised Gram matrix.
        noise: label noise variance σ² ≥ 0.

    Returns:
        :class:`EigenframeworkRisk`; its learnabilities (``solution``) in the caller's type.
    """
    lam, v2, kind = _spectrum(eigenvalues, coefficients)
    n, k = _check_nk(n, k)
    ridge = check_range("ridge", ridge, 0.0, None)
    noise = check_range("noise", noise, 0.0, None)
    part = _krr(lam, v2, n, ridge, noise) if k == math.inf else _rf(lam, v2, n, k, ridge)
    test = part["omega"] * (part["bias"] + noise)
    # δ/(nκ) = (n − z)/n by equation (A): the same ratio, finite in the ridgeless limits.
    ratio = ((n - part["z"]) / n) ** 2
    return EigenframeworkRisk(
        solution=restore(torch.from_numpy(part["learn"]), kind), objective=test,
        n_iter=part["iters"], converged=part["converged"], test_mse=test,
        train_mse=ratio * test, kappa=part["kappa"], gamma=part["gamma"], omega=part["omega"],
        fitting_ratio=ratio, bias=part["bias"], n=n, k=k, ridge=ridge, noise=noise,
        residuals=part["residuals"],
    )


def krr_risk(eigenvalues: ArrayLike, coefficients: ArrayLike, n: float, ridge: float = 0.0,
             noise: float = 0.0) -> EigenframeworkRisk:
    """Kernel ridge regression eigenframework (paper §3): :func:`rf_risk` with k = ∞."""
    return rf_risk(eigenvalues, coefficients, n, math.inf, ridge, noise)


def optimal_ridge(eigenvalues: ArrayLike, coefficients: ArrayLike, n: float,
                  k: float = math.inf, noise: float = 0.0,
                  bounds: tuple[float, float] = (1e-8, 1e4), grid: int = 49) -> OptimalRidge:
    """The ridge δ* minimising the eigenframework test MSE (the δ* of paper Thm. 1).

    The search runs over δ = t·Σλ_i for t in ``bounds`` on a log grid of ``grid`` points, refined
    by a bounded Brent search around the best grid point; the ridgeless limit δ = 0 is a
    candidate too (it wins for noiseless tasks, paper §5).

    Args:
        eigenvalues, coefficients, n, k, noise: as in :func:`rf_risk`.
        bounds: the search interval of δ relative to the kernel trace Σλ_i, 0 < low < high.
        grid: number of log-spaced grid points (≥ 3).
    """
    lam, v2, _ = _spectrum(eigenvalues, coefficients)
    low, high = (check_real("bounds[0]", bounds[0]), check_real("bounds[1]", bounds[1]))
    if not 0 < low < high:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    check_positive_int("grid", grid, minimum=3)
    trace = float(lam.sum())
    logs = np.linspace(math.log(low * trace), math.log(high * trace), grid)

    def risk(log_ridge: float) -> float:
        return rf_risk(lam, np.sqrt(v2), n, k, math.exp(log_ridge), noise).test_mse

    values = [risk(u) for u in logs]
    best = int(np.argmin(values))
    lo, hi = logs[max(best - 1, 0)], logs[min(best + 1, grid - 1)]
    refined = optimize.minimize_scalar(risk, bounds=(lo, hi), method="bounded",
                                       options={"xatol": 1e-6})
    candidates = [(values[best], math.exp(logs[best]))]
    if refined.success:
        candidates.append((float(refined.fun), math.exp(float(refined.x))))
    ridgeless = rf_risk(lam, np.sqrt(v2), n, k, 0.0, noise)
    candidates.append((ridgeless.test_mse, 0.0))
    _, ridge = min(candidates, key=lambda c: c[0])
    result = rf_risk(eigenvalues, coefficients, n, k, ridge, noise)
    return OptimalRidge(ridge, result.test_mse, result.train_mse, result.fitting_ratio, result)


def optimal_risks(eigenvalues: ArrayLike, coefficients: ArrayLike, n: Sequence[float] | float,
                  k: Sequence[float] | float, noise: float = 0.0) -> dict[str, np.ndarray]:
    """Optimal-ridge test MSE, train MSE and δ* on the grid n × k (paper Thm. 1's curves).

    Returns:
        ``{"test_mse", "train_mse", "ridge", "fitting_ratio"}``, arrays of shape
        ``(len(n), len(k))`` (scalars count as length 1).
    """
    ns = np.atleast_1d(np.asarray(n, dtype=np.float64))
    ks = np.atleast_1d(np.asarray(k, dtype=np.float64))
    out = {name: np.empty((ns.size, ks.size)) for name in
           ("test_mse", "train_mse", "ridge", "fitting_ratio")}
    for a, n_value in enumerate(ns):
        for b, k_value in enumerate(ks):
            best = optimal_ridge(eigenvalues, coefficients, float(n_value), float(k_value), noise)
            for name in out:
                out[name][a, b] = getattr(best, name)
    return out


def _as_sizes(name: str, value: object, allow_inf: bool) -> tuple[float, ...]:
    items = list(value) if isinstance(value, (list, tuple, range, np.ndarray)) else [value]
    if not items:
        raise ValueError(f"{name} is empty; give at least one size")
    out = []
    for item in items:
        if isinstance(item, np.integer):
            item = int(item)
        if allow_inf and isinstance(item, float) and item == math.inf:
            out.append(math.inf)
            continue
        out.append(float(check_positive_int(name, item)))
    return tuple(out)


def simulate_rf(eigenvalues: ArrayLike, coefficients: ArrayLike, n: int | Sequence[int],
                k: float | Sequence[float], ridges: ArrayLike, *, noise: float = 0.0,
                trials: int = 1, seed: int = 0,
                device: torch.device | str | None = None) -> RFSimulation:
    """Monte-Carlo RF ridge regression on Gaussian data with the given spectrum (paper §4).

    Per trial: X ~ N(0, I_M) (the first n_max rows, nested over ``n``), y = X v + ε,
    features F = (X ⊙ √λ) W_kᵀ·√(k_max/k) from the first k rows of one W ~ N(0, 1/k_max)
    (nested over ``k``; ``math.inf`` uses the kernel itself, i.e. KRR). For each n one eigh of
    the n×n Gram gives every ridge. Computed in float64 on ``device``.

    Args:
        eigenvalues, coefficients: the task, as in :func:`rf_risk`.
        n: sample size(s), positive ints.
        k: feature count(s), positive ints or ``math.inf``.
        ridges: 1-D array of ridges δ ≥ 0 (0 uses the pseudo-inverse: the ridgeless limit).
        noise: label noise variance σ².
        trials: independent draws of (X, ε, W).
        seed: seed of a private ``torch.Generator`` (same seed, same device → same result).
        device: where to compute (default: the eigenvalues' device, CPU for numpy).

    Returns:
        :class:`RFSimulation` with errors of shape (trials, len(n), len(k), len(ridges)).
    """
    lam_t, kind = as_tensor("eigenvalues", eigenvalues, ndim=1, dtype=torch.float64,
                            device=device)
    _spectrum(eigenvalues, coefficients)  # validation: shapes, signs
    v, _ = as_tensor("coefficients", coefficients, ndim=1, dtype=torch.float64,
                     device=lam_t.device)
    deltas, _ = as_tensor("ridges", ridges, ndim=1, dtype=torch.float64, device=lam_t.device)
    if bool((deltas < 0).any()):
        raise ValueError(f"ridges must be >= 0, got minimum {float(deltas.min()):.3g}")
    ns = _as_sizes("n", n, allow_inf=False)
    ks = _as_sizes("k", k, allow_inf=True)
    noise = check_range("noise", noise, 0.0, None)
    check_positive_int("trials", trials)
    seed = check_positive_int("seed", seed, minimum=0)
    dev = lam_t.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    m, n_max = lam_t.shape[0], int(max(ns))
    finite_k = [int(kk) for kk in ks if kk != math.inf]
    k_max = max(finite_k, default=0)
    sqrt_lam = lam_t.sqrt()
    shape = (trials, len(ns), len(ks), deltas.shape[0])
    train = torch.empty(shape, dtype=torch.float64, device=dev)
    test = torch.empty(shape, dtype=torch.float64, device=dev)
    for t in range(trials):
        x = torch.randn(n_max, m, generator=gen, dtype=torch.float64, device=dev)
        y = x @ v + math.sqrt(noise) * torch.randn(n_max, generator=gen, dtype=torch.float64,
                                                   device=dev)
        w = torch.randn(k_max, m, generator=gen, dtype=torch.float64, device=dev) / math.sqrt(
            k_max) if k_max else None
        xs = x * sqrt_lam
        feats_all = xs @ w.T if w is not None else None
        for b, kk in enumerate(ks):
            if kk == math.inf:
                feats, proj = xs, None
            else:
                scale = math.sqrt(k_max / kk)
                feats = feats_all[:, : int(kk)] * scale
                proj = w[: int(kk)] * scale  # features = (x ⊙ √λ) projᵀ
            for a, nn_ in enumerate(ns):
                f_tr, y_tr = feats[: int(nn_)], y[: int(nn_)]
                s, u = torch.linalg.eigh(f_tr @ f_tr.T)
                s = s.clamp_min(0)
                uy = u.T @ y_tr
                # Residual on the training set: U diag(δ/(s+δ)) Uᵀ y; δ = 0 keeps only the
                # null space of the Gram (pseudo-inverse limit).
                tol = s.max() * s.shape[0] * torch.finfo(torch.float64).eps
                denom = s[:, None] + deltas[None, :]
                safe = torch.where(denom > tol, denom, torch.ones_like(denom))
                shrink = torch.where(denom > tol, deltas[None, :] / safe,
                                     torch.ones_like(denom))
                resid = u @ (shrink * uy[:, None])
                train[t, a, b] = (resid**2).mean(0)
                # Dual weights α = U diag(1/(s+δ)) Uᵀ y, with 1/(s+δ) := 0 on the null space.
                inv = torch.where(denom > tol, 1.0 / safe, torch.zeros_like(denom))
                alpha = u @ (inv * uy[:, None])
                coef = f_tr.T @ alpha  # weights on the features (or on √λ x for KRR)
                beta = sqrt_lam[:, None] * (proj.T @ coef if proj is not None else coef)
                test[t, a, b] = ((beta - v[:, None]) ** 2).sum(0) + noise
    return RFSimulation(train_mse=restore(train, kind), test_mse=restore(test, kind),
                        n=tuple(int(x) for x in ns), k=ks, ridges=restore(deltas, kind),
                        noise=noise, seed=seed)
