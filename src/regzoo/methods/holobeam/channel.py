"""The far-field HMT channel: Dirichlet-kernel gain, the unimodal arm grid, pilot rewards."""

from __future__ import annotations

import math
from typing import Any

import torch

from regzoo.core.arrays import ArrayLike, as_tensor, restore
from regzoo.core.checks import check_choice, check_positive_int, check_range, check_real

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
        # Drawn where the generator lives, then moved: a seed gives the same pilots anywhere.
        noise = torch.randn((2, self.n_receivers), generator=generator, device=generator.device,
                            dtype=self.theta.dtype).to(self.device)
        if self.reward == "db_gaussian":
            reward = 10 * torch.log10(1 + snr) + self.db_noise * noise[0]
        else:
            noise = noise / math.sqrt(2)
            power = (snr.sqrt() + noise[0]) ** 2 + noise[1] ** 2
            reward = power if self.reward == "rss" else 10 * torch.log10(power)
        return torch.where(active, reward, torch.zeros_like(reward))


def random_receivers(n: int, generator: torch.Generator, *, theta_max: float = math.pi / 3,
                     device: torch.device | str | None = None, **channel: Any) -> HMTChannel:
    """``n`` receivers, θ ~ U[0, theta_max], φ ~ U[0, 2π) (spec §2), as an :class:`HMTChannel`.

    Drawn with ``generator`` on its device, then placed on ``device`` (default: the
    generator's), so a seed gives the same receivers anywhere.
    """
    n = check_positive_int("n (receivers)", n)
    theta_max = check_range("theta_max", theta_max, 0.0, math.pi / 2)
    u = torch.rand((2, n), generator=generator, dtype=torch.float64, device=generator.device)
    u = u.to(device or generator.device)
    return HMTChannel(u[0] * theta_max, u[1] * 2 * math.pi, **channel)
