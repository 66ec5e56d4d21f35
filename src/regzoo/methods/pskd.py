r"""Progressive Self-Knowledge Distillation (PS-KD), the criterion.

Kim, Ji, Yoon, Hwang. "Self-Knowledge Distillation with Progressive Refinement of Targets",
ICCV 2021, arXiv 2006.12000; official code github.com/lgcnsai/PS-KD-Pytorch (``main.py``,
``loss/pskd_loss.py``).

Hard one-hot targets make a network over-confident. PS-KD trains each example against a soft
target that mixes its label with the model's own prediction for that example at the previous
epoch — the student of epoch t − 1 is the teacher of epoch t — with a mixing weight that grows
linearly over training (paper §3). It acts like an adaptive, per-example label smoothing whose
gradient puts more weight on examples the model found hard (the paper's gradient analysis).

Equations (paper §3; epochs indexed t = 0 … T − 1 as in the official ``main.py``):

.. math::

    \alpha_t = \alpha_T \,\frac{t + 1}{T}, \qquad
    \tilde y_i = (1 - \alpha_t)\, y_i + \alpha_t\, P_i, \qquad
    \mathcal{L} = -\frac{1}{|B|} \sum_{i \in B} \sum_{c} \tilde y_{ic} \log p_{ic},
    \qquad P_i \leftarrow \mathrm{sg}(p_i) \text{ after the loss}

z_i: logits of example i; p_i = softmax(z_i); y_i: its one-hot label; P ∈ R^{N×C}: the table of
every example's latest stored prediction (``predictions``), a constant for the loss; sg:
stop-gradient; T: the number of training epochs; α_T: the mixing weight of the last epoch; B:
the batch. At t = 0 the target is the label itself (the official code writes the one-hot label
into P before mixing), so the first epoch is plain cross-entropy. The gradient on the logits is
``(p_i − ỹ_i) / |B|``.

Defaults: α_T = 0.8 (official ``main.py`` ``--alpha_T`` and every README command); T = 300
(official ``main.py`` ``--end_epoch``, the CIFAR-100 schedule). Set ``total_epochs`` to your
run's length: α reaches α_T only at the last epoch.

Cost: one extra O(B·C) mix and one O(B·C) row write per step, no extra forward pass and no
teacher network; memory N × C floats (CIFAR-100: 50 000 × 100 in float32 = 20 MB).

Distributed: under ``torchrun`` the batch's indices and detached probabilities are gathered from
every rank before the table is written, so every rank holds the same table, as the official
code's ``all_gather`` does.

Where the official code (commit 9aa0828) makes the paper concrete: α_t is computed once per
epoch as ``alpha_T * (epoch + 1) / end_epoch`` (``main.py`` l. 323, the paper's α_T·t/T with
epochs counted from 1); the table is a CPU float32 tensor of zeros (l. 279) whose visited rows
are overwritten with the one-hot label during epoch 0 (l. 422–423), so α_0 = α_T/T mixes the
label with itself; the soft target is built on the CPU by fancy indexing (l. 426); the loss is
``(−ỹ · log_softmax(z)).mean(0).sum()`` (``loss/pskd_loss.py`` l. 19); the stored prediction is
the softmax of the same train-mode forward of the augmented input (l. 432 and 467), written
after ``optimizer.step()`` — the paper says only "the prediction of the previous epoch"; under
DDP the softmax outputs and indices of all GPUs are all-gathered (l. 436–442) and written row by
row (l. 464–465), and the ``DistributedSampler`` pads an epoch with repeated examples, whose
later copy then reads a row written in the same epoch (here too). The optimiser is SGD with
Nesterov momentum 0.9 and weight decay 5e-4 (l. 273), lr × 0.1 at epochs 150 and 225 of 300.

Differences from the official code, and why:

* The table is a registered buffer (it follows ``.to(device)`` and is saved by ``state_dict()``
  with the epoch counter) instead of a CPU tensor kept by the training script; the official code
  checkpoints it and ``alpha_t`` by hand.
* The first epoch computes ``F.cross_entropy`` with the class indices instead of mixing the
  label with a one-hot copy of itself: the same target, exactly cross-entropy.
* A row never written (an example not visited yet, e.g. because a sampler dropped it in the first
  epoch) is read as the one-hot label, so every target sums to one; the official table reads
  zeros there, giving the target (1 − α_t)·y_i.
* Targets must be class indices: the official training loop builds one-hot labels from class
  indices and has no soft-label (mixup/CutMix) path, so none is invented here.
* ``update_on_forward=False`` leaves the table to :meth:`store_predictions`, for a user who
  refreshes it from a clean evaluation pass of their own (the spec's variant; the official code
  stores the train-mode prediction of the augmented input, which is the default here).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_positive_int, check_range, check_tensor
from regzoo.core.kinds import check_index, check_logits, check_state_shapes, check_target
from regzoo.core.label_issues import LabelIssues, memory_label_issues
from regzoo.registry import Default, register
from regzoo.train.distributed import all_gather_cat, is_distributed

SOFT_TARGET_HINT = (" (soft labels are not supported: the official PS-KD code has no "
                    "mixup/CutMix path)")


@register(
    "pskd",
    kind="criterion",
    summary="Cross-entropy against (1 − α_t)·label + α_t·(the model's own prediction for the "
    "example at the previous epoch), α_t growing linearly to α_T; first epoch plain CE.",
    equation="L = −mean_i Σ_c ỹ_ic log p_ic,  ỹ_i = (1 − α_t) y_i + α_t P_i,  "
    "α_t = α_T (t + 1) / T,  P_i ← sg(softmax(z_i)) after the loss (P_i = y_i at t = 0)",
    defaults=(
        Default("alpha_T", 0.8, "official main.py --alpha_T (all README commands)"),
        Default("total_epochs", 300, "official main.py --end_epoch (CIFAR-100 schedule)"),
        Default("update_on_forward", True,
                "official main.py: the table stores the training forward's softmax"),
    ),
    variants=("PS-KD (train-mode predictions, official)",
              "PS-KD with a clean refresh (update_on_forward=False + store_predictions)"),
)
class ProgressiveSelfKnowledgeDistillation(nn.Module):
    """PS-KD criterion: ``forward(logits, target, index) -> loss``.

    Args:
        num_examples: N, the size of the training set (indices lie in [0, N)).
        num_classes: C.
        alpha_T: α_T ∈ [0, 1], the mixing weight at the last epoch (default 0.8; 0 gives plain
            cross-entropy).
        total_epochs: T, the number of training epochs (default 300); valid epochs are
            0 … T − 1.
        update_on_forward: store ``softmax(logits)`` of every training-mode call in the table
            (default True, the official behaviour); False leaves the table to
            :meth:`store_predictions`.

    The table ``predictions`` (N × C) and the epoch counter ``epoch`` are buffers: they move
    with ``.to(device)`` and are saved by ``state_dict()``. Call :meth:`set_epoch` at the start
    of every epoch (a step reads a host copy of the epoch: writing the buffer directly is not
    seen; ``load_state_dict`` is). The table is written on every call in training mode; call
    ``.eval()`` on the criterion to evaluate the loss without touching it.

    Example (the batches must carry each example's index in the training set):
        >>> import torch
        >>> from regzoo.data import TensorBatches
        >>> x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Linear(5, 3)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> criterion = ProgressiveSelfKnowledgeDistillation(64, 3, total_epochs=4)
        >>> batches = TensorBatches(x, y, batch_size=16)
        >>> for epoch in range(4):
        ...     criterion.set_epoch(epoch)
        ...     batches.set_epoch(epoch)
        ...     for xb, yb, index in batches:
        ...         loss = criterion(model(xb), yb, index)
        ...         optimizer.zero_grad(); loss.backward(); optimizer.step()
        >>> round(criterion.alpha, 2)  # α_t = α_T (t + 1) / T at the last epoch
        0.8
    """

    predictions: torch.Tensor
    epoch: torch.Tensor

    def __init__(self, num_examples: int, num_classes: int, alpha_T: float = 0.8,
                 total_epochs: int = 300, update_on_forward: bool = True) -> None:
        super().__init__()
        self.num_examples = check_positive_int("num_examples", num_examples)
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        self.alpha_T = check_range("alpha_T", alpha_T, 0.0, 1.0)
        self.total_epochs = check_positive_int("total_epochs", total_epochs)
        if not isinstance(update_on_forward, bool):
            raise TypeError(f"update_on_forward must be a bool, got "
                            f"{type(update_on_forward).__name__} {update_on_forward!r}")
        self.update_on_forward = update_on_forward
        self.register_buffer("predictions", torch.zeros(num_examples, num_classes))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.int64))
        # Host copies, so that a step reads neither the epoch buffer nor the whole table (each
        # read a device sync on a GPU): the epoch as set, and whether any row is still unwritten
        # (None: not read since the last set_epoch or load; rows are only ever written).
        self._epoch = 0
        self._unwritten: bool | None = None
        self._stored_at_epoch_zero = 0

    def extra_repr(self) -> str:
        return (f"num_examples={self.num_examples}, num_classes={self.num_classes}, "
                f"alpha_T={self.alpha_T}, total_epochs={self.total_epochs}, "
                f"update_on_forward={self.update_on_forward}")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any) -> None:
        check_state_shapes(self, state_dict, prefix, "build the criterion with the checkpoint's "
                           "num_examples (N) and num_classes (C)")
        super()._load_from_state_dict(state_dict, prefix, *args)
        self._epoch, self._unwritten = int(self.epoch), None

    def set_epoch(self, epoch: int) -> None:
        """Select epoch t ∈ [0, T − 1]; α_t and the first-epoch rule follow from it."""
        check_positive_int("epoch", epoch, minimum=0)
        if epoch >= self.total_epochs:
            raise ValueError(f"epoch must lie in [0, {self.total_epochs - 1}] (total_epochs="
                             f"{self.total_epochs}), got {epoch}; pass the run's length as "
                             "total_epochs")
        self.epoch.fill_(epoch)
        self._epoch, self._unwritten = epoch, None

    @property
    def alpha(self) -> float:
        """α_t = α_T (t + 1) / T of the current epoch (at t = 0 the target is the label)."""
        return self.alpha_T * (self._epoch + 1) / self.total_epochs

    def label_issues(self, labels: torch.Tensor, *, min_margin: float = 0.0) -> LabelIssues:
        """Training examples whose stored predictions P[i] prefer another class than ``labels``.

        P holds each example's softmax from its last training visit (the last epoch), so this
        reads the model's final opinion of its own training labels, in sample: the margin rule
        of :mod:`regzoo.core.label_issues` (flag when max_{c≠y} P_ic − P_iy > ``min_margin``),
        ranked most suspicious first. Call it after training, with the labels it trained on.

        Raises:
            ValueError: when ``labels`` does not hold one label in [0, C) per example, or when
                some example was never stored (its row is zero).
        """
        return memory_label_issues(self.predictions, labels, min_margin=min_margin,
                                   name="the prediction table")

    def _check_target(self, target: torch.Tensor, batch: int | None) -> int:
        return check_target(target, batch, self.num_classes, SOFT_TARGET_HINT)

    @torch.no_grad()
    def soft_targets(self, target: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """ỹ = (1 − α_t)·onehot(target) + α_t·P[index] of the current epoch, shape (B, C).

        At epoch 0, and for rows never written, P[index] is the one-hot label. Carries no
        gradient. Returned in the table's dtype on ``target``'s device.
        """
        check_index(index, self._check_target(target, None), self.num_examples, "target")
        return self._soft_targets(target, index)

    def _soft_targets(self, target: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # scatter_ instead of F.one_hot: the indices are validated already, and it builds the
        # table's dtype directly.
        onehot = torch.zeros(target.shape[0], self.num_classes, dtype=self.predictions.dtype,
                             device=target.device).scatter_(1, target.unsqueeze(1), 1.0)
        if self._epoch == 0 or self.alpha_T == 0.0:
            return onehot
        rows = self.predictions.index_select(0, index.to(self.predictions.device))
        rows = rows.to(onehot.device)
        if self._unwritten is None:
            self._unwritten = bool((self.predictions.sum(dim=1) == 0).any())
        if self._unwritten:
            rows = torch.where((rows.sum(dim=1) == 0).unsqueeze(1), onehot, rows)
        # lerp(a, b, w) = a + w (b − a) = (1 − α) a + α b: one kernel.
        return onehot.lerp_(rows, self.alpha)

    @torch.no_grad()
    def store_predictions(self, logits: torch.Tensor, index: torch.Tensor) -> None:
        """``P[i] ← softmax(z_i)`` for every i in ``index`` (every rank's, under torchrun).

        Called by :meth:`forward` in training mode when ``update_on_forward``; call it yourself
        with the logits of a clean evaluation pass otherwise. Under ``torchrun`` every rank
        must call it (it gathers).
        """
        check_index(index, check_logits(logits, self.num_classes), self.num_examples)
        check_tensor("logits", logits, finite=True)
        self._store(index, logits.detach().softmax(dim=1))

    def _store(self, index: torch.Tensor, probs: torch.Tensor) -> None:
        index = index.to(self.predictions.device, torch.long)
        probs = probs.detach().to(self.predictions.device, self.predictions.dtype)
        if is_distributed():
            index, probs = all_gather_cat(index), all_gather_cat(probs)
        self.predictions.index_copy_(0, index, probs)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                index: torch.Tensor) -> torch.Tensor:
        """Soft-target cross-entropy on this batch; then the batch's predictions are stored.

        Args:
            logits: z, shape (B, C).
            target: labels y, shape (B,), integer class indices.
            index: dataset indices of the batch's examples, shape (B,), integer.

        Raises:
            ValueError: on shape or index-range errors, and when the loss is not finite because
                ``logits`` holds NaN or infinite values (raised before the table is touched;
                a −inf logit passes where the target puts no weight on it, as in
                cross-entropy).
            TypeError: on a non-integer ``index`` or ``target`` (soft labels included) or a
                non-floating ``logits``.
        """
        batch = check_logits(logits, self.num_classes)
        self._check_target(target, batch)
        check_index(index, batch, self.num_examples)
        log_probs = logits.log_softmax(dim=1)
        if self._epoch == 0 or self.alpha_T == 0.0:
            loss = F.nll_loss(log_probs, target)
        else:
            with torch.no_grad():
                soft = self._soft_targets(target, index).to(log_probs.dtype)
            loss = -(soft * log_probs).sum(dim=1).mean()
        # Checked before the table is written, so a bad batch cannot poison the targets. A NaN
        # or +inf logit makes its row's log-softmax NaN, hence the loss: one scalar to test.
        if not math.isfinite(loss.item()):
            check_tensor("logits", logits, finite=True)
            raise ValueError("the loss is not finite although logits are: the prediction table "
                             "holds non-finite rows; load a valid state_dict")
        if self.training and self.update_on_forward:
            self._store(index, log_probs.detach().exp())
            self._warn_if_epoch_never_set(index.shape[0])
        return loss

    def _warn_if_epoch_never_set(self, batch: int) -> None:
        if self._epoch != 0 or self._stored_at_epoch_zero < 0:
            return
        self._stored_at_epoch_zero += batch
        if self._stored_at_epoch_zero > 2 * self.num_examples:
            warnings.warn("PS-KD has seen more than two epochs of examples at epoch 0: call "
                          "criterion.set_epoch(epoch) each epoch, otherwise it stays plain "
                          "cross-entropy", stacklevel=3)
            self._stored_at_epoch_zero = -1
