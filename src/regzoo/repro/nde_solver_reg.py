"""Reproduction of "Opening the Blackbox" (Pal et al., ICML 2021): fewer NFE from solver heuristics.

Task A (``circles``; spec §5, issue 19): concentric circles in the plane (Dupont et al.'s
setting where a plain neural ODE learns a stiff, high-NFE flow: class 0 uniform in the disk of
radius 0.5, class 1 uniform in the annulus 1 ≤ r ≤ 1.5), the 2-d input augmented with one zero to
a 3-d state, dynamics MLP 3 → 32 → 32 → 3 (tanh), linear head, regzoo's dopri5 at rtol = atol =
1e-6 on t ∈ [0, 1], full-batch Adam. Task B (``digits``): 8×8 digits as a 64-d state, dynamics
64 → 100 → 64 (tanh), linear head, 10 epochs of minibatch Adam (batch 128, lr 1e-3), dopri5 at
rtol = atol = 1.4e-8 (the official MNIST script's tolerance; at Task A's 1e-6 the unregularised
model takes 5 accepted steps, 32 NFE, one step above the floor, so there is nothing to save).
Task C (``spirals``): Chen et al.'s latent ODE (backward GRU encoder over the irregular
observations, as in the latent-ODE paper's spiral experiment; 4-d latent, MLP dynamics 4 → 25 →
25 → 4, MLP decoder) on irregularly sampled noisy 2-d spirals
(:func:`regzoo.data.spirals.irregular_spirals`, half the 40 grid points observed), trained on the
ELBO of the observed points, metric: interpolation MSE on the held-out points
(:func:`interpolation_mse`); dopri5 at Task A's tolerance. Tasks B and C run the six arms of the
issue (``task_bc_arms``: no ablations) and are in ``full()`` (pilots, one thread on a loaded
machine, CPU seconds: a digits unit 2.5–4.2 s, TayNODE 9–13 s; a spirals unit 13–20 s, TayNODE
46–66 s; Tasks B and C with their λ searches, 16 trainings each, ≈ 21 CPU-minutes).

Arms: ``unreg`` (plain), ``ernode`` (R_E, sum), ``srnode`` (R_S, max), ``combined``, ``steer``
(end time U(0.5, 1.5) in training), ``taynode`` (∫‖d²z/dt²‖² on an augmented state, λ constant),
and the ablations ``ernode_mean`` (mean aggregation, as the official scripts) and ``ernode_dt``
(step sizes differentiated through the controller). The regularised arms anneal λ from λ₀ to
λ₀/10 over training (official scripts' exponential schedule); λ₀ ∈ ``lambda_grid`` (circles)
or ``task_bc_lambda_grid`` (digits, spirals) is chosen per arm and setting once per run on the
search seed's validation split (``shared_once``): the lowest validation NFE among the λ₀ whose
validation accuracy is within ``val_tolerance`` of the unregularised model's on that seed
(spirals: validation MSE at most 1 + ``mse_tolerance`` times the unregularised one), else the
most accurate. ``ernode_dt`` uses ERNODE's λ₀. Tasks B and C search {0.01, 0.1, 1, 10, 100}:
their losses have other scales than Task A's, and in search-seed pilots every λ₀ ≥ 1 broke the
quality tolerance (ERNODE on digits: validation accuracy −1.7 points at λ₀ = 1; on spirals:
validation MSE 1.8× at λ₀ = 1), which would leave the rule only its fallback. The grid was set
from those search-seed pilots before any full run.

Metrics per unit: test accuracy, test NFE and accepted/rejected steps (one solve of the whole
test set at t = 1, the training tolerance), mean training NFE (forward, per iteration),
training CPU time and time per iteration, validation accuracy and NFE; curves: training NFE
and loss every ``eval_every`` iterations.

Claims (issue 19, fixed before any full run): headline — ERNODE needs ≥ 1.4× fewer test NFE
than the unregularised model (metric log test NFE, lower better, margin ln 1.4: the per-seed
log-ratio's mean, i.e. a geometric-mean ratio); secondary — ERNODE's accuracy loss ≤ 1 point
(test accuracy, margin −0.01), ERNODE's training time ≤ 1.1× unregularised (log training time,
margin −ln 1.1), TayNODE's training time ≥ 2× unregularised ("several times"; margin ln 2).
Tasks B and C repeat the four with the same metrics and margins (secondary, setting ``digits``
or ``spirals``); on the latent ODE the accuracy condition becomes ERNODE's interpolation MSE ≤
(1 + ``mse_tolerance``) = 1.1× the unregularised (log test MSE, margin −ln 1.1), the tolerance the
λ search uses.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_positive_int
from regzoo.data import load_digits
from regzoo.methods.nde_solver_reg import (
    ExponentialAnnealing,
    SolverHeuristicsPenalty,
    SteerEndTime,
    TaylorModeRegularizedDynamics,
    solve,
)
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import (
    Claim,
    Reproduction,
    Unit,
    UnitEnv,
    UnitResult,
    shared_once,
    summary_text,
)

ARMS = ("unreg", "ernode", "srnode", "combined", "steer", "taynode", "ernode_mean", "ernode_dt")
TASK_BC_ARMS = ("unreg", "ernode", "srnode", "combined", "steer", "taynode")
SETTINGS = ("circles", "digits", "spirals")
REG_OF_ARM = {"ernode": ("error", "sum"), "srnode": ("stiffness", "sum"),
              "combined": ("both", "sum"), "ernode_mean": ("error", "mean"),
              "ernode_dt": ("error", "sum")}


@dataclasses.dataclass(frozen=True)
class NdeSolverRegConfig(ReproConfig):
    """Task A sizes (circles) and Task B sizes (digits); λ grid, tolerances, arms."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    settings: tuple[str, ...] = ("circles",)
    arms: tuple[str, ...] = ARMS
    task_bc_arms: tuple[str, ...] = TASK_BC_ARMS
    search_seed: int = 1000
    lambda_grid: tuple[float, ...] = (1.0, 10.0, 100.0)
    task_bc_lambda_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    lambda_decay: float = 10.0
    val_tolerance: float = 0.01
    taynode_lambda: float = 0.01
    taynode_order: int = 2
    steer_b: float = 0.5
    rtol: float = 1e-6
    atol: float = 1e-6
    method: str = "dopri5"
    n_train: int = 1000
    n_val: int = 500
    n_test: int = 1000
    hidden: int = 32
    steps: int = 300
    lr: float = 1e-2
    eval_every: int = 25
    digits_epochs: int = 10
    digits_batch: int = 128
    digits_hidden: int = 100
    digits_lr: float = 1e-3
    digits_rtol: float = 1.4e-8
    digits_atol: float = 1.4e-8
    spirals_n_train: int = 500
    spirals_n_val: int = 200
    spirals_n_test: int = 200
    spirals_steps: int = 300
    spirals_batch: int = 100
    spirals_latent: int = 4
    spirals_hidden: int = 25
    spirals_lr: float = 1e-2
    spirals_sigma: float = 0.1
    mse_tolerance: float = 0.1

    positive_fields = ("steps", "lr", "n_train", "n_val", "n_test", "hidden", "rtol", "atol",
                       "eval_every", "digits_epochs", "digits_batch", "digits_hidden",
                       "digits_lr", "digits_rtol", "digits_atol", "lambda_decay",
                       "spirals_n_train", "spirals_n_val",
                       "spirals_n_test", "spirals_steps", "spirals_batch", "spirals_latent",
                       "spirals_hidden", "spirals_lr", "spirals_sigma", "mse_tolerance")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, values, allowed in (("settings", self.settings, SETTINGS),
                                      ("arms", self.arms, ARMS),
                                      ("task_bc_arms", self.task_bc_arms, ARMS)):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {values}")
        if "unreg" not in self.arms or "ernode" not in self.arms:
            raise ValueError(f"arms must include 'unreg' and 'ernode' (the claim), got {self.arms}")
        if "circles" not in self.settings:
            raise ValueError(f"settings must include 'circles' (Task A carries the headline "
                             f"claim), got {self.settings}; add it: settings=circles,...")
        if "unreg" not in self.task_bc_arms or "ernode" not in self.task_bc_arms:
            raise ValueError("task_bc_arms must include 'unreg' and 'ernode' (the claims of "
                             f"Tasks B and C), got {self.task_bc_arms}")
        for name, grid in (("lambda_grid", self.lambda_grid),
                           ("task_bc_lambda_grid", self.task_bc_lambda_grid)):
            if not grid or min(grid) <= 0:
                raise ValueError(f"{name} must hold positive values, got {grid}")
        if self.search_seed in self.seeds:
            raise ValueError(f"search_seed {self.search_seed} must differ from the seeds")

    @classmethod
    def tiny(cls) -> NdeSolverRegConfig:
        return cls(seeds=(0,), settings=SETTINGS, arms=("unreg", "ernode", "taynode"),
                   lambda_grid=(10.0,), task_bc_lambda_grid=(10.0,), n_train=64, n_val=32,
                   n_test=64, hidden=8, steps=4, eval_every=2, rtol=1e-3, atol=1e-3,
                   digits_epochs=1, digits_batch=512, digits_hidden=16, digits_rtol=1e-3,
                   digits_atol=1e-3, spirals_n_train=16, spirals_n_val=8, spirals_n_test=8,
                   spirals_steps=2, spirals_batch=8, spirals_hidden=8)

    @classmethod
    def quick(cls) -> NdeSolverRegConfig:
        return cls(seeds=(0, 1), arms=("unreg", "ernode", "srnode", "steer"),
                   lambda_grid=(1.0,), n_train=400, n_val=200, n_test=400, steps=150)

    @classmethod
    def full(cls) -> NdeSolverRegConfig:
        return cls(settings=SETTINGS)

    def arms_of(self, setting: str) -> tuple[str, ...]:
        """The arms run in ``setting``: every arm on circles, ``task_bc_arms`` on B and C."""
        if setting == "circles":
            return self.arms
        return tuple(a for a in self.arms if a in self.task_bc_arms)

    def lambda_grid_of(self, setting: str) -> tuple[float, ...]:
        """The λ₀ searched in ``setting``: ``lambda_grid`` (circles) or ``task_bc_lambda_grid``."""
        return self.lambda_grid if setting == "circles" else self.task_bc_lambda_grid

    def tolerances(self, setting: str) -> tuple[float, float]:
        """(rtol, atol) of ``setting``'s solves: digits has its own (official MNIST script)."""
        if setting == "digits":
            return self.digits_rtol, self.digits_atol
        return self.rtol, self.atol


def concentric_circles(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Half the points uniform in the disk r ≤ 0.5 (class 0), half in 1 ≤ r ≤ 1.5 (class 1)."""
    y = (torch.arange(n) % 2).long()
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    r_inner = 0.5 * u.sqrt()
    r_outer = (1.0 + u * (1.5**2 - 1.0)).sqrt()
    r = torch.where(y == 0, r_inner, r_outer)
    phi = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    x = torch.stack([r * phi.cos(), r * phi.sin()], dim=1).float()
    perm = torch.randperm(n, generator=generator)
    return x[perm], y[perm]


class Dynamics(nn.Module):
    """f(t, z) = MLP(z): d → hidden → hidden → d (tanh), autonomous (circles) or one layer."""

    def __init__(self, dim: int, hidden: int, depth: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(dim, hidden), nn.Tanh()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.Tanh()]
        layers.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _data(config: NdeSolverRegConfig, setting: str, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if setting == "circles":
        x, y = concentric_circles(config.n_train + config.n_val + config.n_test, g)
        x = torch.cat([x, x.new_zeros(len(x), 1)], dim=1)  # augmented 3-d state
        a, b = config.n_train, config.n_train + config.n_val
        return {"xtr": x[:a], "ytr": y[:a], "xva": x[a:b], "yva": y[a:b], "xte": x[b:],
                "yte": y[b:]}
    data = load_digits(seed=seed, scale="standard")
    n_val = len(data.x_train) // 5
    perm = torch.randperm(len(data.x_train), generator=g)
    va, tr = perm[:n_val], perm[n_val:]
    return {"xtr": data.x_train[tr], "ytr": data.y_train[tr], "xva": data.x_train[va],
            "yva": data.y_train[va], "xte": data.x_test, "yte": data.y_test}


def _build(config: NdeSolverRegConfig, setting: str, seed: int, device: torch.device):
    torch.manual_seed(seed)
    if setting == "circles":
        func = Dynamics(3, config.hidden, depth=2)
        head = nn.Linear(3, 2)
    else:
        func = Dynamics(64, config.digits_hidden, depth=1)
        head = nn.Linear(64, 10)
    return func.to(device), head.to(device)


def _solve(config: NdeSolverRegConfig, setting: str, func: nn.Module, z0: torch.Tensor,
           t1: float = 1.0):
    t = torch.tensor([0.0, t1], dtype=torch.float64)
    rtol, atol = config.tolerances(setting)
    return solve(func, z0, t, rtol=rtol, atol=atol, method=config.method,
                 options={"max_num_steps": 20000})


@torch.no_grad()
def _evaluate(config, setting, func, head, x, y) -> dict[str, float]:
    sol = _solve(config, setting, func, x)
    acc = float((head(sol.ys[-1]).argmax(1) == y).float().mean())
    return {"acc": acc, "nfe": float(sol.trace.nfe), "accepted": float(sol.trace.n_accepted),
            "rejected": float(sol.trace.n_rejected)}



def _solve_arm(config: NdeSolverRegConfig, setting: str, func: nn.Module,
               tay: TaylorModeRegularizedDynamics | None, penalty: SolverHeuristicsPenalty,
               xb: torch.Tensor, t: torch.Tensor, options: dict[str, Any]
               ) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """One classifier solve of an arm, shared by training and timing.

    Returns z_T, the unweighted regulariser (TayNODE's R_K, else the solver penalty on the
    trace) and the solution.
    """
    rtol, atol = config.tolerances(setting)
    if tay is not None:
        sol = solve(tay, tay.augment(xb), t, rtol=rtol, atol=atol, method=config.method,
                    options=options)
        z, r = tay.split(sol.ys[-1])
        return z, r, sol
    sol = solve(func, xb, t, rtol=rtol, atol=atol, method=config.method,
                options=options)
    return sol.ys[-1], penalty(sol.trace), sol


class _TrainingLog:
    """The training iterations' optimiser steps, NFE and losses.

    The curves hold the mean over each window of ``eval_every`` iterations.
    """

    def __init__(self, eval_every: int, iterations: int) -> None:
        self.eval_every, self.iterations = eval_every, iterations
        self.nfes: list[int] = []
        self.window: list[float] = []
        self.curves: dict[str, list[float]] = {"train_nfe": [], "loss": []}

    def step(self, opt: torch.optim.Optimizer, it: int, task: torch.Tensor,
             value: torch.Tensor | None, nfe: int) -> None:
        loss = task if value is None else task + value
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite loss at iteration {it} (task {float(task)}, "
                               f"regulariser {None if value is None else float(value)})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.nfes.append(nfe)
        self.window.append(float(loss.detach()))
        if (it + 1) % self.eval_every == 0 or it + 1 == self.iterations:
            self.curves["train_nfe"].append(sum(self.nfes[-len(self.window):]) / len(self.window))
            self.curves["loss"].append(sum(self.window) / len(self.window))
            self.window = []

    @property
    def mean_nfe(self) -> float:
        return sum(self.nfes) / len(self.nfes)


def _clock(device: torch.device | str) -> Any:
    """The training-time clock: CPU seconds on the CPU, wall seconds on an accelerator.

    A unit runs on one thread, so its CPU seconds leave out the load of a shared machine that
    wall time would measure; on a GPU the CPU clock would miss the device's work.
    """
    return time.process_time if torch.device(device).type == "cpu" else time.perf_counter

def train_arm(config: NdeSolverRegConfig, setting: str, arm: str, seed: int, lambda0: float,
              device: torch.device) -> dict[str, Any]:
    """Train one arm on one seed; the metrics and curves of the unit."""
    if setting == "spirals":
        return train_latent_ode(config, arm, seed, lambda0, device)
    data = {k: v.to(device) for k, v in _data(config, setting, seed).items()}
    func, head = _build(config, setting, seed, device)
    params = [*func.parameters(), *head.parameters()]
    g = torch.Generator().manual_seed(seed + 7919)
    if setting == "circles":
        iterations, lr = config.steps, config.lr
        batches_per_epoch, batch = 1, len(data["xtr"])
    else:
        batch = config.digits_batch
        batches_per_epoch = math.ceil(len(data["xtr"]) / batch)
        iterations, lr = config.digits_epochs * batches_per_epoch, config.digits_lr
    opt = torch.optim.Adam(params, lr=lr)
    reg, aggregate = REG_OF_ARM.get(arm, ("none", "sum"))
    penalty = SolverHeuristicsPenalty(reg, aggregate)
    schedule = ExponentialAnnealing(lambda0, lambda0 / config.lambda_decay, iterations)
    steer = SteerEndTime(1.0, config.steer_b, generator=g) if arm == "steer" else None
    tay = TaylorModeRegularizedDynamics(func, config.taynode_order) if arm == "taynode" else None
    options = {"max_num_steps": 20000, "differentiate_dt": arm == "ernode_dt"}
    log = _TrainingLog(config.eval_every, iterations)
    clock = _clock(device)
    started = clock()
    for it in range(iterations):
        if batches_per_epoch == 1:
            xb, yb = data["xtr"], data["ytr"]
        else:
            if it % batches_per_epoch == 0:
                order = torch.randperm(len(data["xtr"]), generator=g).to(device)
            idx = order[(it % batches_per_epoch) * batch:(it % batches_per_epoch + 1) * batch]
            xb, yb = data["xtr"][idx], data["ytr"][idx]
        t1 = steer.sample() if steer is not None else 1.0
        t = torch.tensor([0.0, t1], dtype=torch.float64)
        z, r, sol = _solve_arm(config, setting, func, tay, penalty, xb, t, options)
        if tay is not None:
            value = config.taynode_lambda * r
        else:
            value = schedule(it) * r if reg != "none" else None
        log.step(opt, it, F.cross_entropy(head(z), yb), value, sol.trace.nfe)
    seconds = clock() - started
    test = _evaluate(config, setting, func, head, data["xte"], data["yte"])
    val = _evaluate(config, setting, func, head, data["xva"], data["yva"])
    epochs = iterations / batches_per_epoch
    metrics = {
        "test_acc": test["acc"], "test_nfe": test["nfe"], "log_test_nfe": math.log(test["nfe"]),
        "test_accepted": test["accepted"], "test_rejected": test["rejected"],
        "val_acc": val["acc"], "val_score": val["acc"], "val_nfe": val["nfe"],
        "train_nfe": log.mean_nfe, "train_seconds": seconds,
        "log_train_seconds": math.log(seconds), "seconds_per_epoch": seconds / epochs,
        "lambda0": lambda0,
    }
    return {"metrics": metrics, "curves": log.curves}


class LatentODE(nn.Module):
    """Chen et al.'s latent ODE: backward GRU encoder → q(z₀), MLP vector field, decoder.

    The GRU reads ``[x·m, m, Δt]`` (m the observed mask, Δt the gap to the next grid time) and
    keeps its state where a point is not observed.
    """

    def __init__(self, latent: int, hidden: int, obs_dim: int = 2):
        super().__init__()
        for name, value in (("latent", latent), ("hidden", hidden), ("obs_dim", obs_dim)):
            check_positive_int(name, value)
        self.obs_dim = obs_dim
        self.gru = nn.GRUCell(obs_dim + 2, hidden)
        self.to_q = nn.Linear(hidden, 2 * latent)
        self.func = Dynamics(latent, hidden, depth=2)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(),
                                     nn.Linear(hidden, obs_dim))

    def encode(self, times: torch.Tensor, values: torch.Tensor, observed: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and log-variance of q(z₀ | observed points), each (n, latent).

        ``times`` (m,) strictly increasing, ``values`` (n, m, obs_dim), ``observed`` (n, m)
        bool; unobserved values never enter the encoding.
        """
        _check_series(times, values, observed, self.obs_dim)
        mask = observed.to(values.dtype)
        h = values.new_zeros(len(values), self.gru.hidden_size)
        gaps = torch.cat([times[1:] - times[:-1], times.new_zeros(1)])
        for j in reversed(range(len(times))):
            m = mask[:, j:j + 1]
            step = torch.cat([values[:, j] * m, m, gaps[j].expand(len(values), 1)], dim=1)
            h = m * self.gru(step, h) + (1 - m) * h
        mean, logvar = self.to_q(h).chunk(2, dim=1)
        return mean, logvar


def _check_series(times: torch.Tensor, values: torch.Tensor, observed: torch.Tensor,
                  obs_dim: int) -> None:
    if times.dim() != 1 or len(times) < 2 or not bool((times[1:] > times[:-1]).all()):
        raise ValueError(f"times must be a strictly increasing 1-d grid of ≥ 2 points, got shape "
                         f"{tuple(times.shape)}; pass the shared observation grid")
    if values.dim() != 3 or values.shape[1:] != (len(times), obs_dim):
        raise ValueError(f"values must have shape (n, {len(times)}, {obs_dim}) (trajectories, "
                         f"times, observation dims), got {tuple(values.shape)}")
    if observed.dtype != torch.bool or observed.shape != values.shape[:2]:
        raise ValueError(f"observed must be a bool mask of shape {tuple(values.shape[:2])}, got "
                         f"{observed.dtype} {tuple(observed.shape)}")


def interpolation_mse(pred: torch.Tensor, values: torch.Tensor, observed: torch.Tensor
                      ) -> torch.Tensor:
    """Mean squared error over the held-out (unobserved) points and observation dims.

    ``pred`` and ``values`` (n, m, d), ``observed`` (n, m) bool; the observed points (the
    encoder's input) are left out, as in Rubanova et al.'s interpolation metric.
    """
    if pred.shape != values.shape or pred.dim() != 3:
        raise ValueError(f"pred must match values' shape (n, m, d), got {tuple(pred.shape)} and "
                         f"{tuple(values.shape)}")
    if observed.dtype != torch.bool or observed.shape != values.shape[:2]:
        raise ValueError(f"observed must be a bool mask of shape {tuple(values.shape[:2])}, got "
                         f"{observed.dtype} {tuple(observed.shape)}")
    held = (~observed).to(pred.dtype).unsqueeze(-1)
    if not bool(held.any()):
        raise ValueError("observed marks every point observed: no held-out point to "
                         "interpolate; hold some out")
    return ((pred - values) ** 2 * held).sum() / (held.sum() * values.shape[-1])


def _spirals(config: NdeSolverRegConfig, seed: int, device: torch.device):
    from regzoo.data.spirals import irregular_spirals

    n = config.spirals_n_train + config.spirals_n_val + config.spirals_n_test
    data = irregular_spirals(n, seed=seed)
    a, b = config.spirals_n_train, config.spirals_n_train + config.spirals_n_val
    parts = {"train": torch.arange(a), "val": torch.arange(a, b), "test": torch.arange(b, n)}
    out = {}
    for name, idx in parts.items():
        part = data.subset(idx)
        out[name] = (part.times.to(device), part.values.to(device), part.observed.to(device))
    return out


def train_latent_ode(config: NdeSolverRegConfig, arm: str, seed: int, lambda0: float,
                     device: torch.device) -> dict[str, Any]:
    """Task C: a latent ODE on irregularly sampled spirals; interpolation MSE on held-out points.

    Loss: Gaussian NLL (σ = ``spirals_sigma``) of the observed points, averaged, plus the KL of
    q(z₀) per observed point; the regulariser reads the latent solve's trace. STEER stretches the
    training time grid by T/t₁ (our adaptation: observation times are fixed).
    """
    data = _spirals(config, seed, device)
    torch.manual_seed(seed)
    model = LatentODE(config.spirals_latent, config.spirals_hidden).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.spirals_lr)
    g = torch.Generator().manual_seed(seed + 7919)
    reg, aggregate = REG_OF_ARM.get(arm, ("none", "sum"))
    penalty = SolverHeuristicsPenalty(reg, aggregate)
    schedule = ExponentialAnnealing(lambda0, lambda0 / config.lambda_decay, config.spirals_steps)
    steer = SteerEndTime(1.0, config.steer_b, generator=g) if arm == "steer" else None
    tay = (TaylorModeRegularizedDynamics(model.func, config.taynode_order)
           if arm == "taynode" else None)
    options = {"max_num_steps": 20000, "differentiate_dt": arm == "ernode_dt"}
    times, values, observed = data["train"]
    n_train = len(values)
    log = _TrainingLog(config.eval_every, config.spirals_steps)
    clock = _clock(device)
    started = clock()
    for it in range(config.spirals_steps):
        idx = torch.randperm(n_train, generator=g)[:config.spirals_batch].to(device)
        xb, mb = values[idx], observed[idx]
        mean, logvar = model.encode(times, xb, mb)
        eps = torch.randn(mean.shape, generator=g).to(device)
        z0 = mean + (0.5 * logvar).exp() * eps
        t = times.double() * (steer.sample() if steer is not None else 1.0)
        if tay is not None:
            sol = solve(tay, tay.augment(z0), t, rtol=config.rtol, atol=config.atol,
                        method=config.method, options=options)
            z = sol.ys[..., :-1]  # the latent path; R_K is the last column at t₁
            value = config.taynode_lambda * tay.split(sol.ys[-1])[1]
        else:
            sol = solve(model.func, z0, t, rtol=config.rtol, atol=config.atol,
                        method=config.method, options=options)
            z = sol.ys
            value = schedule(it) * penalty(sol.trace) if reg != "none" else None
        pred = model.decoder(z).transpose(0, 1)  # (batch, times, 2)
        m = mb.to(pred.dtype).unsqueeze(-1)
        nll = 0.5 * ((pred - xb) ** 2 * m).sum() / (m.sum() * 2) / config.spirals_sigma**2
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum() / m.sum()
        log.step(opt, it, nll + kl, value, sol.trace.nfe)
    seconds = clock() - started

    @torch.no_grad()
    def evaluate(split: str) -> dict[str, float]:
        tt, xx, mm = data[split]
        mean, _ = model.encode(tt, xx, mm)
        sol = solve(model.func, mean, tt.double(), rtol=config.rtol, atol=config.atol,
                    method=config.method, options={"max_num_steps": 20000})
        pred = model.decoder(sol.ys).transpose(0, 1)
        mse = float(interpolation_mse(pred, xx, mm))
        return {"mse": mse, "nfe": float(sol.trace.nfe),
                "accepted": float(sol.trace.n_accepted), "rejected": float(sol.trace.n_rejected)}

    test, val = evaluate("test"), evaluate("val")
    epochs = config.spirals_steps * config.spirals_batch / n_train
    metrics = {
        "test_mse": test["mse"], "log_test_mse": math.log(test["mse"]), "test_nfe": test["nfe"],
        "log_test_nfe": math.log(test["nfe"]),
        "test_accepted": test["accepted"], "test_rejected": test["rejected"],
        "val_mse": val["mse"], "val_score": -val["mse"], "val_nfe": val["nfe"],
        "train_nfe": log.mean_nfe, "train_seconds": seconds,
        "log_train_seconds": math.log(seconds), "seconds_per_epoch": seconds / epochs,
        "lambda0": lambda0,
    }
    return {"metrics": metrics, "curves": log.curves}


def select_lambda(config: NdeSolverRegConfig, setting: str, arm: str, device: torch.device,
                  base: dict[str, float]) -> dict[str, Any]:
    """λ₀ for ``arm`` on the search seed's validation split (see the module docstring).

    ``base`` holds the unregularised model's metrics on the same search seed.
    """
    scores = {}
    grid = config.lambda_grid_of(setting)
    for lam in grid:
        m = train_arm(config, setting, arm, config.search_seed, lam, device)["metrics"]
        scores[str(lam)] = {"val_score": m["val_score"], "val_nfe": m["val_nfe"]}
    # accuracy within val_tolerance (classification), or MSE within mse_tolerance × (spirals)
    slack = (config.mse_tolerance * abs(base["val_score"]) if setting == "spirals"
             else config.val_tolerance)
    ok = [lam for lam in grid
          if scores[str(lam)]["val_score"] >= base["val_score"] - slack]
    if ok:
        chosen = min(ok, key=lambda lam: (scores[str(lam)]["val_nfe"], lam))
    else:
        chosen = max(grid, key=lambda lam: (scores[str(lam)]["val_score"], -lam))
    return {"lambda0": chosen, "scores": scores, "unreg_val_score": base["val_score"],
            "unreg_val_nfe": base["val_nfe"]}


class NdeSolverRegReproduction(Reproduction):
    """Unregularised vs ERNODE/SRNODE/combined vs STEER/TayNODE neural ODEs, seeds paired."""

    slug = "nde_solver_reg"
    config_type = NdeSolverRegConfig
    title = "Solver-heuristics regularisation of neural ODEs (ERNODE/SRNODE)"
    plot_curves = (("train_nfe", "training NFE (forward)"), ("loss", "training loss (task + λ·R)"))
    arm_labels = {"unreg": "unregularised", "ernode": "ERNODE", "srnode": "SRNODE",
                  "combined": "ERNODE+SRNODE", "steer": "STEER", "taynode": "TayNODE",
                  "ernode_mean": "ERNODE (mean)", "ernode_dt": "ERNODE (dt differentiated)"}
    table_metrics = ("test_acc", "test_mse", "test_nfe", "train_nfe", "test_accepted",
                     "test_rejected", "seconds_per_epoch", "lambda0")
    unit_axes = ("seeds", "arms", "settings")
    extra_row_label = "test NFE vs quality (per seed)"

    def curve_x(self, config: NdeSolverRegConfig, setting: str):
        return f"iteration / {config.eval_every}", None, "linear"

    def units(self, config: NdeSolverRegConfig) -> list[Unit]:
        # TayNODE first: the longest units start first and the short ones fill in.
        return [Unit(s, arm, seed) for s in config.settings for seed in config.seeds
                for arm in sorted(config.arms_of(s), key=lambda a: a != "taynode")]

    def _lambda(self, config: NdeSolverRegConfig, unit: Unit, env: UnitEnv) -> float:
        if unit.arm not in REG_OF_ARM:
            return 0.0
        searched = "ernode" if unit.arm == "ernode_dt" else unit.arm

        def search() -> dict[str, Any]:
            base = shared_once(env.workdir, f"search_{unit.setting}_unreg",
                               lambda: train_arm(config, unit.setting, "unreg",
                                                 config.search_seed, 0.0, env.device)["metrics"])
            return select_lambda(config, unit.setting, searched, env.device, base)

        choice = shared_once(env.workdir, f"lambda_{unit.setting}_{searched}", search)
        return float(choice["lambda0"])

    def run_unit(self, config: NdeSolverRegConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        lambda0 = self._lambda(config, unit, env)
        out = train_arm(config, unit.setting, unit.arm, unit.seed, lambda0, env.device)
        return UnitResult(out["metrics"], out["curves"])

    def draw_extra_row(self, ax: Any, setting: str, result: dict[str, Any]) -> bool:
        """Test NFE against test accuracy (MSE for spirals), one point per seed and arm."""
        quality = "test_mse" if setting == "spirals" else "test_acc"
        records = [r for r in result["metrics"]["per_seed"] if r["setting"] == setting
                   and "test_nfe" in r["metrics"] and quality in r["metrics"]]
        if not records:
            return False
        for arm in dict.fromkeys(r["arm"] for r in records):
            points = [(r["metrics"]["test_nfe"], r["metrics"][quality]) for r in records
                      if r["arm"] == arm]
            ax.scatter(*zip(*points), label=self.arm_labels.get(arm, arm), s=14)
        ax.set_xlabel("test NFE")
        ax.set_ylabel(quality.replace("_", " "))
        ax.legend(fontsize=6)
        return True

    def timing(self, config: NdeSolverRegConfig, device: torch.device) -> dict[str, Any]:
        """One forward+backward training step per arm on the same fresh model and batch.

        At initialisation every arm but TayNODE takes the same steps, so the ratios isolate the
        regulariser's own cost (R_E, R_S: no extra evaluations) from the NFE it saves later;
        STEER at t₁ is the plain step and is not timed.
        """
        from regzoo.train.timing import time_steps

        data = _data(config, "circles", 0)
        xb, yb = data["xtr"].to(device), data["ytr"].to(device)
        t = torch.tensor([0.0, 1.0], dtype=torch.float64)
        steps, nfe = {}, {}
        for arm in (a for a in config.arms if a != "steer"):
            func, head = _build(config, "circles", 0, device)
            reg, aggregate = REG_OF_ARM.get(arm, ("none", "sum"))
            penalty = SolverHeuristicsPenalty(reg, aggregate)
            tay = (TaylorModeRegularizedDynamics(func, config.taynode_order)
                   if arm == "taynode" else None)
            options = {"max_num_steps": 20000, "differentiate_dt": arm == "ernode_dt"}

            def step(func=func, head=head, penalty=penalty, tay=tay, options=options,
                     arm=arm) -> None:
                z, r, sol = _solve_arm(config, "circles", func, tay, penalty, xb, t, options)
                extra = config.taynode_lambda * r if tay is not None else r
                (F.cross_entropy(head(z), yb) + extra).backward()
                nfe[arm] = sol.trace.nfe

            steps[arm] = step
        seconds = time_steps(steps, repeats=5, inner=1, warmup=1, device=device)
        out: dict[str, Any] = {"unreg_step_seconds": seconds["unreg"]}
        out.update({f"{arm}_over_unreg": seconds[arm] / seconds["unreg"] for arm in seconds
                    if arm != "unreg"})
        out.update({f"{arm}_nfe": float(v) for arm, v in nfe.items()})
        return out

    def claim(self, config: NdeSolverRegConfig) -> Claim:
        return Claim(
            statement="ERNODE needs at least 1.4× fewer test NFE than the unregularised neural "
            "ODE on concentric circles (dopri5, rtol = atol = "
            f"{config.rtol:g}; metric: log test NFE, margin ln 1.4, i.e. the geometric mean "
            "of the per-seed NFE ratios ≥ 1.4; paper: ≈1.4–2× fewer NFE at similar accuracy).",
            metric="log_test_nfe", setting="circles", method="ernode", baseline="unreg",
            margin=math.log(1.4), higher_is_better=False)

    def secondary_claims(self, config: NdeSolverRegConfig) -> list[Claim]:
        claims = [
            Claim(statement="ERNODE loses at most 1 point of test accuracy against the "
                  "unregularised model (the headline's second condition).",
                  metric="test_acc", setting="circles", method="ernode", baseline="unreg",
                  margin=-0.01, higher_is_better=True),
            Claim(statement="ERNODE's training time is at most 1.1× the unregularised "
                  "model's (metric: log training seconds, margin −ln 1.1).",
                  metric="log_train_seconds", setting="circles", method="ernode",
                  baseline="unreg", margin=-math.log(1.1), higher_is_better=False),
        ]
        if "taynode" in config.arms:
            claims.append(Claim(
                statement="TayNODE's training time is several (≥ 2) times the unregularised "
                "model's (metric: log training seconds, margin ln 2).",
                metric="log_train_seconds", setting="circles", method="taynode",
                baseline="unreg", margin=math.log(2.0), higher_is_better=True))
        for setting in (s for s in ("digits", "spirals") if s in config.settings):
            claims += self._task_bc_claims(config, setting)
        return claims

    def _task_bc_claims(self, config: NdeSolverRegConfig, setting: str) -> list[Claim]:
        """Task A's claims, with the same margins, on digits (B) or the latent ODE (C).

        Task C's quality condition is on the interpolation MSE: ERNODE's at most
        1 + ``mse_tolerance`` times the unregularised one (log test MSE, margin
        −ln(1 + mse_tolerance)), the tolerance the λ search uses.
        """
        task = {"digits": "Task B (digits, 64-d state)",
                "spirals": "Task C (latent ODE, irregular spirals)"}[setting]
        rtol, _ = config.tolerances(setting)
        claims = [Claim(
            statement=f"{task}: ERNODE needs at least 1.4× fewer test NFE than the "
            f"unregularised model (dopri5, rtol = atol = {rtol:g}; metric: log test NFE, "
            "margin ln 1.4).",
            metric="log_test_nfe", setting=setting, method="ernode", baseline="unreg",
            margin=math.log(1.4), higher_is_better=False)]
        if setting == "digits":
            claims.append(Claim(
                statement=f"{task}: ERNODE loses at most 1 point of test accuracy against the "
                "unregularised model.",
                metric="test_acc", setting=setting, method="ernode", baseline="unreg",
                margin=-0.01, higher_is_better=True))
        else:
            tol = 1.0 + config.mse_tolerance
            claims.append(Claim(
                statement=f"{task}: ERNODE's interpolation MSE is at most {tol:g}× the "
                f"unregularised model's (metric: log test MSE, margin −ln {tol:g}).",
                metric="log_test_mse", setting=setting, method="ernode", baseline="unreg",
                margin=-math.log(tol), higher_is_better=False))
        claims.append(Claim(
            statement=f"{task}: ERNODE's training time is at most 1.1× the unregularised "
            "model's (metric: log training seconds, margin −ln 1.1).",
            metric="log_train_seconds", setting=setting, method="ernode", baseline="unreg",
            margin=-math.log(1.1), higher_is_better=False))
        if "taynode" in config.arms_of(setting):
            claims.append(Claim(
                statement=f"{task}: TayNODE's training time is several (≥ 2) times the "
                "unregularised model's (metric: log training seconds, margin ln 2).",
                metric="log_train_seconds", setting=setting, method="taynode",
                baseline="unreg", margin=math.log(2.0), higher_is_better=True))
        return claims

    def note(self, config: NdeSolverRegConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        parts = []
        for setting in config.settings:
            rows = []
            quality = "test_mse" if setting == "spirals" else "test_acc"
            for arm in config.arms:
                if arm not in aggregate.get(setting, {}):
                    continue
                lam = (f", λ₀ {summary_text(aggregate, setting, arm, 'lambda0')}"
                       if arm in REG_OF_ARM else "")
                rows.append(
                    f"{self.arm_labels[arm]}: {quality.removeprefix('test_')} "
                    f"{summary_text(aggregate, setting, arm, quality)}, test NFE "
                    f"{summary_text(aggregate, setting, arm, 'test_nfe')}, training NFE "
                    f"{summary_text(aggregate, setting, arm, 'train_nfe')}, s/epoch "
                    f"{summary_text(aggregate, setting, arm, 'seconds_per_epoch')}{lam}")
            parts.append(f"{setting} (mean ± SE over {len(config.seeds)} seeds): "
                         + "; ".join(rows) + ".")
        per_seed = claim["observed"]["per_seed"]
        ratios = ", ".join(f"seed {s}: {math.exp(d):.2f}×" for s, d in per_seed.items()
                           if d is not None and math.isfinite(d))
        bc = [s for s in ("digits", "spirals") if s in config.settings]
        tasks_bc = (
            f" Tasks B and C ({', '.join(bc)}) run the arms {', '.join(config.arms_of(bc[0]))} "
            "and carry secondary claims of the same shape (their per-seed effects are in the "
            "claims below): digits at rtol = atol = "
            f"{config.digits_rtol:g} (official MNIST script: 1.4e-8) with "
            f"{config.digits_epochs} epochs of minibatch Adam; the latent ODE on irregular "
            f"spirals at rtol = atol = {config.rtol:g}, {config.spirals_steps} Adam steps, its "
            f"quality the held-out interpolation MSE (claim: ERNODE's ≤ "
            f"{1 + config.mse_tolerance:g}× the unregularised)." if bc else
            " Tasks B (digits) and C (latent ODE on spirals) are reachable with --set "
            "settings=... but not in this run.")
        return (
            f"Per-seed unregularised/ERNODE test-NFE ratios (circles): {ratios or '–'}. "
            + " ".join(parts)
            + tasks_bc
            + f" λ₀ chosen per regularised arm and setting on search seed {config.search_seed}'s "
            f"validation split from {{{', '.join(f'{v:g}' for v in config.lambda_grid)}}} "
            f"on circles and {{{', '.join(f'{v:g}' for v in config.task_bc_lambda_grid)}}} on "
            "Tasks B and C (a wider grid, fixed before the full run; see the module "
            "docstring): the lowest validation NFE within "
            f"{config.val_tolerance:g} accuracy of the "
            f"unregularised model, spirals: validation MSE at most "
            f"{1 + config.mse_tolerance:g}× its, else the best-scoring λ₀; annealed to "
            f"λ₀/{config.lambda_decay:g}; TayNODE's λ = "
            f"{config.taynode_lambda:g} (K = {config.taynode_order}) is not tuned. Setting "
            "changes from the paper: a 2-d toy task as the headline, 8×8 digits instead of "
            "MNIST and procedural spirals instead of PhysioNet (the paper's MNIST, PhysioNet "
            "and spiral SDE are beyond a CPU budget), regzoo's dopri5 with torchdiffeq's "
            "controller instead of OrdinaryDiffEq's Tsit5, Adam. Training times are the CPU "
            "seconds of each unit's single-threaded process (time.process_time; wall time on "
            "a GPU), so the load of a shared machine does not enter them as wall clock would; "
            "the benchmark's interleaved ratios are the other overhead measure. The spec's "
            "pilot (constant λ) saw the NFE effect change sign between seeds."
        )


REPRODUCTION = NdeSolverRegReproduction()
