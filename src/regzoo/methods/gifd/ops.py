r"""GIFD's building blocks: gradient distance, label inference, l1-ball projection, lr ramp.

Each is a pure function with the official code's semantics (``inversefed`` of GIFD @ff243fe);
:mod:`regzoo.methods.gifd.attack` composes them into the search.

* :func:`cosine_gradient_loss` — one global cosine distance over every parameter's gradient
  (official ``reconstruction_costs(cost_fn='sim_cmpr0', indices='def', weights='equal')``):

  .. math::

      \mathcal L_{grad}(g, g^*) = 1 - \frac{\sum_i \langle g_i, g^*_i\rangle}
        {\sqrt{\sum_i \lVert g_i\rVert^2}\,\sqrt{\sum_i \lVert g^*_i\rVert^2}}

  over the parameter tensors i; 0 for equal directions, 2 for opposite ones, invariant to
  positive rescaling of either argument.
* :func:`infer_labels` — iDLG's trick (official ``infer_label``): with cross-entropy and a
  last linear layer W (C × d) fed non-negative features, the row sum of ∇W is negative exactly
  for the classes present in the batch; the ``batch_size`` most negative rows, sorted.
* :func:`project_l1_ball` — the Euclidean projection of each sample onto
  {v : ‖v‖₁ ≤ r}, by the sort-based algorithm of Duchi et al. (ICML 2008; official
  ``utils.project_onto_l1_ball``): with u the sorted magnitudes (descending), its cumulative
  sums s_j and ρ = max{j : u_j·j > s_j − r}, the threshold θ = (s_ρ − r)/ρ gives
  v ↦ sign(v)·max(|v| − θ, 0); samples already inside the ball are returned unchanged.
* :func:`lr_ramp` — the learning-rate factor of every stage (official ``get_lr``), at stage
  progress t = step/steps: ramp(t) = ½(1 − cos(π·min(1, (1 − t)/0.75)))·min(1, t/0.05);
  0 at t = 0 (the first step of a stage does not move), 1 on [0.05, 0.25], cosine decay to 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from regzoo.core.checks import check_positive_int, check_range, check_tensor

_TINY = 1e-30
"""Floor of the cosine's denominator: a zero gradient gives distance 1, not NaN."""


def _cosine_distance(grads: Sequence[torch.Tensor], target: Sequence[torch.Tensor],
                     target_norm: torch.Tensor) -> torch.Tensor:
    """L_grad without checks (it runs under ``torch.func.vmap``)."""
    dot = sum((g * t).sum() for g, t in zip(grads, target, strict=True))
    norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
    return 1.0 - dot / (norm * target_norm).clamp_min(_TINY)


def _gradient_list(name: str, value: object) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a list or tuple of tensors (one per parameter), got "
                        f"{type(value).__name__}")
    if not value:
        raise ValueError(f"{name} is empty; pass one gradient tensor per model parameter")
    for i, g in enumerate(value):
        check_tensor(f"{name}[{i}]", g, floating=True)
    return list(value)


def cosine_gradient_loss(grads: Sequence[torch.Tensor],
                         target: Sequence[torch.Tensor]) -> torch.Tensor:
    """The global cosine distance L_grad between two gradient lists (module docstring).

    Args:
        grads: the trial gradients, one tensor per parameter (differentiable: the attack
            back-propagates through them to the image).
        target: the observed gradients, the same shapes in the same order.

    Returns:
        A scalar in [0, 2].

    >>> g = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    >>> same, opposite = [5 * t for t in g], [-t for t in g]
    >>> float(cosine_gradient_loss(g, same)), float(cosine_gradient_loss(g, opposite))
    (0.0, 2.0)
    """
    grads, target = _gradient_list("grads", grads), _gradient_list("target", target)
    if len(grads) != len(target):
        raise ValueError(f"grads and target must hold the same number of tensors, got "
                         f"{len(grads)} and {len(target)}")
    for i, (g, t) in enumerate(zip(grads, target)):
        if g.shape != t.shape:
            raise ValueError(f"grads[{i}] has shape {tuple(g.shape)} but target[{i}] has "
                             f"{tuple(t.shape)}; pass gradients of the same parameters")
    target_norm = torch.sqrt(sum(t.detach().pow(2).sum() for t in target))
    return _cosine_distance(grads, target, target_norm)


def infer_labels(grads: Sequence[torch.Tensor], batch_size: int = 1) -> torch.Tensor:
    """The labels of a batch with distinct labels, read from its last linear layer's gradient.

    The last 2-D tensor of ``grads`` is taken as the classifier's weight gradient (C × d; the
    official code reads ``grads[-2]``, the same tensor when the head has a bias). Returns the
    indices of its ``batch_size`` most negative row sums, in increasing order (int64, on the
    gradient's device). Exact when the features entering the head are non-negative (after a
    ReLU or sigmoid) and the labels are distinct.

    >>> w = torch.tensor([[0.3, 0.1], [-0.5, -0.2], [0.1, 0.0], [-0.1, -0.1]])
    >>> infer_labels([w, torch.zeros(4)], batch_size=2)
    tensor([1, 3])
    """
    grads = _gradient_list("grads", grads)
    check_positive_int("batch_size", batch_size)
    weight = next((g for g in reversed(grads) if g.ndim == 2), None)
    if weight is None:
        raise ValueError("grads holds no 2-D tensor, so there is no last linear layer to read "
                         "labels from; pass labels= explicitly")
    if batch_size > weight.shape[0]:
        raise ValueError(f"batch_size={batch_size} exceeds the {weight.shape[0]} classes of the "
                         "last linear layer; label inference assumes distinct labels")
    order = torch.argsort(weight.detach().sum(dim=1))
    return torch.sort(order[:batch_size]).values


def _project_rows(flat: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Project each row of ``flat`` (N × n) onto the l1 ball of its ``radius`` (N,)."""
    magnitude = flat.abs()
    outside = magnitude.sum(dim=1) > radius
    if not bool(outside.any()):
        return flat
    sorted_abs = torch.sort(magnitude, dim=1, descending=True).values
    cumulative = sorted_abs.cumsum(dim=1)
    ranks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    finite_radius = torch.where(outside, radius, torch.zeros_like(radius))
    active = sorted_abs * ranks > cumulative - finite_radius[:, None]
    # ρ ≥ 1 whenever r > 0; r = 0 gives no active entry, and ρ = 1 then sets θ = max |v|.
    count = (active * ranks).amax(dim=1).clamp_min(1).long()
    theta = (cumulative.gather(1, (count - 1)[:, None]).squeeze(1) - finite_radius) / count
    projected = torch.sign(flat) * (magnitude - theta[:, None]).clamp_min(0)
    return torch.where(outside[:, None], projected, flat)


def project_l1_ball(x: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """Project every sample ``x[i]`` onto the l1 ball {v : ‖v‖₁ ≤ rᵢ} (Duchi et al. 2008).

    Args:
        x: samples along the first dimension (any trailing shape; each sample is flattened).
        radius: one radius for every sample, or a tensor of N radii; each ≥ 0, ``inf`` for no
            constraint.

    Returns:
        A new tensor shaped like ``x``: the nearest point of each ball in Euclidean distance;
        samples inside their ball are returned unchanged, radius 0 gives zeros.

    >>> project_l1_ball(torch.tensor([[3.0, 1.0], [0.25, -0.5]]), 1.0).tolist()
    [[1.0, 0.0], [0.25, -0.5]]
    """
    check_tensor("x", x, floating=True)
    if x.ndim < 1:
        raise ValueError("x must have a sample dimension first, got a 0-d tensor")
    if isinstance(radius, torch.Tensor):
        check_tensor("radius", radius, floating=True)
        if radius.shape != (x.shape[0],):
            raise ValueError(f"radius must be a number or a tensor of shape ({x.shape[0]},) "
                             f"(one per sample of x), got shape {tuple(radius.shape)}")
        if bool(torch.isnan(radius).any()) or bool((radius < 0).any()):
            raise ValueError("radius must be >= 0 (inf for no constraint), got a negative or "
                             "NaN entry")
        radii = radius.to(device=x.device, dtype=x.dtype)
    else:
        value = float(radius) if radius == math.inf else check_range("radius", radius, 0.0)
        radii = torch.full((x.shape[0],), value, device=x.device, dtype=x.dtype)
    return _project_rows(x.reshape(x.shape[0], -1), radii).reshape(x.shape)


def lr_ramp(t: float, *, rampdown: float = 0.75, rampup: float = 0.05) -> float:
    """The learning-rate factor at stage progress ``t`` ∈ [0, 1] (official ``get_lr``).

    >>> lr_ramp(0.0), lr_ramp(0.05), lr_ramp(1.0)
    (0.0, 1.0, 0.0)
    """
    t = check_range("t", t, 0.0, 1.0)
    check_range("rampdown", rampdown, 0.0, 1.0, low_inclusive=False)
    check_range("rampup", rampup, 0.0, 1.0, low_inclusive=False)
    down = min(1.0, (1.0 - t) / rampdown)
    return (0.5 - 0.5 * math.cos(math.pi * down)) * min(1.0, t / rampup)
