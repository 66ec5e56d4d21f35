r"""SORSA: trainable singular values and orthonormal-regularised singular vectors of each weight.

Cao (and Song in later versions). "SORSA: Singular Values and Orthonormal Regularized Singular
Vectors Adaptation of Large Language Models", 2024, arXiv 2409.00055. Official code:
https://github.com/Gunale0926/SORSA (``sorsalib/src/sorsa/layer.py``, ``trainer.py``).

Every adapted weight W ∈ R^{m×n} (out × in) is split by its thin SVD W = U Σ Vᵀ into a frozen
residual and a trainable principal part of rank r, kept as three factors:

.. math::

    W = \underbrace{W - s\,U_r \mathrm{diag}(\Sigma_r) V_r^\top}_{W_{res}\ \text{(frozen)}}
        + s\,\underbrace{B\,\mathrm{diag}(\sigma)\,A}_{\text{trainable}},\qquad
    B = U_r,\ \sigma = \Sigma_r,\ A = V_r^\top\ \text{at init},

so the output is unchanged at init; y = x W_resᵀ + s·((x Aᵀ) ⊙ σ) Bᵀ + b, s = alpha/r (1 when
alpha is None, the default). The layer is :class:`regzoo.adapters.LowRankLinear` with
``init="sorsa"``; this module adds the orthonormal regulariser (the paper's method section, official
``calc_ortho``), averaged over the N = 2L factor matrices of L adapted layers:

.. math::

    L_{orth} = \frac{1}{N}\sum_{\ell}\big(\lVert A_\ell A_\ell^\top - I_r\rVert_F
                                      + \lVert B_\ell^\top B_\ell - I_r\rVert_F\big),

with the plain (not squared) Frobenius norm, whose gradient is
∇_A = (2/N)·E_A A/‖E_A‖_F with E_A = AAᵀ − I, and ∇_B = (2/N)·B E_B/‖E_B‖_F with E_B = BᵀB − I
(taken as 0 where E = 0). The same formula is peft AdaLoRA's ``orth_reg_weight`` term.

How the regulariser's gradient is applied (``ortho_mode``):

- ``"decoupled"`` (default, the paper): the update is split into a task step and a regulariser
  step, W ← W − η_t ∇L_train − γ ∇L_orth; here the optimizer takes the task step and
  :meth:`SORSA.orthonormal_step` then moves A and B by −γ ∇L_orth, a plain gradient step of
  fixed size γ (not scaled by the lr schedule, not seen by Adam's moments).
- ``"loss"`` (the official ``trainer.py``): after gradient clipping the gradient of
  (γ / lr_peak)·L_orth is added to the (clipped) task gradients, then the optimizer steps, so the
  regulariser is never clipped. Under SGD this equals the decoupled step at the peak lr; under
  Adam γ/lr only sets the relative weight of the two gradients. :meth:`SORSA.step` runs either
  ordering in one call.

Defaults and their sources: rank r = 4 (official ``run.py`` default; the paper's Llama 2 7B runs
use 128), alpha = None (scale 1, ``run.py``), dropout 0 (``run.py``), γ = 4e-4 (``run.py`` and
``scripts/train_sorsa.sh``), ``ortho_mode="decoupled"`` (paper). The official recipe around it:
AdamW with weight decay 0, lr 3e-5, cosine schedule with 3 % warm-up, gradient clipping at 1.0.

Cost: one thin SVD per layer at apply time, O(mn·min(m, n)); per step the adapter's forward is
O(r(m + n)) per row (never the dense m×n ΔW) and L_orth costs O(r²(m + n)) per layer. Memory: a
LoRA of the same rank plus r scalars per layer.

Differences from the official code, and why: the official forward forms the dense m×n ΔW on
every call; here x ↦ (x Aᵀ)·σ ↦ Bᵀ, which gives the same output at lower cost. The official
code takes the SVD of Wᵀ in the weight's own dtype (its cast to float32 is not assigned);
here the SVD is of W, in float64 for float64 weights and float32 otherwise (half-precision
bases keep float32 factors). The factors agree up to the signs of singular-vector pairs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import cast

import torch
from torch import nn

from regzoo.adapters import LowRankHandle, LowRankLinear, apply_low_rank
from regzoo.core.checks import check_choice, check_range
from regzoo.registry import Default, register

ORTHO_MODES = ("decoupled", "loss")


def orthonormality_errors(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """‖AAᵀ − I_r‖_F and ‖BᵀB − I_r‖_F for A (r × in) and B (out × r); differentiable."""
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    return (torch.linalg.matrix_norm(A @ A.t() - eye),
            torch.linalg.matrix_norm(B.t() @ B - eye))


def orthonormal_penalty(factors: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """L_orth: the mean of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F over every (A, B) pair.

    As the official ``calc_ortho``, which divides by the number of A and B matrices.
    """
    terms = [e for A, B in factors for e in orthonormality_errors(A, B)]
    if not terms:
        raise ValueError("factors is empty: there is no adapted layer to regularise")
    return torch.stack(terms).mean()


def _gram_error(matrix: torch.Tensor, rows: bool) -> torch.Tensor:
    """M Mᵀ − I (``rows``) or Mᵀ M − I, with the identity subtracted in place."""
    error = matrix @ matrix.t() if rows else matrix.t() @ matrix
    error.diagonal().sub_(1.0)
    return error


def orthonormal_gradients(factors: Sequence[tuple[torch.Tensor, torch.Tensor]]
                          ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Closed-form (∇_A L_orth, ∇_B L_orth) for each pair, without autograd.

    ∇_A = (2/N)·(AAᵀ − I)A/‖AAᵀ − I‖_F and ∇_B = (2/N)·B(BᵀB − I)/‖BᵀB − I‖_F, N = 2·pairs;
    0 where the error is 0 (the subgradient of the norm at its minimum).
    """
    weight = 2.0 / (2 * len(factors))
    grads = []
    with torch.no_grad():
        for A, B in factors:
            error_a, error_b = _gram_error(A, rows=True), _gram_error(B, rows=False)
            # E = 0 exactly when ‖E‖ = 0, so the clamp turns 0/0 into 0 without a host sync.
            tiny = torch.finfo(A.dtype).tiny
            grad_a = (error_a @ A).mul_(weight / torch.linalg.matrix_norm(error_a).clamp_min(tiny))
            grad_b = (B @ error_b).mul_(weight / torch.linalg.matrix_norm(error_b).clamp_min(tiny))
            grads.append((grad_a, grad_b))
    return grads


def _peak_lr(optimizer: torch.optim.Optimizer) -> float:
    """The lr the official trainer divides by: the schedule's starting lr, not the current one."""
    group = optimizer.param_groups[0]
    return float(group.get("initial_lr", group["lr"]))


@register(
    "sorsa",
    kind="transform",
    declares={
        "one_adapter_per_layer": "built on regzoo.adapters.wrap",
    },
    summary="Each weight split by SVD into a frozen residual and a trainable B·diag(σ)·A (singular "
    "vectors and values); an orthonormal regulariser keeps A and B orthonormal.",
    equation="W = W_res + s·B diag(σ) A (B = U_r, σ = Σ_r, A = V_rᵀ at init); "
    "L_orth = mean(‖AAᵀ − I‖_F + ‖BᵀB − I‖_F); W ← W − η∇L_train − γ∇L_orth",
    defaults=(
        Default("rank", 4, "official run.py default (-r 4); the paper's 7B runs use 128"),
        Default("alpha", None, "official run.py: scale s = 1"),
        Default("dropout", 0.0, "official run.py"),
        Default("gamma", 4e-4, "official run.py and scripts/train_sorsa.sh"),
        Default("ortho_mode", "decoupled", "paper's split update; 'loss' = official trainer.py"),
    ),
    variants=("ortho_mode='decoupled' (paper: separate γ-step on A, B after the optimizer step)",
              "ortho_mode='loss' (official: γ/lr_peak · L_orth gradient added after clipping)",
              "gamma=0 (trainable singular values without the regulariser)"),
    benchmark="adapters",
)
class SORSA(LowRankHandle):
    """Handle of a SORSA-adapted model; build it with :meth:`apply`.

    In a training loop, after ``loss.backward()`` call :meth:`step` in place of
    ``optimizer.step()`` (it clips, applies the regulariser as ``ortho_mode`` says and steps),
    or do the same by hand with :meth:`add_orthonormal_gradient` (``"loss"``, between clipping
    and ``optimizer.step()``) or :meth:`orthonormal_step` (``"decoupled"``, after it).
    """

    layers: dict[str, LowRankLinear]

    def __init__(self, model: nn.Module, layers: dict[str, LowRankLinear],
                 saved: Sequence[nn.Module] = (), *, gamma: float = 4e-4,
                 ortho_mode: str = "decoupled") -> None:
        super().__init__(model, layers, saved)
        self.gamma = check_range("gamma", gamma, 0.0)
        self.ortho_mode = check_choice("ortho_mode", ortho_mode, ORTHO_MODES)

    @classmethod
    def apply(cls, model: nn.Module, *, target_modules: Sequence[str] | str | None = None,
              rank: int = 4, alpha: float | None = None, dropout: float = 0.0,
              gamma: float = 4e-4, ortho_mode: str = "decoupled",
              modules_to_save: Sequence[str] | str = (), init_svd: str = "full",
              svd_niter: int = 4) -> SORSA:
        """SVD-initialise a SORSA adapter on each target linear layer of ``model``, in place.

        Args:
            model: any module; every parameter outside the adapters (and ``modules_to_save``)
                is frozen, biases included.
            target_modules: layer names, peft-style (exact, ``.suffix`` or glob); None = every
                linear layer with min(in, out) ≥ rank (smaller ones skipped with a warning).
            rank: r, at most min(in, out) of every target.
            alpha: the adapter scale is alpha / r; None (default) gives scale 1.
            dropout: dropout on the adapter's input.
            gamma: γ ≥ 0, the regulariser's step size (0 turns it off).
            ortho_mode: ``"decoupled"`` (paper) or ``"loss"`` (official trainer).
            modules_to_save: modules trained in full alongside.
            init_svd: ``"full"`` (exact SVD, the paper) or ``"lowrank"`` (randomised,
                ``svd_niter`` subspace iterations; peft's ``pissa_niter_N``) for large layers.
            svd_niter: subspace iterations of ``init_svd="lowrank"``.

        Returns:
            The handle: ``penalty()`` (= L_orth), ``step``, ``orthonormal_step``,
            ``add_orthonormal_gradient``, ``merge``/``unmerge``/``remove``,
            ``trainable_parameters()``.
        """
        check_range("gamma", gamma, 0.0)
        check_choice("ortho_mode", ortho_mode, ORTHO_MODES)
        handle = apply_low_rank(model, target_modules=target_modules, rank=rank, init="sorsa",
                                alpha=alpha, dropout=dropout, modules_to_save=modules_to_save,
                                init_svd=init_svd, svd_niter=svd_niter, handle_cls=cls, gamma=gamma,
                                ortho_mode=ortho_mode)
        return cast(SORSA, handle)

    def _pairs(self) -> list[tuple[nn.Parameter, nn.Parameter]]:
        self._check_live()
        return [(layer.A, layer.B) for layer in self.layers.values()]

    def penalty(self) -> torch.Tensor:
        """L_orth, the orthonormal regulariser (module docstring); 0 for orthonormal A, B."""
        return orthonormal_penalty(self._pairs())

    def orthonormality_error(self) -> float:
        """L_orth as a float: the mean Frobenius distance of A Aᵀ and Bᵀ B from I."""
        with torch.no_grad():
            return float(self.penalty())

    def orthonormal_step(self, gamma: float | None = None) -> None:
        """The paper's regulariser step A ← A − γ ∇_A L_orth, B ← B − γ ∇_B L_orth.

        Call it after ``optimizer.step()`` (``ortho_mode="decoupled"``); ``gamma`` defaults to
        the handle's. Deterministic in the parameters, so replicas under DDP stay equal.
        """
        gamma = self.gamma if gamma is None else check_range("gamma", gamma, 0.0)
        if gamma == 0:
            return
        pairs = self._pairs()
        with torch.no_grad():
            for (A, B), (grad_a, grad_b) in zip(pairs, orthonormal_gradients(pairs)):
                A.sub_(grad_a, alpha=gamma)
                B.sub_(grad_b, alpha=gamma)

    def add_orthonormal_gradient(self, lr: float, gamma: float | None = None) -> None:
        """Add ∇((γ / lr)·L_orth) to the ``.grad`` of A and B (the official trainer's step).

        Call it after gradient clipping and before ``optimizer.step()``; ``lr`` is the peak
        learning rate, as in the official trainer.
        """
        lr = check_range("lr", lr, 0.0, low_inclusive=False)
        gamma = self.gamma if gamma is None else check_range("gamma", gamma, 0.0)
        if gamma == 0:
            return
        pairs = self._pairs()
        for (A, B), (grad_a, grad_b) in zip(pairs, orthonormal_gradients(pairs)):
            for parameter, grad in ((A, grad_a), (B, grad_b)):
                if parameter.grad is None:
                    parameter.grad = grad.mul_(gamma / lr)
                else:
                    parameter.grad.add_(grad, alpha=gamma / lr)

    def step(self, optimizer: torch.optim.Optimizer, *, max_grad_norm: float | None = None,
             lr: float | None = None) -> None:
        """One SORSA update after ``loss.backward()``, in the order ``ortho_mode`` prescribes.

        ``"loss"``: clip the gradients of :meth:`trainable_parameters` to ``max_grad_norm``
        (if given), add ∇((γ/lr)·L_orth), ``optimizer.step()``. ``"decoupled"``: clip,
        ``optimizer.step()``, then :meth:`orthonormal_step`. ``lr`` defaults to the optimizer's
        peak lr (the scheduler's ``initial_lr``, else the current ``lr`` of its first group).
        Zeroing the gradients is left to the caller.
        """
        if max_grad_norm is not None:
            max_grad_norm = check_range("max_grad_norm", max_grad_norm, 0.0,
                                        low_inclusive=False)
            nn.utils.clip_grad_norm_(self.trainable_parameters(), max_grad_norm)
        if self.ortho_mode == "loss":
            self.add_orthonormal_gradient(_peak_lr(optimizer) if lr is None else lr)
        optimizer.step()
        if self.ortho_mode == "decoupled":
            self.orthonormal_step()
