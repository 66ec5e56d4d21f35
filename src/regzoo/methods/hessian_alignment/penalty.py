"""Hessian alignment for domain generalisation: HGP and Hutchinson penalties.

Paper: Hemati, Zhang, Estiri, Chen, "Understanding Hessian Alignment for Domain Generalization",
ICCV 2023, arXiv 2308.11778 (official code: github.com/huawei-noah/Federated-Learning, folder
``HessianAlignment``: ``domainbed/algorithms.py`` classes ``HGP`` and ``Hutchinson``, and the
Colored-MNIST scripts ``cmnist/cmnist_HGP.py``, ``cmnist/cmnist_Hutchinson.py``).

Method in three lines: the paper bounds the transfer measure between domains by the distance
between the domains' Hessians of the loss w.r.t. the classifier head (paper §4, Thm. 1), so it
aligns, across training domains, the head gradients and a cheap Hessian statistic: the
Hessian-gradient product ``H g`` (HGP) or a Hutchinson estimate of ``diag(H)``.

Equations (paper §5 eqs. 9–11; official ``HGP.update`` / ``Hutchinson.update``). Head parameters
``w`` (all parameters of the head module), training domains ``e = 1..E``, per-domain mean loss
``ℓ_e = L(head(φ_e), y_e)``, average ``ℓ̄ = (1/E) Σ_e ℓ_e``:

* gradients: ``g_e = ∇_w ℓ_e`` (``autograd.grad(create_graph=True)``), ``ḡ = ∇_w ℓ̄ = (1/E) Σ g_e``.
* HGP: with ``s = ‖g + ε‖`` (official: ``ε = 1e-16`` added elementwise before the norm),
  ``∇_w s = H (g + ε) / s``, hence ``H g = s · ∇_w s`` (eq. 10) — one extra backward of a scalar
  per domain, no Hessian formed. The product for the mean uses ``s̄ = ‖ḡ‖ + ε``.
* Hutchinson: ``D = (1/S) Σ_s z_s ⊙ ∇_w (gᵀ z_s)`` with Rademacher ``z_s`` (eq. 11),
  ``E[D] = diag(H)``; the S probes are one batched backward (``is_grads_batched``).
* penalty: ``P = ρ_e [ α ‖Q_e − sg(Q̄)‖² + β ‖g_e − sg(ḡ)‖² ]`` with ``Q = H g`` (HGP) or
  ``Q = D`` (Hutchinson), ``ρ`` the mean over domains (DomainBed code) or the sum (CMNIST
  scripts), ``sg`` a stop-gradient (DomainBed code: ``.detach()``; the CMNIST scripts do not
  detach, ``detach_mean=False``). Training loss ``ℓ̄ + P``.

Defaults (``domainbed/hparams_registry.py`` of the official code): HGP ``α = 1e-4``, ``β = 5e-3``;
Hutchinson ``α = 1e-3``, ``β = 5e-3`` and ``S = 300`` probes (hard-coded ``repeat=300`` in the
official ``Hutchinson``; its CMNIST script uses 150). The registry's random-search ranges for
Hutchinson (``α ∈ 10^U(1,4)``, ``β ∈ 10^U(2,6)``) do not contain these defaults; the documented
defaults are kept. The CMNIST recipe (``α = β = 1``, sum over domains, no detach, weight 1 for 190
steps then 91257.19 with the loss divided by it) is :data:`CMNIST_RECIPE` with
:class:`PenaltySchedule`.

Cost per step beyond ERM: HGP adds, per domain, a create-graph gradient of the head and one
backward of ``‖g_e‖`` (both head-only), then the double backward through them inside the normal
``loss.backward()``; Hutchinson adds one batched backward with S probes per domain. A loop that
passes its per-domain losses (``losses=``) spares the head's second forward and loss per domain;
without them the penalty evaluates ``ℓ_e`` itself. ``benchmarks/hessian_alignment.py`` measures
both modes against ERM and HGP against a reference written from eqs. 9–10.

Differences from the official code, and why:

* One domain raises ``ValueError``: the official HGP's single-domain branch is unreachable (its
  guard ``len(envs) > 0`` is always true), and with ``E = 1`` every alignment term is exactly zero,
  so a one-domain call is a user error, not a regulariser.
* The same S probes serve every domain and the mean within a call (the paper writes one set
  ``z_s``); shared probes make the differences ``D_e − D̄`` far less noisy at small S.
* ``ḡ`` is the mean of the ``g_e`` rather than a second backward of ``ℓ̄`` (same value: the
  gradient is linear).

Distributed training: every term is computed on the rank's local per-domain batches (the
estimator changes with the world size, like DomainBed's per-GPU minibatches); higher-order terms
use ``autograd.grad(create_graph=True)`` only, so DDP's hooks see an ordinary backward.

The comparison baselines of the paper (IRMv1, V-REx, CORAL, Fishr) are in
:mod:`regzoo.methods.hessian_alignment.baselines` with the same call signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_choice, check_positive_int, check_range, check_tensor
from regzoo.registry import Default, register

MODES = ("hgp", "hutchinson")
LOSSES = ("cross_entropy", "binary")
REDUCTIONS = ("mean", "sum")
NORM_EPS = 1e-16
"""Official ``HGP``: added to the gradient (per domain) or to its norm (mean) before ``∇‖g‖``."""

DEFAULTS = {
    "hgp": {"alpha": 1e-4, "beta": 5e-3},
    "hutchinson": {"alpha": 1e-3, "beta": 5e-3, "probes": 300},
}
"""Official ``domainbed/hparams_registry.py`` defaults (probes: hard-coded ``repeat=300``)."""


@dataclass(frozen=True)
class PenaltySchedule:
    """The IRM/Fishr/HGP Colored-MNIST annealing of the penalty weight (official CMNIST scripts).

    ``λ(t) = 1`` for ``t < anneal_steps`` and ``weight`` afterwards; the loss is
    ``risk + λ P`` divided by ``λ`` whenever ``λ > 1`` (keeps the gradient scale, the scripts'
    "rescale the entire loss"). DomainBed's IRM/V-REx/Fishr also reset Adam at the switch:
    :meth:`resets_optimizer` says when (``reset_optimizer=True``).

    Args:
        anneal_steps: steps with weight 1 (official CMNIST: 190).
        weight: weight afterwards (official CMNIST: 91257.18613115903).
        rescale: divide the loss by the weight when it exceeds 1.
        reset_optimizer: DomainBed's Adam reset at the switch.
    """

    anneal_steps: int = 190
    weight: float = 91257.18613115903
    rescale: bool = True
    reset_optimizer: bool = False

    def __post_init__(self) -> None:
        check_positive_int("anneal_steps", self.anneal_steps, minimum=0)
        check_range("weight", self.weight, 0.0)

    def weight_at(self, step: int) -> float:
        """The penalty weight ``λ(step)``."""
        return self.weight if step >= self.anneal_steps else 1.0

    def combine(self, risk: torch.Tensor, penalty: torch.Tensor, step: int) -> torch.Tensor:
        """``(risk + λ P) / λ`` when rescaling and ``λ > 1``, else ``risk + λ P``."""
        lam = self.weight_at(step)
        loss = risk + lam * penalty
        return loss / lam if self.rescale and lam > 1.0 else loss

    def resets_optimizer(self, step: int) -> bool:
        """True at the step where DomainBed re-creates Adam (the penalty weight jumps)."""
        return self.reset_optimizer and step == self.anneal_steps and self.anneal_steps > 0


CMNIST_RECIPE = {"alpha": 1.0, "beta": 1.0, "reduction": "sum", "detach_mean": False}
"""HGP/Hutchinson options of the official Colored-MNIST scripts (used with PenaltySchedule())."""


def check_domains(features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                  *, minimum: int = 2) -> None:
    """Validate per-domain ``(features, targets)`` lists: count, types, shapes, emptiness."""
    if isinstance(features, torch.Tensor) or isinstance(targets, torch.Tensor):
        raise TypeError("features and targets must be sequences with one tensor per domain "
                        "(e.g. [phi_1, phi_2]), not a single tensor")
    features, targets = list(features), list(targets)
    if len(features) != len(targets):
        raise ValueError(f"features has {len(features)} domains but targets has {len(targets)}; "
                         "pass one (features, targets) pair per training domain")
    if len(features) < minimum:
        raise ValueError(f"domain alignment needs at least {minimum} training domains, got "
                         f"{len(features)}; with one domain every alignment term is zero — "
                         "train that domain with plain ERM instead")
    width = None
    for e, (phi, y) in enumerate(zip(features, targets)):
        check_tensor(f"features[{e}]", phi, ndim=2, floating=True)
        check_tensor(f"targets[{e}]", y)
        if y.shape[0] != phi.shape[0]:
            raise ValueError(f"targets[{e}] has {y.shape[0]} examples but features[{e}] has "
                             f"{phi.shape[0]}; each domain's targets must match its features")
        if width is not None and phi.shape[1] != width:
            raise ValueError(f"features[{e}] has width {phi.shape[1]}, features[0] has {width}; "
                             "all domains must go through the same featurizer")
        width = phi.shape[1]


def domain_loss(logits: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean loss of one domain: cross-entropy (integer targets) or binary logistic (0/1)."""
    if loss == "cross_entropy":
        if target.is_floating_point() or target.ndim != 1:
            raise TypeError(f"loss='cross_entropy' needs integer class targets of shape (B,), got "
                            f"dtype {target.dtype} shape {tuple(target.shape)}")
        return F.cross_entropy(logits, target)
    if logits.ndim == 2 and logits.shape[1] != 1:
        raise ValueError(f"loss='binary' needs one logit per example, got logits of shape "
                         f"{tuple(logits.shape)}; use loss='cross_entropy' for several classes")
    return F.binary_cross_entropy_with_logits(logits.reshape(-1),
                                              target.reshape(-1).to(logits.dtype))


def check_losses(losses: Sequence[torch.Tensor], domains: int) -> list[torch.Tensor]:
    """Validate per-domain losses a training loop passes in: one scalar with graph per domain."""
    if isinstance(losses, torch.Tensor):
        raise TypeError("losses must be a sequence with one scalar loss per domain "
                        "(e.g. [loss_1, loss_2]), not a single tensor")
    losses = list(losses)
    if len(losses) != domains:
        raise ValueError(f"losses has {len(losses)} entries but there are {domains} domains; "
                         "pass the head's loss on each features[e], in the same order")
    for e, loss in enumerate(losses):
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0 or not loss.is_floating_point():
            raise TypeError(f"losses[{e}] must be a floating scalar tensor (the domain's mean "
                            f"loss), got {type(loss).__name__}"
                            + (f" of shape {tuple(loss.shape)}"
                               if isinstance(loss, torch.Tensor) else ""))
        if not loss.requires_grad:
            raise ValueError(f"losses[{e}] carries no graph (requires_grad is False); compute it "
                             "from head(features[e]) with autograd enabled, outside "
                             "torch.no_grad(), and do not .detach() it")
    return losses


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _gradients_of_given(losses: list[torch.Tensor], params: list[torch.Tensor]
                        ) -> list[tuple[torch.Tensor, ...]]:
    """``g_e`` of losses a loop passed in, with autograd's two ways to misuse them named."""
    try:
        return [torch.autograd.grad(loss, params, create_graph=True) for loss in losses]
    except RuntimeError as error:
        if "not have been used in the graph" in str(error):
            raise ValueError("a loss in losses does not depend on every trainable parameter of "
                             "the head; pass the losses computed from head(features[e]) with "
                             "this penalty's head") from error
        if "backward through the graph a second time" in str(error):
            raise ValueError("the graph of losses was already freed by a backward; call the "
                             "penalty before loss.backward()") from error
        raise


def hessian_gradient_product(loss: torch.Tensor, params: Sequence[torch.Tensor],
                             eps: float = NORM_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """``(g, H g)`` for ``loss`` w.r.t. ``params``, flattened, via ``H g = ‖g‖ ∇‖g‖`` (eq. 10).

    ``‖g‖`` is the official norm of the per-tensor norms of ``g + eps``; both outputs keep the
    graph (``create_graph=True``), so a penalty built from them trains the featurizer.
    """
    params = list(params)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    norm = torch.stack([torch.linalg.vector_norm(g + eps) for g in grads]).norm()
    return _flat(grads), norm * _flat(torch.autograd.grad(norm, params, create_graph=True))


def hutchinson_diagonal(grads: Sequence[torch.Tensor], params: Sequence[torch.Tensor],
                        probes: torch.Tensor) -> torch.Tensor:
    """Hutchinson's ``diag(H)`` estimate ``(1/S) Σ_s z_s ⊙ H z_s`` (eq. 11), flattened.

    Args:
        grads: ``∇_w ℓ`` per parameter tensor, computed with ``create_graph=True``.
        params: the parameters ``w`` the gradients are taken with respect to.
        probes: ``(S, P)`` probe vectors (Rademacher for the unbiased estimate), ``P`` the total
            number of entries of ``params``.
    """
    params = list(params)
    sizes = [p.numel() for p in params]
    if probes.ndim != 2 or probes.shape[1] != sum(sizes):
        raise ValueError(f"probes must have shape (S, {sum(sizes)}), got {tuple(probes.shape)}")
    pieces = probes.split(sizes, dim=1)
    outputs = [z.reshape(probes.shape[0], *p.shape) for z, p in zip(pieces, params)]
    hz = torch.autograd.grad(list(grads), params, grad_outputs=outputs, create_graph=True,
                             is_grads_batched=True)
    return (probes * torch.cat([h.reshape(probes.shape[0], -1) for h in hz], dim=1)).mean(0)


@register(
    "hessian_alignment",
    kind="penalty",
    declares={
        "batch_coupled": "the HGP term is a nonlinear function of each domain's batch gradient",
        "pairs": {
            "ba_lora": "BA-LoRA's default targets leave the classifier head frozen, so HGP has no "
                "head gradient to align: adapt the head or keep it in modules_to_save",
        },
    },
    summary="Aligns, across training domains, the classifier head's gradients and Hessian "
            "statistics (Hessian-gradient product HGP, or Hutchinson's diag(H)) with the "
            "cross-domain average.",
    equation="P = mean_e α‖Q_e − sg(Q̄)‖² + β‖g_e − sg(ḡ)‖²,  Q = H g = ‖g‖∇‖g‖ (HGP) or "
             "Q = (1/S)Σ z⊙∇(gᵀz) (Hutchinson);  loss = ℓ̄ + P",
    defaults=(
        Default("alpha (HGP)", 1e-4, "official domainbed/hparams_registry.py"),
        Default("beta (HGP)", 5e-3, "official domainbed/hparams_registry.py"),
        Default("alpha (Hutchinson)", 1e-3, "official domainbed/hparams_registry.py"),
        Default("beta (Hutchinson)", 5e-3, "official domainbed/hparams_registry.py"),
        Default("probes", None, "None: 300 for Hutchinson (official domainbed/algorithms.py "
                "repeat=300); HGP draws none"),
        Default("detach_mean", True, "official domainbed/algorithms.py (.detach())"),
        Default("reduction", "mean", "official domainbed/algorithms.py (sum / len(envs))"),
    ),
    variants=("hgp (Hessian-gradient product)", "hutchinson (diagonal estimate, S probes)",
              "CMNIST recipe (alpha=beta=1, sum, no detach, annealed weight)",
              "baselines: IRMv1, V-REx, CORAL, Fishr (regzoo.methods.hessian_alignment.baselines)"),
)
class HessianAlignment(nn.Module):
    """HGP or Hutchinson penalty on the classifier head, computed from per-domain batches.

    Args:
        head: the classifier head (its parameters are ``w``; any module, typically ``nn.Linear``).
        mode: ``"hgp"`` (default) or ``"hutchinson"``.
        alpha: weight of the Hessian-statistic term (default per mode, see :data:`DEFAULTS`).
        beta: weight of the gradient term (default per mode).
        probes: Hutchinson probes S (default 300; ignored by HGP).
        detach_mean: stop the gradient through the cross-domain averages (DomainBed code).
        reduction: ``"mean"`` over domains (DomainBed) or ``"sum"`` (CMNIST scripts).
        loss: ``"cross_entropy"`` (integer targets) or ``"binary"`` (one logit, 0/1 targets).
        generator: random generator for the Hutchinson probes (default: torch's global one).

    Call ``penalty(features, targets)`` with one ``(B_e, d)`` feature tensor and one target tensor
    per training domain; add the result to the mean of the per-domain losses. A loop that has
    those losses passes them too, ``penalty(features, targets, losses=losses)``, and the penalty
    differentiates them instead of evaluating the head again (:meth:`forward`).
    """

    needs_higher_order_grad = True
    batch_coupled = True

    def __init__(self, head: nn.Module, mode: str = "hgp", *, alpha: float | None = None,
                 beta: float | None = None, probes: int | None = None,
                 detach_mean: bool = True, reduction: str = "mean",
                 loss: str = "cross_entropy",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(head, nn.Module):
            raise TypeError(f"head must be an nn.Module (the classifier head), got "
                            f"{type(head).__name__}")
        if not any(p.requires_grad for p in head.parameters()):
            raise ValueError("head has no trainable parameters; pass the classifier layer "
                             "(e.g. model.head) whose gradients are aligned")
        self.mode = check_choice("mode", mode, MODES)
        defaults = DEFAULTS[self.mode]
        self.alpha = check_range("alpha", defaults["alpha"] if alpha is None else alpha, 0.0)
        self.beta = check_range("beta", defaults["beta"] if beta is None else beta, 0.0)
        self.probes = check_positive_int(
            "probes", DEFAULTS["hutchinson"]["probes"] if probes is None else probes)
        self.detach_mean = bool(detach_mean)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.loss = check_choice("loss", loss, LOSSES)
        self.head = head
        self.generator = generator

    def extra_repr(self) -> str:
        probes = f", probes={self.probes}" if self.mode == "hutchinson" else ""
        return (f"mode={self.mode!r}, alpha={self.alpha}, beta={self.beta}{probes}, "
                f"detach_mean={self.detach_mean}, reduction={self.reduction!r}")

    def domain_losses(self, features: Sequence[torch.Tensor],
                      targets: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``[ℓ_1, …, ℓ_E]``: the head's mean loss on each domain."""
        return [domain_loss(self.head(phi), y, self.loss) for phi, y in zip(features, targets)]

    def _rademacher(self, count: int, like: torch.Tensor) -> torch.Tensor:
        bits = torch.randint(0, 2, (count, like.numel()), generator=self.generator,
                             device="cpu" if self.generator is None else self.generator.device)
        return (bits.to(device=like.device, dtype=like.dtype) * 2 - 1)

    def statistics(self, features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                   losses: Sequence[torch.Tensor] | None = None
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Per-domain ``g_e`` and ``Q_e`` and the averages ``ḡ``, ``Q̄`` (all flat, with graph).

        ``losses`` (optional): the per-domain losses ``ℓ_e`` the loop already computed from
        ``head(features[e])``; :meth:`forward` explains when to pass them.
        """
        check_domains(features, targets)
        expected = getattr(self.head, "in_features", None)
        if expected is not None and features[0].shape[1] != expected:
            raise ValueError(f"features[0] has width {features[0].shape[1]} but the head takes "
                             f"{expected} inputs (head.in_features); pass the featurizer's "
                             "output, model.features(x), not the raw inputs")
        params = [p for p in self.head.parameters() if p.requires_grad]
        if losses is None:
            grads = [torch.autograd.grad(loss, params, create_graph=True)
                     for loss in self.domain_losses(features, targets)]
        else:
            grads = _gradients_of_given(check_losses(losses, len(features)), params)
        flat = [_flat(g) for g in grads]
        g_bar = torch.stack(flat).mean(0)
        if self.mode == "hgp":
            stats = []
            for g in grads:
                norm = torch.stack([torch.linalg.vector_norm(t + NORM_EPS) for t in g]).norm()
                stats.append(norm * _flat(torch.autograd.grad(norm, params, create_graph=True)))
            norm_bar = g_bar.norm() + NORM_EPS
            q_bar = norm_bar * _flat(torch.autograd.grad(norm_bar, params, create_graph=True))
        else:
            z = self._rademacher(self.probes, g_bar)
            stats = [hutchinson_diagonal(g, params, z) for g in grads]
            mean_grads = [torch.stack(parts).mean(0) for parts in zip(*grads)]
            q_bar = hutchinson_diagonal(mean_grads, params, z)
        return flat, stats, g_bar, q_bar

    def forward(self, features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                losses: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The penalty ``P`` (a scalar with graph into the head and the featurizer).

        ``losses``: the per-domain losses ``ℓ_e = L(head(features[e]), targets[e])`` the training
        loop computed for ``ℓ̄`` anyway. Passing them saves one head forward, loss and backward
        per domain and step (the penalty's gradients are taken of these very tensors); the value
        is the same. They must be the head's loss on ``features[e]``, the penalty cannot check
        that; without them the penalty evaluates ``L(head(features[e]), targets[e])`` itself.
        """
        flat, stats, g_bar, q_bar = self.statistics(features, targets, losses)
        if self.detach_mean:
            g_bar, q_bar = g_bar.detach(), q_bar.detach()
        terms = torch.stack([self.alpha * (q - q_bar).pow(2).sum()
                             + self.beta * (g - g_bar).pow(2).sum()
                             for g, q in zip(flat, stats)])
        return terms.mean() if self.reduction == "mean" else terms.sum()
