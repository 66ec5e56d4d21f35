"""ERNODE, SRNODE and their combination: penalties on the solver's error and stiffness estimates.

Paper: Pal, Ma, Shah, Rackauckas, "Opening the Blackbox: Accelerating Neural Differential
Equations by Regularizing Internal Solver Heuristics", ICML 2021 (PMLR 139; no arXiv id; official
code github.com/avik-pal/RegNeuralODE.jl, Julia, MIT).

Method in three lines: an adaptive solver already computes, at every step j, a local error
estimate EEst_j (which drives its step-size control) and, almost for free, a stiffness estimate;
dynamics with small values let it take fewer, larger steps. The paper adds these by-products,
summed over the accepted steps, to the training loss and backpropagates through the discrete
steps, so the trained model needs fewer function evaluations (NFE) at prediction time.

Equations (the paper's method section; official experiment scripts). For the accepted steps j of a
solve (:class:`~regzoo.methods.nde_solver_reg.solver.StepTrace`), h_j the step size, EEst_j the
error ratio RMS(e_j / (atol + rtol·max(|u_j|, |u_{j+1}|))) (e_j the embedded error estimate), and
S_j = λ̂_j / ρ the Hairer stiffness estimate λ̂_j = ‖k₇ − k₆‖/‖u_{j+1} − U₆‖ over the stability
size ρ of the method (dopri5 3.3066, Tsit5 3.5068):

* error regulariser (ERNODE): R_E = Σ_j EEst_j · h_j;
* stiffness regulariser (SRNODE): R_S = max_j S_j (the official scripts' aggregation;
  the paper writes a sum);
* combined: R_C = Σ_j (EEst_j · h_j + 0.1 · S_j) (official scripts);
* loss: L = L_task + λ(e) · R with λ annealed exponentially from λ₀ to λ₁ over E epochs,
  λ(e) = λ₀ · exp(−e · ln(λ₀/λ₁) / E) (scripts; e = epoch − 1 with 1-based epochs, i.e. 0-based
  here), :class:`ExponentialAnnealing`.

Defaults and sources: ``aggregate="sum"`` (the paper's Σ; ``"mean"`` is what the MNIST and
PhysioNet scripts compute — a factor of the step count, kept as an option and an ablation);
``differentiate_dt=False`` (the step sizes are constants for autograd; the Julia code's
``EEst * dt`` under Tracker is ambiguous, so ``True`` — differentiate through the controller — is
an option and an ablation); rejected steps excluded (the scripts save at accepted steps only);
stiffness weight 0.1 inside the combined regulariser (scripts); solver Tsit5 with
rtol = atol = 1.4e-8 (MNIST script); λ₀ = 100 → λ₁ = 10 for the error regulariser on MNIST,
λ = 0.1 constant for the stiffness regulariser and λ = 10 for the combined one (MNIST script;
the PhysioNet script uses 1e3 → 1e2 for the error regulariser).

Cost relative to a plain solve: zero extra function evaluations for R_E (the error estimate is
computed anyway) and, per step, one stored-stage combination U₆ and two norms for R_S (U₆ is the
sixth stage's input, kept from the stage loop: no extra evaluation either). Memory is that of
backpropagating through the solver, O(steps × state).

Departures from the official code, and why:

* The Julia saving callback also stores an entry at t₀ before the first step (EEst = 1 by
  convention, times the initial dt): it is a constant for autograd with detached step sizes, so
  it only shifts R_E (sum) or rescales it (mean); we record solver steps only.
* The official code uses Tsit5 through OrdinaryDiffEq with its PI controller; our solver uses
  torchdiffeq's integral controller for both tableaux (so dopri5 step sequences match
  torchdiffeq exactly). The regularisers read the same two quantities either way.
* Neural SDEs (SOSRI error estimates, the paper's SDE experiments) are out of scope.
* The paper's own baselines STEER and TayNODE are in :mod:`regzoo.methods.nde_solver_reg.baselines`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from regzoo.core.checks import check_choice, check_range
from regzoo.methods.nde_solver_reg.solver import StepTrace, solve
from regzoo.methods.nde_solver_reg.tableaux import METHODS
from regzoo.registry import Default, register

REGULARIZERS = ("error", "stiffness", "both", "none")
AGGREGATES = ("sum", "mean")
STIFFNESS_WEIGHT = 0.1
"""Weight of S_j inside the combined regulariser (official scripts)."""


def _check_trace(trace: object) -> StepTrace:
    if not isinstance(trace, StepTrace):
        raise TypeError(f"trace must be a StepTrace (from regzoo.methods.nde_solver_reg.solve), "
                        f"got {type(trace).__name__}")
    n = trace.accepted.numel()
    for name in ("h", "error_ratio", "stiffness"):
        value = getattr(trace, name)
        if value.shape != (n,):
            raise ValueError(f"trace.{name} must have one entry per step ({n}), got shape "
                             f"{tuple(value.shape)}")
    return trace


@register(
    "nde_solver_reg",
    kind="penalty",
    declares={
        "batch_coupled": "the whole batch is one ODE state: one error norm and one adaptive step "
            "sequence per solve, and R_E sums over those steps",
        "not_on_a_classifier": "it reads the step trace of a neural-ODE solve: it joins a "
            "criterion on an ODE block's outputs",
    },
    summary="Penalises a neural ODE's adaptive-solver heuristics — the local error estimates "
            "(ERNODE) and/or Hairer's stiffness estimates (SRNODE) over the accepted steps, "
            "backpropagated through the discrete steps — so that prediction needs fewer NFE.",
    equation="R_E = Σ_j EEst_j·h_j,  R_S = max_j λ̂_j/ρ,  R_C = Σ_j (EEst_j·h_j + 0.1·λ̂_j/ρ);  "
             "L = L_task + λ(e)·R,  λ(e) = λ₀·exp(−e·ln(λ₀/λ₁)/E)",
    defaults=(
        Default("reg", "error", "paper (ERNODE, the headline regulariser)"),
        Default("aggregate", "sum", "paper (Σ over steps); official scripts use 'mean'"),
        Default("stiffness_weight", STIFFNESS_WEIGHT, "official scripts (combined regulariser)"),
        Default("differentiate_dt", False, "spec: step sizes are the controller's heuristic, "
                "treated as constants; the Julia code is ambiguous"),
        Default("method", "tsit5", "official scripts (OrdinaryDiffEq Tsit5)"),
        Default("rtol", 1.4e-8, "official MNIST script"),
        Default("atol", 1.4e-8, "official MNIST script"),
        Default("lambda annealing", "100 → 10", "official MNIST script (error regulariser)"),
    ),
    variants=("error (ERNODE)", "stiffness (SRNODE, max aggregation)", "both (combined)",
              "aggregate='mean' (official scripts)", "differentiate_dt=True",
              "baselines: STEER, TayNODE (regzoo.methods.nde_solver_reg.baselines)"),
)
class SolverHeuristicsPenalty(nn.Module):
    """R_E, R_S or R_C from a solve's :class:`StepTrace` (accepted steps only).

    Args:
        reg: ``"error"`` (ERNODE), ``"stiffness"`` (SRNODE), ``"both"`` (combined) or
            ``"none"`` (zero, for an unregularised arm with the same call).
        aggregate: ``"sum"`` (paper) or ``"mean"`` (official scripts) over accepted steps for
            the error and combined regularisers; the stiffness one takes the maximum.
        stiffness_weight: weight of S_j in the combined regulariser (0.1).

    ``forward(trace)`` returns a 0-d tensor in the trace's dtype; zero when no step was accepted.
    Step sizes enter as recorded: detached unless the solve used ``differentiate_dt=True``.
    """

    needs_higher_order_grad = False
    batch_coupled = True  # one error norm and one step sequence for the whole batch

    def __init__(self, reg: str = "error", aggregate: str = "sum",
                 stiffness_weight: float = STIFFNESS_WEIGHT):
        super().__init__()
        self.reg = check_choice("reg", reg, REGULARIZERS)
        self.aggregate = check_choice("aggregate", aggregate, AGGREGATES)
        self.stiffness_weight = check_range("stiffness_weight", stiffness_weight, 0.0, None)

    def forward(self, trace: StepTrace) -> torch.Tensor:
        trace = _check_trace(trace)
        acc = trace.accepted
        zero = trace.error_ratio.sum() * 0.0
        if self.reg == "none" or not bool(acc.any()):
            return zero
        if self.reg == "stiffness":
            return trace.stiffness[acc].max()
        terms = trace.error_ratio[acc] * trace.h[acc]
        if self.reg == "both":
            terms = terms + self.stiffness_weight * trace.stiffness[acc]
        return terms.sum() if self.aggregate == "sum" else terms.mean()

    def extra_repr(self) -> str:
        return f"reg={self.reg!r}, aggregate={self.aggregate!r}"


@dataclass(frozen=True)
class ExponentialAnnealing:
    """λ(e) = λ₀ · exp(−e · ln(λ₀/λ₁) / E): λ₀ at epoch 0, λ₁ at epoch E (official scripts).

    ``epochs`` is E; a constant weight is ``λ₀ = λ₁``; ``λ₀ = λ₁ = 0`` disables the term.
    """

    start: float
    end: float
    epochs: int

    def __post_init__(self) -> None:
        check_range("start", self.start, 0.0, None)
        check_range("end", self.end, 0.0, None)
        if (self.start == 0) != (self.end == 0):
            raise ValueError(f"start and end must both be positive or both zero for exponential "
                             f"annealing, got start={self.start}, end={self.end}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {self.epochs!r}")

    def __call__(self, epoch: float) -> float:
        if self.start == 0:
            return 0.0
        return self.start * math.exp(-epoch * math.log(self.start / self.end) / self.epochs)


@dataclass
class SolveStats:
    """What :class:`SolverRegularizedODE` reports with z_T.

    ``reg`` the differentiable regulariser value, ``nfe`` function evaluations, ``n_accepted`` /
    ``n_rejected`` steps, ``trace`` the full per-step record, ``end_time`` the integration end.
    """

    reg: torch.Tensor
    nfe: int
    n_accepted: int
    n_rejected: int
    trace: StepTrace
    end_time: float


class SolverRegularizedODE(nn.Module):
    """A neural ODE layer z_T = ODESolve(func, z_0, t_span) with the solver-heuristics penalty.

    Args:
        func: the dynamics ``func(t, z)`` (an ``nn.Module`` so its parameters register).
        t_span: ``(t0, t1)``.
        method, rtol, atol: the solver (defaults: Tsit5, 1.4e-8, official MNIST script).
        reg, aggregate, stiffness_weight: see :class:`SolverHeuristicsPenalty`.
        differentiate_dt: differentiate through the step-size controller (default False).
        options: further solver options (``max_num_steps`` ...).

    ``forward(z0, end_time=None)`` returns ``(z_T, stats)``; ``end_time`` overrides t1 (STEER).
    The state is one solve for the whole batch, as in torchdiffeq.
    """

    def __init__(self, func: Callable, t_span: tuple[float, float] = (0.0, 1.0), *,
                 method: str = "tsit5", rtol: float = 1.4e-8, atol: float = 1.4e-8,
                 reg: str = "error", aggregate: str = "sum",
                 stiffness_weight: float = STIFFNESS_WEIGHT, differentiate_dt: bool = False,
                 options: dict | None = None):
        super().__init__()
        if not callable(func):
            raise TypeError(f"func must be callable as func(t, z), got {type(func).__name__}")
        if len(t_span) != 2 or not float(t_span[1]) != float(t_span[0]):
            raise ValueError(f"t_span must be (t0, t1) with t1 != t0, got {t_span!r}")
        self.func = func
        self.t_span = (float(t_span[0]), float(t_span[1]))
        self.method = check_choice("method", method, METHODS)
        self.rtol = check_range("rtol", rtol, 0.0, None, low_inclusive=False)
        self.atol = check_range("atol", atol, 0.0, None, low_inclusive=False)
        if not isinstance(differentiate_dt, bool):
            raise TypeError(f"differentiate_dt must be a bool, got {differentiate_dt!r}")
        self.differentiate_dt = differentiate_dt
        self.options = dict(options or {})
        if "differentiate_dt" in self.options:
            raise ValueError("pass differentiate_dt as its own argument, not in options")
        self.penalty = SolverHeuristicsPenalty(reg, aggregate, stiffness_weight)

    def forward(self, z0: torch.Tensor, end_time: float | None = None
                ) -> tuple[torch.Tensor, SolveStats]:
        t1 = self.t_span[1] if end_time is None else float(end_time)
        dtype = z0.dtype if isinstance(z0, torch.Tensor) and z0.is_floating_point() else None
        t = torch.tensor([self.t_span[0], t1], dtype=torch.float64 if dtype is None else
                         torch.promote_types(torch.float64, dtype))
        sol = solve(self.func, z0, t, rtol=self.rtol, atol=self.atol, method=self.method,
                    options={**self.options, "differentiate_dt": self.differentiate_dt})
        trace = sol.trace
        stats = SolveStats(reg=self.penalty(trace), nfe=trace.nfe, n_accepted=trace.n_accepted,
                           n_rejected=trace.n_rejected, trace=trace, end_time=t1)
        return sol.ys[-1], stats
