"""DR-Tune: distribution regularisation with semantic calibration for fine-tuning.

Paper: Zhou, Chen, Huang, "DR-Tune: Improving Fine-tuning of Pretrained Visual Models by
Distribution Regularization with Semantic Calibration", ICCV 2023, arXiv 2308.12058.

The method in three lines: keep a frozen copy f_0 of the pretrained encoder beside the encoder
f_θ being fine-tuned; train the classification head h also on f_0's features of the training
images (distribution regularisation, DR), after calibrating them onto the drifting downstream
feature cloud: a global Procrustes rotation and a class-wise shift (semantic calibration, SC).

Equations (paper §3, DR and SC; official ``model.py``, whose formulas these follow: the
paper's equation numbers were not checked offline). Batch (x, y) of size B, downstream features
u = f_θ(x), pretrained features p = f_0(x) (no gradient). Queues of length K hold pretrained
features Q_p, downstream features Q_d (both detached) and labels Q_y; ``norm`` divides rows by
their L2 norm.

1. P̂ = norm(Q_p), D̂ = norm(Q_d); s = mean_b ‖u_b‖ (the batch's mean feature norm).
2. Rotation (SC, global alignment), every ``rotate_every`` calls: with μ_P, μ_D the means
   of P̂ and D̂ and S = Σ_i (P̂_i − μ_P)(D̂_i − μ_D)ᵀ = U Σ Vᵀ, the rotation is
   R = V diag(1, …, 1, det(V Uᵀ)) Uᵀ (the sign fix keeps det R = +1: the best rotation when the
   best orthogonal map is a reflection) and P̂ ← R(P̂ − μ_P). The official code adds the
   translation mean(Y − RX) computed on the *centred* clouds, which is ≡ 0, so the rotated cloud
   sits at the origin; with the class shift on, any global offset cancels exactly.
3. Class shift (SC, class-level alignment): for each class c with members I_c in the queue,
   m_p = mean_{i∈I_c} P̂_i, m_d = Σ_{i∈I_c} a_i D̂_i with a = softmax_{i∈I_c}(D̂_i · W_c/‖W_c‖)
   (confidence from the head's class-c weight W_c), and P̂_i ← P̂_i + m_d − m_p.
4. Rescale: P̃ = s · norm(P̂).
5. Loss (DR): L = (1 − w)·CE(h(u), y) + w·CE(h(P̃), Q_y). The official code takes the
   mean cross-entropy over the concatenation [u; P̃], i.e. w = K/(B + K): that is the default
   (``dr_weight=None``): the official code has no separate weight (the issue asks for the
   paper's where it gives one; none was found offline). P̃ is detached, so the DR rows send
   gradient to the head only.
6. Enqueue after the loss: Q_d ← u, Q_p ← p, Q_y ← y at the pointer, wrapping modulo K.

This module is a *penalty* (catalog kind): ``DRTune(features, x, target)`` returns the DR term
w·CE(h(P̃), Q_y) to add to a loss; ``loss(features, x, target)`` returns the whole objective of
step 5. Before training, :meth:`DRTune.warm_up` fills both queues with f_0's features of the
training batches (official ``worker.py::warm_up``).

Defaults and sources: queue_size K = 2048 (official ``configs/*_k2048_*.yaml``), rotate_every
= 10 (official ``model.py``: the within-epoch batch index ``i % 10 == 0``; :meth:`set_epoch`
resets it), head weight init N(0, 0.01²) (official ``model.py``; :func:`init_head`), rotation,
translation and confidence weighting on (the full method; the paper's ablation switches them),
backbone lr 0.01 and head lr 0.33 with SGD momentum 0.9, Nesterov, weight decay 1e-4
(official ``configs/cifar10_k2048_lr001.yaml``: ``lr: [0.01, 0.33]``, the two groups ``worker.py``
builds; :meth:`DRTune.param_groups` builds them here).

Cost per step beyond fine-tuning: one no-grad forward of f_0 on the batch, the head on K extra
rows (K·D·C), O(K·D) for the class shift, and every ``rotate_every`` steps a D×D SVD (O(D³),
why the official code amortises it). Memory: two K×D queues.

Departures from the official code, and why:

- Warm-up loops over the batches until every queue row holds a pretrained feature (the
  official warm-up runs K//B + 3 batches of at most one pass, leaving random rows labelled 1
  when K exceeds one pass of a small data set); the forward refuses to run before.
- Enqueueing wraps around: B need not divide K and partial batches are fine (the official
  slice assignment assumes K % B == 0 and full batches).
- A class with one queue member is shifted like any other (the official ``.squeeze()`` turns
  its index into a 0-d tensor and the class mean into a scalar).
- ``dr_weight`` makes the implicit weight K/(B + K) explicit and adjustable.
- The head may be wrapped by a transform (a LoRA-style adapter, a binary mask, a HAG gate, a
  parametrisation): W_c is then read from the affine map the head computes (eval mode,
  W = h(I) − h(0)), the class weights the official ``cls_head.weight`` stands for.
- The official evaluation reports the best test accuracy over epochs; ours (``repro``) selects
  on a validation split only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_positive_int, check_range
from regzoo.core.modes import eval_mode
from regzoo.registry import Default, register


def init_head(head: nn.Linear, std: float = 0.01, generator: torch.Generator | None = None
              ) -> nn.Linear:
    """Draw the head's weight from N(0, std²) in place (official ``model.py``; bias kept)."""
    if not isinstance(head, nn.Linear):
        raise TypeError(f"head must be an nn.Linear, got {type(head).__name__}")
    with torch.no_grad():
        weight = torch.randn(head.weight.shape, generator=generator, dtype=torch.float64)
        head.weight.copy_(weight * std)
    return head


def head_shape(head: nn.Module) -> tuple[int, int]:
    """(D, C), the input width and outputs of an affine head.

    Its own ``in_features``/``out_features`` (``nn.Linear``, regzoo's adapters), else those of
    the one ``nn.Linear`` it contains (a gate or another wrapper around a linear layer).
    """
    sizes = getattr(head, "in_features", None), getattr(head, "out_features", None)
    if all(isinstance(n, int) for n in sizes):
        return sizes
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise TypeError(f"head must be a linear classification head (an nn.Linear, or a module "
                        f"wrapping exactly one), got a {type(head).__name__} with "
                        f"{len(linears)} nn.Linear layers and no in_features/out_features")
    return linears[0].in_features, linears[0].out_features


def head_class_weights(head: nn.Module, width: int) -> torch.Tensor:
    """The class weights W (C, D) of an affine head h(u) = W u + b (paper §3: W_c, its rows).

    An ``nn.Linear`` (parametrised or not) gives its ``weight``. A wrapped head (an adapter, a
    mask, a gate) gives the map it computes, read off in eval mode without gradient:
    W = (h(I_D) − h(0))ᵀ, one head call on D + 1 rows.
    """
    if isinstance(head, nn.Linear):
        return head.weight
    reference = next(head.parameters(), None)
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    device = reference.device if reference is not None else None
    probe = torch.cat([torch.eye(width, dtype=dtype, device=device),
                       torch.zeros(1, width, dtype=dtype, device=device)])
    with eval_mode(head), torch.no_grad():
        rows = head(probe)
    return (rows[:-1] - rows[-1]).mT


def check_affine_head(head: nn.Module, width: int) -> None:
    """Refuse a head that is not affine: DR-Tune's W_c is only defined for h(u) = W u + b."""
    if isinstance(head, nn.Linear):
        return
    weights = head_class_weights(head, width)
    generator = torch.Generator().manual_seed(0)
    u = torch.randn(4, width, generator=generator, dtype=torch.float64).to(weights)
    with eval_mode(head), torch.no_grad():
        out, offset = head(u), head(torch.zeros_like(u[:1]))
    expected = u @ weights.mT + offset
    tolerance = 1e-4 * (1.0 + float(expected.abs().max()))
    if not bool(torch.isfinite(out).all()) or float((out - expected).abs().max()) > tolerance:
        raise TypeError(f"head must compute an affine map h(u) = W u + b (DR-Tune's confidence "
                        f"weighting reads the class weights W_c), but the "
                        f"{type(head).__name__} given is not affine in its input; pass the "
                        "linear classification layer (wrapped or not), not an MLP head")


def _check_points(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (N, D), got "
                        f"{type(value).__name__}")
    if value.ndim != 2 or value.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, D) with N ≥ 1, got {tuple(value.shape)}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    return value


def procrustes_align(X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rotation R (det +1) and translation t minimising Σ_i ‖R X_i + t − Y_i‖² (Kabsch).

    Args:
        X, Y: paired point clouds, rows are points, shape (N, D).

    Returns:
        ``(R, t)`` with R of shape (D, D), t of shape (D,): the aligned points are X Rᵀ + t.
        With S = Σ (X_i − μ_X)(Y_i − μ_Y)ᵀ = U Σ Vᵀ, R = V diag(1, …, 1, det(V Uᵀ)) Uᵀ, so R is
        a rotation even when the best orthogonal map is a reflection; t = μ_Y − R μ_X.
    """
    X, Y = _check_points("X", X), _check_points("Y", Y)
    if X.shape != Y.shape:
        raise ValueError(f"X and Y must have the same shape, got {tuple(X.shape)} and "
                         f"{tuple(Y.shape)}")
    mu_x, mu_y = X.mean(0), Y.mean(0)
    S = (X - mu_x).mT @ (Y - mu_y)
    U, _, Vh = torch.linalg.svd(S)
    V = Vh.mT.clone()
    sign = torch.where(torch.linalg.det(V @ U.mT) < 0, -1.0, 1.0).to(V.dtype)
    V[:, -1] = V[:, -1] * sign
    R = V @ U.mT
    return R, mu_y - mu_x @ R.mT


def downstream_centres(features: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor,
                       *, confidence_weighting: bool = True) -> torch.Tensor:
    """Per-class centres Σ_{i∈I_c} a_i D̂_i of row-normalised ``features`` (paper §3, SC).

    ``a = softmax_{i∈I_c}(D̂_i · W_c/‖W_c‖)`` with ``W_c`` the rows of ``class_weights`` (C, D);
    with ``confidence_weighting=False`` a is uniform (the plain class mean). Rows of absent
    classes are zero.
    """
    normed = F.normalize(features, dim=1)
    num_classes = class_weights.shape[0]
    if confidence_weighting:
        scores = (normed * F.normalize(class_weights, dim=1)[labels]).sum(1)
        top = torch.full((num_classes,), float("-inf"), dtype=scores.dtype, device=scores.device)
        top = top.scatter_reduce(0, labels, scores, reduce="amax")
        weights = torch.exp(scores - top[labels])
    else:
        weights = torch.ones_like(normed[:, 0])
    totals = torch.zeros(num_classes, dtype=weights.dtype, device=weights.device)
    totals = totals.index_add(0, labels, weights)
    weights = weights / totals[labels]
    centres = torch.zeros_like(class_weights, dtype=normed.dtype)
    return centres.index_add(0, labels, normed * weights[:, None])


def semantic_calibration(pretrained: torch.Tensor, downstream: torch.Tensor,
                         labels: torch.Tensor, class_weights: torch.Tensor,
                         target_norm: float | torch.Tensor | None, *, rotate: bool = True,
                         translate: bool = True, confidence_weighting: bool = True
                         ) -> torch.Tensor:
    """Calibrated pretrained features (paper §3, SC; steps 1–4 of the module docstring).

    Args:
        pretrained, downstream: the queues Q_p and Q_d, shape (K, D).
        labels: the label queue Q_y, shape (K,), integers in [0, C).
        class_weights: the head's weight W, shape (C, D) (confidence of each member).
        target_norm: s, the norm every calibrated row is rescaled to; None skips the rescale
            (the features are then the row-normalised, rotated and shifted P̂).
        rotate: apply the Procrustes rotation P̂ ← R(P̂ − μ_P).
        translate: shift each class onto its downstream centre.
        confidence_weighting: confidence-weighted downstream centres (else plain means).

    Returns:
        The calibrated features, shape (K, D), without gradient.
    """
    with torch.no_grad():
        calibrated = F.normalize(pretrained, dim=1)
        normed_down = F.normalize(downstream, dim=1)
        if rotate:
            R, _ = procrustes_align(calibrated, normed_down)
            calibrated = (calibrated - calibrated.mean(0)) @ R.mT
        if translate:
            num_classes = class_weights.shape[0]
            counts = torch.zeros(num_classes, dtype=calibrated.dtype, device=calibrated.device)
            counts = counts.index_add(0, labels, torch.ones_like(calibrated[:, 0]))
            sums = torch.zeros(num_classes, calibrated.shape[1], dtype=calibrated.dtype,
                               device=calibrated.device).index_add(0, labels, calibrated)
            pretrained_centres = sums / counts.clamp_min(1)[:, None]
            centres = downstream_centres(normed_down, labels, class_weights.detach(),
                                         confidence_weighting=confidence_weighting)
            calibrated = calibrated + (centres - pretrained_centres)[labels]
        if target_norm is not None:
            calibrated = F.normalize(calibrated, dim=1) * target_norm
    return calibrated


@register(
    "dr_tune",
    kind="penalty",
    declares={
        "batch_coupled": "s is the batch's mean feature norm, w = K/(B + K) uses the batch size, "
            "and the batch joins the queues (under DDP each rank's queues receive only its own "
            "half of every batch)",
    },
    summary="Trains the classification head also on a frozen pretrained encoder's features of "
            "the training images, rotated (Procrustes) and shifted class-wise onto the "
            "downstream feature distribution (semantic calibration).",
    equation="L = (1 − w)·CE(h(f_θ(x)), y) + w·CE(h(P̃), Q_y),  P̃ = s·norm(R(P̂ − μ_P) + "
             "m_d[c] − m_p[c]),  w = K/(B + K)",
    defaults=(
        Default("queue_size", 2048, "official configs/cifar10_k2048_lr001.yaml (K)"),
        Default("dr_weight", None, "None: K/(B + K), the official mean over [batch; queue] "
                "(model.py + worker.py); no separate weight found in the paper"),
        Default("rotate_every", 10, "official model.py (within-epoch batch index i % 10)"),
        Default("rotation", True, "paper §3 (full SC)"),
        Default("translation", True, "paper §3 (full SC)"),
        Default("confidence_weighting", True, "paper §3 (softmax over W_c similarity)"),
        Default("head init std", 0.01, "official model.py (weight ~ N(0, 0.01²))"),
        Default("backbone lr", 0.01, "official configs (SGD, momentum 0.9, Nesterov, wd 1e-4)"),
        Default("head lr", 0.33, "official configs/cifar10_k2048_lr001.yaml (lr[1], the head "
                "group worker.py l. 46 builds)"),
    ),
    variants=("DR only (rotation=False, translation=False)", "DR + rotation (translation=False)",
              "DR + translation (rotation=False)", "full DR-Tune",
              "plain class means (confidence_weighting=False)"),
)
class DRTune(nn.Module):
    """DR-Tune's distribution regulariser with its queues and frozen pretrained encoder.

    Args:
        encoder: the downstream encoder f_θ being fine-tuned (used by :meth:`predict` and
            :meth:`param_groups`; its features are passed to the call).
        pretrained_encoder: the frozen pretrained copy f_0 (a different module, typically
            ``copy.deepcopy(encoder)`` before training); frozen here and kept in eval mode.
        head: the linear classification head h: ``nn.Linear(D, num_classes)``, or such a layer
            wrapped by a transform (an adapter, a mask, a gate, a parametrisation): any module
            computing an affine map h(u) = W u + b, whose W gives the class weights W_c
            (:func:`head_class_weights`).
        num_classes: C.
        queue_size: K, rows of each queue (≥ the batch size).
        dr_weight: w in [0, 1]; None gives the official K/(B + K).
        rotate_every: the rotation runs when the within-epoch call index is a multiple of it.
        rotation, translation, confidence_weighting: the semantic calibration's parts.

    Call ``warm_up(batches)`` once before training; then per batch
    ``loss = dr.loss(encoder(x), x, y)`` (or ``ce + dr(features, x, y)`` with your own task
    loss), and ``set_epoch(e)`` at each epoch start. The state (queues, pointer, call index) is
    in buffers, so ``state_dict`` checkpoints it; it changes only in training mode.
    """

    needs_higher_order_grad = False
    batch_coupled = True  # s is the batch's mean norm and the batch joins the queues

    def __init__(self, encoder: nn.Module, pretrained_encoder: nn.Module, head: nn.Linear,
                 num_classes: int, *, queue_size: int = 2048, dr_weight: float | None = None,
                 rotate_every: int = 10, rotation: bool = True, translation: bool = True,
                 confidence_weighting: bool = True) -> None:
        super().__init__()
        for name, module in (("encoder", encoder), ("pretrained_encoder", pretrained_encoder)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"{name} must be an nn.Module, got {type(module).__name__}")
        if encoder is pretrained_encoder:
            raise ValueError("encoder and pretrained_encoder are the same module; pass a frozen "
                             "copy, e.g. pretrained_encoder=copy.deepcopy(encoder)")
        shared = {id(p) for p in encoder.parameters()} & {
            id(p) for p in pretrained_encoder.parameters()}
        if shared:
            raise ValueError(f"encoder and pretrained_encoder share {len(shared)} parameters; "
                             "pass a copy, e.g. pretrained_encoder=copy.deepcopy(encoder)")
        if not isinstance(head, nn.Module):
            raise TypeError(f"head must be an nn.Module, got {type(head).__name__}")
        width, outputs = head_shape(head)
        num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        if outputs != num_classes:
            raise ValueError(f"head has {outputs} outputs but num_classes is "
                             f"{num_classes}; build the head as nn.Linear(D, {num_classes})")
        check_affine_head(head, width)
        self.queue_size = check_positive_int("queue_size", queue_size)
        self.rotate_every = check_positive_int("rotate_every", rotate_every)
        if dr_weight is not None:
            check_range("dr_weight", dr_weight, 0.0, 1.0)
        self.dr_weight = None if dr_weight is None else float(dr_weight)
        self.num_classes = num_classes
        self.rotation, self.translation = bool(rotation), bool(translation)
        self.confidence_weighting = bool(confidence_weighting)
        self.encoder = encoder
        self.pretrained_encoder = pretrained_encoder.requires_grad_(False).eval()
        self.head = head
        self.width = width
        # The queues take the head's dtype and device, so a float64 or CUDA model needs no cast.
        like = self.class_weights()
        features = {"dtype": like.dtype, "device": like.device}
        self.register_buffer("pretrained_queue", torch.zeros(queue_size, width, **features))
        self.register_buffer("downstream_queue", torch.zeros(queue_size, width, **features))
        self.register_buffer("label_queue", torch.zeros(queue_size, dtype=torch.int64,
                                                        device=like.device))
        self.register_buffer("written", torch.zeros(queue_size, dtype=torch.bool,
                                                    device=like.device))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.int64, device=like.device))
        self.register_buffer("batch_index", torch.zeros((), dtype=torch.int64,
                                                        device=like.device))

    # --- modes and optimisation ------------------------------------------------------------

    def train(self, mode: bool = True) -> DRTune:
        """Set training mode; the pretrained encoder always stays in eval mode."""
        super().train(mode)
        self.pretrained_encoder.eval()
        return self

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch``: the within-epoch call index (rotation schedule) restarts at 0."""
        check_positive_int("epoch", epoch, minimum=0)
        self.batch_index.zero_()

    def param_groups(self, backbone_lr: float = 0.01, head_lr: float = 0.33,
                     weight_decay: float = 1e-4) -> list[dict[str, Any]]:
        """The official two optimiser groups: encoder at ``backbone_lr``, head at ``head_lr``."""
        return [{"params": list(self.encoder.parameters()), "lr": backbone_lr,
                 "weight_decay": weight_decay},
                {"params": list(self.head.parameters()), "lr": head_lr,
                 "weight_decay": weight_decay}]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Test-time logits h(f_θ(x)) (no extra cost over the plain model)."""
        return self.head(self.encoder(x))

    def weight_for(self, batch_size: int) -> float:
        """The weight w for a batch of ``batch_size``: ``dr_weight``, else K/(B + K)."""
        if self.dr_weight is not None:
            return self.dr_weight
        return self.queue_size / (batch_size + self.queue_size)

    # --- queues ------------------------------------------------------------------------------

    def _check_batch(self, x: torch.Tensor, target: torch.Tensor) -> None:
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be a torch.Tensor of class indices, got "
                            f"{type(target).__name__}")
        if target.ndim != 1 or target.is_floating_point() or target.dtype == torch.bool:
            raise TypeError(f"target must be a 1-D integer tensor, got {target.dtype} with shape "
                            f"{tuple(target.shape)}")
        if target.numel() == 0:
            raise ValueError("target is empty; pass a batch with at least one example")
        if int(target.min()) < 0 or int(target.max()) >= self.num_classes:
            raise ValueError(f"target must lie in [0, {self.num_classes}) (num_classes), got "
                             f"values in [{int(target.min())}, {int(target.max())}]")
        if not isinstance(x, torch.Tensor) or x.shape[0] != target.shape[0]:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor with the batch size of target "
                             f"({target.shape[0]}), got {got}")
        if target.shape[0] > self.queue_size:
            raise ValueError(f"queue_size K={self.queue_size} is smaller than the batch "
                             f"B={target.shape[0]}; use queue_size ≥ the batch size")

    def _pretrained_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p = self.pretrained_encoder(x)
        if p.ndim != 2 or p.shape[1] != self.width:
            raise ValueError(f"pretrained_encoder gives features of shape {tuple(p.shape)} but "
                             f"the head takes {self.width}; the encoders' width must "
                             "equal the head's input width")
        return p

    @torch.no_grad()
    def _enqueue(self, downstream: torch.Tensor, pretrained: torch.Tensor,
                 target: torch.Tensor) -> None:
        rows = (int(self.queue_ptr) + torch.arange(target.shape[0],
                                                   device=self.queue_ptr.device)) % self.queue_size
        self.downstream_queue[rows] = downstream.to(self.downstream_queue.dtype)
        self.pretrained_queue[rows] = pretrained.to(self.pretrained_queue.dtype)
        self.label_queue[rows] = target.to(self.label_queue.device)
        self.written[rows] = True
        self.queue_ptr.fill_((int(self.queue_ptr) + target.shape[0]) % self.queue_size)

    @torch.no_grad()
    def warm_up(self, batches: Iterable[Any], max_passes: int = 1000) -> int:
        """Fill both queues with f_0's features of ``batches`` (official ``warm_up``).

        ``batches`` yields ``(x, y, ...)``; it is iterated again until every queue row is
        written (a data set smaller than K is repeated). Returns the number of batches used.
        """
        used = 0
        for _ in range(check_positive_int("max_passes", max_passes)):
            seen = 0
            for batch in batches:
                x, y = batch[0], batch[1]
                x, y = x.to(self.label_queue.device), y.to(self.label_queue.device)
                self._check_batch(x, y)
                p = self._pretrained_features(x)
                self._enqueue(p, p, y)
                used, seen = used + 1, seen + 1
                if bool(self.written.all()):
                    return used
            if seen == 0:
                raise ValueError("batches yielded no batch; pass the training batches")
        raise ValueError(f"warm_up did not fill the queue of {self.queue_size} rows in "
                         f"{max_passes} passes; raise max_passes")

    # --- the regulariser -----------------------------------------------------------------------

    def class_weights(self) -> torch.Tensor:
        """The head's class weights W (C, D): see :func:`head_class_weights`."""
        return head_class_weights(self.head, self.width)

    def calibrated_queue(self, features: torch.Tensor) -> torch.Tensor:
        """P̃ for a batch with downstream ``features`` (no state change)."""
        rotate = self.rotation and int(self.batch_index) % self.rotate_every == 0
        s = features.detach().norm(dim=1).mean()
        return semantic_calibration(self.pretrained_queue, self.downstream_queue,
                                    self.label_queue, self.class_weights(), s, rotate=rotate,
                                    translate=self.translation,
                                    confidence_weighting=self.confidence_weighting)

    def forward(self, features: torch.Tensor, x: torch.Tensor, target: torch.Tensor
                ) -> torch.Tensor:
        """The DR term w·CE(h(P̃), Q_y); in training mode the batch then joins the queues.

        Args:
            features: u = encoder(x), shape (B, D) (used detached: its mean norm and the
                queue; the DR term's gradient reaches the head only).
            x: the batch's inputs (f_0 encodes them).
            target: labels, shape (B,), in [0, num_classes).
        """
        if not isinstance(features, torch.Tensor) or not features.is_floating_point():
            raise TypeError("features must be a floating-point tensor (encoder(x)), got "
                            f"{getattr(features, 'dtype', type(features).__name__)}")
        if features.ndim != 2 or features.shape[1] != self.width:
            raise ValueError(f"features must have shape (B, {self.width}) (the head's input "
                             f"width), got {tuple(features.shape)}; the encoder's width must "
                             "equal the head's input")
        self._check_batch(x, target)
        if features.shape[0] != target.shape[0]:
            raise ValueError(f"features must share the batch size of target "
                             f"({target.shape[0]}), got {features.shape[0]}")
        if not bool(self.written.all()):
            raise ValueError(f"the queues hold {int((~self.written).sum())} rows never written; "
                             "call warm_up(train_batches) before training")
        p = self._pretrained_features(x)
        calibrated = self.calibrated_queue(features)
        # A copy of the labels: autograd keeps the target, and the enqueue below edits Q_y.
        value = F.cross_entropy(self.head(calibrated.to(features.dtype)),
                                self.label_queue.clone())
        value = self.weight_for(target.shape[0]) * value
        if self.training:
            self._enqueue(features.detach(), p, target)
            self.batch_index += 1
        return value

    def loss(self, features: torch.Tensor, x: torch.Tensor, target: torch.Tensor
             ) -> torch.Tensor:
        """The whole objective (1 − w)·CE(h(u), y) + w·CE(h(P̃), Q_y) (official: w = K/(B+K))."""
        regulariser = self(features, x, target)  # validates first; the queues hold no grad
        task = F.cross_entropy(self.head(features), target)
        return (1.0 - self.weight_for(target.shape[0])) * task + regulariser
