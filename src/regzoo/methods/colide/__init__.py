"""CoLiDE: Concomitant Linear DAG Estimation (Saboksayr, Mateos, Tepper; ICLR 2024; 2310.02895).

CoLiDE learns a linear SEM X ≈ XW (W a weighted DAG) by replacing the lasso-type least-squares
score of NOTEARS/DAGMA with a *concomitant* score that estimates the noise scale jointly with W,
so that the sparsity weight λ no longer has to follow the noise level, and, with one scale per
node, heteroscedastic noise is modelled. Acyclicity is DAGMA's log-det function on a
decreasing-μ path; the scales have closed-form updates.

With Σ̂ = XᵀX/n (X centred) and the residual energy of node i,
r_i(W) = [(I − W)ᵀ Σ̂ (I − W)]_ii = ‖X_i − X W_i‖²/n, the scores are (paper §4; derivations
in its appendix B):

* CoLiDE-EV (one scale σ): S(W, σ) = Σ_i r_i / (2σ) + dσ/2 + λ‖W‖₁, minimised over σ by
  σ̂ = sqrt(Σ_i r_i / d), where S(W, σ̂) = sqrt(d Σ_i r_i) + λ‖W‖₁;
* CoLiDE-NV (σ ∈ R^d₊): S(W, σ) = ½ Σ_i (r_i/σ_i + σ_i) + λ‖W‖₁, σ̂_i = sqrt(r_i), where
  S(W, σ̂) = Σ_i sqrt(r_i) + λ‖W‖₁ (one square-root lasso per node).

The paper constrains σ ≥ σ₀ without a value; the official code uses no floor (``sigma_min=0``,
the default); with σ₀ > 0 the closed form is max(σ̂, σ₀), still the exact minimiser since S is
convex in σ.

Acyclicity (DAGMA, Bello et al. 2022): h(W; s) = −log det(sI − W∘W) + d log s ≥ 0 on the
M-matrix domain {W : (sI − W∘W)⁻¹ ≥ 0}, zero exactly on DAGs, ∇h = 2 W ∘ (sI − W∘W)⁻ᵀ.
Path following (paper §4.1): for t = 0..T−1 minimise μ_t (S(W, σ) + λ‖W‖₁) + h(W; s_t),
alternating one Adam step on W (subgradient μ[−Σ̂(I − W) diag(1/σ) + λ sign W] + ∇h, β₁ = 0.99,
β₂ = 0.999, ε = 1e-8, bias-corrected) with the closed-form σ update, from the previous stage's
(W, σ); then μ_{t+1} = μ_t · mu_factor. Domain safeguard (official ``minimize``): when
(s_t I − W∘W)⁻¹ has an entry < −1e-6, at the first iteration or when s_t ≤ 0.9 the stage
restarts from its start with lr/2 and s_t + 0.1; otherwise the step is undone, lr halved and the
step retried (the stage ends when lr ≤ 1e-16). Every ``checkpoint`` iterations the stage stops
when the objective's relative change is ≤ ``tol``. Post-processing (:func:`to_dag`): zero
|W_ij| ≤ 0.3, then delete the remaining edges in increasing |W_ij| until the graph is acyclic.

Defaults are those of the official ``main.py`` (λ = 0.05 for both variants, T = 4,
s = (1, .9, .8, .7), 2·10⁴ iterations in stages 0..T−2 and 7·10⁴ in the last, lr = 3e-4, μ₀ = 1,
μ factor 0.1, threshold 0.3); the official class defaults (T = 5, s down to 0.6, 3·10⁴/6·10⁴
iterations) are DAGMA's.

The package: :mod:`~regzoo.methods.colide.scores` (the score, its scales and the acyclicity
function), :mod:`~regzoo.methods.colide.solver` (the vectorised inner Adam loop, its cost and
its differences from the official code), :mod:`~regzoo.methods.colide.compiled` (the loop's
optional compiled step) and :mod:`~regzoo.methods.colide.estimator` (the path, the
post-processing and the scikit-learn estimator).
"""

from regzoo.methods.colide.estimator import DEFAULTS, VARIANCES, CoLiDE, to_dag
from regzoo.methods.colide.scores import (
    concomitant_score,
    concomitant_score_gradient,
    logdet_acyclicity,
    optimal_scale,
    residual_energy,
)

__all__ = ["DEFAULTS", "VARIANCES", "CoLiDE", "concomitant_score", "concomitant_score_gradient",
           "logdet_acyclicity", "optimal_scale", "residual_energy", "to_dag"]
