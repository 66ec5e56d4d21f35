"""What a reproduction declares: its units of work, its claim, and how to run one unit.

A reproduction module ``regzoo.repro.<slug>`` defines a :class:`Reproduction` subclass and binds
an instance of it to the module-level name ``REPRODUCTION``. The runner
(:mod:`regzoo.repro.runner`) does the rest: seeds, parallel processes, resume, provenance,
timing, artefacts. Claims and the verdict rule live in :mod:`regzoo.repro.claims`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from regzoo.repro.claims import Claim
from regzoo.repro.config import ReproConfig
from regzoo.train.distributed import DistributedContext


@dataclass(frozen=True)
class Unit:
    """One independent training run: a setting (e.g. a noise level), an arm, a seed."""

    setting: str
    arm: str
    seed: int

    @property
    def id(self) -> str:
        """File-name-safe identifier, unique within a reproduction."""
        return f"{self.setting}__{self.arm}__s{self.seed}"


@dataclass
class UnitEnv:
    """What the runner hands a unit: device/process context, checkpoint file, logging.

    ``workdir`` is the run's output folder, for work several units share (a hyperparameter
    search done once per run): guard it with :func:`shared_once`.
    """

    context: DistributedContext
    checkpoint_path: str
    resume: bool
    log: Callable[[dict[str, float]], None]
    progress: bool | None
    workdir: str

    @property
    def device(self) -> torch.device:
        """Where the unit's models and tensors live (the runner's ``--device``)."""
        return self.context.device


def summary_mean(aggregate: dict[str, Any], setting: str, arm: str, metric: str
                 ) -> float | None:
    """The mean over seeds of ``metric`` for ``arm`` in ``setting``; None when not measured."""
    summary = aggregate.get(setting, {}).get(arm, {}).get(metric)
    return None if summary is None else summary["mean"]


def summary_text(aggregate: dict[str, Any], setting: str, arm: str, metric: str,
                 fmt: str = ".3g") -> str:
    """``"mean ± SE"`` of ``metric`` for a note ("–" when not measured; no SE from one seed)."""
    summary = aggregate.get(setting, {}).get(arm, {}).get(metric)
    if summary is None or summary["mean"] is None:
        return "–"
    se = summary.get("se")
    plain = se is None or se != se
    return f"{summary['mean']:{fmt}}" + ("" if plain else f" ± {se:{fmt}}")


def shared_once(workdir: str, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``compute`` once per run folder and cache its JSON result as ``<workdir>/<name>.json``.

    Units in parallel processes take a file lock, so the first computes and the others wait and
    read; a resumed run reuses the cached file.
    """
    import fcntl
    import json
    from pathlib import Path

    cache = Path(workdir) / f"{name}.json"
    with open(Path(workdir) / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cache.exists():
            return json.loads(cache.read_text())
        value = compute()
        from regzoo.train.checkpoint import atomic_write_bytes

        atomic_write_bytes(cache, json.dumps(value).encode())
        return value


@dataclass
class UnitResult:
    """A finished unit: scalar metrics and per-epoch curves."""

    metrics: dict[str, float]
    curves: dict[str, list[float]]


class Reproduction(abc.ABC):
    """A paper's headline experiment at CPU scale."""

    slug: ClassVar[str]
    config_type: ClassVar[type[ReproConfig]]
    title: ClassVar[str]
    plot_curves: ClassVar[tuple[tuple[str, str], ...]]
    """``(curve name, axis label)`` per plot row; the plot has one column per setting."""
    curve_scales: ClassVar[dict[str, str]] = {}
    """y-axis scale of a plot row by curve name (``"log"``); rows not named are linear."""
    arm_labels: ClassVar[dict[str, str]] = {}
    table_metrics: ClassVar[tuple[str, ...]] = ()
    extra_row_label: ClassVar[str] = ""
    """Label of an extra plot row drawn by :meth:`draw_extra_row` (empty: no extra row)."""
    unit_axes: ClassVar[tuple[str, ...]] = ("seeds",)
    """Config fields that only add units (seeds, arms, settings): ``--resume`` may extend them,
    reusing every finished unit; any other change of config needs a new run."""

    @abc.abstractmethod
    def units(self, config: Any) -> list[Unit]:
        """Every independent run of this config, in a stable order."""

    @abc.abstractmethod
    def run_unit(self, config: Any, unit: Unit, env: UnitEnv) -> UnitResult:
        """Train and evaluate one unit; must be deterministic given the unit's seed."""

    @abc.abstractmethod
    def claim(self, config: Any) -> Claim:
        """The headline comparison this config checks."""

    def secondary_claims(self, config: Any) -> list[Claim]:
        """Further claims of the paper checked by the same units (default: none).

        They are evaluated and reported like the headline claim, but the method's status in
        the registry is the headline verdict alone.
        """
        return []

    def derived_arms(self, config: Any,
                     records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Extra arms computed from finished units without training (default: none)."""
        return []

    def curve_x(self, config: Any, setting: str) -> tuple[str, Sequence[float] | None, str]:
        """The x-axis of ``setting``'s curves: label, values (``None``: 1, 2, …) and scale.

        Curves over something other than epochs (a pilot budget, a width) say so here; the
        scale is ``"linear"`` or ``"log"``.
        """
        return "epoch", None, "linear"

    def draw_extra_row(self, ax: Any, setting: str, result: dict[str, Any]) -> bool:
        """Draw ``setting``'s panel of the extra plot row on ``ax``; False leaves it empty."""
        return False

    def timing(self, config: Any, device: torch.device) -> dict[str, Any]:
        """Method step vs plain step, measured side by side in this process (default: none)."""
        return {}

    def note(self, config: Any, claim: dict[str, Any], aggregate: dict[str, Any]) -> str:
        """Free text for the claim: what the numbers mean, what was tried.

        ``aggregate`` is ``{setting: {arm: {metric: {"mean", "se", ...}}}}``.
        """
        return ""
