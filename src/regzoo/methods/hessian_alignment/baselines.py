"""The domain-generalisation penalties the Hessian-alignment paper compares with and analyses.

Hemati et al. (ICCV 2023, arXiv 2308.11778, §4.3) show that these baselines align parts of the
head's gradient and Hessian across domains; the paper's tables compare HGP/Hutchinson with them.
Each is an ``nn.Module`` penalty with the call of :class:`~regzoo.methods.hessian_alignment.
HessianAlignment`: ``penalty(features, targets)`` with one feature and one target tensor per
training domain (:class:`VREx` also takes the loop's per-domain ``losses=``, like
HessianAlignment); ERM is no penalty. Definitions follow DomainBed (Gulrajani & Lopez-Paz 2021) and
the Fishr Colored-MNIST script that the paper's CMNIST code is derived from:

* :class:`IRMv1` (Arjovsky et al. 2019, eq. IRMv1): ``ρ_e ‖∂_s ℓ_e(s · head(φ_e))|_{s=1}‖²``
  — the squared gradient of each domain's risk w.r.t. a dummy scale of the logits (the CMNIST
  script's form; DomainBed's split-batch product is an unbiased variant of the same quantity).
* :class:`VREx` (Krueger et al. 2021, eq. 8): ``Var_e(ℓ_e)`` (population variance, DomainBed).
  The CMNIST script uses ``(ℓ_1 − ℓ_2)²`` for two domains, which is ``4 Var``: ``scale=4``.
* :class:`CORAL` (Sun & Saenko 2016; DomainBed ``CORAL``): mean over domain pairs of
  ``mean((μ_i − μ_j)²) + mean((C_i − C_j)²)`` on the features (``C`` unbiased covariance).
* :class:`Fishr` (Rame et al. 2022, eq. 4): ``ρ_e ‖v_e − v̄‖²`` with ``v_e`` the per-parameter
  variance over the domain's examples of the per-example head gradients. For a linear head the
  per-example gradient of the per-example loss is closed form — ``(p − onehot(y)) ⊗ [φ, 1]`` for
  cross-entropy, ``(σ(z) − y) [φ, 1]`` for the binary loss — so no BackPACK is needed; it keeps
  the graph into the head and the featurizer. Without DomainBed's exponential moving average of
  ``v_e`` (the CMNIST script has none).

``ρ_e`` is the mean over domains (DomainBed) or the sum (CMNIST scripts), option ``reduction``.
All are computed on the local per-domain batches (under DDP the estimator depends on the world
size); IRMv1 uses ``autograd.grad(create_graph=True)``, the others need no higher-order gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_choice, check_range
from regzoo.methods.hessian_alignment.penalty import (
    LOSSES,
    REDUCTIONS,
    check_domains,
    check_losses,
    domain_loss,
)


def _reduce(terms: list[torch.Tensor], reduction: str) -> torch.Tensor:
    stacked = torch.stack(terms)
    return stacked.mean() if reduction == "mean" else stacked.sum()


class _HeadPenalty(nn.Module):
    """Shared argument handling of the per-domain head penalties."""

    needs_higher_order_grad = False
    batch_coupled = True

    def __init__(self, head: nn.Module, *, loss: str = "cross_entropy",
                 reduction: str = "mean") -> None:
        super().__init__()
        if not isinstance(head, nn.Module):
            raise TypeError(f"head must be an nn.Module (the classifier head), got "
                            f"{type(head).__name__}")
        self.head = head
        self.loss = check_choice("loss", loss, LOSSES)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)


class IRMv1(_HeadPenalty):
    """IRMv1: ``ρ_e (∂ℓ_e(s·z)/∂s |_{s=1})²`` (Arjovsky et al. 2019; CMNIST reduction: mean)."""

    needs_higher_order_grad = True

    def forward(self, features: Sequence[torch.Tensor],
                targets: Sequence[torch.Tensor]) -> torch.Tensor:
        """The IRMv1 penalty over the domains."""
        check_domains(features, targets)
        terms = []
        for phi, y in zip(features, targets):
            logits = self.head(phi)
            scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
            (grad,) = torch.autograd.grad(domain_loss(logits * scale, y, self.loss), [scale],
                                          create_graph=True)
            terms.append(grad.pow(2))
        return _reduce(terms, self.reduction)


class VREx(_HeadPenalty):
    """V-REx: ``scale · Var_e(ℓ_e)``, the population variance of the domain risks.

    ``scale=4`` gives the CMNIST script's ``(ℓ_1 − ℓ_2)²`` for two domains.
    """

    def __init__(self, head: nn.Module, *, loss: str = "cross_entropy",
                 scale: float = 1.0) -> None:
        super().__init__(head, loss=loss)
        self.scale = check_range("scale", scale, 0.0)

    def forward(self, features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                losses: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """The variance of the domain risks (``losses``: the loop's, as in HessianAlignment)."""
        check_domains(features, targets)
        risks = torch.stack(check_losses(losses, len(features)) if losses is not None
                            else [domain_loss(self.head(phi), y, self.loss)
                                  for phi, y in zip(features, targets)])
        return self.scale * (risks - risks.mean()).pow(2).mean()


class CORAL(nn.Module):
    """Deep CORAL: mean over domain pairs of feature mean and covariance mean-square gaps.

    As DomainBed's ``CORAL``; the targets are only validated, the head is not used.
    """

    needs_higher_order_grad = False
    batch_coupled = True

    def forward(self, features: Sequence[torch.Tensor],
                targets: Sequence[torch.Tensor]) -> torch.Tensor:
        """The CORAL penalty over all domain pairs."""
        check_domains(features, targets)
        for e, phi in enumerate(features):
            if phi.shape[0] < 2:
                raise ValueError(f"features[{e}] has {phi.shape[0]} example; CORAL's covariance "
                                 "needs at least 2 per domain")
        means = [phi.mean(0) for phi in features]
        covs = [torch.cov(phi.T) for phi in features]
        terms = [(means[i] - means[j]).pow(2).mean() + (covs[i] - covs[j]).pow(2).mean()
                 for i in range(len(features)) for j in range(i + 1, len(features))]
        return torch.stack(terms).mean()


class Fishr(_HeadPenalty):
    """Fishr: ``ρ_e ‖v_e − v̄‖²``, ``v_e`` the variance of per-example head gradients.

    Closed-form per-example gradients for an ``nn.Linear`` head; the CMNIST reduction is a sum.
    """

    def __init__(self, head: nn.Module, *, loss: str = "cross_entropy",
                 reduction: str = "mean", centered: bool = True) -> None:
        if not isinstance(head, nn.Linear):
            raise TypeError(f"Fishr's closed-form per-example gradients need an nn.Linear head, "
                            f"got {type(head).__name__}")
        super().__init__(head, loss=loss, reduction=reduction)
        self.centered = bool(centered)

    def per_example_gradients(self, phi: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` gradients of each example's loss w.r.t. ``[weight, bias]`` (flattened)."""
        logits = self.head(phi)
        if self.loss == "cross_entropy":
            if y.is_floating_point() or y.ndim != 1:
                raise TypeError(f"loss='cross_entropy' needs integer class targets of shape "
                                f"(B,), got dtype {y.dtype} shape {tuple(y.shape)}")
            residual = logits.softmax(1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)
        else:
            residual = (torch.sigmoid(logits.reshape(-1)) - y.reshape(-1).to(logits.dtype))
            residual = residual[:, None]
        weight = (residual[:, :, None] * phi[:, None, :]).flatten(1)
        parts = [weight, residual] if self.head.bias is not None else [weight]
        return torch.cat(parts, dim=1)

    def forward(self, features: Sequence[torch.Tensor],
                targets: Sequence[torch.Tensor]) -> torch.Tensor:
        """The Fishr penalty over the domains."""
        check_domains(features, targets)
        variances = []
        for phi, y in zip(features, targets):
            grads = self.per_example_gradients(phi, y)
            if self.centered:
                grads = grads - grads.mean(0, keepdim=True)
            variances.append(grads.pow(2).mean(0))
        v_bar = torch.stack(variances).mean(0)
        return _reduce([(v - v_bar).pow(2).sum() for v in variances], self.reduction)


BASELINES = {"irm": IRMv1, "vrex": VREx, "coral": CORAL, "fishr": Fishr}
"""The baseline penalties by the short names the reproduction uses (ERM is no penalty)."""
