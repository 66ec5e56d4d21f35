r"""BA-LoRA: PiSSA-initialised LoRA plus three regularisers on the model's outputs.

Chang, Chang, Wu. "BA-LoRA: Bias-Alleviating Low-Rank Adaptation to Mitigate Catastrophic
Inheritance in Large Language Models", arXiv 2408.04556 (v6: ICLR 2026; v1 was titled
"Bias-Aware LoRA"). Official code: https://github.com/cyp-jlu-ai/BA-LoRA (``train.py``).

The adapters are LoRA with PiSSA initialisation (:func:`regzoo.adapters.apply_low_rank` with
``init="pissa"``; the official ``build_balora.py`` uses peft's ``init_lora_weights="pissa"`` with
r = lora_alpha, i.e. scale 1). Fine-tuning minimises

.. math::

    L = L_{task} + λ_1 L_{cons}(f, f_0) + λ_2 L_{div}(f) + λ_3 L_{svd}(f)

where f are the adapted model's outputs on a batch and f₀ the *original pretrained* model's
outputs on the same batch (no gradient). The terms (paper §3, "consistency", "diversity" and
"SVD" regularisers; the official ``CustomTrainer.compute_loss``):

NLU (classifier logits Z ∈ R^{B×C}):

* :func:`consistency_nlu` — L_cons = mean_{b,c} (Z_bc/‖Z_b‖ − Z⁰_bc/‖Z⁰_b‖)², the MSE of
  row-L2-normalised logits (knowledge drift);
* :func:`diversity_nlu` — L_div = (1/C) Σ_{i≠j} Cov(Z)_ij², Cov = Z̄ᵀZ̄/(B−1), Z̄ = Z − mean over
  the batch: decorrelated output dimensions (representation collapse);
* :func:`svd_topk_ratio` — L_svd = −Σ_{i≤k} σ_i(Z) / (Σ_i σ_i(Z) + 10⁻¹⁰): the share of the top-k
  singular values is *maximised* (noise spread over the minor directions is suppressed).

NLG (token logits of shape (B, T, V), P = softmax over the vocabulary):

* :func:`consistency_nlg` — L_cons = KL(P₀ ‖ P) summed over tokens and vocabulary and divided by
  B (``kl_div(log P, P₀, reduction="batchmean")`` as in the official code; ``reduction="mean"``
  divides by the number of tokens instead);
* :func:`diversity_nlg` — L_div = −H(P) = mean over tokens of Σ_v P_v log P_v (entropy is
  maximised);
* :func:`svd_topk_ratio` — the same top-k share, for each example's T×V logit matrix, averaged
  over the batch (the paper's definition, ``svd_on="example"``), or on the (B, T·V) matrix the
  official code builds (``svd_on="flattened"``).

Defaults and their sources: λ₁ = 1e-4, λ₂ = 3e-4, λ₃ = 1e-4, k = 3 (official ``train.py``
dataclass and ``scripts/ba-lora.sh``); rank 8 with scale 1 (r = alpha, as ``build_balora.py``;
the paper's r = 128 does not fit small layers). The terms' magnitudes differ by orders of
magnitude (L_div grows with the logits' scale², L_svd ∈ [−1, 0]), so at a new scale the λ's need
tuning; the reproduction sweeps a common multiplier on validation data.

Differences from the official code, and why:

* its ``svd_regularization`` flattens the logits to 2-D and then indexes the 1-D vector of
  singular values as ``s[:, :k]``, which raises ``IndexError`` for every input: the published
  code cannot have trained with the SVD term. We implement the paper's equation (batched
  ``torch.linalg.svdvals`` over the last two dimensions);
* the teacher f₀ is the pretrained model, as the paper says (``teacher="pretrained"``). The
  official scripts most likely use the PiSSA *residual* model W − s·B₀A₀ instead: ``train.py``
  (l. 470–478) loads the teacher with ``from_pretrained(model_name_or_path)``, the path the
  adapter ``pissa_init`` is loaded onto (l. 384–390), and ``build_balora.py`` (l. 61–63) saves
  ``pissa_init`` next to the residual weights written after ``unload()``; loading ``pissa_init``
  onto the original W would count the principal part twice. ``teacher="residual"`` reproduces
  that (peft's ``disable_adapter()`` gives the same model). Either way the handle keeps a frozen
  copy, or accepts cached teacher outputs (``keep_pretrained=False``);
* the official NLG branch computes ``log`` of softmax probabilities; we use ``log_softmax`` (the
  same value without the underflow to −inf), and entropy without the ``+1e-10`` inside the log.

Cost per step: one extra forward of the frozen model (≈ +30–50 % of a step; 2× parameter memory
for the copy, none with cached outputs) and one batched SVD of the outputs, O(B·T·V·min(T, V))
for NLG, which dominates with a large vocabulary.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.adapters.base import AdapterLayer
from regzoo.adapters.lowrank import LowRankHandle, apply_low_rank
from regzoo.core.checks import check_choice, check_positive_int, check_real, check_tensor
from regzoo.core.compose import LossBreakdown
from regzoo.registry import Default, register

TASKS = ("nlu", "nlg")
TERMS = ("consistency", "diversity", "svd")
TEACHERS = ("pretrained", "residual")
PAPER_WEIGHTS: tuple[float, float, float] = (1e-4, 3e-4, 1e-4)
"""(λ₁, λ₂, λ₃) of the official ``train.py`` / ``scripts/ba-lora.sh``."""
PAPER_TOP_K = 3
SVD_EPS = 1e-10
"""Added to the sum of singular values, as in the official code."""


def _logits_of(name: str, value: Any) -> torch.Tensor:
    """A tensor, or the ``.logits`` of a model output object (transformers' outputs)."""
    logits = getattr(value, "logits", value)
    return check_tensor(name, logits, floating=True)


def _check_pair(logits: torch.Tensor, pretrained: torch.Tensor) -> None:
    if logits.shape != pretrained.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and pretrained_logits "
                         f"{tuple(pretrained.shape)} must have the same shape: both are the "
                         "outputs on the same batch")


def consistency_nlu(logits: torch.Tensor, pretrained_logits: torch.Tensor) -> torch.Tensor:
    """L_cons (NLU) = mean over entries of (Z/‖Z‖_row − Z₀/‖Z₀‖_row)²; Z, Z₀ of shape (B, C)."""
    check_tensor("logits", logits, ndim=2, floating=True)
    check_tensor("pretrained_logits", pretrained_logits, ndim=2, floating=True)
    _check_pair(logits, pretrained_logits)
    diff = F.normalize(logits, dim=-1) - F.normalize(pretrained_logits.detach(), dim=-1)
    return diff.square().mean()


def diversity_nlu(logits: torch.Tensor) -> torch.Tensor:
    """L_div (NLU) = (1/C) Σ_{i≠j} Cov(Z)_ij², the batch covariance of the (B, C) logits."""
    check_tensor("logits", logits, ndim=2, floating=True)
    b, c = logits.shape
    if b < 2:
        raise ValueError(f"logits must have at least 2 rows for a batch covariance, got {b}")
    centered = logits - logits.mean(dim=0, keepdim=True)
    cov = centered.t() @ centered / (b - 1)
    return (cov.square().sum() - cov.diagonal().square().sum()) / c


def svd_topk_ratio(logits: torch.Tensor, k: int = PAPER_TOP_K) -> torch.Tensor:
    """L_svd = −Σ_{i≤k} σ_i / (Σ_i σ_i + 1e-10) of the matrix in the last two dimensions.

    A 2-D input (B, C) is one matrix; a 3-D input (B, T, V) gives one ratio per example, averaged
    (the paper's per-example definition). Equals −1 when the matrix has rank ≤ k and
    −k/min(rows, cols) when all its singular values are equal; invariant to scaling.
    """
    check_tensor("logits", logits, floating=True)
    check_positive_int("k", k)
    if logits.ndim not in (2, 3):
        raise ValueError(f"logits must be 2-D (B, C) or 3-D (B, T, V), got shape "
                         f"{tuple(logits.shape)}")
    sigma = torch.linalg.svdvals(logits)
    ratio = sigma[..., :k].sum(dim=-1) / (sigma.sum(dim=-1) + SVD_EPS)
    return -ratio.mean()


def _token_mask(mask: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor | None:
    if mask is None:
        return None
    check_tensor("mask", mask)
    if mask.shape != logits.shape[:-1]:
        raise ValueError(f"mask must have shape (B, T) = {tuple(logits.shape[:-1])}, got "
                         f"{tuple(mask.shape)}")
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = token counted), got {mask.dtype}")
    if not bool(mask.any()):
        raise ValueError("mask selects no token; at least one position must be True")
    return mask


def _check_nlg(name: str, logits: torch.Tensor) -> None:
    check_tensor(name, logits, ndim=3, floating=True)


def consistency_nlg(logits: torch.Tensor, pretrained_logits: torch.Tensor, *,
                    mask: torch.Tensor | None = None,
                    reduction: str = "batchmean") -> torch.Tensor:
    """L_cons (NLG) = Σ_{b,t} KL(P₀_bt ‖ P_bt) / B (``"batchmean"``) or / #tokens (``"mean"``).

    ``mask`` (B, T) bool keeps only the True positions (padding excluded).
    """
    _check_nlg("logits", logits)
    _check_nlg("pretrained_logits", pretrained_logits)
    _check_pair(logits, pretrained_logits)
    check_choice("reduction", reduction, ("batchmean", "mean"))
    mask = _token_mask(mask, logits)
    log_p = F.log_softmax(logits, dim=-1)
    log_p0 = F.log_softmax(pretrained_logits.detach(), dim=-1)
    per_token = (log_p0.exp() * (log_p0 - log_p)).sum(dim=-1)
    if mask is not None:
        per_token = per_token * mask
    count = logits.shape[0] if reduction == "batchmean" else (
        per_token.numel() if mask is None else int(mask.sum()))
    return per_token.sum() / count


def diversity_nlg(logits: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_div (NLG) = −H(P) = mean over (masked) tokens of Σ_v P_v log P_v; −log V at uniform P."""
    _check_nlg("logits", logits)
    mask = _token_mask(mask, logits)
    log_p = F.log_softmax(logits, dim=-1)
    neg_entropy = (log_p.exp() * log_p).sum(dim=-1)
    if mask is None:
        return neg_entropy.mean()
    return (neg_entropy * mask).sum() / mask.sum()


def residual_model(model: nn.Module) -> nn.Module:
    """A frozen copy of an adapted ``model`` with every adapter dropped (its base layers kept).

    Under PiSSA each base holds W − s·B₀A₀, so this is the residual model that peft's
    ``unload()`` writes and ``disable_adapter()`` runs.
    """
    residual = copy.deepcopy(model)
    names = [name for name, module in residual.named_modules() if isinstance(module, AdapterLayer)]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = residual.get_submodule(parent) if parent else residual
        setattr(owner, child, getattr(owner, child).base)
    return residual.eval().requires_grad_(False)


def _check_weights(weights: Sequence[float]) -> tuple[float, float, float]:
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != 3:
        raise TypeError(f"weights must be a sequence (λ1, λ2, λ3) of 3 numbers, got {weights!r}")
    values = tuple(check_real(f"weights[{i}]", w) for i, w in enumerate(weights))
    if any(w < 0 for w in values):
        raise ValueError(f"weights must be >= 0 (0 switches a term off), got {values}")
    return values  # type: ignore[return-value]


@register(
    "ba_lora",
    kind="transform",
    declares={
        "one_adapter_per_layer": "built on regzoo.adapters.wrap",
        "batch_coupled": "its regulariser reads the batch as a whole: the singular values of the "
            "batch's logit matrix and the batch-mean consistency term are not means over examples",
    },
    summary="PiSSA-initialised LoRA trained with three output regularisers: consistency with the "
    "frozen pretrained model, decorrelated/high-entropy outputs, and a large top-k share of the "
    "outputs' singular values.",
    equation="L = L_task + λ1·L_cons(f, f0) + λ2·L_div(f) + λ3·L_svd(f); NLU: MSE of "
    "row-normalised logits, (1/C)Σ_{i≠j}Cov_ij², −Σ_{i≤k}σ_i/Σσ_i; NLG: KL(P0‖P)/B, −H(P), "
    "per-example top-k ratio",
    defaults=(
        Default("weights (λ1, λ2, λ3)", PAPER_WEIGHTS, "official train.py / scripts/ba-lora.sh"),
        Default("k", PAPER_TOP_K, "official train.py"),
        Default("init", "pissa", "official build_balora.py (peft init_lora_weights='pissa')"),
        Default("alpha", None, "None: α = rank, scale α/r = 1 (official build_balora.py, "
                "r = lora_alpha)"),
        Default("svd_on (NLG)", "example", "paper §3 (the official code's version crashes)"),
        Default("consistency reduction (NLG)", "batchmean", "official train.py"),
        Default("teacher", "pretrained", "paper §3 (f0 = the pretrained model); 'residual' "
                "(W − s·B0A0) is what the official train.py l. 470–478 most likely loads"),
    ),
    variants=("nlu (classifier logits)", "nlg (token logits)", "svd_on='flattened' (official "
              "shape, indexing fixed)", "cached pretrained outputs (keep_pretrained=False)",
              "any subset of terms (a zero weight switches a term off)",
              "teacher='residual' (the PiSSA residual model, the official scripts' teacher)"),
)
class BALoRA(LowRankHandle):
    """Handle of a BA-LoRA model: PiSSA adapters, the frozen pretrained model, the regularisers.

    Build it with :meth:`apply`. In a training step::

        logits = model(x)
        loss = task_loss(logits, y) + handle.regularizer(logits, inputs=x).total
    """

    def __init__(self, model: nn.Module, layers: dict[str, Any], saved: Sequence[nn.Module] = (),
                 *, pretrained: nn.Module | None, task: str,
                 weights: tuple[float, float, float], k: int, svd_on: str,
                 consistency_reduction: str) -> None:
        super().__init__(model, layers, saved)
        self.pretrained = pretrained
        self.task = task
        self.weights = weights
        self.k = k
        self.svd_on = svd_on
        self.consistency_reduction = consistency_reduction

    @classmethod
    def apply(cls, model: nn.Module, *, target_modules: Sequence[str] | str | None = None,
              rank: int = 8, alpha: float | None = None, dropout: float = 0.0,
              task: str = "nlu", weights: Sequence[float] = PAPER_WEIGHTS,
              k: int = PAPER_TOP_K, svd_on: str = "example",
              consistency_reduction: str = "batchmean", keep_pretrained: bool = True,
              modules_to_save: Sequence[str] | str = (), init_svd: str = "full",
              svd_niter: int = 4, teacher: str = "pretrained") -> BALoRA:
        """Copy the pretrained model (frozen, eval mode), then wrap ``model`` with PiSSA adapters.

        Args:
            model: the pretrained network, adapted in place.
            target_modules: layer names (peft-style suffixes or globs); None = every linear layer
                with min(in, out) ≥ rank (smaller ones skipped with a warning).
            rank: adapter rank r.
            alpha: scale alpha / r; None = scale 1 (the official r = alpha).
            dropout: dropout on the adapters' inputs (official: 0).
            task: ``"nlu"`` (outputs (B, C)) or ``"nlg"`` (outputs (B, T, V)).
            weights: (λ₁, λ₂, λ₃) for consistency, diversity and SVD; 0 switches a term off.
            k: the number of top singular values in L_svd.
            svd_on: NLG only — ``"example"`` (each example's T×V matrix, the paper) or
                ``"flattened"`` (one (B, T·V) matrix, the official code's reshape).
            consistency_reduction: NLG only — ``"batchmean"`` (official) or ``"mean"``.
            keep_pretrained: keep a frozen copy of the teacher; False when its outputs are
                cached and passed to :meth:`regularizer`.
            teacher: f₀ of the consistency term — ``"pretrained"`` (the model as given, the
                paper) or ``"residual"`` (the model with the PiSSA principal part removed from
                every adapted layer, W − s·B₀A₀: what the official scripts load).
            modules_to_save: modules trained in full alongside (a new classifier head).
            init_svd: ``"full"`` (exact PiSSA start) or ``"lowrank"`` (randomised, peft's
                ``pissa_niter_N``, for large layers).
            svd_niter: subspace iterations of ``init_svd="lowrank"``.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        check_choice("task", task, TASKS)
        check_choice("svd_on", svd_on, ("example", "flattened"))
        check_choice("consistency_reduction", consistency_reduction, ("batchmean", "mean"))
        check_positive_int("k", k)
        checked = _check_weights(weights)
        check_choice("teacher", teacher, TEACHERS)
        if not isinstance(keep_pretrained, bool):
            raise TypeError(f"keep_pretrained must be a bool, got {keep_pretrained!r}")
        pretrained = None
        if keep_pretrained and teacher == "pretrained":
            pretrained = copy.deepcopy(model).eval()
            pretrained.requires_grad_(False)
        handle = apply_low_rank(model, target_modules=target_modules, rank=rank, init="pissa",
                                alpha=alpha, dropout=dropout, modules_to_save=modules_to_save,
                                init_svd=init_svd, svd_niter=svd_niter,
                                handle_cls=cls, pretrained=pretrained, task=task,
                                weights=checked, k=k, svd_on=svd_on,
                                consistency_reduction=consistency_reduction)
        if keep_pretrained and teacher == "residual":
            handle.pretrained = residual_model(model)
        return cast(BALoRA, handle)

    @torch.no_grad()
    def pretrained_outputs(self, inputs: Any) -> torch.Tensor:
        """f₀: the frozen pretrained model on ``inputs``, without gradient.

        ``inputs`` is a tensor, a tuple of positional arguments or a dict of keyword arguments.
        """
        self._check_live()
        if self.pretrained is None:
            raise RuntimeError("this handle keeps no pretrained copy (keep_pretrained=False); "
                               "pass pretrained_outputs= (cached outputs of the original model)")
        first = next((t for t in (inputs.values() if isinstance(inputs, Mapping) else
                                  inputs if isinstance(inputs, (tuple, list)) else (inputs,))
                      if isinstance(t, torch.Tensor)), None)
        if first is not None:
            self.pretrained.to(first.device)
        try:
            if isinstance(inputs, Mapping):
                out = self.pretrained(**inputs)
            elif isinstance(inputs, (tuple, list)):
                out = self.pretrained(*inputs)
            else:
                out = self.pretrained(inputs)
        except RuntimeError as error:
            if "shape" not in str(error) and "size" not in str(error):
                raise
            raise ValueError(f"inputs= must be the batch the adapted model itself takes (the x "
                             f"of model(x)); the pretrained copy cannot run on it: {error}"
                             ) from None
        return _logits_of("pretrained outputs", out)

    def _outputs(self, outputs: Any, mask: torch.Tensor | None) -> torch.Tensor:
        logits = _logits_of("outputs", outputs)
        expected = 2 if self.task == "nlu" else 3
        if logits.ndim != expected:
            shape = "(B, C)" if self.task == "nlu" else "(B, T, V)"
            raise ValueError(f"task={self.task!r} expects outputs of shape {shape}, got "
                             f"{tuple(logits.shape)}; choose task='nlu' for classifier logits, "
                             "'nlg' for token logits")
        if mask is not None and self.task == "nlu":
            raise ValueError("mask is for task='nlg' (token positions); NLU outputs have none")
        return logits

    def _pretrained(self, pretrained_outputs: Any, inputs: Any) -> torch.Tensor:
        if pretrained_outputs is not None:
            if inputs is not None:
                raise ValueError("pass either pretrained_outputs or inputs, not both")
            return _logits_of("pretrained_outputs", pretrained_outputs)
        if inputs is None:
            raise ValueError("the consistency term needs the pretrained outputs: pass inputs= "
                             "(the batch, run through the frozen copy) or pretrained_outputs=")
        return self.pretrained_outputs(inputs)

    def _consistency(self, logits: torch.Tensor, pretrained: torch.Tensor,
                     mask: torch.Tensor | None) -> torch.Tensor:
        if self.task == "nlu":
            return consistency_nlu(logits, pretrained)
        return consistency_nlg(logits, pretrained, mask=mask,
                               reduction=self.consistency_reduction)

    def _diversity(self, logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return diversity_nlu(logits) if self.task == "nlu" else diversity_nlg(logits, mask=mask)

    def _svd(self, logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.task == "nlu":
            return svd_topk_ratio(logits, self.k)
        if mask is not None:
            logits = logits * _token_mask(mask, logits).unsqueeze(-1)
        if self.svd_on == "flattened":
            return svd_topk_ratio(logits.reshape(logits.shape[0], -1), self.k)
        return svd_topk_ratio(logits, self.k)

    def terms(self, outputs: Any, pretrained_outputs: Any = None, *, inputs: Any = None,
              mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The three unweighted terms ``{"consistency", "diversity", "svd"}`` of one batch.

        ``outputs`` are the adapted model's logits (or an object with ``.logits``); the
        pretrained ones come from ``pretrained_outputs`` or from running the frozen copy on
        ``inputs``. ``mask`` (NLG, (B, T) bool) drops padded positions; in the SVD term they are
        zeroed rows.
        """
        self._check_live()
        logits = self._outputs(outputs, mask)
        pretrained = self._pretrained(pretrained_outputs, inputs)
        return {"consistency": self._consistency(logits, pretrained, mask),
                "diversity": self._diversity(logits, mask), "svd": self._svd(logits, mask)}

    def regularizer(self, outputs: Any, pretrained_outputs: Any = None, *, inputs: Any = None,
                    mask: torch.Tensor | None = None) -> LossBreakdown:
        """λ₁L_cons + λ₂L_div + λ₃L_svd as a :class:`LossBreakdown` (``parts``: weighted terms).

        Terms with weight 0 are skipped (not computed). Add ``.total`` to the task loss.
        """
        self._check_live()
        logits = self._outputs(outputs, mask)
        lam1, lam2, lam3 = self.weights
        parts: dict[str, torch.Tensor] = {}
        if lam1 != 0:
            pretrained = self._pretrained(pretrained_outputs, inputs)
            parts["consistency"] = lam1 * self._consistency(logits, pretrained, mask)
        if lam2 != 0:
            parts["diversity"] = lam2 * self._diversity(logits, mask)
        if lam3 != 0:
            parts["svd"] = lam3 * self._svd(logits, mask)
        total = sum(parts.values(), logits.new_zeros(()))
        return LossBreakdown(total=total, parts=parts, weights=dict(zip(TERMS, self.weights)))

    def penalty(self) -> torch.Tensor:
        """Zero: BA-LoRA has no term on the weights alone.

        All three regularisers are functions of the outputs (and the pretrained outputs), so
        they live in :meth:`regularizer`; this is the transform contract's weight-only part.
        """
        return super().penalty()

    def remove(self) -> None:
        """Merge, restore plain layers, drop the pretrained copy and retire the handle."""
        super().remove()
        self.pretrained = None
