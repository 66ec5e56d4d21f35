"""Solver-heuristics regularisation of neural ODEs (Pal, Ma, Shah, Rackauckas, ICML 2021).

* :func:`odeint` / :func:`solve` — regzoo's differentiable dopri5/Tsit5 solver with torchdiffeq's
  signature and conventions, recording every step (:class:`StepTrace`); module ``solver``.
* :class:`SolverHeuristicsPenalty` (ERNODE, SRNODE, combined), :class:`SolverRegularizedODE`,
  :class:`ExponentialAnnealing`; module ``regularizers``.
* :class:`SteerEndTime` (STEER) and :class:`TaylorModeRegularizedDynamics` (TayNODE); module
  ``baselines``. Tableaux in ``tableaux``.
"""

from regzoo.methods.nde_solver_reg.baselines import (
    STEER_B,
    SteerEndTime,
    TaylorModeRegularizedDynamics,
    total_derivative,
)
from regzoo.methods.nde_solver_reg.regularizers import (
    AGGREGATES,
    REGULARIZERS,
    STIFFNESS_WEIGHT,
    ExponentialAnnealing,
    SolverHeuristicsPenalty,
    SolverRegularizedODE,
    SolveStats,
)
from regzoo.methods.nde_solver_reg.solver import (
    DEFAULT_OPTIONS,
    ODESolution,
    StepBudgetExceeded,
    StepTrace,
    fixed_step,
    odeint,
    replay_steps,
    solve,
)
from regzoo.methods.nde_solver_reg.tableaux import DOPRI5, METHODS, TABLEAUX, TSIT5, ButcherTableau

__all__ = [
    "AGGREGATES",
    "DEFAULT_OPTIONS",
    "DOPRI5",
    "METHODS",
    "REGULARIZERS",
    "STEER_B",
    "STIFFNESS_WEIGHT",
    "TABLEAUX",
    "TSIT5",
    "ButcherTableau",
    "ExponentialAnnealing",
    "ODESolution",
    "SolveStats",
    "SolverHeuristicsPenalty",
    "SolverRegularizedODE",
    "SteerEndTime",
    "StepBudgetExceeded",
    "StepTrace",
    "TaylorModeRegularizedDynamics",
    "fixed_step",
    "odeint",
    "replay_steps",
    "solve",
    "total_derivative",
]
