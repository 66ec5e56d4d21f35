r"""Regularized Mask Tuning (R-MT / R-AMT): learn a binary mask over frozen pretrained weights.

Zheng, Wu, Feng, Zhu, Liu, Zhao, Zha, Chen, Shen. "Regularized Mask Tuning: Uncovering Hidden
Knowledge in Pre-trained Vision-Language Models", ICCV 2023, arXiv 2307.15049; official code
github.com/wuw2019/R-AMT (``modules/masklayers.py``, ``trainers/masktuning.py``,
``loss/reg_loss.py``, ``configs/trainers/MASK/vit_b16.yaml``; every official path in this module
is under the repository's ``code/`` folder).

A pretrained model is adapted without changing any weight value: the weights of the *key
parameters* (the paper picks the multi-head self-attention of CLIP's image encoder: q, k, v and
the output projection) are used as W ⊙ B with a learned binary mask B = 1[M > τ] over real scores
M, trained with a straight-through estimator (:mod:`regzoo.adapters.masks`). Everything else,
the text side included, stays frozen; the classifier is CLIP's zero-shot one, cosine similarity
to fixed label-prompt embeddings (:class:`PromptClassifier`).

Losses (§3.2–3.3; official trainer):

.. math::

    L_a = \mathrm{CE}(z, y) + w_m \sum_{\text{layers}} \lVert M \rVert_2, \qquad
    L_b = -T^2 \sum_c \mathrm{softmax}(z^0/T)_c \log \mathrm{softmax}(z/T)_c,

with z the masked model's logits, z⁰ the zero-shot (unmasked) model's, w_m = 1e-4 and T = 1.
The norm is the non-squared L2 of each flattened score tensor (``loss/reg_loss.py``), one per
masked parameter. CLIP's ViT fuses q, k and v into one ``in_proj_weight``, so the official
code takes one norm over the three; for encoders with separate q/k/v layers
``norm_groups="qkv"`` does the same (one norm per attention's q, k, v), where the default, one
norm per layer, gives each entry a √3-times larger gradient at equal score magnitudes.
Explicit groups of layer names are accepted too.

Gradient dropout regularity (GDR, §3.3, eq. 7; official ``graddrop_backward_and_update``): with
g_a = ∂L_a/∂M and g_b = ∂L_b/∂M (two backward passes),

.. math::

    P = \tfrac12\Big(\frac{\mathrm{sign}(g_a)\,(g_a + g_b)}{|g_a| + |g_b| + \epsilon} + 1\Big),
    \qquad g = \big[(1 - \lambda) + \lambda\,\mathbb 1[P > U]\big]\, g_a, \quad U \sim
    \mathcal U(0, 1)

elementwise, ε = 1e-8; only g is applied. Under DDP :class:`GradientDropout` averages g_a and g_b
over the ranks before the draw (one collective), so with the same generator seed on every rank the
update equals one process on the global batch; the official code is single-GPU. Where g_b agrees
with g_a, P ≥ ½ (P = 1 when they agree exactly); where g_b opposes g_a and dominates, P → 0 and the
task gradient is dropped (λ = 1) or shrunk to (1 − λ) g_a. λ = 0 is plain training. L_b only sets
keep-probabilities.

Variants (``variant=``): ``"mt"`` plain mask tuning (CE only); ``"r_mt"`` adds the mask norm
term (no GDR); ``"r_amt"`` (default) adds GDR on top — the full method of the official code.
The paper calls its full method R-AMT ("A" for the attention layers it masks); the split into
``r_mt``/``r_amt`` by GDR follows this library's spec so that GDR's effect can be measured.
``"r_mt"`` is a working variant of ours, not an official path: the official trainer runs the
backward pass and the optimiser step only inside ``if cfg.MASK.GDR:``
(``trainers/masktuning.py`` l. 323–325), so with GDR off its masks never change.

Defaults (official ``configs/trainers/MASK/vit_b16.yaml``, the config of the reported runs):
scores init ``"1s"`` at scale 1e-2, τ = 5e-3, mask loss on with w_m = 1e-4 (``train.py``'s own
defaults are w_m = 1e-6 with the mask loss off), GDR on with λ = 1.0 (0.3 for 16-shot on most
datasets in the paper's scripts), T = 1 (``train.py``), Adam lr 8e-5 with a cosine schedule,
batch 32, 30 epochs. The official ViT always masks the patch-embedding convolution
(``code/modules/visiontransformer.py`` l. 77; conv layers are maskable here: name them in
``target_modules``), and ``vit_b16.yaml`` sets ``MASK_MLP False``: the reported runs mask the
attention layers, not the MLPs. Which layers to mask is the user's
choice (``target_modules``); :func:`rank_layers_by_gradient` offers a gradient-magnitude
ranking as a data-driven stand-in for the paper's key-parameter analysis (§3.1), which the
official code replaces by a fixed choice.

Dynamics worth knowing (spec §2, measured here too): under Adam each step moves a score by about
lr when its gradient sign is steady, so an entry flips after ≈ (scale − τ)/lr steps (62 at the
defaults). With deterministic full-batch gradients even the tiny norm term flips almost every
entry with little task gradient; small minibatches keep the masked fraction low. Watch
:meth:`MaskTuning.masked_fraction`.

Cost: GDR needs the teacher logits z⁰ (cache them when the inputs repeat) and two backward
passes (``torch.autograd.grad`` on L_b with the graph retained, then on L_a): about 1.5–2.3×
the step of plain mask tuning. Merged, the model is the plain pretrained architecture with
some weights zeroed: no inference cost.

Differences from the official code: the official trainer computes g_b with a full
``backward`` into ``.grad``; here both gradients come from ``torch.autograd.grad`` on the score
tensors alone (same values, no stray gradients). The official ``1s`` init and binariser are the
only ones implemented (``ternarizer`` is unused in its configs).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from regzoo.adapters.masks import BinaryMaskHandle, apply_binary_masks, find_mask_targets
from regzoo.core.checks import check_choice, check_range, check_tensor
from regzoo.registry import Default, register
from regzoo.train.distributed import is_distributed

VARIANTS: tuple[str, ...] = ("mt", "r_mt", "r_amt")


QKV_NAMES: tuple[tuple[str, str, str], ...] = (
    ("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("q", "k", "v"),
    ("to_q", "to_k", "to_v"), ("q_lin", "k_lin", "v_lin"))
"""Leaf names of separate query/key/value projections in common encoders."""


def qkv_groups(layer_names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Groups of ``layer_names`` that are one attention's q, k and v (same parent module)."""
    by_parent: dict[str, dict[str, str]] = {}
    for name in layer_names:
        parent, _, leaf = name.rpartition(".")
        by_parent.setdefault(parent, {})[leaf] = name
    groups = []
    for leaves in by_parent.values():
        for family in QKV_NAMES:
            present = tuple(leaves[leaf] for leaf in family if leaf in leaves)
            if len(present) > 1:
                groups.append(present)
    return tuple(groups)


def resolve_norm_groups(norm_groups: str | Sequence[Sequence[str]] | None,
                        layer_names: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Check ``norm_groups`` against the masked layers and return it as a tuple of groups."""
    if norm_groups is None:
        return ()
    if isinstance(norm_groups, str):
        if norm_groups != "qkv":
            raise ValueError(f"norm_groups must be None, 'qkv' or a sequence of groups of layer "
                             f"names, got {norm_groups!r}")
        groups = qkv_groups(layer_names)
        if not groups:
            raise ValueError(f"norm_groups='qkv' found no q/k/v projections among the masked "
                             f"layers {list(layer_names)[:20]}; name the groups explicitly")
        return groups
    if any(isinstance(group, str) for group in norm_groups):
        raise ValueError(f"norm_groups: each group must be a list of layer names, not a string; "
                         f"got {norm_groups!r} (wrap a single group in a list)")
    groups = tuple(tuple(group) for group in norm_groups)
    seen: set[str] = set()
    for group in groups:
        unknown = [name for name in group if name not in layer_names]
        if not group or unknown:
            raise ValueError(f"norm_groups: each group must be a non-empty list of masked layer "
                             f"names; {group!r} has unknown names {unknown} (masked layers: "
                             f"{list(layer_names)[:20]})")
        repeated = seen.intersection(group)
        if repeated:
            raise ValueError(f"norm_groups: layers {sorted(repeated)} are in more than one group")
        seen.update(group)
    return groups


def gdr_keep_probability(task_grad: torch.Tensor, anchor_grad: torch.Tensor,
                         eps: float = 1e-8) -> torch.Tensor:
    """P = (sign(g_a)·(g_a + g_b)/(|g_a| + |g_b| + ε) + 1)/2, elementwise in [0, 1] (eq. 7)."""
    if task_grad.shape != anchor_grad.shape:
        raise ValueError(f"task_grad {tuple(task_grad.shape)} and anchor_grad "
                         f"{tuple(anchor_grad.shape)} must have the same shape")
    ratio = (task_grad + anchor_grad) / (task_grad.abs() + anchor_grad.abs() + eps)
    return (torch.sign(task_grad) * ratio + 1) / 2


def gradient_dropout(task_grad: torch.Tensor, anchor_grad: torch.Tensor, lam: float = 1.0, *,
                     generator: torch.Generator | None = None, eps: float = 1e-8
                     ) -> torch.Tensor:
    """The GDR gradient g = [(1 − λ) + λ·1(P > U)]·g_a, U ~ U(0, 1) elementwise (eq. 7).

    Its expectation is ((1 − λ) + λ P)·g_a.
    """
    lam = check_range("lam", lam, 0.0, 1.0)
    keep = gdr_keep_probability(task_grad, anchor_grad, eps)
    draw = torch.rand(task_grad.shape, generator=generator, dtype=task_grad.dtype,
                      device="cpu" if generator is None else generator.device
                      ).to(task_grad.device)
    return ((1 - lam) + lam * (keep > draw).to(task_grad.dtype)) * task_grad


class GradientDropout:
    """Gradient dropout regularity for any (task loss, anchor loss) pair and parameter list.

    ``backward(task_loss, anchor_loss, params)`` sets each parameter's ``.grad`` to the GDR
    gradient of ``task_loss`` (accumulating into an existing ``.grad``, as ``backward`` does),
    using two ``torch.autograd.grad`` calls on the shared graph. ``torch.autograd.grad`` bypasses
    DDP's reducer, so under ``torch.distributed`` both gradients are averaged over the ranks
    here, before the draw: give every rank the same ``generator`` seed and the update equals one
    process on the global batch.

    Args:
        lam: λ ∈ [0, 1]; 1 drops disagreeing gradients, λ < 1 shrinks them to (1 − λ) g_a.
        generator: source of the uniform draws U (fix it for reproducible runs).
        eps: ε of the keep probability.
    """

    def __init__(self, lam: float = 1.0, *, generator: torch.Generator | None = None,
                 eps: float = 1e-8) -> None:
        self.lam = check_range("lam", lam, 0.0, 1.0)
        self.eps = check_range("eps", eps, 0.0, low_inclusive=False)
        self.generator = generator

    def backward(self, task_loss: torch.Tensor, anchor_loss: torch.Tensor,
                 params: Sequence[nn.Parameter]) -> None:
        """Write the GDR gradient of ``task_loss`` into ``params``' ``.grad``."""
        params = list(params)
        if not params:
            raise ValueError("params is empty; pass the parameters GDR should update")
        for name, loss in (("task_loss", task_loss), ("anchor_loss", anchor_loss)):
            check_tensor(name, loss, floating=True)
            if loss.ndim != 0:
                raise ValueError(f"{name} must be a scalar, got shape {tuple(loss.shape)}")
        anchor = torch.autograd.grad(anchor_loss, params, retain_graph=True, allow_unused=True)
        task = torch.autograd.grad(task_loss, params, allow_unused=True)
        if is_distributed():
            task, anchor = _mean_over_ranks(params, task, anchor)
        for p, g_a, g_b in zip(params, task, anchor):
            if g_a is None:
                continue
            g = gradient_dropout(g_a, torch.zeros_like(g_a) if g_b is None else g_b, self.lam,
                                 generator=self.generator, eps=self.eps)
            p.grad = g if p.grad is None else p.grad + g


def _mean_over_ranks(params: Sequence[nn.Parameter], *grads: Sequence[torch.Tensor | None]
                     ) -> list[list[torch.Tensor | None]]:
    """Average each list of gradients over the ranks in one all-reduce, as DDP's reducer would.

    A gradient a rank did not produce counts as zero there; one that no rank produced stays
    ``None``, so an unused parameter keeps ``.grad`` unset, as in one process.
    """
    dtype = functools.reduce(torch.promote_types, (p.dtype for p in params))
    produced = [g is not None for gs in grads for g in gs]
    pieces = [(g if g is not None else torch.zeros_like(p)).reshape(-1).to(dtype)
              for gs in grads for p, g in zip(params, gs)]
    flags = torch.tensor(produced, dtype=dtype, device=params[0].device)
    flat = torch.cat([*pieces, flags])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    sizes = [x.numel() for x in pieces] + [len(produced)]
    *averaged, any_rank = flat.split(sizes)
    shapes = [p for _ in grads for p in params]
    out = [mean.view_as(p).to(p.dtype) if any_rank[i] > 0 else None
           for i, (mean, p) in enumerate(zip(averaged, shapes))]
    return [out[i:i + len(params)] for i in range(0, len(out), len(params))]


def distillation_loss(logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """L_b = −T² Σ_c softmax(z⁰/T)_c log softmax(z/T)_c, averaged over the batch (``KLLoss``)."""
    temperature = check_range("temperature", temperature, 0.0, low_inclusive=False)
    check_tensor("logits", logits, ndim=2, floating=True)
    if teacher_logits.shape != logits.shape:
        raise ValueError(f"teacher_logits {tuple(teacher_logits.shape)} must match logits "
                         f"{tuple(logits.shape)}")
    target = F.softmax(teacher_logits.detach() / temperature, dim=-1)
    log_prob = F.log_softmax(logits / temperature, dim=-1)
    return -(target * log_prob).sum(dim=1).mean() * temperature ** 2


class PromptClassifier(nn.Module):
    """CLIP's zero-shot classifier: logits = s · cos(encoder(x), prompt embedding of class c).

    Args:
        encoder: maps a batch of inputs to embeddings (n, d); it is the part that gets masked.
        class_embeddings: (classes, d) embeddings of the label prompts, fixed (CLIP encodes
            them once with its frozen text encoder); normalised here.
        logit_scale: s, CLIP's temperature (100 in CLIP).
    """

    def __init__(self, encoder: Callable[..., torch.Tensor], class_embeddings: torch.Tensor,
                 logit_scale: float = 100.0) -> None:
        super().__init__()
        check_tensor("class_embeddings", class_embeddings, ndim=2, floating=True, finite=True)
        self.encoder = encoder
        self.logit_scale = check_range("logit_scale", logit_scale, 0.0, low_inclusive=False)
        self.register_buffer("class_embeddings",
                             F.normalize(class_embeddings.detach(), dim=-1))

    @classmethod
    def from_prompts(cls, encoder: Callable[..., torch.Tensor], prompts: Sequence[str],
                     logit_scale: float = 100.0,
                     prompt_encoder: Callable[..., torch.Tensor] | None = None
                     ) -> PromptClassifier:
        """Encode ``prompts`` once (with ``prompt_encoder``, default ``encoder``), no gradient."""
        if isinstance(prompts, str) or not prompts:
            raise ValueError("prompts must be a non-empty sequence of strings, one per class")
        with torch.no_grad():
            embeddings = (prompt_encoder or encoder)(list(prompts))
        return cls(encoder, embeddings, logit_scale)

    def forward(self, inputs: object) -> torch.Tensor:
        features = F.normalize(self.encoder(inputs), dim=-1)
        return self.logit_scale * features @ self.class_embeddings.to(features.dtype).t()


def rank_layers_by_gradient(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor],
                            candidates: Sequence[str]) -> list[tuple[str, float]]:
    """Candidate layers sorted by the mean |∂L/∂W ⊙ W| of their weight (largest first).

    |∂L/∂W ⊙ W| is the magnitude of the straight-through mask gradient at B ≡ 1, so a layer
    high in this list is one whose masks the task would move first: a data-driven stand-in for
    the paper's key-parameter identification (§3.1).
    """
    if not candidates:
        raise ValueError("candidates is empty; pass the names of the layers to rank")
    layers = {name: model.get_submodule(name) for name in candidates}
    weights = {name: layer.weight for name, layer in layers.items()}
    loss = loss_fn(model)
    grads = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
    scores = [(name, 0.0 if g is None else float((g * w.detach()).abs().mean()))
              for (name, w), g in zip(weights.items(), grads)]
    return sorted(scores, key=lambda item: -item[1])


@register(
    "rmt",
    kind="transform",
    declares={
        "one_adapter_per_layer": "built on regzoo.adapters.wrap",
    },
    summary="Learn a binary mask over frozen pretrained weights (straight-through scores); "
    "gradient dropout keeps the task gradient where it agrees with distillation to the "
    "zero-shot model.",
    equation="W_eff = W ⊙ 1[M > τ]; L_a = CE + w_m Σ‖M‖₂; g = [(1−λ) + λ·1(P > U)]·∂L_a/∂M, "
    "P = (sign(g_a)(g_a + g_b)/(|g_a| + |g_b| + ε) + 1)/2, g_b = ∂KL(z⁰‖z)/∂M",
    defaults=(
        Default("scale (init of M, '1s')", 1e-2, "official code/configs/trainers/MASK/vit_b16.yaml "
                "MASK.SCALE (code/train.py l. 118 the same)"),
        Default("threshold τ", 5e-3, "official vit_b16.yaml MASK.THRESHOLD (code/train.py l. 117 "
                "the same)"),
        Default("w_m (mask norm weight)", 1e-4, "official vit_b16.yaml MASK.LOSS_WEIGHT with "
                "MASK_LOSS True (code/train.py l. 114-115: 1e-6 with the mask loss off)"),
        Default("norm_groups", None, "None: one norm per masked layer (official: one per "
                "parameter; CLIP's fused in_proj_weight is one, as norm_groups='qkv')"),
        Default("λ (GDR)", 1.0, "official vit_b16.yaml GDR_LAMBDA; code/README.md l. 19: 0.3 for "
                "16-shot except ImageNet, SUN397, Food101"),
        Default("T (distillation)", 1.0, "official MASK.GDR_T (code/train.py l. 126)"),
        Default("optimiser", "Adam lr 8e-5, cosine, 30 epochs, batch 32",
                "official code/configs/trainers/MASK/vit_b16.yaml"),
    ),
    variants=("mt: CE only", "r_mt: CE + mask norm (ours: the official no-GDR path never "
              "steps)", "r_amt: + gradient dropout (default)", "norm_groups='qkv': one norm "
              "over each attention's q, k, v", "masks on nn.Conv1d/2d/3d kernels"),
)
class MaskTuning(BinaryMaskHandle):
    """Handle of a mask-tuned model; build it with :meth:`apply`, train with :meth:`backward`.

    ``penalty()`` is w_m·Σ‖M‖₂ (zero for ``"mt"``), so ``task_loss + handle.penalty()`` is L_a.
    """

    def __init__(self, model: nn.Module, layers: dict, saved: Sequence[nn.Module] = (), *,
                 variant: str = "r_amt", mask_loss_weight: float = 1e-4, gdr_lambda: float = 1.0,
                 temperature: float = 1.0, gdr_generator: torch.Generator | None = None,
                 norm_groups: tuple[tuple[str, ...], ...] = ()) -> None:
        super().__init__(model, layers, saved)
        self.variant = variant
        self.norm_groups = norm_groups
        self.mask_loss_weight = mask_loss_weight if variant != "mt" else 0.0
        self.temperature = temperature
        self.gradient_dropout = (GradientDropout(gdr_lambda, generator=gdr_generator)
                                 if variant == "r_amt" else None)

    @classmethod
    def apply(cls, model: nn.Module, *, target_modules: Sequence[str] | str | None = None,
              variant: str = "r_amt", init: str = "ones", scale: float = 1e-2,
              threshold: float = 5e-3, mask_loss_weight: float = 1e-4, gdr_lambda: float = 1.0,
              temperature: float = 1.0, generator: torch.Generator | None = None,
              modules_to_save: Sequence[str] | str = (),
              norm_groups: str | Sequence[Sequence[str]] | None = None) -> MaskTuning:
        """Attach binary masks to ``target_modules`` of ``model`` (in place) and freeze the rest.

        Args:
            model: the pretrained model (or the part that gets masked, e.g. an encoder).
            target_modules: the key parameters, peft-style names or globs; ``None`` masks every
                linear layer. For a BERT encoder the paper's choice (self-attention) is
                ``("query", "key", "value", "attention.output.dense")``.
            variant: ``"mt"``, ``"r_mt"`` or ``"r_amt"`` (see the module docstring).
            init, scale, threshold: score initialisation and τ
                (:class:`regzoo.adapters.masks.BinaryMaskLinear`).
            mask_loss_weight: w_m of the mask norm term (ignored by ``"mt"``).
            gdr_lambda: λ of gradient dropout (``"r_amt"`` only).
            temperature: T of the distillation loss L_b.
            generator: random source of GDR's draws and of the ``"uniform"`` init.
            modules_to_save: modules trained in full alongside the masks.
            norm_groups: layers whose scores share one L2 norm in the mask term — ``None``
                (one norm per layer), ``"qkv"`` (each attention's separate q/k/v
                projections, :func:`qkv_groups`) or explicit groups of masked layer names.
        """
        check_choice("variant", variant, VARIANTS)
        mask_loss_weight = check_range("mask_loss_weight", mask_loss_weight, 0.0)
        gdr_lambda = check_range("gdr_lambda", gdr_lambda, 0.0, 1.0)
        temperature = check_range("temperature", temperature, 0.0, low_inclusive=False)
        groups = resolve_norm_groups(
            norm_groups, [name for name, _ in find_mask_targets(model, target_modules)])
        return apply_binary_masks(  # type: ignore[return-value]
            model, target_modules=target_modules, init=init, scale=scale, threshold=threshold,
            generator=generator, modules_to_save=modules_to_save, handle_cls=cls,
            variant=variant, mask_loss_weight=mask_loss_weight, gdr_lambda=gdr_lambda,
            temperature=temperature, gdr_generator=generator, norm_groups=groups)

    @property
    def uses_gradient_dropout(self) -> bool:
        """True for ``"r_amt"``: :meth:`backward` then needs the teacher logits."""
        return self.gradient_dropout is not None

    def penalty(self) -> torch.Tensor:
        """w_m · Σ_groups ‖M_group‖₂ (the mask term of L_a); zero for ``"mt"``."""
        if self.mask_loss_weight == 0.0:
            return super().penalty()
        return self.mask_loss_weight * self.mask_l2(self.norm_groups)

    def backward(self, logits: torch.Tensor, target: torch.Tensor,
                 teacher_logits: torch.Tensor | None = None) -> dict[str, float]:
        """Backward of one step: L_a (and, for ``"r_amt"``, GDR against L_b) into ``.grad``.

        Args:
            logits: the masked model's logits (n, classes).
            target: class indices (n,).
            teacher_logits: the zero-shot model's logits on the same inputs; required for
                ``"r_amt"``.

        Returns:
            The loss values: ``ce``, ``mask_norm_term``, ``task`` (L_a) and, with GDR, ``kl``.
        """
        check_tensor("logits", logits, ndim=2, floating=True)
        check_tensor("target", target, ndim=1, floating=False)
        ce = F.cross_entropy(logits, target)
        norm_term = self.penalty()
        task = ce + norm_term
        values = {"ce": float(ce.detach()), "mask_norm_term": float(norm_term.detach()),
                  "task": float(task.detach())}
        trainable = self.trainable_parameters()
        if self.gradient_dropout is None:
            task.backward()
            return values
        if teacher_logits is None:
            raise ValueError("variant 'r_amt' needs teacher_logits (the zero-shot model's "
                             "logits on the same batch) for gradient dropout")
        anchor = distillation_loss(logits, teacher_logits, self.temperature)
        self.gradient_dropout.backward(task, anchor, trainable)
        values["kl"] = float(anchor.detach())
        return values
