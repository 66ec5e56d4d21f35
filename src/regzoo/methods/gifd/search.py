r"""The harness every gradient-inversion search of this package shares.

Each search minimises, per restart, the gradient-matching objective of a batch of B images x

.. math::

    J(x) = \mathcal L_{grad}\big(\nabla_w \mathrm{CE}(f_w(x), y),\ g^*\big)
           + \lambda_{TV}\,\mathrm{TV}(x) + \lambda_{n}\,\lVert x\rVert_2 / (HW)

(TV anisotropic: mean |horizontal differences| + mean |vertical differences| over the batch;
official ``_gradient_closure``) with Adam at the learning rate lr·:func:`~.ops.lr_ramp` (t) at
stage progress t, stage after stage, and scores every restart at the end of a stage by L_grad of
its clamped images. What is searched (a ``_Space``) is the only difference between the attacks
of :mod:`regzoo.methods.gifd.attack`.

Every trial of every attack (A observed gradients × R restarts) runs in one vectorised
computation (``torch.func.vmap`` over trials of ``torch.func.grad`` of the model's loss), so a
restart costs a fraction of a separate run; restarts never interact (Adam is per element).

A procedure not built on :func:`regzoo.train.fit`: the search trains no network, and each stage
has its own variables and optimiser. It checkpoints after every stage (the searched variables,
every stage's images and scores) and ``resume=True`` continues after the last finished stage.
"""

from __future__ import annotations

import abc
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from regzoo.core.checks import check_positive_int, check_tensor
from regzoo.core.progress import progress_bar
from regzoo.methods.gifd.ops import (
    _cosine_distance,
    _gradient_list,
    _project_rows,
    infer_labels,
    lr_ramp,
)
from regzoo.train.checkpoint import load_checkpoint, save_checkpoint
from regzoo.train.loop import History

Callback = Callable[[int, torch.Tensor, torch.Tensor], None]
"""``callback(step, images, matching)`` after every optimiser step: the global step index, the
images the step was taken at (A × R × B × C × H × W, detached, not clamped) and their
gradient-matching losses (A × R)."""

_CHECKPOINT_FORMAT = "regzoo-gifd-1"


@dataclass
class GIFDResult:
    """One attack's outcome.

    Attributes:
        images: the reconstruction (B × C × H × W, clamped): the best restart of the stage
            with the lowest gradient loss.
        labels: the labels used (given, or inferred and sorted), shape (B,).
        stage_scores: per stage, the best restart's gradient loss L_grad
            after the clamp (lower is better).
        best_stage: the index of the stage whose image is returned (earliest on ties).
        stage_images: every stage's best restart (K × B × C × H × W).
        restart_scores: every restart's gradient loss per stage (K × R; NaN where a restart
            diverged).
        history: one record per stage: ``epoch`` (the stage), ``train_loss`` (the objective J
            averaged over its steps and restarts), ``score`` and ``seconds``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    stage_scores: list[float]
    best_stage: int
    stage_images: torch.Tensor
    restart_scores: torch.Tensor
    history: History


def _is_stochastic_in_training(module: nn.Module) -> bool:
    return module.training and isinstance(
        module, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd))


class _Matching:
    """J and L_grad of T = A·R trials of B images each, vectorised."""

    def __init__(self, model: nn.Module, targets: list[list[torch.Tensor]],
                 labels: torch.Tensor, restarts: int, tv: float, image_norm: float) -> None:
        self.model = model
        self.names = [name for name, _ in model.named_parameters()]
        self.params = {name: p.detach() for name, p in model.named_parameters()}
        self.buffers = {name: b.detach() for name, b in model.named_buffers()}
        self.targets = {name: torch.stack([obs[i] for obs in targets])
                        .repeat_interleave(restarts, 0) for i, name in enumerate(self.names)}
        self.target_norm = torch.sqrt(sum(t.flatten(1).pow(2).sum(1)
                                          for t in self.targets.values()))
        self.labels = labels.repeat_interleave(restarts, 0)
        self.tv, self.image_norm = tv, image_norm
        self._batched = vmap(self._one)

    def _one(self, images: torch.Tensor, labels: torch.Tensor,
             targets: dict[str, torch.Tensor], target_norm: torch.Tensor) -> torch.Tensor:
        def loss(params: dict[str, torch.Tensor]) -> torch.Tensor:
            logits = functional_call(self.model, (params, self.buffers), (images,))
            return F.cross_entropy(logits, labels)

        trial = grad(loss)(self.params)
        return _cosine_distance([trial[n] for n in self.names],
                                [targets[n] for n in self.names], target_norm)

    def matching(self, images: torch.Tensor) -> torch.Tensor:
        """L_grad of each trial's images (T × B × C × H × W) → (T,)."""
        return self._batched(images, self.labels, self.targets, self.target_norm)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(J, L_grad) of each trial, both (T,)."""
        matching = self.matching(images)
        total = matching
        if self.tv > 0:
            dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
            dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
            total = total + self.tv * (dx + dy)
        if self.image_norm > 0:
            side2 = images.shape[-2] * images.shape[-1]
            total = total + self.image_norm * images.flatten(1).norm(dim=1) / side2
        return total, matching


class _Space(abc.ABC):
    """What a search optimises, stage by stage, for every trial at once."""

    @abc.abstractmethod
    def begin(self, stage: int) -> list[torch.Tensor]:
        """Set up ``stage`` and return its trainable leaves."""

    @abc.abstractmethod
    def render(self) -> torch.Tensor:
        """The images (T × B × C × H × W) of the current variables."""

    @abc.abstractmethod
    def project(self, stage: int) -> None:
        """The constraints, after every optimiser step (called without gradients)."""

    @abc.abstractmethod
    def finish(self) -> None:
        """End the current stage: keep what the next stage starts from."""

    @abc.abstractmethod
    def state(self) -> dict[str, Any]:
        """Tensors that let :meth:`load` resume after a finished stage."""

    @abc.abstractmethod
    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""


class _PixelSpace(_Space):
    def __init__(self, x: torch.Tensor, image_range: tuple[float, float]) -> None:
        self.x, self.low, self.high = x, *image_range

    def begin(self, stage: int) -> list[torch.Tensor]:
        self.x = self.x.detach().requires_grad_(True)
        return [self.x]

    def render(self) -> torch.Tensor:
        return self.x

    def project(self, stage: int) -> None:
        self.x.clamp_(self.low, self.high)

    def finish(self) -> None:
        self.x = self.x.detach()

    def state(self) -> dict[str, Any]:
        return {"x": self.x.detach()}

    def load(self, state: dict[str, Any]) -> None:
        self.x = state["x"].to(self.x.device)


class _FeatureSpace(_Space):
    """z, then h_k = G_{k−1}(h_{k−1}) + δ_k with δ_k in an l1 ball; earlier δ's kept fixed.

    With the latent fixed, h_k = anchor + δ_k: the official ``gen_outs`` search. With
    ``latent_free`` z is trained too and reaches h_k through the stages before it.
    """

    def __init__(self, stages: Sequence[nn.Module], z: torch.Tensor, trials: int, batch: int,
                 plan: list[tuple[int, float, float | None]], relative: bool,
                 latent_free: bool, spherical: bool) -> None:
        self.stages, self.z = list(stages), z
        # Detached weights: the search never writes gradients into the caller's generator.
        self.weights = [{**{n: p.detach() for n, p in m.named_parameters()},
                         **dict(m.named_buffers())} for m in self.stages]
        self.trials, self.batch = trials, batch
        self.plan, self.relative = plan, relative
        self.latent_free, self.spherical = latent_free, spherical
        self.offsets: list[torch.Tensor] = []
        self.stage = 0

    def _apply(self, index: int, h: torch.Tensor) -> torch.Tensor:
        return functional_call(self.stages[index], self.weights[index], (h,))

    def _feature(self, stage: int, z: torch.Tensor) -> torch.Tensor:
        """h_stage without its own δ (the stage's anchor when δ = 0)."""
        h = z
        for j in range(stage):
            h = self._apply(j, h)
            if j < stage - 1:
                h = h + self.offsets[j]
        return h

    def _radius(self, anchor: torch.Tensor, radius: float) -> torch.Tensor:
        rows = anchor.reshape(anchor.shape[0], -1)
        if self.relative:
            return radius * rows.abs().sum(dim=1)
        return torch.full((rows.shape[0],), radius, device=rows.device, dtype=rows.dtype)

    def begin(self, stage: int) -> list[torch.Tensor]:
        self.stage = stage
        with torch.no_grad():
            self.z = self.z.detach()
            self.sphere = self.z.flatten(1).pow(2).sum(1).add(1e-9).sqrt()
        if stage == 0:
            self.z.requires_grad_(True)
            return [self.z]
        radius = self.plan[stage][2]
        assert radius is not None
        with torch.no_grad():
            anchor = self._feature(stage, self.z)
            self.delta_radius = self._radius(anchor, radius)
            self.anchor = anchor
            self.z_anchor = self.z.clone()
            self.z_radius = self._radius(self.z, radius)
        self.delta = torch.zeros_like(anchor, requires_grad=True)
        if self.latent_free:
            self.z.requires_grad_(True)
            return [self.z, self.delta]
        return [self.delta]

    def _feature_now(self) -> torch.Tensor:
        if self.stage == 0:
            return self.z
        base = self._feature(self.stage, self.z) if self.latent_free else self.anchor
        return base + self.delta

    def render(self) -> torch.Tensor:
        x = self._feature_now()
        for index in range(self.stage, len(self.stages)):
            x = self._apply(index, x)
        return x.reshape(self.trials, self.batch, *x.shape[1:])

    def project(self, stage: int) -> None:
        if self.spherical and (stage == 0 or self.latent_free):
            norm = self.z.flatten(1).pow(2).sum(1).add(1e-9).sqrt()
            self.z.mul_((self.sphere / norm).view(-1, *[1] * (self.z.ndim - 1)))
        if stage == 0:
            return
        self.delta.copy_(_project_rows(self.delta.reshape(self.delta.shape[0], -1),
                                       self.delta_radius).view_as(self.delta))
        if self.latent_free:
            moved = _project_rows((self.z - self.z_anchor).flatten(1), self.z_radius)
            self.z.copy_(self.z_anchor + moved.view_as(self.z))

    def finish(self) -> None:
        """Keep the stage's δ: the next stage starts from this stage's feature, pushed on."""
        if self.stage > 0:
            self.offsets.append(self.delta.detach())
        self.z = self.z.detach()

    def state(self) -> dict[str, Any]:
        return {"z": self.z.detach(), "offsets": [d.detach() for d in self.offsets]}

    def load(self, state: dict[str, Any]) -> None:
        device = self.z.device
        self.z = state["z"].to(device)
        self.offsets = [d.to(device) for d in state["offsets"]]


def _digest(tensors: Sequence[torch.Tensor]) -> str:
    """sha256 of the tensors' values: what a checkpoint must have been computed from."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class _GradientInversion(abc.ABC):
    """The shared harness: validation, label inference, the staged search, scoring, resume."""

    model: nn.Module
    restarts: int
    tv: float
    image_norm: float
    image_range: tuple[float, float]
    plan: list[tuple[int, float, float | None]]

    def _check_model(self, model: object) -> nn.Module:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not list(model.parameters()):
            raise ValueError("model has no parameters, so it has no gradient to invert")
        stochastic = [name for name, m in model.named_modules() if _is_stochastic_in_training(m)]
        if stochastic:
            raise ValueError(f"model has batch-norm or dropout layers in training mode "
                             f"({', '.join(stochastic[:3])}); call model.eval() first (the "
                             "official attack inverts the model in eval mode)")
        return model

    @property
    def device(self) -> torch.device:
        """Where every tensor of the search lives: the model's device."""
        return next(self.model.parameters()).device

    @abc.abstractmethod
    def _space(self, trials: int, batch: int, generator: torch.Generator) -> _Space:
        """The searched variables of ``trials`` trials of ``batch`` images, freshly drawn."""

    @abc.abstractmethod
    def _settings(self) -> dict[str, Any]:
        """Plain data that a resumed checkpoint must agree with (besides the stage plan)."""

    @abc.abstractmethod
    def _weights(self) -> list[torch.Tensor]:
        """Every tensor besides the model's that shapes the search (a generator's weights)."""

    def _observation(self, index: int, grads: object) -> list[torch.Tensor]:
        name = "grads" if index < 0 else f"grads[{index}]"
        values = _gradient_list(name, grads)
        params = list(self.model.parameters())
        fix = ("pass torch.autograd.grad(loss, model.parameters()) of the attacked model: one "
               "tensor per parameter, in model.parameters() order")
        if len(values) != len(params):
            raise ValueError(f"{name} holds {len(values)} tensors but the model has "
                             f"{len(params)} parameters; {fix}")
        for i, (g, p) in enumerate(zip(values, params)):
            if g.shape != p.shape:
                raise ValueError(f"{name}[{i}] has shape {tuple(g.shape)} but parameter {i} of "
                                 f"the model has {tuple(p.shape)}; {fix}")
            if not bool(torch.isfinite(g).all()):
                raise ValueError(f"{name}[{i}] contains NaN or infinite values; the attack "
                                 "needs a finite observed gradient")
        return [g.detach().to(device=p.device, dtype=p.dtype) for g, p in zip(values, params)]

    def _labels(self, targets: list[list[torch.Tensor]], labels: object,
                batch_size: int | None, single: bool) -> torch.Tensor:
        if batch_size is not None:
            check_positive_int("batch_size", batch_size)
        if labels is None:
            batch = 1 if batch_size is None else batch_size
            return torch.stack([infer_labels(t, batch) for t in targets]).to(self.device)
        if single:
            rows = [labels]
        elif (isinstance(labels, torch.Tensor) and labels.ndim == 2) \
                or isinstance(labels, (list, tuple)):
            rows = list(labels)
        else:
            raise TypeError(f"labels must be a list of label tensors (one per observation) or "
                            f"an A × B tensor, got {type(labels).__name__}")
        if len(rows) != len(targets):
            raise ValueError(f"labels has {len(rows)} entries for {len(targets)} observed "
                             "gradients; pass one label tensor per observation")
        head = next((t for t in reversed(targets[0]) if t.ndim == 2), None)
        classes = None if head is None else head.shape[0]
        for i, row in enumerate(rows):
            name = "labels" if single else f"labels[{i}]"
            check_tensor(name, row, ndim=1, floating=False)
            assert isinstance(row, torch.Tensor)
            if classes is not None and (int(row.min()) < 0 or int(row.max()) >= classes):
                raise ValueError(f"{name} must lie in [0, {classes - 1}] (the classes of the "
                                 f"last linear layer), got {row.tolist()}")
        sizes = {r.shape[0] for r in rows}
        if len(sizes) > 1:
            raise ValueError(f"every labels entry must have the same batch size, got {sizes}")
        if batch_size is not None and batch_size not in sizes:
            raise ValueError(f"batch_size={batch_size} disagrees with labels of length "
                             f"{sizes.pop()}; drop batch_size or fix labels")
        return torch.stack(rows).to(device=self.device, dtype=torch.long)

    def invert(self, grads: Sequence[torch.Tensor], labels: torch.Tensor | None = None, *,
               batch_size: int | None = None, seed: int = 0,
               checkpoint_path: str | Path | None = None, resume: bool = False,
               progress: bool | None = None, callback: Callback | None = None) -> GIFDResult:
        """Reconstruct the batch behind one observed gradient.

        Args:
            grads: the observed gradient g*, one tensor per parameter of the model in
                ``model.parameters()`` order (of the mean cross-entropy over the batch).
            labels: the batch's labels (B,), or ``None`` to infer them (:func:`infer_labels`).
            batch_size: B when the labels are inferred (default 1).
            seed: seeds the CPU generator of the restarts' starting points.
            checkpoint_path: written after every stage; with ``resume=True`` a run continues
                from the last finished stage saved there (the observed gradient, labels,
                model, generator and the finished stages' settings must match).
            progress: a bar over the steps (``None``: only on a terminal).
            callback: called after every step (see :data:`Callback`).
        """
        targets = [self._observation(-1, grads)]
        rows = self._labels(targets, labels, batch_size, single=True)
        return self._run(targets, rows, seed, checkpoint_path, resume, progress, callback)[0]

    def invert_many(self, observations: Sequence[Sequence[torch.Tensor]],
                    labels: Sequence[torch.Tensor] | torch.Tensor | None = None, *,
                    batch_size: int | None = None, seed: int = 0,
                    checkpoint_path: str | Path | None = None, resume: bool = False,
                    progress: bool | None = None,
                    callback: Callback | None = None) -> list[GIFDResult]:
        """:meth:`invert` for A observed gradients at once, in one vectorised search.

        Every observation is attacked independently with the same batch size B; ``labels`` is
        one (B,) tensor per observation (or an A × B tensor), or ``None``. The A·R restarts'
        starting points are drawn in the order (observation, restart, image).
        """
        if isinstance(observations, torch.Tensor) or not isinstance(observations, Sequence) \
                or not observations:
            raise ValueError("observations must be a non-empty list of observed gradients "
                             "(each a list of tensors, one per model parameter)")
        targets = [self._observation(i, obs) for i, obs in enumerate(observations)]
        rows = self._labels(targets, labels, batch_size, single=False)
        return self._run(targets, rows, seed, checkpoint_path, resume, progress, callback)

    def _run(self, targets: list[list[torch.Tensor]], labels: torch.Tensor, seed: int,
             checkpoint_path: str | Path | None, resume: bool, progress: bool | None,
             callback: Callback | None) -> list[GIFDResult]:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        if checkpoint_path is None and resume:
            raise ValueError("resume=True needs checkpoint_path, the file to resume from")
        attacks, batch = labels.shape
        space = self._space(attacks * self.restarts, batch, torch.Generator().manual_seed(seed))
        objective = _Matching(self.model, targets, labels, self.restarts, self.tv,
                              self.image_norm)
        fingerprint = {
            "format": _CHECKPOINT_FORMAT,
            "data": _digest([*(t for obs in targets for t in obs), labels,
                             *self.model.parameters(), *self._weights()]),
            "settings": self._settings(),
        }
        return self._search(space, objective, labels, fingerprint, checkpoint_path, resume,
                            progress, callback)

    def _search(self, space: _Space, objective: _Matching, labels: torch.Tensor,
                fingerprint: dict[str, Any], checkpoint_path: str | Path | None, resume: bool,
                progress: bool | None, callback: Callback | None) -> list[GIFDResult]:
        attacks = labels.shape[0]
        restarts, low, high = self.restarts, *self.image_range
        done: dict[str, Any] = {"images": [], "scores": [], "losses": [], "seconds": []}
        start = 0
        if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
            saved = load_checkpoint(checkpoint_path)
            self._check_resumable(saved, fingerprint, checkpoint_path)
            start = len(saved["done"]["seconds"])
            space.load(saved["space"])
            done = {key: list(value) for key, value in saved["done"].items()}
            done["images"] = [images.to(self.device) for images in done["images"]]
        steps_total = sum(s for s, _, _ in self.plan)
        bar = progress_bar(desc=type(self).__name__, total=steps_total, progress=progress,
                           unit="step")
        bar.update(sum(s for s, _, _ in self.plan[:start]))
        step_index = sum(s for s, _, _ in self.plan[:start])
        for stage in range(start, len(self.plan)):
            steps, lr, _ = self.plan[stage]
            started = time.perf_counter()
            optimizer = torch.optim.Adam(space.begin(stage), lr=lr)
            loss_sum = torch.zeros(attacks * restarts, device=self.device, dtype=torch.float64)
            for i in range(steps):
                optimizer.param_groups[0]["lr"] = lr * lr_ramp(i / steps)
                images = space.render()
                total, matching = objective(images)
                optimizer.zero_grad(set_to_none=True)
                # Trials are independent: a diverged restart's NaN stays in its own variables.
                total.sum().backward()
                optimizer.step()
                with torch.no_grad():
                    space.project(stage)
                loss_sum += total.detach().double()
                if callback is not None:
                    callback(step_index,
                             images.detach().reshape(attacks, restarts, *images.shape[1:]),
                             matching.detach().reshape(attacks, restarts))
                step_index += 1
                bar.update()
            with torch.no_grad():
                final = space.render().clamp(low, high)
                scores = objective.matching(final).view(attacks, restarts)
            space.finish()
            done["images"].append(final.reshape(attacks, restarts, *final.shape[1:]))
            done["scores"].append(scores.detach().cpu())
            done["losses"].append((loss_sum / steps).view(attacks, restarts).mean(1).cpu())
            done["seconds"].append(time.perf_counter() - started)
            finite = torch.isfinite(done["scores"][-1])
            broken = [a for a in range(attacks) if not bool(finite[a].any())]
            if broken:
                raise FloatingPointError(
                    f"every restart of attack {broken[0]} ended stage {stage} with a non-finite "
                    "gradient-matching loss; lower lr or check the observed gradient")
            if checkpoint_path is not None:
                save_checkpoint(checkpoint_path, {"fingerprint": fingerprint,
                                                  "plan": [list(p) for p in self.plan],
                                                  "space": space.state(), "done": done})
        bar.close()
        return self._results(done, labels)

    def _check_resumable(self, saved: dict[str, Any], fingerprint: dict[str, Any],
                         path: str | Path) -> None:
        finished = len(saved.get("done", {}).get("seconds", []))
        old_plan = [tuple(p) for p in saved.get("plan", [])][:finished]
        same = (saved.get("fingerprint") == fingerprint
                and old_plan == [tuple(p) for p in self.plan[:finished]])
        if not same or finished > len(self.plan):
            raise ValueError(f"checkpoint_path {str(path)!r} holds another attack (observed "
                             "gradient, labels, model, generator or the settings of its "
                             "finished stages differ); delete it or pass resume=False")

    def _results(self, done: dict[str, Any], labels: torch.Tensor) -> list[GIFDResult]:
        scores = torch.stack(done["scores"])  # K × A × R
        masked = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, math.inf))
        best_restart = masked.argmin(dim=2)  # K × A
        results = []
        for a in range(labels.shape[0]):
            stage_images = torch.stack([done["images"][k][a, int(best_restart[k, a])]
                                        for k in range(len(done["images"]))])
            stage_scores = [float(masked[k, a, best_restart[k, a]]) for k in range(len(scores))]
            best = min(range(len(stage_scores)), key=stage_scores.__getitem__)
            history = History([{"epoch": k, "train_loss": float(done["losses"][k][a]),
                                "score": stage_scores[k], "seconds": done["seconds"][k]}
                               for k in range(len(stage_scores))])
            results.append(GIFDResult(images=stage_images[best].clone(), labels=labels[a].clone(),
                                      stage_scores=stage_scores, best_stage=best,
                                      stage_images=stage_images,
                                      restart_scores=scores[:, a].clone(), history=history))
        return results
