r"""HoloBeam: fixed-budget beam learning for a far-field holographic metasurface transceiver.

Ghosh, Hanawal, Zlatanov. "HoloBeam: Learning Optimal Beamforming in Far-Field Holographic
Metasurface Transceivers", INFOCOM 2024, arXiv 2401.05420. No official code exists.

**Provenance and doubt.** Only the abstract and introduction of the paper could be read here (the
stored copies of arXiv's HTML stop there), so the channel model, the grid, the reward and the
line search below follow the project spec (``shared/specs/holobeam.md``), which derives them
from first principles and from every statement of the abstract: two phase-shifting parameters,
channel gain unimodal in each after discretisation, a fixed pilot budget, two phases that learn
one parameter at a time, misidentification probability decaying exponentially in the budget.
The two choices the spec marks "verify" are options, with these defaults:

* reward scale: ``reward="rss"``, the received signal strength |y|² in linear units (in units of
  the noise power). The abstract states the goal as maximising the received signal strength and
  the analysis treats rewards as sub-Gaussian with means ordered like the gain; |y|² has mean
  P·G + σ², exactly ordered like G. ``reward="rss_db"`` (10·log₁₀|y|²) is the alternative.
* how phase 1 fixes Ψ_y: at one arbitrary grid value, by default the broadside arm Ψ_y = 0
  (``phase1_arm_y``), because in the mean the ordering of the Ψ_x arms does not depend on Ψ_y
  (separability). Its cost: the phase-1 signal is scaled by D_{N_y}(ψ̄_y − u_y*)/N_y², a
  side-lobe level (−27 dB or less for N_y = 32) unless ψ̄_y is near the receiver's direction.

**Channel (spec §2; far field, linear phase profile).** An HMT of N_x × N_y elements with spacing
d (in wavelengths, k·d = 2π·d); element (m, n) gets phase m·Ψ_x + n·Ψ_y. A receiver at elevation
θ ∈ [0, π/2], azimuth φ and distance r (relative to a reference distance) sees

.. math::

    G(Ψ_x, Ψ_y) = \frac{1}{r^2} D_{N_x}(Ψ_x − u_x^*)\, D_{N_y}(Ψ_y − u_y^*), \qquad
    D_N(u) = \left|\sum_{m=0}^{N-1} e^{jmu}\right|^2 = \frac{\sin^2(N u/2)}{\sin^2(u/2)},

with u_x* = k d sinθ cosφ, u_y* = k d sinθ sinφ (D_N(0) = N²). One pilot on arm Ψ gives
y = √SNR₀ · √(G(Ψ)/(N_x² N_y²)) + w, w ~ CN(0, 1): SNR₀ (``snr_db``) is the SNR of one pilot on
the continuous optimum at r = 1; the reward is |y|² (or its dB).

**Grid (spec §2, "why unimodal").** Ψ ∈ {2π i/N : |2π i/N| ≤ k d}. On a grid of spacing 2π/N every
sample of D_N has the same numerator sin²(N δ/2), so on the grid D_N ∝ 1/sin²((Ψ − u*)/2), which
strictly decreases in |Ψ − u*| while |Ψ − u*| ≤ π. That holds for all arms when k d ≤ π/2,
i.e. d ≤ λ/4: the gain is unimodal along each axis of the grid (K = 2⌊N k d/(2π)⌋ + 1 arms).

**HoloBeam (two phases, budget T).** Phase 1 (⌊T/2⌋ pilots): Ψ_y fixed at ψ̄_y, a unimodal
fixed-budget line search over the Ψ_x arms gives Ψ̂_x. Phase 2 (the rest): Ψ_x = Ψ̂_x, the same
search over Ψ_y gives Ψ̂_y. The line search (UB3-style, Ghosh et al., arXiv 2301.03456, as read
by the spec): on [L, R] with R − L ≥ 3, sample the four arms L, L + q, R − q, R (q = ⌊(R−L)/3⌋)
n times each; if the empirical best is one of the left two, the peak lies left of R − q
(unimodality), so R ← R − q − 1, else L ← L + q + 1. When ≤ 3 arms remain the leftover budget is
split evenly over them and the empirical best is returned. The number of rounds m is fixed by K,
and n = ⌊B/(4m + k_f)⌋ with k_f the final number of arms, so each stage gets about the same
pulls per arm; the minimum budget per phase is 4m + k_f.

**Baselines** (same interface, flattened K_x·K_y arms): Sequential Halving (Karnin, Koren, Somekh
2013; needs T ≥ K⌈log₂K⌉), Successive Rejects (Audibert, Bubeck 2010; needs T ≥ K; phase
lengths n_k = 1 + ⌊(T − K)/(\overline{\log}(K)(K + 1 − k))⌋, the +1 in place of the paper's
ceiling so the total never exceeds T), uniform allocation (⌊T/K⌋ pulls per arm), and the same
line search on the 2-D grid without the separable split (a 4 × 4 lattice of arms per round, both
axes shrunk by the rule above).

**Interface.** Every policy is batched over independent problems (receivers): ``select()``
returns one flat arm index (i_x·K_y + i_y) per receiver (−1 where that receiver's policy is
idle), ``update(reward)`` takes one reward per receiver, ``recommend()`` returns the chosen
(i_x, i_y) pairs once the budget is spent. :func:`run_policy` is the Monte-Carlo harness. Cost:
O(1) per pilot (closed form, never O(N_x N_y)); a policy step is a few tensor operations on the
batch.
"""

from regzoo.methods.holobeam.baselines import (
    SequentialHalving,
    SuccessiveRejects,
    UniformAllocation,
)
from regzoo.methods.holobeam.channel import (
    REWARDS,
    HMTChannel,
    arm_grid,
    dirichlet_gain,
    random_receivers,
)
from regzoo.methods.holobeam.harness import POLICIES, BanditRun, run_policy
from regzoo.methods.holobeam.policies import (
    FixedBudgetPolicy,
    HoloBeam,
    LineSearch,
    UnimodalSearch2D,
)

__all__ = [
    "POLICIES",
    "REWARDS",
    "BanditRun",
    "FixedBudgetPolicy",
    "HMTChannel",
    "HoloBeam",
    "LineSearch",
    "SequentialHalving",
    "SuccessiveRejects",
    "UniformAllocation",
    "UnimodalSearch2D",
    "arm_grid",
    "dirichlet_gain",
    "random_receivers",
    "run_policy",
]
