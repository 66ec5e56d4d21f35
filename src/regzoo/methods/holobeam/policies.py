"""HoloBeam and the 2-D unimodal search: fixed-budget line searches batched over receivers."""

from __future__ import annotations

import abc
import math

import torch

from regzoo.core.checks import check_positive_int
from regzoo.registry import Default, register


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
        Default("phase1_arm_y", None, "None: the middle grid arm, broadside Ψy = 0 (spec §2: "
                "an arbitrary fixed grid value)"),
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
