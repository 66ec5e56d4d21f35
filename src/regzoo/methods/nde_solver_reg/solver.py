"""A differentiable adaptive Runge–Kutta solver that records its own heuristics at every step.

``odeint(func, y0, t, rtol=..., atol=..., method="dopri5" | "tsit5", options=...)`` has
torchdiffeq's signature and, for ``dopri5``, torchdiffeq 0.2.5's conventions, so a script can swap
one for the other and get the same accepted steps and NFE:

* error ratio (the controller's "EEst"): ``r = RMS( e / (atol + rtol·max(|y₀|, |y₁|)) )`` with
  ``e = h Σ_i (b_i − b̂_i) k_i`` the embedded error estimate (torchdiffeq ``_compute_error_ratio``
  with ``_rms_norm``), computed in float64 or wider; a step is accepted when ``r ≤ 1``;
* controller: ``h₊ = h · min(ifactor, max(safety · r^(−1/5), dfactor))``, with the decrease
  bound ``dfactor`` dropped (set to 1) after an accepted step and ``h₊ = ifactor·h`` when
  ``r = 0``; defaults ``safety = 0.9``, ``ifactor = 10``, ``dfactor = 0.2`` (torchdiffeq
  ``_optimal_step_size``);
* initial step: Hairer, Nørsett & Wanner, Solving ODEs I §II.4, with torchdiffeq's constants
  (``d₀ = ‖y₀/s‖``, ``d₁ = ‖f₀/s‖``, ``s = atol + rtol|y₀|``, ``h₀ = 0.01 d₀/d₁`` or 1e-6,
  one extra evaluation at ``t₀ + h₀``, ``h₁ = (0.01/max(d₁, d₂))^(1/5)``, ``h = min(100 h₀, h₁)``);
* time in float64 (or the state's dtype if wider); stages evaluated at ``t₀ + c_i h`` cast to the
  state's dtype; FSAL (the seventh stage is the next step's first);
* dense output: the solver steps past requested times and interpolates inside the step
  (dopri5: torchdiffeq's quartic through y₀, y₁, y(h/2), f₀, f₁; Tsit5: Tsitouras' b_i(θ));
* NFE = 2 (f₀ and the initial-step probe) + 6 per step, accepted or rejected.

Every step is recorded in a :class:`StepTrace`: its start time, step size ``h`` (detached unless
``differentiate_dt``), the differentiable error ratio, whether it was accepted, and Hairer's
stiffness estimate ``λ̂ = ‖k₇ − k₆‖₂ / ‖y₁ − U₆‖₂`` (U₆ the sixth stage's state; both stages at
``t + h``, so λ̂ estimates the dominant eigenvalue's modulus of ∂f/∂y) divided by the method's
stability-region size (dopri5 3.3066, Tsit5 3.5068), set to 0 where the denominator vanishes.
Gradients are ordinary backpropagation through every stage (the discrete adjoint), which is what
the solver-heuristics regularisers need: they live on the discrete steps.

Step sizes: by default every step size (the initial one included) is a constant for autograd.
torchdiffeq differentiates the first step size (its initial-step rule is not under ``no_grad``)
and no later one; regzoo's ``differentiate_dt=True`` instead keeps the whole controller chain
differentiable (initial-step rule and ``h₊ = h · factor(r)``), so a regulariser ``Σ r_j h_j``
sees ``∂h_j/∂θ`` through every earlier error ratio. Within the step the stage times use the
same ``h``, so trajectories are identical either way; only gradients differ.

Departures from torchdiffeq, and why: no ``Perturb`` of the stage times at ``t + h`` by one ulp
(it only matters for discontinuous dynamics, which we do not target; time-dependent results
agree to rounding), no event handling, ``step_t``/``jump_t`` or tuple states (the regularisers
act on one state tensor), and a step budget that raises :class:`StepBudgetExceeded` with the
time and step size (torchdiffeq asserts) — a silent stop would return a wrong solution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from regzoo.core.checks import check_choice, check_positive_int, check_range
from regzoo.methods.nde_solver_reg.tableaux import METHODS, TABLEAUX, ButcherTableau

DEFAULT_OPTIONS = {
    "safety": 0.9,
    "ifactor": 10.0,
    "dfactor": 0.2,
    "first_step": None,
    "min_step": 0.0,
    "max_step": math.inf,
    "max_num_steps": 2**31 - 1,
    "differentiate_dt": False,
}
"""Solver options with torchdiffeq 0.2.5's defaults (``differentiate_dt`` is regzoo's)."""


class StepBudgetExceeded(RuntimeError):
    """The solve cannot finish (steps exhausted, step underflow, non-finite state).

    The message gives the time t and the step size h reached.
    """


@dataclass
class StepTrace:
    """Every step the solver attempted, in order (float64 times; the state's dtype elsewhere).

    ``t`` step start times; ``h`` step sizes (detached unless ``differentiate_dt``);
    ``error_ratio`` the controller's EEst (differentiable); ``stiffness`` λ̂ divided by the
    stability-region size (differentiable); ``accepted`` booleans; ``nfe`` the function
    evaluations of the whole solve.
    """

    t: torch.Tensor
    h: torch.Tensor
    error_ratio: torch.Tensor
    stiffness: torch.Tensor
    accepted: torch.Tensor
    nfe: int
    method: str = "dopri5"

    @property
    def n_accepted(self) -> int:
        """Number of accepted steps."""
        return int(self.accepted.sum())

    @property
    def n_rejected(self) -> int:
        """Number of rejected steps."""
        return int((~self.accepted).sum())

    def to(self, device: torch.device | str) -> StepTrace:
        """The same trace with its tensors on ``device`` (differentiable moves)."""
        return StepTrace(self.t.to(device), self.h.to(device), self.error_ratio.to(device),
                         self.stiffness.to(device), self.accepted.to(device), self.nfe,
                         self.method)


@dataclass
class ODESolution:
    """``ys`` the states at the requested times (``len(t) × y0.shape``) and the step trace."""

    ys: torch.Tensor
    trace: StepTrace
    options: dict = field(default_factory=dict)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.abs().pow(2).mean().sqrt()


class _Counted:
    """The user's ``func`` with a call counter, a time cast, a shape check, and time reversal."""

    def __init__(self, func: Callable, y0: torch.Tensor, reverse: bool):
        self.func = func
        self.shape = y0.shape
        self.dtype = y0.dtype
        self.sign = -1.0 if reverse else 1.0
        self.nfe = 0

    def __call__(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        t = t.to(self.dtype)
        out = self.func(self.sign * t, y) if self.sign > 0 else -self.func(-t, y)
        if not isinstance(out, torch.Tensor) or out.shape != self.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"func must return a tensor shaped like the state "
                             f"{tuple(self.shape)}, got {got}; return dy/dt with the state's "
                             f"shape")
        return out


def _check_inputs(func: Callable, y0: object, t: object, rtol: object, atol: object,
                  method: object, options: Mapping | None) -> dict:
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y), got {type(func).__name__}")
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"y0 must be a torch.Tensor, got {type(y0).__name__}")
    if not y0.is_floating_point():
        raise TypeError(f"y0 must be a floating-point tensor, got dtype {y0.dtype}")
    if y0.numel() == 0:
        raise ValueError(f"y0 is empty (shape {tuple(y0.shape)}); pass at least one state entry")
    if not bool(torch.isfinite(y0).all()):
        raise ValueError("y0 contains NaN or infinite values; pass a finite initial state")
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"t must be a 1-D torch.Tensor of times, got {type(t).__name__}")
    if t.ndim != 1 or t.numel() < 1 or not t.is_floating_point():
        raise ValueError(f"t must be a non-empty 1-D floating-point tensor of times, got shape "
                         f"{tuple(t.shape)} and dtype {t.dtype}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t contains NaN or infinite times; pass finite times")
    if t.numel() > 1:
        diffs = t[1:] - t[:-1]
        if not (bool((diffs > 0).all()) or bool((diffs < 0).all())):
            raise ValueError(f"t must be strictly increasing or strictly decreasing, got "
                             f"{t.tolist()}; sort the times and drop repeats")
    for name, value in (("rtol", rtol), ("atol", atol)):
        check_range(name, value, 0.0, None, low_inclusive=False)
    check_choice("method", method, METHODS)
    opts = dict(DEFAULT_OPTIONS)
    for key, value in dict(options or {}).items():
        if key not in DEFAULT_OPTIONS:
            raise ValueError(f"options has unknown key {key!r}; allowed: "
                             f"{', '.join(sorted(DEFAULT_OPTIONS))}")
        opts[key] = value
    check_range("options['safety']", opts["safety"], 0.0, 1.0, low_inclusive=False)
    check_range("options['ifactor']", opts["ifactor"], 1.0, None)
    check_range("options['dfactor']", opts["dfactor"], 0.0, 1.0, low_inclusive=False)
    check_range("options['min_step']", opts["min_step"], 0.0, None)
    if not (isinstance(opts["max_step"], (int, float)) and opts["max_step"] > opts["min_step"]):
        raise ValueError(f"options['max_step'] must be a number above min_step, got "
                         f"{opts['max_step']!r}")
    if opts["first_step"] is not None:
        check_range("options['first_step']", opts["first_step"], 0.0, None, low_inclusive=False)
    check_positive_int("options['max_num_steps']", opts["max_num_steps"])
    if not isinstance(opts["differentiate_dt"], bool):
        raise TypeError(f"options['differentiate_dt'] must be a bool, got "
                        f"{opts['differentiate_dt']!r}")
    return opts


class _Stepper:
    """One solve: the RK step, the controller and the dense output of a tableau."""

    def __init__(self, tableau: ButcherTableau, fn: _Counted, y0: torch.Tensor, rtol: float,
                 atol: float, opts: dict, time_dtype: torch.dtype):
        dev, ydt = y0.device, y0.dtype
        self.tab, self.fn, self.opts = tableau, fn, opts
        self.tdt = time_dtype
        self.rtol = torch.tensor(rtol, dtype=time_dtype, device=dev)
        self.atol = torch.tensor(atol, dtype=time_dtype, device=dev)
        self.a = [torch.tensor(row, dtype=ydt, device=dev) for row in tableau.a[1:]]
        self.c = [float(ci) for ci in tableau.c[1:]]
        self.b = torch.tensor(tableau.b, dtype=ydt, device=dev)
        self.b_error = torch.tensor(tableau.b_error, dtype=ydt, device=dev)
        self.fsal_is_solution = tableau.b[-1] == 0 and tableau.a[-1] == tableau.b[:-1]
        if tableau.dense == "midpoint":
            self.mid = torch.tensor(tableau.mid, dtype=ydt, device=dev)
        else:
            self.interp = torch.tensor(tableau.interpolant, dtype=ydt, device=dev)
        self.differentiate_dt = opts["differentiate_dt"]

    def initial_step(self, t0: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        """Hairer's rule with torchdiffeq's constants, order 4 (exponent 1/5)."""
        with torch.set_grad_enabled(self.differentiate_dt and torch.is_grad_enabled()):
            scale = self.atol + y0.abs() * self.rtol
            d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
            if d0 < 1e-5 or d1 < 1e-5:
                h0 = torch.tensor(1e-6, dtype=scale.dtype, device=y0.device)
            else:
                h0 = (0.01 * d0 / d1).abs()
            f1 = self.fn(t0 + h0, y0 + h0.to(y0.dtype) * f0)
            d2 = (_rms((f1 - f0) / scale) / h0).abs()
            if d1 <= 1e-15 and d2 <= 1e-15:
                h1 = torch.clamp(h0 * 1e-3, min=1e-6)
            else:
                h1 = (0.01 / torch.maximum(d1, d2)) ** (1.0 / self.tab.order)
            return torch.minimum(100 * h0, h1.abs()).to(self.tdt)

    def step(self, t0: torch.Tensor, y0: torch.Tensor, f0: torch.Tensor, dt: torch.Tensor):
        """One RK step: (y1, f1, error ratio, λ̂, stages K)."""
        t1 = t0 + dt
        t0y, dty = t0.to(y0.dtype), dt.to(y0.dtype)
        ks = [f0]
        u6 = y0
        yi = y0
        for i, (ci, ai) in enumerate(zip(self.c, self.a)):
            ti = t1 if ci == 1.0 else t0y + ci * dty
            yi = y0 + torch.sum(torch.stack(ks, dim=-1) * (ai * dty), dim=-1)
            if i == len(self.a) - 2:
                u6 = yi
            ks.append(self.fn(ti, yi))
        k = torch.stack(ks, dim=-1)
        y1 = yi if self.fsal_is_solution else y0 + torch.sum(k * (dty * self.b), dim=-1)
        error = torch.sum(k * (dty * self.b_error), dim=-1)
        tol = self.atol + self.rtol * torch.maximum(y0.abs(), y1.abs())
        ratio = _rms(error / tol)
        num = torch.linalg.vector_norm(ks[-1] - ks[-2])
        den = torch.linalg.vector_norm(y1 - u6)
        safe = torch.where(den > 0, den, torch.ones_like(den))
        lam = torch.where(den > 0, num / safe, torch.zeros_like(num))
        lam = torch.nan_to_num(lam, nan=0.0, posinf=0.0)
        return y1, ks[-1], ratio, lam, k

    def next_step(self, dt: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """The integral controller of torchdiffeq, exponent 1/order."""
        o = self.opts
        with torch.set_grad_enabled(self.differentiate_dt and torch.is_grad_enabled()):
            r = ratio.to(dt.dtype)
            if not self.differentiate_dt:
                r, dt = r.detach(), dt.detach()
            if bool(r == 0):
                new = dt * o["ifactor"]
            else:
                dfactor = o["dfactor"] if bool(r >= 1) else 1.0
                factor = torch.clamp(o["safety"] / r ** (1.0 / self.tab.order), min=dfactor,
                                     max=o["ifactor"])
                new = dt * factor
            return torch.clamp(new, min=o["min_step"], max=o["max_step"])

    def dense(self, y0, y1, k, dt, t0, t1, t):
        """The continuous extension at ``t`` in [t0, t1]."""
        x = ((t - t0) / (t1 - t0)).to(y0.dtype)
        dty = dt.to(y0.dtype)
        if self.tab.dense == "midpoint":
            y_mid = y0 + torch.sum(k * (dty * self.mid), dim=-1)
            f0, f1 = k[..., 0], k[..., -1]
            a = 2 * dty * (f1 - f0) - 8 * (y1 + y0) + 16 * y_mid
            b = dty * (5 * f0 - 3 * f1) + 18 * y0 + 14 * y1 - 32 * y_mid
            c = dty * (f1 - 4 * f0) - 11 * y0 - 5 * y1 + 16 * y_mid
            d = dty * f0
            total = y0 + x * d
            xp = x
            for coef in (c, b, a):
                xp = xp * x
                total = total + xp * coef
            return total
        powers = torch.stack([x, x * x, x ** 3, x ** 4])
        weights = self.interp @ powers
        return y0 + torch.sum(k * (dty * weights), dim=-1)


def solve(func: Callable, y0: torch.Tensor, t: torch.Tensor, *, rtol: float = 1e-7,
          atol: float = 1e-9, method: str | None = "dopri5",
          options: Mapping | None = None) -> ODESolution:
    """Integrate ``dy/dt = func(t, y)`` from ``y0`` at ``t[0]``; states at every ``t`` + trace.

    Args:
        func: ``func(t, y)`` returning ``dy/dt`` shaped like ``y`` (``t`` a 0-d tensor in the
            state's dtype).
        y0: initial state, any shape (a batch is one state: one error norm, one step sequence,
            as in torchdiffeq), float32 or float64, on any device.
        t: 1-D strictly monotone times (decreasing integrates backwards).
        rtol, atol: relative and absolute tolerances (> 0). Defaults: torchdiffeq's.
        method: ``"dopri5"`` or ``"tsit5"`` (``None``: dopri5, as torchdiffeq).
        options: ``safety``, ``ifactor``, ``dfactor``, ``first_step``, ``min_step``,
            ``max_step``, ``max_num_steps`` (torchdiffeq's meaning and defaults) and
            ``differentiate_dt`` (False: step sizes are constants for autograd).

    Raises:
        StepBudgetExceeded: more than ``max_num_steps`` steps, or ``t + h == t``; the message
            gives the time and the step size reached.
    """
    method = "dopri5" if method is None else method  # torchdiffeq's default
    opts = _check_inputs(func, y0, t, rtol, atol, method, options)
    tableau = TABLEAUX[method]
    time_dtype = torch.promote_types(torch.float64, y0.dtype)
    reverse = t.numel() > 1 and bool(t[0] > t[1])
    tt = (-t if reverse else t).to(device=y0.device, dtype=time_dtype)
    fn = _Counted(func, y0, reverse)
    stepper = _Stepper(tableau, fn, y0, float(rtol), float(atol), opts, time_dtype)
    ys = [y0]
    rec_t, rec_h, rec_r, rec_s, rec_acc = [], [], [], [], []
    if tt.numel() > 1:
        t0 = tt[0]
        f0 = fn(t0, y0)
        if opts["first_step"] is None:
            dt = stepper.initial_step(t0, y0, f0)
        else:
            dt = torch.tensor(float(opts["first_step"]), dtype=time_dtype, device=y0.device)
        y_cur, f_cur, t_cur = y0, f0, t0
        last = None  # (y0, y1, k, dt, t0, t1) of the last accepted step
        n_steps = 0
        for target in tt[1:]:
            while last is None or target > last[5]:
                if n_steps >= opts["max_num_steps"]:
                    raise StepBudgetExceeded(
                        f"max_num_steps={opts['max_num_steps']} exhausted at t={float(t_cur):.6g} "
                        f"with step size h={float(dt):.3g}; raise options['max_num_steps'], "
                        f"loosen rtol/atol, or check the dynamics for stiffness")
                if not bool(torch.isfinite(dt)):
                    dt = torch.as_tensor(opts["min_step"], dtype=time_dtype, device=y0.device)
                dt = torch.clamp(dt, min=opts["min_step"], max=opts["max_step"])
                if not bool(t_cur + dt > t_cur):
                    raise StepBudgetExceeded(
                        f"step size underflow at t={float(t_cur):.6g}: h={float(dt):.3g} no "
                        f"longer advances time; the dynamics are likely stiff or non-finite")
                if not bool(torch.isfinite(y_cur).all()):
                    raise StepBudgetExceeded(
                        f"non-finite state at t={float(t_cur):.6g} (h={float(dt):.3g}); the "
                        f"dynamics blew up")
                y1, f1, ratio, lam, k = stepper.step(t_cur, y_cur, f_cur, dt)
                n_steps += 1
                accept = bool(ratio <= 1)
                if dt > opts["max_step"]:
                    accept = False
                if dt <= opts["min_step"]:
                    accept = True
                rec_t.append(t_cur.detach())
                rec_h.append(dt.to(y0.dtype))
                rec_r.append(ratio.to(y0.dtype))
                rec_s.append(lam.to(y0.dtype) / tableau.stability_size)
                rec_acc.append(accept)
                dt_next = stepper.next_step(dt, ratio)
                if accept:
                    t1 = t_cur + dt
                    last = (y_cur, y1, k, dt, t_cur, t1)
                    y_cur, f_cur, t_cur = y1, f1, t1
                dt = dt_next
            ys.append(stepper.dense(*last, target))
    dev = y0.device
    trace = StepTrace(
        t=torch.stack(rec_t) if rec_t else torch.zeros(0, dtype=time_dtype, device=dev),
        h=torch.stack(rec_h) if rec_h else torch.zeros(0, dtype=y0.dtype, device=dev),
        error_ratio=torch.stack(rec_r) if rec_r else torch.zeros(0, dtype=y0.dtype, device=dev),
        stiffness=torch.stack(rec_s) if rec_s else torch.zeros(0, dtype=y0.dtype, device=dev),
        accepted=torch.tensor(rec_acc, dtype=torch.bool, device=dev),
        nfe=fn.nfe, method=method)
    return ODESolution(torch.stack(ys), trace, opts)


def odeint(func: Callable, y0: torch.Tensor, t: torch.Tensor, *, rtol: float = 1e-7,
           atol: float = 1e-9, method: str | None = "dopri5",
           options: Mapping | None = None) -> torch.Tensor:
    """Drop-in for ``torchdiffeq.odeint`` (dopri5 or tsit5): the states at ``t``.

    Same arguments as :func:`solve`; use :func:`solve` for the per-step trace.
    """
    return solve(func, y0, t, rtol=rtol, atol=atol, method=method, options=options).ys


def replay_steps(func: Callable, y0: torch.Tensor, t0: float, h: torch.Tensor, *,
                 rtol: float = 1e-7, atol: float = 1e-9, method: str = "dopri5") -> StepTrace:
    """The trace of taking exactly the steps ``h`` from ``t0`` (each one accepted, no control).

    With the accepted step sizes of an adaptive solve this re-evaluates the same discrete
    trajectory for other parameters: the frozen step sequence in which ``differentiate_dt=False``
    gradients are exact derivatives (and finite differences can check them).
    """
    check_choice("method", method, METHODS)
    for name, value in (("rtol", rtol), ("atol", atol)):
        check_range(name, value, 0.0, None, low_inclusive=False)
    if not isinstance(h, torch.Tensor) or h.ndim != 1 or not bool((h > 0).all()):
        raise ValueError("h must be a 1-D tensor of positive step sizes")
    tableau = TABLEAUX[method]
    tdt = torch.promote_types(torch.float64, y0.dtype)
    fn = _Counted(func, y0, False)
    stepper = _Stepper(tableau, fn, y0, float(rtol), float(atol), dict(DEFAULT_OPTIONS), tdt)
    tc = torch.tensor(float(t0), dtype=tdt, device=y0.device)
    y, f = y0, fn(tc, y0)
    ts, rs, ss = [], [], []
    for dt in h.detach().to(tdt):
        ts.append(tc)
        y, f, ratio, lam, _ = stepper.step(tc, y, f, dt)
        rs.append(ratio.to(y0.dtype))
        ss.append(lam.to(y0.dtype) / tableau.stability_size)
        tc = tc + dt
    return StepTrace(torch.stack(ts), h.detach().to(y0.dtype), torch.stack(rs), torch.stack(ss),
                     torch.ones(len(h), dtype=torch.bool, device=y0.device), fn.nfe, method)


def fixed_step(func: Callable, y0: torch.Tensor, t0: float, t1: float, n_steps: int,
               method: str = "dopri5") -> torch.Tensor:
    """``n_steps`` equal steps of the fifth-order solution from ``t0`` to ``t1`` (no control).

    Used to check the convergence order; the error estimate is not used.
    """
    check_choice("method", method, METHODS)
    check_positive_int("n_steps", n_steps)
    tdt = torch.promote_types(torch.float64, y0.dtype)
    fn = _Counted(func, y0, False)
    stepper = _Stepper(TABLEAUX[method], fn, y0, 1.0, 1.0, dict(DEFAULT_OPTIONS), tdt)
    h = torch.tensor((t1 - t0) / n_steps, dtype=tdt, device=y0.device)
    y, tc = y0, torch.tensor(t0, dtype=tdt, device=y0.device)
    f = fn(tc, y)
    for _ in range(n_steps):
        y, f, *_ = stepper.step(tc, y, f, h)
        tc = tc + h
    return y


__all__: Sequence[str] = ("DEFAULT_OPTIONS", "ODESolution", "StepBudgetExceeded", "StepTrace",
                          "fixed_step", "odeint", "replay_steps", "solve")
