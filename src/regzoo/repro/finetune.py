"""The kit the fine-tuning reproductions share: SORSA, SaRA, BA-LoRA and mask tuning.

Each piece is defined here once:

- **Pretraining** (:func:`pretrained_mlp`): the source model, pretrained once per machine by
  :func:`regzoo.repro.common.pretrain_mlp` and cached as an asset (:mod:`regzoo.assets`).
- **Arms** (:data:`ARMS`, :func:`adapt`): how each arm adapts a model — full fine-tuning,
  LoRA, PiSSA, SORSA, BA-LoRA, SaRA, sparse masks, mask tuning — written once. A reproduction
  may name its arms as it likes and map them onto these.
- **Schedule** (:func:`warmup_cosine`): linear warm-up, then cosine decay to 0, per step.
- **Learning-rate search** (:func:`score_grid`, :func:`search_lr`): train at every value of a
  grid on the search seeds, score each run by a selection rule, keep the best; once per run.
- **Forgetting at matched accuracy** (:func:`source_at_matched_target`).

Randomness and devices: adapters are initialised where the model is — keep it on the CPU, so
a seed means the same initialisation on any device — and :func:`adapt` then moves the model to
the unit's device.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from regzoo import assets
from regzoo.adapters import AdapterHandle, apply_low_rank, apply_sparse
from regzoo.core.schedules import WarmupCosine
from regzoo.data.transfer import Task
from regzoo.methods.ba_lora import BALoRA
from regzoo.methods.rmt import MaskTuning
from regzoo.methods.sara import SaRA
from regzoo.methods.sorsa import SORSA
from regzoo.models.small import MLP
from regzoo.repro.protocol import shared_once
from regzoo.train.distributed import local_only

# --- pretraining --------------------------------------------------------------------------------


def pretrained_mlp(seed: int, *, hidden: Sequence[int], epochs: int, lr: float,
                   batch_size: int, task: Callable[[], Task] | None = None,
                   task_name: str | None = None, task_config: Mapping[str, Any] | None = None
                   ) -> tuple[MLP, float]:
    """The source model and its source test accuracy, from the user's asset cache.

    The MLP is pretrained by :func:`regzoo.repro.common.pretrain_mlp` (Adam, ``epochs`` epochs
    of batch ``batch_size`` at ``lr``, seeded by ``seed``) on the CPU. Without ``task`` it is
    the registered ``digits_mlp`` asset: the digits source task of
    :func:`regzoo.data.transfer.digits_transfer` ``(seed)``. With ``task`` (a reproduction's own
    source task) it is the asset ``task_name``; ``task_config`` must hold every setting
    ``task()`` depends on besides ``seed``, and the source of ``task``'s module joins the key.

    Returns the model on the CPU in eval mode; the caller's RNG state is left as it was.
    """
    recipe = {"seed": seed, "hidden": list(hidden), "epochs": epochs, "lr": lr,
              "batch_size": batch_size}
    if task is None:
        if task_name is not None or task_config:
            raise ValueError("task_name and task_config describe a task= of your own; pass "
                             "task= too, or leave all three out for the digits source task")
        payload = assets.get("digits_mlp", recipe)
    else:
        if task_name is None or task_name == "digits_mlp":
            raise ValueError(f"task_name must name your own task's asset (e.g. "
                             f"'ba_lora_nlu_mlp'), got {task_name!r}")
        clash = sorted(set(task_config or {}) & set(recipe))
        if clash:
            raise ValueError(f"task_config repeats the pretraining recipe's fields {clash}; "
                             "pass them as arguments")
        config = {**recipe, **(task_config or {})}
        payload = assets.cached(task_name, config,
                                lambda: assets.pretrain_mlp_payload(task(), config),
                                check=assets.load_mlp,
                                code=(getattr(task, "__module__", None) or "",))
    return assets.load_mlp(payload), float(payload["source_accuracy"])


# --- arms ---------------------------------------------------------------------------------------


def _full(model: nn.Module) -> None:
    """Full fine-tuning: no adapter; every parameter trains."""
    model.requires_grad_(True)


FAMILIES: dict[str, Callable[..., AdapterHandle | None]] = {
    "full": _full,
    "low_rank": apply_low_rank,
    "sorsa": SORSA.apply,
    "ba_lora": BALoRA.apply,
    "sara": SaRA.apply,
    "sparse": apply_sparse,
    "masks": MaskTuning.apply,
}
"""Each kind of adaptation and the function that applies it to a model in place."""


@dataclasses.dataclass(frozen=True)
class Arm:
    """An arm: the adapter family it applies and the options it pins."""

    family: str
    pinned: Mapping[str, Any] = dataclasses.field(default_factory=dict)


ARMS: dict[str, Arm] = {
    "full_ft": Arm("full"),
    "lora": Arm("low_rank", {"init": "lora"}),
    "pissa": Arm("low_rank", {"init": "pissa"}),
    "sorsa": Arm("sorsa", {"ortho_mode": "decoupled"}),
    "sorsa_loss": Arm("sorsa", {"ortho_mode": "loss"}),
    "sorsa_g0": Arm("sorsa", {"ortho_mode": "decoupled", "gamma": 0.0}),
    "ba_lora": Arm("ba_lora"),
    "sara": Arm("sara"),
    "sara_no_nuclear": Arm("sara", {"lambda_rank": 0.0}),
    "sara_no_progressive": Arm("sara", {"progressive_iter": None}),
    "smallest": Arm("sparse", {"rule": "smallest"}),
    "random": Arm("sparse", {"rule": "random"}),
    "largest": Arm("sparse", {"rule": "largest"}),
    "r_mt": Arm("masks", {"variant": "r_mt"}),
    "r_amt": Arm("masks", {"variant": "r_amt"}),
}
"""Arm name → how it adapts the model: full fine-tuning; LoRA and PiSSA (low-rank factors);
SORSA (paper's decoupled γ-step, the official trainer's loss order, γ = 0); BA-LoRA; SaRA and
its two ablations; sparse fine-tuning of the smallest, random or largest entries; mask tuning
without (R-MT) and with (R-AMT) gradient dropout."""

_INTERNAL = frozenset({"handle_cls", "choose"})


def _options(function: Callable[..., Any]) -> frozenset[str]:
    """The keyword options an adapter function takes (the model and internals excluded)."""
    parameters = inspect.signature(function).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY
                     and p.name not in _INTERNAL)


OPTIONS = {family: _options(function) for family, function in FAMILIES.items()}
"""The options each family takes; :func:`adapt` passes each arm only its family's."""


@dataclasses.dataclass(frozen=True)
class Adapted:
    """An adapted model's arm, trainable parameters and adapter handle (None: full FT)."""

    arm: str
    parameters: list[nn.Parameter]
    handle: AdapterHandle | None

    def optimizer(self, lr: float, *, weight_decay: float = 0.0) -> torch.optim.Optimizer:
        """AdamW over the trainable parameters; SaRA's own AdamW (it runs the re-selection)."""
        if isinstance(self.handle, SaRA):
            return self.handle.optimizer(lr=lr, weight_decay=weight_decay)
        return torch.optim.AdamW(self.parameters, lr=lr, weight_decay=weight_decay)

    def update(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, *,
               max_grad_norm: float | None = None, scheduler: Any = None) -> None:
        """One training step from ``loss``: backward, clip, optimizer step, scheduler step.

        The gradients are zeroed first; clipping (to ``max_grad_norm``) and the ``scheduler``
        step happen when given. SORSA's handle clips and steps in its paper's or the official
        order and adds its γ-step; SaRA's optimizer runs its re-selection itself.
        """
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if isinstance(self.handle, SORSA):
            self.handle.step(optimizer, max_grad_norm=max_grad_norm)
        else:
            if max_grad_norm is not None:
                nn.utils.clip_grad_norm_(self.parameters, max_grad_norm)
            optimizer.step()
        if scheduler is not None:
            scheduler.step()


def adapt(model: nn.Module, arm: str, *, device: torch.device | str | None = None,
          **options: Any) -> Adapted:
    """Adapt ``model`` in place as ``arm`` says (:data:`ARMS`), then move it to ``device``.

    ``options`` go to the arm's adapter function (``target_modules``, ``rank``, ``gamma``,
    ``fraction``, ``seed``, ``weights``, ``gdr_lambda``, …): each arm takes the options of its
    family and ignores the others', so one call serves every arm of a reproduction; an option
    no family takes is an error. The options an arm pins (LoRA's ``init``, SORSA γ = 0's
    ``gamma``, …) override the caller's. The adapter is initialised where ``model`` is.
    """
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; known arms: {', '.join(ARMS)}")
    known = frozenset().union(*OPTIONS.values())
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"adapt() got options {unknown} that no adapter takes; options: "
                         f"{', '.join(sorted(known))}")
    spec = ARMS[arm]
    chosen = {k: v for k, v in options.items() if k in OPTIONS[spec.family]}
    handle = FAMILIES[spec.family](model, **{**chosen, **spec.pinned})
    if device is not None:
        model.to(device)
    parameters = (list(model.parameters()) if handle is None
                  else list(handle.trainable_parameters()))
    return Adapted(arm, parameters, handle)


# --- schedule -----------------------------------------------------------------------------------


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int, warmup_ratio: float = 0.0
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to 0 at ``steps``; step it after every optimizer step.

    The warm-up lasts ``⌈warmup_ratio · steps⌉`` steps, at least 1 when the ratio is positive
    (none at 0). The recipe of the official SORSA trainer (ratio 0.03) and, with ratio 0,
    BA-LoRA's cosine decay: :class:`regzoo.core.schedules.WarmupCosine` under ``LambdaLR``.
    """
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must lie in [0, 1), got {warmup_ratio}")
    warmup = max(1, math.ceil(warmup_ratio * steps)) if warmup_ratio > 0 else 0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, steps))


# --- learning-rate search -----------------------------------------------------------------------

Rule = Callable[[Any], float]
"""A selection rule: a run's record → its score (higher is better)."""


def score_grid(grid: Sequence[float], *, seeds: Sequence[int],
               run: Callable[[float, int], Any], rules: Mapping[str, Rule]) -> dict[str, Any]:
    """Train at every value of ``grid`` on every seed; each rule's best value.

    ``run(value, seed)`` trains one run and returns its record (JSON values: curves or final
    metrics on the seed's validation split); a value's score under a rule is the mean over
    ``seeds`` of ``rule(record)``, and the best value is the highest-scoring one (ties: the
    first in ``grid``). Several rules share the same runs.

    Returns ``{"best": {rule: value}, "scores": {rule: {repr(value): score}},
    "runs": {repr(value): [record per seed]}}``.
    """
    if not grid or not seeds or not rules:
        raise ValueError(f"grid, seeds and rules must be non-empty, got grid={list(grid)}, "
                         f"seeds={list(seeds)}, rules={list(rules)}")
    runs = {repr(value): [run(value, seed) for seed in seeds] for value in grid}
    scores = {name: {key: statistics.fmean(rule(record) for record in records)
                     for key, records in runs.items()}
              for name, rule in rules.items()}
    best = {name: max(grid, key=lambda value, name=name: scores[name][repr(value)])
            for name in rules}
    return {"best": best, "scores": scores, "runs": runs}


def search_lr(workdir: str, name: str, lrs: Sequence[float], *, seeds: Sequence[int],
              run: Callable[[float, int], Any], rules: Mapping[str, Rule]) -> dict[str, Any]:
    """:func:`score_grid` over the learning rates ``lrs``, once per run folder.

    The search seeds must not be evaluation seeds and ``run`` must score a validation split,
    so the test split never chooses. Cached as ``<workdir>/<name>.json``
    (:func:`regzoo.repro.protocol.shared_once`: parallel units wait for the first), computed
    in this process alone under torchrun.
    """
    with local_only():
        return shared_once(workdir, name,
                           lambda: score_grid(lrs, seeds=seeds, run=run, rules=rules))


# --- forgetting at matched accuracy -------------------------------------------------------------


def source_at_matched_target(target: Sequence[float], source: Sequence[float],
                             level: float) -> float:
    """Source accuracy (or loss) where the target accuracy first reaches ``level``.

    ``target`` and ``source`` are paired points of one curve (over training steps, epochs or a
    learning-rate grid). At the first point i with ``target[i] >= level``, ``source`` is
    interpolated linearly between points i − 1 and i to where the target would be exactly
    ``level``. When the first point already reaches it (the curve starts at or above the
    level), the first point's source value; when no point does, NaN.
    """
    if len(target) != len(source):
        raise ValueError(f"target and source must pair up point by point, got {len(target)} "
                         f"and {len(source)} points")
    for i, value in enumerate(target):
        if value >= level:
            if i == 0:
                return float(source[0])
            # target[i - 1] < level <= value, so the share lies in (0, 1].
            share = (level - target[i - 1]) / (value - target[i - 1])
            return float(source[i - 1] + share * (source[i] - source[i - 1]))
    return math.nan
