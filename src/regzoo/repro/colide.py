"""CoLiDE at CPU scale: two claims of the paper on simulated linear SEMs (spec §5).

Data (:func:`regzoo.data.sem.simulate_linear_sem`, seeded per unit): Gaussian noise, n = 1000,
weights U(±[0.5, 2]), ER graphs. Every arm gets the same data for a given setting and seed.

* ``ev_var<σ²>`` settings (claim A, "λ decoupled from the noise scale", paper §4 and abstract):
  d = 20, ER2, equal noise variance σ² ∈ {0.25, 1, 4, 16, 100}; λ fixed for every σ² (CoLiDE
  0.05, the official ``main.py``; DAGMA 0.02, the l2-loss value of its example notebook). Arms:
  CoLiDE-EV and DAGMA (both DAGMA configurations below). The derived setting ``noise_scale``
  holds, per seed and arm, the spread max_σ² SHD − min_σ² SHD and the SHD-vs-σ² curve.
* ``nv_er4_d<d>`` (claim B, the headline, paper §5): d = 50, ER4, heteroscedastic noise
  variances U(0.5, 10). Arms: CoLiDE-NV, CoLiDE-EV, DAGMA (both configurations).

CoLiDE runs the official ``main.py`` path (T = 4, s = (1, .9, .8, .7), μ₀ = 1, μ factor 0.1, 2·10⁴
warm and 7·10⁴ final Adam iterations, lr 3e-4). DAGMA (PyPI package ``dagma``, extra ``peers``, λ =
0.02 from ``examples/dagma_test.ipynb``, the example its README links; ``fit``'s own default is
0.03) runs twice: ``dagma`` with the package's own ``fit`` defaults (T = 5, s = (1, .9, .8, .7, .6),
3·10⁴ warm and 6·10⁴ final iterations), the baseline of the claims, and ``dagma_colide_path`` on
CoLiDE's path and budget. The second is a diagnostic: on seed 0 of the official CoLiDE simulator it
gave SHD 65 against 24 with the package defaults (d = 50, ER4, NV), so a comparison on CoLiDE's path
alone would flatter CoLiDE. Every arm gets the same post-processing (threshold 0.3, then acyclic).
No λ is tuned per
arm or per setting: the paper's message is that CoLiDE's λ needs no retuning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from regzoo.data.sem import count_accuracy, simulate_linear_sem
from regzoo.methods.colide import CoLiDE, to_dag
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import Claim, Reproduction, Unit, UnitEnv, UnitResult

ARMS = ("colide_nv", "colide_ev", "dagma", "dagma_colide_path")
NOISE_SCALE = "noise_scale"
_BAR_COLOURS = {"colide_ev": "C0", "dagma": "C1", "dagma_colide_path": "C2", "colide_nv": "C3"}
"""The line colours of the noise-scale rows (display order), so both rows read alike."""


@dataclasses.dataclass(frozen=True)
class CoLiDEReproConfig(ReproConfig):
    """Settings of the CoLiDE reproduction; presets ``tiny``, ``quick``, ``full``."""

    n: int = 1000
    scale_d: int = 20
    scale_degree: int = 2
    scale_vars: tuple[float, ...] = (0.25, 1.0, 4.0, 16.0, 100.0)
    scale_arms: tuple[str, ...] = ("colide_ev", "dagma", "dagma_colide_path")
    het_d: int = 50
    het_degree: int = 4
    het_arms: tuple[str, ...] = ARMS
    lambda_colide: float = 0.05
    lambda_dagma: float = 0.02
    dagma_T: int = 5
    dagma_s: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6)
    dagma_warm_iter: int = 30000
    dagma_max_iter: int = 60000
    T: int = 4
    s: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7)
    warm_iter: int = 20000
    max_iter: int = 70000
    lr: float = 3e-4
    threshold: float = 0.3
    positive_fields = ("n", "scale_d", "het_d", "T", "warm_iter", "max_iter", "lr", "dagma_T",
                       "dagma_warm_iter", "dagma_max_iter")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("scale_arms", "het_arms"):
            arms = getattr(self, name)
            if not arms or any(a not in ARMS for a in arms):
                raise ValueError(f"{name} must be a non-empty subset of {ARMS}, got {arms}")
        if {"colide_ev", "dagma"} - set(self.scale_arms):
            raise ValueError("scale_arms must include colide_ev and dagma (claim A compares them)")
        if {"colide_nv", "colide_ev", "dagma"} - set(self.het_arms):
            raise ValueError(f"het_arms must include colide_nv, colide_ev and dagma (claim B "
                             f"compares them), got {self.het_arms}")
        if len(self.scale_vars) < 2 or min(self.scale_vars) <= 0:
            raise ValueError(f"scale_vars needs at least two positive variances, got "
                             f"{self.scale_vars}")

    @classmethod
    def tiny(cls) -> CoLiDEReproConfig:
        return cls(seeds=(0,), n=200, scale_d=5, scale_vars=(1.0, 16.0), het_d=6,
                   het_degree=2, warm_iter=200, max_iter=400, dagma_warm_iter=200,
                   dagma_max_iter=400)

    @classmethod
    def quick(cls) -> CoLiDEReproConfig:
        return cls(seeds=(0, 1, 2), scale_vars=(0.25, 1.0, 16.0, 100.0), het_d=20)

    @classmethod
    def full(cls) -> CoLiDEReproConfig:
        return cls(seeds=(0, 1, 2, 3, 4))


def _var_setting(var: float) -> str:
    return f"ev_var{var:g}"


def _het_setting(config: CoLiDEReproConfig) -> str:
    return f"nv_er{config.het_degree}_d{config.het_d}"


def fit_arm(arm: str, X: np.ndarray, config: CoLiDEReproConfig,
            device: torch.device | str = "cpu") -> tuple[np.ndarray, int]:
    """Run one arm on ``X``; return its post-processed DAG and its Adam iteration count.

    CoLiDE computes on ``device``; DAGMA (the peer package) is numpy code on the CPU and does not
    report its iteration count (returned as −1).
    """
    if arm in ("dagma", "dagma_colide_path"):
        try:
            from dagma.linear import DagmaLinear
        except ImportError:
            raise ImportError("the DAGMA arm needs the peer package: pip install "
                              "'regzoo[peers]' (or pip install dagma)") from None
        # dagma centres X in place and edits its s list: give it copies; silence its tqdm bar.
        own = arm == "dagma"  # the package's defaults, else CoLiDE's path and budget
        with contextlib.redirect_stderr(io.StringIO()):
            W = DagmaLinear("l2").fit(
                X.copy(), lambda1=config.lambda_dagma, w_threshold=0.0, lr=config.lr,
                T=config.dagma_T if own else config.T,
                s=list(config.dagma_s if own else config.s),
                warm_iter=config.dagma_warm_iter if own else config.warm_iter,
                max_iter=config.dagma_max_iter if own else config.max_iter)
        return to_dag(W, config.threshold), -1
    est = CoLiDE(arm.removeprefix("colide_"), config.lambda_colide, T=config.T, s=config.s,
                 warm_iter=config.warm_iter, max_iter=config.max_iter, lr=config.lr,
                 threshold=config.threshold, device=device).fit(X)
    return est.adjacency_, est.n_iter_


class CoLiDEReproduction(Reproduction):
    """CoLiDE-EV/NV vs DAGMA: fixed λ across noise scales, and heteroscedastic ER4 graphs."""

    slug = "colide"
    config_type = CoLiDEReproConfig
    title = "CoLiDE: Concomitant Linear DAG Estimation"
    plot_curves = (("shd_vs_var", "SHD"), ("fdr_vs_var", "FDR"))
    arm_labels = {"colide_nv": "CoLiDE-NV", "colide_ev": "CoLiDE-EV", "dagma": "DAGMA",
                  "dagma_colide_path": "DAGMA, CoLiDE's path"}
    unit_axes = ("seeds", "het_arms", "scale_arms")
    table_metrics = ("shd", "tpr", "fdr", "nnz", "fit_seconds", "shd_spread")
    extra_row_label = "heteroscedastic: SHD"

    def curve_x(self, config: CoLiDEReproConfig,
                setting: str) -> tuple[str, Sequence[float] | None, str]:
        return "noise variance σ²", config.scale_vars, "log"

    def units(self, config: CoLiDEReproConfig) -> list[Unit]:
        # The long heteroscedastic fits first, so the short ones fill the processes at the end.
        het = [Unit(_het_setting(config), arm, seed) for seed in config.seeds
               for arm in config.het_arms]
        scale = [Unit(_var_setting(v), arm, seed) for seed in config.seeds
                 for v in config.scale_vars for arm in config.scale_arms]
        return het + scale

    def run_unit(self, config: CoLiDEReproConfig, unit: Unit, env: UnitEnv) -> UnitResult:
        if unit.setting == _het_setting(config):
            sem = simulate_linear_sem(config.het_d, config.n, config.het_degree * config.het_d,
                                      variance="nv", seed=unit.seed)
        else:
            var = next(v for v in config.scale_vars if _var_setting(v) == unit.setting)
            sem = simulate_linear_sem(config.scale_d, config.n,
                                      config.scale_degree * config.scale_d, var=var,
                                      seed=unit.seed)
        started = time.perf_counter()
        with threadpool_limits(1):  # one BLAS thread, like the runner's one torch thread
            W, n_iter = fit_arm(unit.arm, sem.X, config, env.device)
        seconds = time.perf_counter() - started
        metrics = count_accuracy(sem.W, W)
        metrics.update({"fit_seconds": seconds, "n_iter": float(n_iter)})
        return UnitResult(metrics, {})

    def derived_arms(self, config: CoLiDEReproConfig,
                     records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for arm in config.scale_arms:
            for seed in config.seeds:
                by_var = {r["setting"]: r["metrics"] for r in records
                          if r["arm"] == arm and r["seed"] == seed}
                shd = [by_var[_var_setting(v)]["shd"] for v in config.scale_vars]
                fdr = [by_var[_var_setting(v)]["fdr"] for v in config.scale_vars]
                out.append({"setting": NOISE_SCALE, "arm": arm, "seed": seed,
                            "metrics": {"shd_spread": max(shd) - min(shd),
                                        "shd": float(np.mean(shd))},
                            "curves": {"shd_vs_var": shd, "fdr_vs_var": fdr}})
        return out

    def claim(self, config: CoLiDEReproConfig) -> Claim:
        return Claim(
            statement=f"CoLiDE-NV reaches a lower mean SHD than DAGMA on {config.het_d}-node "
            f"ER{config.het_degree} graphs with heteroscedastic noise variances U(0.5, 10), "
            f"n = {config.n} (paper §5: CoLiDE-NV has the lowest SHD of the continuous methods).",
            metric="shd", setting=_het_setting(config), method="colide_nv", baseline="dagma",
            margin=0.0, higher_is_better=False,
        )

    def secondary_claims(self, config: CoLiDEReproConfig) -> list[Claim]:
        variances = ", ".join(f"{v:g}" for v in config.scale_vars)
        return [
            Claim(
                statement="With λ fixed, CoLiDE-EV's SHD varies less across noise variances "
                f"σ² ∈ {{{variances}}} than DAGMA's (d = {config.scale_d}, "
                f"ER{config.scale_degree}; metric: max − min SHD over σ² per seed; paper §4: "
                "the concomitant score decouples λ from the noise level).",
                metric="shd_spread", setting=NOISE_SCALE, method="colide_ev",
                baseline="dagma", margin=0.0, higher_is_better=False,
            ),
            Claim(
                statement="On heteroscedastic data CoLiDE-NV reaches a lower SHD than CoLiDE-EV "
                "(paper §5: modelling one scale per node pays off).",
                metric="shd", setting=_het_setting(config), method="colide_nv",
                baseline="colide_ev", margin=0.0, higher_is_better=False,
            ),
        ]

    def draw_extra_row(self, ax: Any, setting: str, result: dict[str, Any]) -> bool:
        config = CoLiDEReproConfig.from_dict(result["run"]["config"])
        arms = result["metrics"]["aggregate"].get(_het_setting(config), {})
        names = [a for a in ARMS if a in arms]
        if setting != NOISE_SCALE or not names:
            return False
        means = [arms[a]["shd"]["mean"] for a in names]
        errors = [arms[a]["shd"]["se"] for a in names]
        ax.bar(range(len(names)), means, yerr=[0.0 if e is None or e != e else e for e in errors],
               color=[_BAR_COLOURS[a] for a in names], capsize=4)
        short = {"dagma_colide_path": "DAGMA\n(CoLiDE path)"}
        ax.set_xticks(range(len(names)), [short.get(a, self.arm_labels[a]) for a in names],
                      fontsize=8)
        ax.set_title(f"{_het_setting(config)} (mean ± SE)", fontsize=9)
        return True

    def timing(self, config: CoLiDEReproConfig, device: torch.device) -> dict[str, Any]:
        # Per-iteration cost on identical data and an identical fixed budget (4 stages × 1000
        # iterations; the convergence test never fires because checkpoint > budget).
        from dagma.linear import DagmaLinear

        sem = simulate_linear_sem(config.het_d, config.n, config.het_degree * config.het_d,
                                  variance="nv", seed=0)
        budget = {"T": 4, "warm_iter": 1000, "max_iter": 1000, "lr": config.lr}
        seconds = {}
        for arm in ("colide_ev", "colide_nv", "dagma"):
            best = float("inf")
            for _ in range(2):
                started = time.perf_counter()
                if arm == "dagma":
                    with contextlib.redirect_stderr(io.StringIO()):
                        DagmaLinear("l2").fit(sem.X.copy(), lambda1=config.lambda_dagma,
                                              s=list(config.s), checkpoint=10**9, **budget)
                else:
                    CoLiDE(arm.removeprefix("colide_"), config.lambda_colide, s=config.s,
                           checkpoint=10**9, **budget).fit(sem.X)
                best = min(best, time.perf_counter() - started)
            seconds[arm] = best / 4000
        return {"d": config.het_d, "dagma_iteration_seconds": seconds["dagma"],
                "colide_ev_over_dagma": seconds["colide_ev"] / seconds["dagma"],
                "colide_nv_over_dagma": seconds["colide_nv"] / seconds["dagma"]}

    def note(self, config: CoLiDEReproConfig, claim: dict[str, Any],
             aggregate: dict[str, Any]) -> str:
        het = aggregate.get(_het_setting(config), {})

        def cell(setting: dict[str, Any], arm: str, metric: str, digits: int = 1) -> str:
            value = setting.get(arm, {}).get(metric)
            if value is None:
                return "–"
            se = value["se"]
            plain = se is None or se != se
            return f"{value['mean']:.{digits}f}" + ("" if plain else f" ± {se:.{digits}f}")

        rows = "; ".join(
            f"{self.arm_labels[a]} SHD {cell(het, a, 'shd')}, TPR {cell(het, a, 'tpr', 2)}, "
            f"FDR {cell(het, a, 'fdr', 2)}, {cell(het, a, 'fit_seconds', 0)} s"
            for a in ARMS if a in het)
        scale = []
        for arm in config.scale_arms:
            values = [aggregate.get(_var_setting(v), {}).get(arm, {}).get("shd", {})
                      .get("mean") for v in config.scale_vars]
            scale.append(f"{self.arm_labels[arm]} "
                         + "/".join("–" if v is None else f"{v:.1f}" for v in values))
        spread = aggregate.get(NOISE_SCALE, {})
        effects = list(claim["observed"]["per_seed"].values())
        mean, se = claim["observed"]["mean_effect"], claim["observed"]["se"]
        side = "lower" if mean > 0 else "higher"
        headline = (
            f"CoLiDE-NV's SHD is {side} than DAGMA's by {abs(mean):.1f}"
            + ("" if se is None or se != se else f" ± {se:.1f}")
            + f" on average, lower on {sum(e > 0 for e in effects)} of {len(effects)} seeds. "
            "The spec's research with the official code at d ≤ 50 saw CoLiDE on par with "
            "DAGMA and CoLiDE-NV the least accurate variant; the paper's margins are reported "
            "to grow with d (up to 200 nodes), beyond this CPU budget. Fit times were measured "
            "while other jobs loaded the machine unevenly: compare the fixed-budget step-time "
            "ratios below, not the fit_seconds column. "
        )
        return headline + (
            f"Heteroscedastic ER{config.het_degree}, d = {config.het_d} (mean ± SE over "
            f"{len(config.seeds)} seeds): {rows}. Mean SHD at σ² = "
            + "/".join(f"{v:g}" for v in config.scale_vars) + " (d = "
            f"{config.scale_d}, ER{config.scale_degree}, fixed λ): " + "; ".join(scale)
            + "; SHD spread over σ² (max − min): " + ", ".join(
                f"{self.arm_labels[a]} {cell(spread, a, 'shd_spread')}"
                for a in config.scale_arms)
            + f". λ was not tuned per arm or setting (CoLiDE {config.lambda_colide:g}, DAGMA "
            f"{config.lambda_dagma:g}). DAGMA's path matters as much as its score: with the "
            "package defaults it is the baseline of the claims; on CoLiDE's shorter-s, "
            "longer-budget path it is reported as a diagnostic arm only. That choice was made "
            "after a first full run: with DAGMA on CoLiDE's path as the baseline the headline "
            "read reproduced (+37.4 ± 11.1 SHD); a cross-check against the spec's official-code "
            "anchors (official seed 0: DAGMA SHD 24 with its own defaults, 65 on CoLiDE's path) "
            "showed that configuration is not DAGMA as its authors run it. Cross-check outside "
            "this run: on seeds 0 and 1 of the official CoLiDE simulator (d = 50, ER4, NV) this "
            "implementation gives SHD 15/23 (EV) and 18/37 (NV), the official code 15/23 and "
            "17/37 (spec §3); its iterates match the official code's to 1e-12 on short runs. "
            "CoLiDE's λ is not exactly scale-free: scaling the data by c acts like λ/c (λ/c² "
            "for least squares); the tests check the exact identity (cX, cλ, μ₀/c) ↔ (X, λ, μ₀)."
        )


REPRODUCTION = CoLiDEReproduction()
