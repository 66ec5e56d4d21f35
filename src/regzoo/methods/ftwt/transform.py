r"""The FTWT transform: wrap a model's blocks with mask predictors, the handle and its losses.

See the package docstring (:mod:`regzoo.methods.ftwt`) for the paper, the equations, the
defaults and the departures from the official code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_choice, check_positive_int, check_range
from regzoo.core.kinds import mark_transform_parameters
from regzoo.core.modes import eval_mode
from regzoo.methods.ftwt.flops import MacsCount, count_along_chain
from regzoo.methods.ftwt.masks import (
    ACTIVATION_TYPES,
    CONV_TYPES,
    COUNTING,
    CROSSING,
    GT_TYPES,
    LAYER_TYPES,
    MODES,
    NORM_TYPES,
    PREDICTOR_INITS,
    BlockRecord,
    MaskedBlock,
    MaskPredictor,
    MaskRule,
    check_threshold,
)
from regzoo.registry import Default, register

Slot = tuple[nn.Module, str]
"""Where a module sits: its parent and its attribute name there."""


def _slot(modules: dict[str, nn.Module], name: str) -> Slot:
    parent, _, child = name.rpartition(".")
    return modules[parent], child


def _resolve_blocks(
    model: nn.Module, targets: Sequence[str | Sequence[str]] | None
) -> list[tuple[str, list[nn.Module], list[Slot]]]:
    """(name, [layer, norm?, activation?], slots of the replaced modules) of each block.

    Blocks are read from ``nn.Sequential`` containers (layer, norm and activation all replaced);
    a named target outside one is masked alone; a tuple target ``(layer, norm[, activation])``
    names the parts of a block in any module (the activation is kept in place: ReLU is
    idempotent on the masked output).
    """
    modules = dict(model.named_modules())
    found: list[tuple[str, list[nn.Module], list[Slot]]] = []
    strings = {t for t in targets or () if isinstance(t, str)}
    for prefix, container in model.named_modules():
        if not isinstance(container, nn.Sequential):
            continue
        children = list(container)
        for i, child in enumerate(children):
            if not isinstance(child, LAYER_TYPES):
                continue
            name = f"{prefix}.{i}" if prefix else str(i)
            parts, j = [child], i + 1
            if j < len(children) and isinstance(children[j], NORM_TYPES):
                parts.append(children[j])
                j += 1
            has_activation = j < len(children) and isinstance(children[j], ACTIVATION_TYPES)
            if has_activation:
                parts.append(children[j])
            if (targets is None and has_activation) or name in strings:
                found.append((name, parts, [(container, str(i + k)) for k in range(len(parts))]))
    for target in targets or ():
        names = [target] if isinstance(target, str) else list(target)
        if isinstance(target, str) and target in {n for n, _, _ in found}:
            continue
        kinds = (LAYER_TYPES, NORM_TYPES, ACTIVATION_TYPES)
        if not 1 <= len(names) <= 3 or any(
            not isinstance(modules.get(n), kind) for n, kind in zip(names, kinds)
        ):
            raise ValueError(
                f"target {target!r} must name a Conv/Linear layer of the model (as in "
                "model.named_modules(), e.g. 'body.0'), or a tuple (layer, BatchNorm[, "
                "ReLU]) of a block outside an nn.Sequential"
            )
        parts = [modules[n] for n in names]
        found.append((names[0], parts, [_slot(modules, n) for n in names[:2]]))
    if not found:
        raise ValueError(
            "the model has no Conv/Linear layer followed by (BatchNorm and) ReLU inside an "
            "nn.Sequential; pass targets=[...] naming the layers to mask"
        )
    return found


@register(
    "ftwt",
    kind="transform",
    declares={
        "trains_backbone": "FTWT fine-tunes every weight of the network with its masks "
            "(trainable_parameters() is the whole model); after an adapter only its mask "
            "predictors train",
    },
    summary="Dynamic channel pruning: a pooled-input linear predictor before each Conv-BN-ReLU "
    "block switches filters off per input; it learns from self-supervised labels (the filters "
    "carrying a share τ of the block's activation mass), decoupled from the task loss.",
    equation="m*_k = 1[S_k − τ ≤ δ] on shares â = max|o| / Σ max|o| sorted; b = 1[σ(W softmax("
    "pool(x)) + c) > ½]; o ← o ⊙ b; L = CE + w · mean_blocks Σ_k BCE(ℓ_k, m*_k), w → 0 after "
    "the cool-down",
    defaults=(
        Default(
            "threshold", 0.9, "README runs 0.80–1.00 (VGG16 0.92/0.85); the reproduction sweeps τ"
        ),
        Default(
            "mode",
            "decoupled",
            "paper (decoupled losses) and official default (predictor input detached)",
        ),
        Default(
            "gt_type", "mass", "paper (heatmap mass); 'uniform' drops a fixed fraction (official)"
        ),
        Default(
            "crossing",
            "drop",
            "paper text and official get_gt_mask_ratio (S_k − τ > δ "
            "dropped); 'keep' keeps the filter crossing τ",
        ),
        Default("pool", 1, "official embedding=-1 (pool to 1×1)"),
        Default("softmax", True, "official --softmax 1"),
        Default(
            "straight_through",
            False,
            "official: the STE binariser runs under no_grad (dead code); True makes it live",
        ),
        Default(
            "predictor_init",
            "dense",
            "regzoo transform convention (applying keeps the "
            "function; the described recipe pre-trains to all-on); official default 'random'",
        ),
        Default("mask_weight", 1.0, "official cifar.py: lweight 1 before the cool-down"),
        Default("cooldown", 0.5, "official --cooldown 0.5: mask loss off from epoch ⌊0.5·epochs⌋"),
        Default(
            "targets",
            None,
            "None: every Conv/Linear followed by (BatchNorm and) ReLU in an "
            "nn.Sequential (official VGG/MobileNet wrapping); a named layer outside one is "
            "masked alone",
        ),
        Default("predictor_optimizer.lr", 0.1, "official --mlr"),
        Default("predictor_optimizer.momentum", 0.9, "official predictor SGD"),
        Default(
            "macs.counting",
            "exact",
            "active outputs × next layer's active inputs; "
            "'official' reproduces the paper's counter",
        ),
    ),
    variants=(
        "mass ground truth, filter crossing τ dropped (paper, official)",
        "mass ground truth, filter crossing τ kept",
        "uniform ground truth (fixed fraction dropped)",
        "decoupled mode (predictors see x.detach())",
        "joint mode (mask loss reaches the backbone)",
        "live straight-through binariser",
        "random predictor init (official) / all-on pre-training (paper)",
        "exact or official FLOPs counting",
    ),
)
class FTWT:
    """Handle of a model whose Conv–BN–ReLU blocks carry mask predictors; build with :meth:`apply`.

    The handle's ``penalty()`` is the weighted mask loss of the last forward pass; ``macs(x)``
    counts the FLOPs the masks save.
    """

    def __init__(
        self,
        model: nn.Module,
        sites: list[list[tuple[Slot, nn.Module]]],
        blocks: list[MaskedBlock],
        names: list[str],
        *,
        mask_weight: float,
        cooldown: float,
    ) -> None:
        self.model = model
        self.sites = sites
        self.blocks = blocks
        self.names = names
        self.base_mask_weight = mask_weight
        self.mask_weight = mask_weight
        self.cooldown = cooldown
        self.merged = False
        self._removed = False

    @classmethod
    def apply(
        cls,
        model: nn.Module,
        *,
        threshold: float = 0.9,
        mode: str = "decoupled",
        gt_type: str = "mass",
        crossing: str = "drop",
        pool: int = 1,
        softmax: bool = True,
        straight_through: bool = False,
        predictor_init: str = "dense",
        mask_weight: float = 1.0,
        cooldown: float = 0.5,
        targets: Sequence[str | Sequence[str]] | None = None,
    ) -> FTWT:
        """Wrap each Conv/Linear (+ BatchNorm + ReLU) block of ``model`` with a mask predictor.

        Args:
            model: the network, changed in place: each block becomes a :class:`MaskedBlock` at
                the layer's position and its BatchNorm and activation become ``nn.Identity``.
            threshold: τ ∈ (0, 1], the kept activation mass (``gt_type="mass"``) or the dropped
                fraction (``"uniform"``).
            mode: ``"decoupled"`` (predictors see x.detach()) or ``"joint"``.
            gt_type: ``"mass"`` or ``"uniform"``.
            crossing: ``"drop"`` (official) or ``"keep"`` the filter whose share crosses τ.
            pool: d, the predictor's pooled size per spatial dimension.
            softmax: softmax over the pooled vector before the linear map.
            straight_through: let the task loss reach the predictors through σ(ℓ).
            predictor_init: ``"dense"`` (all masks on: outputs unchanged) or ``"random"``.
            mask_weight: w, the mask loss weight before the cool-down.
            cooldown: share of the epochs after which w drops to 0 (:meth:`set_epoch`).
            targets: names of the Conv/Linear layers to mask (None: module docstring); a layer
                outside an ``nn.Sequential`` is masked alone; a tuple ``(conv, bn[, relu])``
                names a block anywhere, e.g. a residual block's conv2 and bn2, masked before
                the addition (official ResNet default, ``gtafterblock=False``).
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        threshold = check_threshold(threshold)
        check_choice("mode", mode, MODES)
        check_choice("gt_type", gt_type, GT_TYPES)
        check_choice("crossing", crossing, CROSSING)
        check_choice("predictor_init", predictor_init, PREDICTOR_INITS)
        check_positive_int("pool", pool)
        for flag, value in (("softmax", softmax), ("straight_through", straight_through)):
            if not isinstance(value, bool):
                raise TypeError(f"{flag} must be a bool, got {value!r}")
        mask_weight = check_range("mask_weight", mask_weight, 0.0)
        cooldown = check_range("cooldown", cooldown, 0.0, 1.0)
        if targets is not None and (
            isinstance(targets, str)
            or not all(
                isinstance(t, str)
                or (isinstance(t, (tuple, list)) and all(isinstance(n, str) for n in t))
                for t in targets
            )
        ):
            raise TypeError(
                f"targets must be a sequence of module names or name tuples, got "
                f"{targets!r}; e.g. targets=['body.0']"
            )
        if any(isinstance(m, MaskedBlock) for m in model.modules()):
            raise ValueError(
                "the model already carries FTWT masks; call remove() on the earlier handle first"
            )
        found = _resolve_blocks(model, targets)
        blocks, sites, names = [], [], []
        for name, parts, slots in found:
            layer = parts[0]
            norm = next((p for p in parts[1:] if isinstance(p, NORM_TYPES)), None)
            activation = next((p for p in parts[1:] if isinstance(p, ACTIVATION_TYPES)), None)
            spatial = 0 if isinstance(layer, nn.Linear) else CONV_TYPES.index(type(layer)) + 1
            c_in = layer.in_features if spatial == 0 else layer.in_channels
            c_out = layer.out_features if spatial == 0 else layer.out_channels
            predictor = MaskPredictor(
                c_in,
                c_out,
                spatial,
                pool=pool if spatial else 1,
                softmax=softmax,
                init=predictor_init,
            )
            predictor.to(device=layer.weight.device, dtype=layer.weight.dtype)
            mark_transform_parameters(predictor.parameters(), "ftwt")
            block = MaskedBlock(
                layer,
                norm,
                activation,
                predictor,
                threshold=threshold,
                gt_type=gt_type,
                crossing=crossing,
                mode=mode,
                straight_through=straight_through,
            )
            blocks.append(block)
            sites.append(list(zip(slots, parts)))
            names.append(name)
        for site, block in zip(sites, blocks):
            for k, ((parent, key), _) in enumerate(site):
                setattr(parent, key, block if k == 0 else nn.Identity())
        return cls(model, sites, blocks, names, mask_weight=mask_weight, cooldown=cooldown)

    def _check_usable(self) -> None:
        if self._removed:
            raise RuntimeError("these masks were removed; apply FTWT again")

    def predictor_parameters(self) -> list[nn.Parameter]:
        """The predictors' weights and biases."""
        return [p for b in self.blocks for p in b.predictor.parameters()]

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Every parameter of the model except the predictors'."""
        ids = {id(p) for p in self.predictor_parameters()}
        return [p for p in self.model.parameters() if id(p) not in ids]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter: the backbone fine-tunes with the masks, the predictors learn them."""
        return list(self.model.parameters())

    def predictor_optimizer(
        self, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0
    ) -> torch.optim.SGD:
        """The predictors' own SGD (official: lr ``--mlr`` 0.1, momentum 0.9, no decay)."""
        check_range("lr", lr, 0.0, low_inclusive=False)
        check_range("momentum", momentum, 0.0, 1.0, high_inclusive=False)
        check_range("weight_decay", weight_decay, 0.0)
        return torch.optim.SGD(
            self.predictor_parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Mask weight = mask_weight while epoch < ⌊cooldown·epochs⌋ (official), else 0."""
        check_positive_int("epochs", epochs)
        check_positive_int("epoch", epoch, minimum=0)
        if epoch >= epochs:
            raise ValueError(f"epoch must be < epochs = {epochs}, got {epoch}")
        self.mask_weight = self.base_mask_weight if epoch < int(self.cooldown * epochs) else 0.0

    def _records(self) -> list[BlockRecord]:
        self._check_usable()
        if any(b.last is None for b in self.blocks):
            raise RuntimeError(
                "no forward pass has run through the masked model yet; call "
                "model(x) before mask_loss(), penalty() or mask_accuracy()"
            )
        return [b.last for b in self.blocks]

    def mask_loss(self) -> torch.Tensor:
        """Unweighted mask loss of the last forward: mean over blocks of Σ_k mean_B BCE(ℓ, m*)."""
        terms = [
            F.binary_cross_entropy_with_logits(
                r.logits, r.ground_truth.to(r.logits.dtype), reduction="none"
            )
            .mean(0)
            .sum()
            for r in self._records()
            if r.logits is not None
        ]
        if not terms:
            reference = next(self.model.parameters())
            return torch.zeros((), dtype=reference.dtype, device=reference.device)
        return torch.stack(terms).mean()

    def penalty(self) -> torch.Tensor:
        """The weighted mask loss w · :meth:`mask_loss` (w = 0 after the cool-down)."""
        return self.mask_weight * self.mask_loss()

    def mask_accuracy(self) -> float:
        """Share of filters whose mask equals the ground truth, mean over batch and blocks."""
        records = self._records()
        return float(
            torch.stack(
                [(r.mask == r.ground_truth).to(torch.float64).mean() for r in records]
            ).mean()
        )

    def keep_fractions(self) -> list[float]:
        """Mean share of filters kept in each block in the last forward pass."""
        return [float(r.mask.to(torch.float64).mean()) for r in self._records()]

    def force_masks(self, rules: Sequence[MaskRule | None]) -> None:
        """Replace the predictors of some blocks by fixed rules (baselines: static, random).

        ``rules[i]`` maps block i's output (B, C, ...) to its {0, 1} mask (B, C); None gives the
        block its predictor back.
        """
        self._check_usable()
        if len(rules) != len(self.blocks):
            raise ValueError(
                f"rules must give one entry per masked block ({len(self.blocks)}), got {len(rules)}"
            )
        if any(r is not None and not callable(r) for r in rules):
            raise TypeError("each rule must be a callable (output → mask) or None")
        for block, rule in zip(self.blocks, rules):
            block.forced = rule

    @torch.no_grad()
    def macs(self, x: torch.Tensor, counting: str = "exact") -> MacsCount:
        """Per-example MACs of ``model(x)`` with its masks, and the dense count (docstring).

        The forward pass runs in eval mode (BatchNorm statistics untouched; the modes are
        restored after) and becomes the blocks' last records.
        """
        self._check_usable()
        check_choice("counting", counting, COUNTING)
        inner = {id(m) for b in self.blocks for m in b.modules() if m is not b}
        events: list[tuple[nn.Module, torch.Tensor | None, tuple[int, ...]]] = []

        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            mask = module.last.mask if isinstance(module, MaskedBlock) else None
            events.append((module, mask, tuple(out.shape)))

        handles = [
            m.register_forward_hook(hook)
            for m in self.model.modules()
            if isinstance(m, MaskedBlock) or (isinstance(m, LAYER_TYPES) and id(m) not in inner)
        ]
        try:
            with eval_mode(self.model):
                self.model(x)
        finally:
            for h in handles:
                h.remove()
        batch = x.shape[0]
        per_example = count_along_chain(events, batch, counting, False, x.device)
        dense = float(count_along_chain(events, 1, "exact", True, x.device)[0])
        return MacsCount(per_example.cpu(), dense)

    def pretrain_all_on(
        self, batches: Iterable, steps: int = 500, lr: float = 0.1, momentum: float = 0.9
    ) -> float:
        """The paper's predictor pre-training: BCE against all-ones masks, ≤ ``steps`` batches.

        ``batches`` yields inputs or tuples whose first entry is the input. Only the predictors
        step (their own SGD); returns the last batch's mask accuracy against all-on.
        """
        check_positive_int("steps", steps)
        optimizer = self.predictor_optimizer(lr=lr, momentum=momentum)
        accuracy = math.nan
        for step, batch in enumerate(batches):
            if step >= steps:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            self.model(x)
            records = [r for r in self._records() if r.logits is not None]
            loss = torch.stack(
                [
                    F.binary_cross_entropy_with_logits(
                        r.logits, torch.ones_like(r.logits), reduction="none"
                    )
                    .mean(0)
                    .sum()
                    for r in records
                ]
            ).mean()
            optimizer.zero_grad()
            loss.backward(inputs=self.predictor_parameters())
            optimizer.step()
            accuracy = float(torch.stack([r.mask.mean() for r in records]).mean())
        return accuracy

    def merge(self) -> None:
        """Nothing to fold: the masks depend on the input, so the blocks stay (kept for the API)."""
        self._check_usable()
        self.merged = True

    def unmerge(self) -> None:
        """The counterpart of :meth:`merge` (the blocks never left)."""
        self._check_usable()
        self.merged = False

    def remove(self) -> None:
        """Put the plain Conv/Linear, BatchNorm and activation back; the predictors are dropped.

        The model is then the dense network with the fine-tuned weights.
        """
        self._check_usable()
        for site, block in zip(self.sites, self.blocks):
            for (parent, key), part in site:
                setattr(parent, key, part)
            block.last = None
        self._removed = True


apply_ftwt = FTWT.apply
"""``apply_ftwt(model, threshold=...)``: the same call as :meth:`FTWT.apply`."""
