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

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Any

import torch

from regzoo.core.arrays import ArrayLike, as_tensor, restore
from regzoo.core.checks import check_choice, check_positive_int, check_range, check_real
from regzoo.registry import Default, register

REWARDS = ("rss", "rss_db", "db_gaussian")


def dirichlet_gain(u: torch.Tensor, n: int) -> torch.Tensor:
    """D_N(u) = |Σ_{m<N} e^{jmu}|² = sin²(Nu/2)/sin²(u/2), with its limit N² at u ∈ 2πℤ."""
    half = torch.sin(u / 2)
    numerator = torch.sin(n * u / 2) ** 2
    # Within √eps of a peak the ratio is 0/0 in floating point; the limit N² is exact there.
    near = half.abs() < torch.finfo(u.dtype).eps ** 0.5
    safe = torch.where(near, torch.ones_like(half), half)
    return torch.where(near, torch.full_like(u, float(n * n)), numerator / safe**2)


def arm_grid(n: int, spacing: float = 0.25, *, dtype: torch.dtype = torch.float64,
             device: torch.device | str | None = None) -> torch.Tensor:
    """The phase-shifting values {2π i/N : |2π i/N| ≤ 2π·spacing} on which the gain is unimodal."""
    n = check_positive_int("n (elements per axis)", n)
    spacing = check_range("spacing (in wavelengths)", spacing, 0.0, 0.25, low_inclusive=False)
    half = math.floor(n * spacing + 1e-12)
    return 2 * math.pi * torch.arange(-half, half + 1, dtype=dtype, device=device) / n


class HMTChannel:
    """Far-field HMT channels for a batch of receivers, with noisy pilot measurements.

    Args:
        theta: elevations in [0, π/2], one per receiver (numpy array or torch tensor, 1-D).
        phi: azimuths (any real; 2π-periodic), same shape.
        distance: distances relative to the reference distance of ``snr_db`` (default all 1).
        nx: HMT elements along x (N_x ≥ 1).
        ny: elements along y (N_y ≥ 1).
        spacing: element spacing in wavelengths, in (0, 1/4] (unimodality needs k·d ≤ π/2).
        snr_db: SNR of one pilot on the continuous optimal beam at distance 1.
        reward: ``"rss"`` (|y|², linear, in units of the noise power), ``"rss_db"``
            (10·log₁₀|y|²) or ``"db_gaussian"`` (10·log₁₀(1 + SNR(arm)) + N(0, db_noise²): the
            mean received power in dB read with Gaussian measurement error).
        db_noise: standard deviation in dB of the ``"db_gaussian"`` measurement error.
    """

    def __init__(self, theta: ArrayLike, phi: ArrayLike, distance: ArrayLike | None = None, *,
                 nx: int = 32, ny: int = 32, spacing: float = 0.25, snr_db: float = 10.0,
                 reward: str = "rss", db_noise: float = 2.0) -> None:
        for name, value in (("nx", nx), ("ny", ny)):
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise ValueError(f"{name} (HMT elements along that axis) must be >= 1, got "
                                 f"{value}; an HMT needs at least one element per axis")
        self.nx = check_positive_int("nx", nx)
        self.ny = check_positive_int("ny", ny)
        self.spacing = check_range("spacing (in wavelengths)", spacing, 0.0, 0.25,
                                   low_inclusive=False)
        self.snr_db = check_real("snr_db", snr_db)
        self.reward = check_choice("reward", reward, REWARDS)
        self.db_noise = check_range("db_noise", db_noise, 0.0)
        self.theta, self._kind = as_tensor("theta", theta, ndim=1)
        self.phi, _ = as_tensor("phi", phi, ndim=1, device=self.theta.device,
                                dtype=self.theta.dtype)
        if self.phi.shape != self.theta.shape:
            raise ValueError(f"phi must have the shape of theta {tuple(self.theta.shape)}, got "
                             f"{tuple(self.phi.shape)}")
        bad = (self.theta < 0) | (self.theta > math.pi / 2)
        if bool(bad.any()):
            value = float(self.theta[bad][0])
            raise ValueError(f"theta (elevation) must lie in [0, π/2], got {value}; far-field "
                             "receivers are in front of the HMT")
        if distance is None:
            self.distance = torch.ones_like(self.theta)
        else:
            self.distance, _ = as_tensor("distance", distance, ndim=1, device=self.theta.device,
                                         dtype=self.theta.dtype)
            if self.distance.shape != self.theta.shape or bool((self.distance <= 0).any()):
                raise ValueError("distance must be positive with the shape of theta "
                                 f"{tuple(self.theta.shape)}, got {tuple(self.distance.shape)}")
        kd = 2 * math.pi * self.spacing
        self.u_x = kd * torch.sin(self.theta) * torch.cos(self.phi)
        self.u_y = kd * torch.sin(self.theta) * torch.sin(self.phi)
        self.grid_x = arm_grid(self.nx, self.spacing, dtype=self.theta.dtype,
                               device=self.theta.device)
        self.grid_y = arm_grid(self.ny, self.spacing, dtype=self.theta.dtype,
                               device=self.theta.device)
        # Per-receiver gains of every grid arm, normalised so the continuous optimum is 1.
        self._dx = dirichlet_gain(self.grid_x[None, :] - self.u_x[:, None], self.nx) / self.nx**2
        self._dy = dirichlet_gain(self.grid_y[None, :] - self.u_y[:, None], self.ny) / self.ny**2
        self._snr0 = 10 ** (self.snr_db / 10) / self.distance**2

    @property
    def n_receivers(self) -> int:
        """Number of receivers in the batch."""
        return int(self.theta.shape[0])

    @property
    def arms(self) -> tuple[int, int]:
        """(K_x, K_y): arms per axis."""
        return int(self.grid_x.shape[0]), int(self.grid_y.shape[0])

    @property
    def device(self) -> torch.device:
        """Where the channel's tensors live."""
        return self.theta.device

    def subset(self, index: int | slice) -> HMTChannel:
        """The channels of some receivers (an int keeps a batch of one)."""
        keep = slice(index, index + 1) if isinstance(index, int) else index
        distance = self.distance[keep]
        return HMTChannel(self.theta[keep], self.phi[keep], distance, nx=self.nx, ny=self.ny,
                          spacing=self.spacing, snr_db=self.snr_db, reward=self.reward,
                          db_noise=self.db_noise)

    def _snr(self, ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(self.n_receivers, device=self.device)
        return self._snr0 * self._dx[rows, ix] * self._dy[rows, iy]

    def gain(self, psi_x: ArrayLike, psi_y: ArrayLike) -> Any:
        """G(Ψ_x, Ψ_y) = D_{N_x}·D_{N_y}/r² (closed form) for one (Ψ_x, Ψ_y) per receiver."""
        px, kind = as_tensor("psi_x", psi_x, ndim=1, device=self.device, dtype=self.theta.dtype)
        py, _ = as_tensor("psi_y", psi_y, ndim=1, device=self.device, dtype=self.theta.dtype)
        if px.shape != self.theta.shape or py.shape != self.theta.shape:
            raise ValueError(f"psi_x and psi_y need one value per receiver "
                             f"({self.n_receivers}), got {tuple(px.shape)}, {tuple(py.shape)}")
        value = dirichlet_gain(px - self.u_x, self.nx) * dirichlet_gain(py - self.u_y, self.ny)
        return restore(value / self.distance**2, kind)

    def arm_snr(self) -> Any:
        """Mean SNR of every grid arm per receiver, shape (R, K_x, K_y), caller's array type."""
        table = self._snr0[:, None, None] * self._dx[:, :, None] * self._dy[:, None, :]
        return restore(table, self._kind)

    def _best(self) -> torch.Tensor:
        return torch.stack([self._dx.argmax(1), self._dy.argmax(1)], dim=1)

    def best_pair(self) -> Any:
        """(R, 2) indices (i_x, i_y) of the best grid arm; separable, so per axis."""
        return restore(self._best(), self._kind)

    def throughput(self, pairs: ArrayLike) -> Any:
        """log₂(1 + SNR) of the chosen (i_x, i_y) per receiver, bits/s/Hz."""
        ix, iy = self._check_pairs(pairs)
        return restore(torch.log2(1 + self._snr(ix, iy)), self._kind)

    def is_optimal(self, pairs: ArrayLike) -> Any:
        """Whether each chosen pair is the best grid arm."""
        ix, iy = self._check_pairs(pairs)
        best = self._best()
        return restore((ix == best[:, 0]) & (iy == best[:, 1]), self._kind)

    def _check_pairs(self, pairs: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(pairs, torch.Tensor):
            index = pairs.to(self.device)
        else:
            index = torch.as_tensor(pairs, device=self.device)
        if index.shape != (self.n_receivers, 2) or index.is_floating_point():
            raise ValueError(f"pairs must be integer indices of shape ({self.n_receivers}, 2), "
                             f"got {tuple(index.shape)} {index.dtype}")
        kx, ky = self.arms
        if bool(((index < 0) | (index >= torch.tensor([kx, ky], device=self.device))).any()):
            raise ValueError(f"pairs must index the grid: i_x in [0, {kx - 1}], i_y in "
                             f"[0, {ky - 1}]")
        return index[:, 0].long(), index[:, 1].long()

    def pull(self, arms: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One pilot per receiver on flat arms i_x·K_y + i_y (−1: no pilot, reward 0).

        y = √SNR(arm) + w, w ~ CN(0, 1); reward |y|² or 10·log₁₀|y|² (``reward``); or, for
        ``"db_gaussian"``, 10·log₁₀(1 + SNR(arm)) + N(0, db_noise²).
        """
        ky = self.arms[1]
        active = arms >= 0
        flat = arms.clamp(min=0)
        snr = self._snr(flat // ky, flat % ky)
        noise = torch.randn((2, self.n_receivers), generator=generator, device=self.device,
                            dtype=self.theta.dtype)
        if self.reward == "db_gaussian":
            reward = 10 * torch.log10(1 + snr) + self.db_noise * noise[0]
        else:
            noise = noise / math.sqrt(2)
            power = (snr.sqrt() + noise[0]) ** 2 + noise[1] ** 2
            reward = power if self.reward == "rss" else 10 * torch.log10(power)
        return torch.where(active, reward, torch.zeros_like(reward))


def random_receivers(n: int, generator: torch.Generator, *, theta_max: float = math.pi / 3,
                     **channel: Any) -> HMTChannel:
    """``n`` receivers, θ ~ U[0, theta_max], φ ~ U[0, 2π) (spec §2), as an :class:`HMTChannel`."""
    n = check_positive_int("n (receivers)", n)
    theta_max = check_range("theta_max", theta_max, 0.0, math.pi / 2)
    u = torch.rand((2, n), generator=generator, dtype=torch.float64)
    return HMTChannel(u[0] * theta_max, u[1] * 2 * math.pi, **channel)


class FixedBudgetPolicy(abc.ABC):
    """A fixed-budget best-arm policy on a K_x × K_y grid, batched over independent problems.

    Subclasses give the rounds: each round is a plan (arms (B, M) as flat indices, pulls (B, M)
    per arm, pulled in order); :meth:`_next_round` sees that round's empirical sums and counts
    and returns the next plan, or None when the policy has decided.
    """

    name: str = ""

    def __init__(self, arms: tuple[int, int], budget: int, batch: int = 1, *,
                 device: torch.device | str | None = None) -> None:
        if (not isinstance(arms, tuple | list) or len(arms) != 2
                or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in arms)):
            raise ValueError(f"arms must be (K_x, K_y), two ints >= 1, got {arms!r}")
        self.kx, self.ky = int(arms[0]), int(arms[1])
        self.budget = check_positive_int("budget", budget)
        self.batch = check_positive_int("batch", batch)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        need = self.min_budget((self.kx, self.ky))
        if self.budget < need:
            raise ValueError(f"budget must be >= {need} for {type(self).__name__} on "
                             f"{self.kx}×{self.ky} arms, got {self.budget}; give more pilots "
                             "or use a policy with a smaller minimum")
        self.pulls = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        self.sums = torch.zeros((self.batch, self.n_arms), dtype=torch.float64,
                                device=self.device)
        self.counts = torch.zeros((self.batch, self.n_arms), dtype=torch.long,
                                  device=self.device)
        self.done = False
        self._slot: torch.Tensor | None = None
        self._start(self._first_round())

    @property
    def n_arms(self) -> int:
        """K_x·K_y, the number of flat arms."""
        return self.kx * self.ky

    @classmethod
    @abc.abstractmethod
    def min_budget(cls, arms: tuple[int, int]) -> int:
        """Smallest budget the policy can run with on a K_x × K_y grid."""

    @abc.abstractmethod
    def _first_round(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first plan: (flat arms (B, M), pulls (B, M))."""

    @abc.abstractmethod
    def _next_round(self, sums: torch.Tensor,
                    counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The next plan from the finished round's sums and counts per planned arm."""

    @abc.abstractmethod
    def _recommend_flat(self) -> torch.Tensor:
        """(B,) flat index of the recommended arm."""

    def _start(self, plan: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        while plan is not None:
            arms, pulls = plan
            self._arms = arms.to(self.device)
            self._cum = pulls.to(self.device).cumsum(1)
            self._length = self._cum[:, -1]
            self._round_sums = torch.zeros(arms.shape, dtype=torch.float64, device=self.device)
            self._round_counts = torch.zeros(arms.shape, dtype=torch.long, device=self.device)
            self._t = 0
            if int(self._length.max()) > 0:
                return
            plan = self._next_round(self._round_sums, self._round_counts)
        self.done = True

    def select(self) -> torch.Tensor:
        """The next arm of every problem: (B,) flat indices i_x·K_y + i_y, −1 where idle."""
        if self.done:
            raise RuntimeError("the budget is spent; call recommend()")
        if self._slot is not None:
            raise RuntimeError("select() called twice; call update(reward) after each select()")
        t = torch.full((self.batch, 1), self._t, dtype=torch.long, device=self.device)
        slot = torch.searchsorted(self._cum, t, right=True).squeeze(1)
        active = self._t < self._length
        slot = torch.where(active, slot, torch.zeros_like(slot))
        self._slot = torch.where(active, slot, torch.full_like(slot, -1))
        arms = self._arms.gather(1, slot[:, None]).squeeze(1)
        return torch.where(active, arms, torch.full_like(arms, -1))

    def update(self, reward: torch.Tensor | float) -> None:
        """Record one reward per problem for the arms of the last :meth:`select` (idle: ignored)."""
        if self._slot is None:
            raise RuntimeError("update() needs a select() first")
        reward = torch.as_tensor(reward, dtype=torch.float64, device=self.device).reshape(-1)
        if reward.shape != (self.batch,):
            raise ValueError(f"reward must hold one value per problem ({self.batch}), got "
                             f"shape {tuple(reward.shape)}")
        active = self._slot >= 0
        slot = self._slot.clamp(min=0)[:, None]
        arm = self._arms.gather(1, slot)
        value = torch.where(active, reward, torch.zeros_like(reward))[:, None]
        step = active.long()[:, None]
        self._round_sums.scatter_add_(1, slot, value)
        self._round_counts.scatter_add_(1, slot, step)
        self.sums.scatter_add_(1, arm, value)
        self.counts.scatter_add_(1, arm, step)
        self.pulls += active.long()
        self._slot = None
        self._t += 1
        if self._t >= int(self._length.max()):
            self._start(self._next_round(self._round_sums, self._round_counts))

    def recommend(self) -> torch.Tensor:
        """(B, 2) recommended (i_x, i_y) once the budget is spent."""
        if not self.done:
            raise RuntimeError(f"{type(self).__name__} has not finished: keep calling select() "
                               "and update() until .done")
        flat = self._recommend_flat()
        return torch.stack([flat // self.ky, flat % self.ky], dim=1)


def _empirical_best(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Index of the highest empirical mean per row (unpulled arms never win)."""
    means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, -math.inf))
    return means.argmax(1)


def _line_rounds(size: int) -> list[int]:
    """Interval sizes at the start of each UB3-style round, until ≤ 3 arms remain."""
    sizes = []
    while size >= 4:
        sizes.append(size)
        size -= (size - 1) // 3 + 1
    return sizes


def _final_size(size: int) -> int:
    rounds = _line_rounds(size)
    return size if not rounds else rounds[-1] - ((rounds[-1] - 1) // 3 + 1)


def _line_points(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """The four arms L, L + q, R − q, R with q = ⌊(R − L)/3⌋, shape (B, 4)."""
    q = (hi - lo) // 3
    return torch.stack([lo, lo + q, hi - q, hi], dim=1)


def _shrink(lo: torch.Tensor, hi: torch.Tensor, points: torch.Tensor,
            best: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop the side that cannot hold the peak of a unimodal sequence, given the best of four."""
    left = best <= 1
    return (torch.where(left, lo, points[:, 1] + 1), torch.where(left, points[:, 2] - 1, hi))


def _remaining(lo: torch.Tensor, size: int) -> torch.Tensor:
    """(B, size) consecutive arms from lo."""
    return lo[:, None] + torch.arange(size, device=lo.device)[None, :]


class LineSearch:
    """UB3-style fixed-budget search for the peak of a unimodal sequence of K arms, batched.

    The state of one phase of :class:`HoloBeam`: rounds of four equally spaced arms with n
    pulls each, then the leftover budget on the ≤ 3 survivors (see the module docstring).
    """

    def __init__(self, k: int, budget: int, batch: int, device: torch.device) -> None:
        self.k = k
        self.rounds = _line_rounds(k)
        self.final = _final_size(k)
        self.per_arm = budget // (4 * len(self.rounds) + self.final)
        self.budget = budget
        self.lo = torch.zeros(batch, dtype=torch.long, device=device)
        self.hi = torch.full((batch,), k - 1, dtype=torch.long, device=device)
        self.round = 0

    @staticmethod
    def min_budget(k: int) -> int:
        """4 pulls per round plus one per final arm."""
        return 4 * len(_line_rounds(k)) + _final_size(k)

    def plan(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Local arm indices (B, M) and pulls (B, M) of the current round."""
        if self.round < len(self.rounds):
            points = _line_points(self.lo, self.hi)
            return points, torch.full_like(points, self.per_arm)
        arms = _remaining(self.lo, self.final)
        left = self.budget - 4 * self.per_arm * len(self.rounds)
        return arms, torch.full_like(arms, left // self.final)

    def advance(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor | None:
        """Take the finished round's statistics; return the chosen arm (B,) when finished."""
        arms, _ = self.plan()
        best = _empirical_best(sums, counts)
        if self.round < len(self.rounds):
            self.lo, self.hi = _shrink(self.lo, self.hi, arms, best)
            self.round += 1
            return None
        return arms.gather(1, best[:, None]).squeeze(1)


@register(
    "holobeam",
    kind="estimator",
    summary="Two-phase fixed-budget unimodal search for the two phase-shifting parameters of a "
            "far-field holographic metasurface transceiver (Ψ_x with Ψ_y fixed, then Ψ_y).",
    equation="G(Ψx,Ψy) = D_Nx(Ψx−ux*)·D_Ny(Ψy−uy*)/r², D_N(u)=sin²(Nu/2)/sin²(u/2); arms "
             "Ψ ∈ 2πℤ/N ∩ [−kd, kd]; phase 1: UB3 line search on Ψx at Ψy=ψ̄y (T/2 pilots); "
             "phase 2: on Ψy at Ψ̂x",
    defaults=(
        Default("spacing", 0.25, "spec §2: sub-wavelength d = λ/4 (paper text unreadable here)"),
        Default("phase_split", "T//2 then T - T//2", "spec §2: two equal phases"),
        Default("phase1_arm_y", "broadside (Ψy = 0)", "spec §2: an arbitrary fixed grid value"),
        Default("reward", "rss", "abstract: maximise received signal strength; mean P·G + σ²"),
    ),
    variants=("phase1_arm_y (any fixed grid arm, or one per receiver)",
              "reward='rss_db'"),
)
class HoloBeam(FixedBudgetPolicy):
    """HoloBeam (paper §V as read by the spec): Ψ_x by a line search at fixed Ψ_y, then Ψ_y.

    Args:
        arms: (K_x, K_y), e.g. ``channel.arms``.
        budget: total pilots T (phase 1 gets ⌊T/2⌋).
        batch: number of independent problems (receivers).
        phase1_arm_y: grid index of ψ̄_y used in phase 1: an int for all problems or a (B,)
            integer tensor; default the middle arm (broadside, Ψ_y = 0).
        device: where the state lives.
    """

    name = "HoloBeam"

    def __init__(self, arms: tuple[int, int], budget: int, batch: int = 1, *,
                 phase1_arm_y: int | torch.Tensor | None = None,
                 device: torch.device | str | None = None) -> None:
        self._phase1_arm_y = phase1_arm_y
        super().__init__(arms, budget, batch, device=device)

    @classmethod
    def min_budget(cls, arms: tuple[int, int]) -> int:
        """Both phases must afford their line search (phase 1 gets ⌊T/2⌋)."""
        need_x, need_y = LineSearch.min_budget(arms[0]), LineSearch.min_budget(arms[1])
        return max(2 * need_x, 2 * need_y - 1)

    def _first_round(self) -> tuple[torch.Tensor, torch.Tensor]:
        choice = self._phase1_arm_y
        if choice is None:
            choice = self.ky // 2
        if isinstance(choice, torch.Tensor):
            fixed = choice.to(self.device).long().reshape(-1)
            if fixed.shape != (self.batch,):
                raise ValueError(f"phase1_arm_y must be an int or hold one index per problem "
                                 f"({self.batch}), got shape {tuple(fixed.shape)}")
        else:
            fixed = torch.full((self.batch,), check_positive_int("phase1_arm_y", choice,
                                                                 minimum=0), device=self.device)
        if bool(((fixed < 0) | (fixed >= self.ky)).any()):
            raise ValueError(f"phase1_arm_y must lie in [0, {self.ky - 1}]")
        self._fixed_y = fixed
        self._phase = 1
        self._search = LineSearch(self.kx, self.budget // 2, self.batch, self.device)
        return self._plan()

    def _plan(self) -> tuple[torch.Tensor, torch.Tensor]:
        local, pulls = self._search.plan()
        if self._phase == 1:
            return local * self.ky + self._fixed_y[:, None], pulls
        return self._x_hat[:, None] * self.ky + local, pulls

    def _next_round(self, sums: torch.Tensor,
                    counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        chosen = self._search.advance(sums, counts)
        if chosen is None:
            return self._plan()
        if self._phase == 1:
            self._x_hat = chosen
            self._phase = 2
            self._search = LineSearch(self.ky, self.budget - self.budget // 2, self.batch,
                                      self.device)
            return self._plan()
        self._y_hat = chosen
        return None

    def _recommend_flat(self) -> torch.Tensor:
        return self._x_hat * self.ky + self._y_hat


class UnimodalSearch2D(FixedBudgetPolicy):
    """The line search on the 2-D grid without the separable split (baseline).

    Each round samples a lattice of 4 arms per axis (all remaining arms on an axis with ≤ 3
    left) n times each; the empirical best's position shrinks each axis by the 1-D rule; the
    leftover budget goes to the ≤ 3 × 3 survivors.
    """

    name = "2-D unimodal search"

    @staticmethod
    def _schedule(arms: tuple[int, int]) -> tuple[list[tuple[int, int]], int]:
        sx, sy = arms
        lattice = []
        while sx >= 4 or sy >= 4:
            lattice.append((sx, sy))
            sx = sx - ((sx - 1) // 3 + 1) if sx >= 4 else sx
            sy = sy - ((sy - 1) // 3 + 1) if sy >= 4 else sy
        return lattice, sx * sy

    @classmethod
    def min_budget(cls, arms: tuple[int, int]) -> int:
        """One pull per lattice arm per round plus one per final arm."""
        lattice, final = cls._schedule(arms)
        return sum(min(sx, 4) * min(sy, 4) for sx, sy in lattice) + final

    def _first_round(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._lattice, self._final = self._schedule((self.kx, self.ky))
        self._per_arm = self.budget // self.min_budget((self.kx, self.ky))
        zeros = torch.zeros(self.batch, dtype=torch.long, device=self.device)
        self._box = [zeros, zeros + self.kx - 1, zeros.clone(), zeros + self.ky - 1]
        self._round = 0
        self._used = 0
        return self._plan()

    def _axis_points(self, lo: torch.Tensor, hi: torch.Tensor, size: int) -> torch.Tensor:
        return _line_points(lo, hi) if size >= 4 else _remaining(lo, size)

    def _plan(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._round < len(self._lattice):
            sx, sy = self._lattice[self._round]
            per_arm = self._per_arm
        else:
            sx, sy = (_final_size(self.kx) if self.kx >= 4 else self.kx,
                      _final_size(self.ky) if self.ky >= 4 else self.ky)
            per_arm = (self.budget - self._used) // self._final
        px = self._axis_points(self._box[0], self._box[1], sx)
        py = self._axis_points(self._box[2], self._box[3], sy)
        self._px, self._py = px, py
        arms = (px[:, :, None] * self.ky + py[:, None, :]).reshape(self.batch, -1)
        self._used += per_arm * arms.shape[1]
        return arms, torch.full_like(arms, per_arm)

    def _next_round(self, sums: torch.Tensor,
                    counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        best = _empirical_best(sums, counts)
        ny = self._py.shape[1]
        bx, by = best // ny, best % ny
        if self._round >= len(self._lattice):
            self._choice = (self._px.gather(1, bx[:, None]).squeeze(1) * self.ky
                            + self._py.gather(1, by[:, None]).squeeze(1))
            return None
        sx, sy = self._lattice[self._round]
        if sx >= 4:
            self._box[0], self._box[1] = _shrink(self._box[0], self._box[1], self._px, bx)
        if sy >= 4:
            self._box[2], self._box[3] = _shrink(self._box[2], self._box[3], self._py, by)
        self._round += 1
        return self._plan()

    def _recommend_flat(self) -> torch.Tensor:
        return self._choice


class SequentialHalving(FixedBudgetPolicy):
    """Sequential Halving (Karnin, Koren, Somekh, ICML 2013) on the K_x·K_y flat arms.

    ⌈log₂K⌉ rounds; in round r every survivor is pulled ⌊T/(|S_r|⌈log₂K⌉)⌋ times and the better
    half (by that round's means) survives.
    """

    name = "Sequential Halving"

    @classmethod
    def min_budget(cls, arms: tuple[int, int]) -> int:
        """Every arm pulled once in the first round: K⌈log₂K⌉."""
        k = arms[0] * arms[1]
        return k * max(1, math.ceil(math.log2(k)))

    def _first_round(self) -> tuple[torch.Tensor, torch.Tensor]:
        self._rounds = max(1, math.ceil(math.log2(self.n_arms)))
        arms = torch.arange(self.n_arms, device=self.device).expand(self.batch, -1)
        return self._plan(arms)

    def _plan(self, arms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._survivors = arms
        per_arm = self.budget // (arms.shape[1] * self._rounds)
        return arms, torch.full_like(arms, per_arm)

    def _next_round(self, sums: torch.Tensor,
                    counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        means = sums / counts.clamp(min=1)
        keep = math.ceil(self._survivors.shape[1] / 2)
        order = torch.argsort(means, dim=1, descending=True, stable=True)[:, :keep]
        survivors = self._survivors.gather(1, order)
        if keep == 1:
            self._survivors = survivors
            return None
        return self._plan(survivors)

    def _recommend_flat(self) -> torch.Tensor:
        return self._survivors[:, 0]


class SuccessiveRejects(FixedBudgetPolicy):
    """Successive Rejects (Audibert, Bubeck, COLT 2010) on the K_x·K_y flat arms.

    K − 1 phases; after phase k every survivor has n_k pulls and the lowest cumulative mean is
    rejected; n_k = 1 + ⌊(T − K)/(logbar(K)(K + 1 − k))⌋ with logbar(K) = ½ + Σ_{i=2}^K 1/i.
    """

    name = "Successive Rejects"

    @classmethod
    def min_budget(cls, arms: tuple[int, int]) -> int:
        """One pull per arm."""
        return arms[0] * arms[1]

    def _first_round(self) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.n_arms
        log_bar = 0.5 + sum(1.0 / i for i in range(2, k + 1))
        self._n = [0] + [1 + math.floor((self.budget - k) / (log_bar * (k + 1 - j)))
                         for j in range(1, k)]
        self._phase = 1
        self._survivors = torch.arange(k, device=self.device).expand(self.batch, -1)
        return self._plan()

    def _plan(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._phase >= len(self._n):
            return None
        extra = self._n[self._phase] - self._n[self._phase - 1]
        return self._survivors, torch.full_like(self._survivors, extra)

    def _next_round(self, sums: torch.Tensor,
                    counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        total = self.sums.gather(1, self._survivors)
        n = self.counts.gather(1, self._survivors).clamp(min=1)
        worst = (total / n).argmin(1, keepdim=True)
        keep = torch.ones_like(self._survivors, dtype=torch.bool).scatter_(1, worst, False)
        self._survivors = self._survivors[keep].reshape(self.batch, -1)
        self._phase += 1
        return self._plan()

    def _recommend_flat(self) -> torch.Tensor:
        return self._survivors[:, 0]


class UniformAllocation(FixedBudgetPolicy):
    """Uniform allocation: ⌊T/K⌋ pulls on every flat arm, then the empirical best."""

    name = "uniform"

    @classmethod
    def min_budget(cls, arms: tuple[int, int]) -> int:
        """One pull per arm."""
        return arms[0] * arms[1]

    def _first_round(self) -> tuple[torch.Tensor, torch.Tensor]:
        arms = torch.arange(self.n_arms, device=self.device).expand(self.batch, -1)
        return arms, torch.full_like(arms, self.budget // self.n_arms)

    def _next_round(self, sums: torch.Tensor,
                    counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None

    def _recommend_flat(self) -> torch.Tensor:
        return _empirical_best(self.sums, self.counts)


POLICIES: dict[str, type[FixedBudgetPolicy]] = {
    "holobeam": HoloBeam,
    "sequential_halving": SequentialHalving,
    "successive_rejects": SuccessiveRejects,
    "uniform": UniformAllocation,
    "unimodal_2d": UnimodalSearch2D,
}
"""Every policy behind the common interface, by name."""


@dataclass(frozen=True)
class BanditRun:
    """One Monte-Carlo run over a batch of receivers (torch tensors on the channel's device)."""

    pairs: torch.Tensor
    correct: torch.Tensor
    throughput: torch.Tensor
    pulls: torch.Tensor

    @property
    def error_rate(self) -> float:
        """Fraction of receivers whose recommended pair is not the best grid arm."""
        return 1.0 - float(self.correct.double().mean())


def run_policy(channel: HMTChannel, policy: FixedBudgetPolicy,
               generator: torch.Generator) -> BanditRun:
    """Spend the policy's budget on the channel's receivers, one pilot per receiver per step.

    The harness vectorised over receivers: every step is one ``select`` / ``pull`` /
    ``update`` on the whole batch. ``generator`` draws all pilot noise (no global RNG).
    """
    if policy.batch != channel.n_receivers:
        raise ValueError(f"policy.batch ({policy.batch}) must equal the channel's number of "
                         f"receivers ({channel.n_receivers})")
    if (policy.kx, policy.ky) != channel.arms:
        raise ValueError(f"the policy's grid {(policy.kx, policy.ky)} must be the channel's "
                         f"{channel.arms}; build it with arms=channel.arms")
    while not policy.done:
        arms = policy.select()
        policy.update(channel.pull(arms, generator))
    pairs = policy.recommend().to(channel.device)
    ix, iy = pairs[:, 0], pairs[:, 1]
    best = channel._best()
    correct = (ix == best[:, 0]) & (iy == best[:, 1])
    rate = torch.log2(1 + channel._snr(ix, iy))
    return BanditRun(pairs, correct, rate, policy.pulls.clone())
