r"""SaRA: fine-tune only the smallest-magnitude pretrained weights, kept low-rank, re-selected once.

Hu, Zhang, Yi, Huang, Wang, Ma. "SaRA: High-Efficient Diffusion Model Fine-tuning with
Progressive Sparse Low-Rank Adaptation", ICLR 2025, arXiv 2409.06633. Official code (no
licence, read only): github.com/sjtuplayer/SaRA, ``optim/adamw.py`` and ``optim/adamw2.py``.

For each target tensor W₀ — every weight matrix of a linear layer and every convolution kernel
(flattened) by default — the trainable set is its smallest entries by magnitude (§3.1: the
smallest 10–20 % of a pretrained model's weights barely affect its output):

.. math::

    M = \mathbb{1}[|W_0| < \tau] \quad\text{or, per tensor, the } \lfloor f\,\mathrm{numel}\rfloor
    \text{ smallest } |W_0| \text{ (stable sort: lower index first on ties)},

    W = W_0 \odot (1 - M) + V \odot M, \qquad V_0 = W_0 .

The values V at M are trained with AdamW (β = (0.9, 0.999), ε = 1e-8, weight decay 1e-2 on
the selected entries only) on

.. math::

    L = L_\text{task} + \lambda_\text{rank}\,\lVert W \odot M \rVert_*        \quad (§3.2)

for one eligible matrix drawn at random per step (eligible: a 2-D weight with min(out, in) > 64,
official ``set_mask_param``), and once, after ``progressive_iter`` steps (§3.3), the trainable set
shrinks to the entries still below the threshold: M₂ = M ∧ 1[|W_t| < τ]; entries that grew past
τ are "effective" now and stay frozen at their trained value.

Order of a step, as the official optimizers do it (each an option; the other order, this
library's before these options, in brackets):

* the nuclear-norm gradient is added inside :meth:`SaRAAdamW.step`, i.e. after any gradient
  clipping of the training loop (both official optimizers call ``rank_loss.backward()`` in
  ``step``; ``examples/finetune.py`` clips before it) — ``penalty_in_optimizer=True``
  [``False``: :meth:`SaRA.penalty` returns the term for the loss, clipped with it];
* the drawn matrix is penalised only when it holds more than 100 selected entries (``adamw2.py``,
  ``mask.sum() > 100``; the UB ``adamw.py`` has no guard, but there the term has no effect at
  all, see bug 1 below) — ``rank_min_selected=100`` [``0``];
* the step after the re-selection makes no update (``adamw.py`` re-selects at the start of call
  ``progressive_iter + 1``, rebuilds itself and returns; ``adamw2.py`` does not skip) —
  ``skip_reselection_step=True`` [``False``].

Targets. The official optimizer selects among every parameter it is handed (the SD-1.5 UNet's:
convolution kernels as well as linear weights); convolutions are covered here by default
(``include_convolutions=True``; it changes nothing on models without convolutions). Biases and
normalisation weights and biases (the rest of the official set) only with
``include_biases_and_norms=True``: the paper speaks of a sparse weight matrix, and with a
per-tensor ``fraction`` every bias and norm scale would give up ⌊f·n⌋ entries, where an absolute
τ takes only entries that are tiny (a norm scale, ≈ 1, essentially never). Only 2-D weights are
eligible for the penalty, as officially; ``rank_kernels=True`` also draws kernels, as the
(out, in/groups·∏k) matrix.

"Unstructured backpropagation" (§3.4) is ``mode="sparse"`` of
:class:`regzoo.adapters.sparse.SparseValueLayer`: gradients and AdamW state for the nnz selected
entries only. ``mode="dense"`` trains the same entries through a dense masked parameter (the
official ``adamw2.py``'s way, O(numel) state) and follows the same trajectory.

Frozen entries never change, so recomputing 1[|W_t| < τ] over the whole tensor (the official UB
optimizer) selects the same M₂; what differs there is that Adam's state is reset
(``reset_state=True`` of :meth:`SaRA.optimizer`; the default keeps it, as ``adamw2.py`` does).
With ``fraction=`` the threshold used for re-selection is the largest selected |W₀| of each
tensor (recorded as :attr:`SaRA.thresholds`, keyed ``"<layer>.<parameter>"``), and entries stay
while |W_t| ≤ τ.

Three bugs of the official code are not reproduced (spec sara.md §2, checked by regression
tests): (1) in the UB optimizer the nuclear-norm gradient lands on parameters the optimizer does
not hold, so λ_rank has no effect; here the term is differentiated with respect to the trained
values; (2) the UB optimizer initialises the trainable values as |W₀[M]|, flipping the sign of
about half of them; here V₀ = W₀[M], so applying SaRA leaves the outputs unchanged; (3)
``progressive_iter=-1`` (its default) crashes the UB optimizer; here ``progressive_iter=None``
disables the step. Official quirk kept as an option: ``lr=None`` in :meth:`SaRA.optimizer` with an
absolute threshold gives lr = 1e-3·exp(−350 τ) (``adamw.py``). Not covered: parameters outside
linear, convolution and normalisation layers (embeddings, free ``nn.Parameter``\ s), which the
official optimizer would also select among.

Defaults: ``fraction=0.1`` (the lower end of the paper's "smallest 10–20 %"; the paper's absolute
τ = 2e-3 is tuned to SD-1.5's weight scale and is ``threshold=2e-3``), λ_rank = 5e-4 and
progressive_iter = 2500 (official ``finetune.sh``).

Cost: a step costs what a full fine-tuning step costs (the dense ∂L/∂W is formed, then gathered)
plus one SVD of one eligible matrix for the penalty; the saving is gradient and optimizer memory.
:meth:`SaRA.optimizer` uses torch's fused AdamW kernel where torch has it (``fused=None``), the
same update up to rounding as torch's default loop (``fused=False``), and faster on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from regzoo.adapters.sparse import MODES, SparseHandle, SparseValueLayer, apply_sparse
from regzoo.core.checks import check_choice, check_positive_int, check_range
from regzoo.registry import Default, register

PAPER_THRESHOLD = 2e-3
"""The paper's absolute τ for Stable Diffusion 1.5 (official ``finetune.sh``)."""


def _nuclear_norm(matrix: torch.Tensor) -> torch.Tensor:
    """Σ singular values (differentiable; the official code sums ``torch.svd``'s S)."""
    return torch.linalg.svdvals(matrix).sum()


@register(
    "sara",
    kind="transform",
    declares={
        "one_adapter_per_layer": "built on regzoo.adapters.wrap",
    },
    summary="Fine-tune only the smallest-|w| entries of each pretrained weight matrix and "
    "convolution kernel (sparse values, O(nnz) grads and Adam state), with a nuclear-norm "
    "penalty on the masked weights and one progressive re-selection.",
    equation="M = 1[|W0| < τ] (or the smallest ⌊f·numel⌋); W = W0⊙(1−M) + V⊙M, V0 = W0; "
    "L = L_task + λ‖W⊙M‖_* (one random eligible matrix per step); at t = T_p: M ← M ∧ 1[|W_t| < τ]",
    defaults=(
        Default("fraction", 0.1, "paper §3.1/abstract: the smallest 10–20 % are ineffective"),
        Default("threshold", None, "paper/official finetune.sh: τ = 2e-3 for SD-1.5"),
        Default("lambda_rank", 5e-4, "official finetune.sh"),
        Default("progressive_iter", 2500, "official finetune.sh"),
        Default("rank_min_dim", 64, "official optim set_mask_param: min(shape) > 64"),
        Default("rank_min_selected", 100, "official optim/adamw2.py: mask.sum() > 100"),
        Default("rank_kernels", False, "official set_mask_param: 2-D weights only"),
        Default("include_convolutions", True, "official optim: every UNet parameter"),
        Default("include_biases_and_norms", False, "paper: weight matrices (official: all)"),
        Default("skip_reselection_step", True, "official optim/adamw.py (the default UB path)"),
        Default("penalty_in_optimizer", True, "official optim: the term's backward in step()"),
        Default("AdamW", "β=(0.9, 0.999), ε=1e-8, weight decay 1e-2", "official optim/adamw.py"),
    ),
    variants=("threshold (absolute τ) or fraction per tensor", "sparse (UB) or dense path",
              "no nuclear norm (lambda_rank=0)", "no progressive step (progressive_iter=None)",
              "reset Adam state at re-selection (official UB optimizer)",
              "linear layers only, or with biases and norms",
              "penalty in the loss (before clipping)", "no >100-entry guard",
              "no skipped step at re-selection"),
    benchmark="sparse_adapters",
)
class SaRA(SparseHandle):
    """Handle of a model adapted with SaRA; build it with :meth:`apply`."""

    def __init__(self, model: nn.Module, layers: dict[str, SparseValueLayer],
                 saved: Sequence[nn.Module] = (), *, lambda_rank: float = 5e-4,
                 progressive_iter: int | None = 2500, rank_min_dim: int = 64,
                 rank_min_selected: int = 100, rank_kernels: bool = False,
                 skip_reselection_step: bool = True, penalty_in_optimizer: bool = True,
                 thresholds: dict[str, float] | None = None, inclusive: bool = True,
                 seed: int = 0) -> None:
        super().__init__(model, layers, saved)
        self.lambda_rank = lambda_rank
        self.progressive_iter = progressive_iter
        self.rank_min_dim = rank_min_dim
        self.rank_min_selected = rank_min_selected
        self.rank_kernels = rank_kernels
        self.skip_reselection_step = skip_reselection_step
        self.penalty_in_optimizer = penalty_in_optimizer
        self.thresholds = dict(thresholds or {})
        self.inclusive = inclusive
        self.reselected = False
        self._generator = torch.Generator().manual_seed(seed)

    @classmethod
    def apply(cls, model: nn.Module, *, target_modules: Sequence[str] | str | None = None,
              fraction: float | None = 0.1, threshold: float | None = None,
              lambda_rank: float = 5e-4, progressive_iter: int | None = 2500,
              rank_min_dim: int = 64, rank_min_selected: int = 100, rank_kernels: bool = False,
              include_convolutions: bool = True, include_biases_and_norms: bool = False,
              skip_reselection_step: bool = True, penalty_in_optimizer: bool = True,
              mode: str = "sparse", modules_to_save: Sequence[str] | str = (),
              seed: int = 0) -> SaRA:
        """Select the trainable entries of every target layer and freeze the rest.

        Args:
            model: wrapped in place; ``target_modules=None`` takes every linear layer and
                convolution (and normalisation layer with ``include_biases_and_norms``).
            fraction: per tensor, the ⌊fraction·numel⌋ smallest |W₀| (ignored when
                ``threshold`` is given).
            threshold: the paper's absolute τ: the entries with |W₀| < τ.
            lambda_rank: weight of ‖W⊙M‖_* (0 turns it off).
            progressive_iter: optimizer steps before the re-selection (None: never).
            rank_min_dim: a matrix is eligible for the penalty when min(rows, cols) > this.
            rank_min_selected: the drawn matrix is penalised only when more than this many of
                its entries are selected (official ``adamw2.py``: 100; 0: always).
            rank_kernels: also draw convolution kernels, as (out, in/groups·∏k) matrices (the
                official code draws 2-D weights only).
            include_convolutions: cover convolution kernels (official: every parameter).
            include_biases_and_norms: also cover biases and normalisation weights and biases.
            skip_reselection_step: the optimizer step after the re-selection makes no update
                (official ``adamw.py``).
            penalty_in_optimizer: :class:`SaRAAdamW` adds the term's gradient in ``step()``,
                after the loop's gradient clipping, and :meth:`penalty` is zero (official);
                ``False``: :meth:`penalty` returns the term, to be added to the loss.
            mode: ``"sparse"`` (unstructured backprop, O(nnz) state) or ``"dense"``.
            modules_to_save: modules trained in full (a new head, say).
            seed: seeds the draw of the penalised matrix at each step.
        """
        check_range("lambda_rank", lambda_rank, 0.0)
        check_positive_int("rank_min_dim", rank_min_dim, minimum=0)
        check_positive_int("rank_min_selected", rank_min_selected, minimum=0)
        check_choice("mode", mode, MODES)
        if progressive_iter is not None:
            check_positive_int("progressive_iter", progressive_iter)
        if threshold is not None:
            check_range("threshold", threshold, 0.0, low_inclusive=False)
            fraction = None
        elif fraction is None:
            raise ValueError("pass fraction= (share per tensor, e.g. 0.1) or threshold= "
                             "(absolute τ, the paper's 2e-3 for SD-1.5)")
        handle = apply_sparse(model, target_modules=target_modules, fraction=fraction,
                              threshold=threshold, rule="smallest", mode=mode,
                              include_convolutions=include_convolutions,
                              include_biases_and_norms=include_biases_and_norms,
                              modules_to_save=modules_to_save, handle_cls=cls,
                              lambda_rank=float(lambda_rank), progressive_iter=progressive_iter,
                              rank_min_dim=rank_min_dim, rank_min_selected=rank_min_selected,
                              rank_kernels=rank_kernels,
                              skip_reselection_step=skip_reselection_step,
                              penalty_in_optimizer=penalty_in_optimizer,
                              inclusive=threshold is None, seed=seed)
        assert isinstance(handle, SaRA)
        for name, layer in handle.layers.items():
            owner = layer.tensor_of(layer.index)
            for position, tensor in enumerate(layer.tensors):
                if threshold is not None:
                    tau = float(threshold)
                else:
                    selected = layer.origin[owner == position]
                    tau = float(selected.abs().max()) if selected.numel() else 0.0
                handle.thresholds[f"{name}.{tensor}"] = tau
        return handle

    def rank_eligible(self) -> list[str]:
        """Layers the penalty may draw, whatever their selected count (official ``low_rank_ids``).

        A 2-D weight (a kernel too with ``rank_kernels``) whose matrix has min(rows, cols) >
        ``rank_min_dim``.
        """
        eligible = []
        for name, layer in self.layers.items():
            shape = layer.shapes[0]
            if len(shape) == 2 or (self.rank_kernels and len(shape) > 2):
                rows = shape[0]
                if min(rows, math.prod(shape) // rows) > self.rank_min_dim:
                    eligible.append(name)
        return eligible

    def _masked_matrix(self, name: str) -> torch.Tensor:
        masked = self.layers[name].masked_weight()
        return masked.reshape(masked.shape[0], -1)

    def nuclear_norms(self) -> dict[str, float]:
        """‖W ⊙ M‖_* of every eligible layer now (for monitoring)."""
        with torch.no_grad():
            return {name: float(_nuclear_norm(self._masked_matrix(name)))
                    for name in self.rank_eligible()}

    def rank_term(self) -> torch.Tensor | None:
        """λ_rank · ‖W ⊙ M‖_* of one eligible layer drawn uniformly (paper §3.2).

        None when nothing is penalised this step: λ = 0, no eligible layer, or the drawn one
        holds no more than ``rank_min_selected`` selected entries. Differentiable with respect
        to the trained values only. Each call draws; :class:`SaRAAdamW` calls it once per step
        (``penalty_in_optimizer``), else :meth:`penalty` does.
        """
        self._check_live()
        eligible = self.rank_eligible()
        if self.lambda_rank == 0 or not eligible:
            return None
        name = eligible[int(torch.randint(len(eligible), (1,), generator=self._generator))]
        if self.layers[name].tensor_counts()["weight"] <= self.rank_min_selected:
            return None
        return self.lambda_rank * _nuclear_norm(self._masked_matrix(name))

    def penalty(self) -> torch.Tensor:
        """The term to add to the task loss: :meth:`rank_term` with ``penalty_in_optimizer=False``.

        Zero with ``penalty_in_optimizer=True`` (the default), where :class:`SaRAAdamW` adds the
        term's gradient itself, after the loop's clipping; adding this to the loss is harmless.
        """
        self._check_live()
        term = None if self.penalty_in_optimizer else self.rank_term()
        return super().penalty() if term is None else term

    def reselect(self, optimizer: torch.optim.Optimizer | None = None) -> int:
        """The progressive step (§3.3): keep training only entries still below their τ.

        M₂ = M ∧ 1[|W_t| < τ] (≤ τ with ``fraction=``; τ per tensor); the others freeze at their
        trained value. With ``optimizer`` the kept entries keep their Adam state. Returns the
        new count.
        """
        self._check_live()
        keep = {}
        with torch.no_grad():
            for name, layer in self.layers.items():
                magnitude = layer.selected_values().detach().abs()
                taus = torch.tensor([self.thresholds[f"{name}.{t}"] for t in layer.tensors],
                                    dtype=magnitude.dtype, device=magnitude.device)
                tau = taus[layer.tensor_of(layer.index)]
                keep[name] = magnitude <= tau if self.inclusive else magnitude < tau
        self.restrict(keep, optimizer)
        self.reselected = True
        return self.num_selected

    def optimizer(self, lr: float | None = None, *, betas: tuple[float, float] = (0.9, 0.999),
                  eps: float = 1e-8, weight_decay: float = 1e-2,
                  reset_state: bool = False, fused: bool | None = None) -> SaRAAdamW:
        """AdamW over :meth:`trainable_parameters` that runs the progressive step itself.

        ``lr=None`` is the official default 1e-3·exp(−350 τ), defined for an absolute τ only.
        ``fused``: torch's fused AdamW kernel (see :class:`SaRAAdamW`); ``None``: where torch
        has it for every parameter's device and dtype.
        """
        if lr is None:
            taus = set(self.thresholds.values())
            if self.inclusive or len(taus) != 1:
                raise ValueError("lr=None uses the official 1e-3·exp(-350·τ), which needs an "
                                 "absolute threshold=; pass lr explicitly with fraction=")
            lr = 1e-3 * math.exp(-350 * taus.pop())
        return SaRAAdamW(self, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         reset_state=reset_state, fused=fused)


def fused_adamw_available(params: Sequence[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW kernel runs on every tensor of ``params``."""
    return bool(params) and all(
        p.is_floating_point() and (p.device.type == "cuda" or (
            p.device.type == "cpu" and torch.__version__ >= "2.4")) for p in params)


class SaRAAdamW(torch.optim.AdamW):
    """AdamW on a SaRA handle's parameters; adds the penalty's gradient and re-selects.

    A step: evaluate ``closure`` (if given); with the handle's ``penalty_in_optimizer``, add the
    gradient of :meth:`SaRA.rank_term` (after whatever clipping the loop did); update; after
    ``progressive_iter`` steps, re-select. With ``skip_reselection_step`` the next call makes no
    update and draws no penalty (official ``adamw.py``). ``reset_state=True`` drops Adam's moments
    of the re-selected entries, as the official UB optimizer does (it rebuilds itself); the
    default keeps them (official ``adamw2.py``).

    ``fused=True`` runs torch's fused AdamW kernel (one pass per tensor; CUDA, and CPU from torch
    2.4), ``False`` torch's default per-tensor loop, ``None`` (default) the fused kernel where torch
    has it for every parameter. Same update, rounded differently: after 30 steps the weights of
    the two agree to ~1e-16 in float64 and ~3e-7 in float32 (test_sara checks 1e-12 in float64).
    Fused is the faster of the two on CPU, and on ``mode="dense"`` much faster: there ~90 % of
    ``exp_avg_sq`` is exactly 0 (frozen entries have zero gradients), and torch's vectorised CPU
    ``sqrt`` in the loop path is ~50× slower on zeros than on positive floats
    (benchmarks/sparse_adapters.py).
    """

    def __init__(self, handle: SaRA, *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, reset_state: bool = False,
                 fused: bool | None = None) -> None:
        check_range("lr", lr, 0.0, low_inclusive=False)
        check_range("weight_decay", weight_decay, 0.0)
        params = handle.trainable_parameters()
        if fused is None:
            fused = fused_adamw_available(params)
        elif not isinstance(fused, bool):
            raise TypeError(f"fused must be True, False or None (auto), got {fused!r}")
        elif fused and not fused_adamw_available(params):
            raise ValueError("fused=True needs floating-point parameters on CUDA, or on CPU with "
                             f"torch >= 2.4 (torch {torch.__version__}); pass fused=None or False")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         fused=fused)
        self.handle = handle
        self.reset_state = reset_state
        self.steps_taken = 0
        self.skip_next = False

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None  # type: ignore[override]
             ) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.steps_taken += 1
        if self.skip_next:
            self.skip_next = False
            return loss
        if self.handle.penalty_in_optimizer:
            with torch.enable_grad():
                term = self.handle.rank_term()
                if term is not None:
                    term.backward()
        super().step()
        if (self.handle.progressive_iter is not None and not self.handle.reselected
                and self.steps_taken == self.handle.progressive_iter):
            self.handle.reselect(self)
            if self.reset_state:
                for p in [p for g in self.param_groups for p in g["params"]]:
                    self.state.pop(p, None)
            self.skip_next = self.handle.skip_reselection_step
        return loss
