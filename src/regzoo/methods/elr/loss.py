r"""Early-Learning Regularization (ELR), the criterion.

Liu, Niles-Weed, Razavian, Fernandez-Granda. "Early-Learning Regularization Prevents
Memorization of Noisy Labels", NeurIPS 2020, arXiv 2007.00151; official code
github.com/shengliu66/ELR (``ELR/model/loss.py``).

A network trained on noisy labels first fits the clean majority, then memorises the wrong
labels. ELR keeps, for every training example i, a temporal ensemble t_i of the model's own
predictions and rewards agreement with it; near a wrong label the penalty's gradient cancels
cross-entropy's pull, so the wrong label is not memorised (paper §4, Lemma 4.1).

Equations (paper §4.1, eq. 5–6; clamp and renormalisation from the official code):

.. math::

    p_i = \mathrm{clamp}(\mathrm{softmax}(z_i), 10^{-4}, 1 - 10^{-4}), \qquad
    t_i \leftarrow \beta\, t_i + (1-\beta)\, \frac{\mathrm{sg}(p_i)}{\sum_c \mathrm{sg}(p_{ic})}

.. math::

    \mathcal{L} = \frac{1}{|B|}\sum_{i\in B} \mathrm{CE}(z_i, y_i)
      + \lambda \frac{1}{|B|}\sum_{i\in B} \log\bigl(1 - \langle t_i, p_i\rangle\bigr)

z_i: logits of example i; y_i: its (noisy) label; t_i ∈ R^C: row i of the target memory T
(N × C, initialised to 0), updated *before* the loss and treated as a constant; sg: stop-gradient;
β: the ensemble's momentum; λ: the regulariser's weight. The regulariser's gradient on the logits
is ``−p_c (t_c − ⟨t,p⟩) / (1 − ⟨t,p⟩)`` (where the clamp is inactive).

Defaults: β = 0.7, λ = 3 (official ``config_cifar10.json``, symmetric noise); the official
asymmetric CIFAR-10 setting is β = 0.9, λ = 1 and CIFAR-100 is β = 0.9, λ = 7.

Cost: the same forward and backward as cross-entropy plus O(B·C) work and an N × C buffer
(N = 50 000, C = 100: 20 MB in float32; ImageNet-1k: 4.8 GB). Differentiable in the logits; any
device. For large N, ``memory_dtype=torch.bfloat16`` (or float16) halves the buffer, and
``memory_device="cpu"`` keeps it in host memory while the model trains on a GPU: only the
batch's B rows travel each step. The loss is computed in the logits' dtype either way.

After training, :meth:`EarlyLearningRegularization.label_issues` compares the memory with the
given labels (the authors' answer to "how do I find the noisy labels?"): the examples whose
memory prefers another class, ranked by margin (:mod:`regzoo.core.label_issues`).

Distributed: under ``torchrun`` the batch's indices and detached probabilities are gathered from
every rank before the update, so every rank holds the same memory and the averaged gradient
equals the single-process gradient on the global batch. Differences from the official code: the
target memory is a buffer (saved in ``state_dict``) instead of a CUDA tensor outside the module,
and λ is an argument instead of a global config singleton.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_positive_int, check_range, check_tensor
from regzoo.core.kinds import check_index, check_logits, check_state_shapes, check_target
from regzoo.core.label_issues import LabelIssues, memory_label_issues
from regzoo.registry import Default, register
from regzoo.train.distributed import all_gather_cat, is_distributed

CLAMP = 1e-4
"""Probability clamp of the official code (keeps log(1 − ⟨t, p⟩) finite)."""


def _device(memory_device: torch.device | str) -> torch.device:
    try:
        return torch.device(memory_device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"memory_device must name a device such as 'cpu' or 'cuda:0', got "
                         f"{memory_device!r}") from error


def _memory(num_examples: int, num_classes: int, dtype: torch.dtype | None,
            device: torch.device | None) -> torch.Tensor:
    """The zero target memory, after checking that ``dtype`` works on ``device``."""
    if dtype is None:
        return torch.zeros(num_examples, num_classes, device=device)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"memory_dtype must be a floating torch.dtype such as torch.bfloat16, "
                        f"got {dtype!r}")
    try:
        torch.zeros(2, 2, dtype=dtype, device=device).lerp_(
            torch.ones(2, 2, dtype=dtype, device=device), 0.5).index_select(
            0, torch.zeros(1, dtype=torch.long, device=device))
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"memory_dtype={dtype} is not supported on device "
                         f"{device or torch.device('cpu')} ({error}); use torch.float32 or "
                         "another memory_device") from error
    return torch.zeros(num_examples, num_classes, dtype=dtype, device=device)


def elr_regularizer(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``log(1 − ⟨t_i, p_i⟩)``; ``targets`` carry no gradient.

    Args:
        probs: clamped probabilities p, shape (B, C), differentiable.
        targets: temporal-ensemble targets t, shape (B, C).
    """
    return torch.log1p(-(targets.detach() * probs).sum(dim=1)).mean()


@register(
    "elr",
    kind="criterion",
    summary="Cross-entropy plus λ·log(1 − ⟨t_i, p_i⟩), t_i a per-example running average of "
    "the model's own predictions; stops memorisation of noisy labels.",
    equation="L = CE(z, y) + λ · mean_i log(1 − <t_i, p_i>),  "
    "t_i ← β t_i + (1 − β) p_i / Σ_c p_ic  (p clamped to [1e-4, 1 − 1e-4], t_i detached)",
    defaults=(
        Default("beta", 0.7, "official ELR/config_cifar10.json (symmetric noise)"),
        Default("lam", 3.0, "official ELR/config_cifar10.json (symmetric noise)"),
        Default("clamp", 1e-4, "official ELR/model/loss.py"),
        Default("memory_dtype", None, "None: float32, following the criterion's .to() as any "
                "buffer (official: float32 CUDA tensor)"),
        Default("memory_device", None, "None: the memory follows the criterion's .to() "
                "(official: on the GPU)"),
    ),
    variants=("ELR (criterion)", "ELR+ (fit_elr_plus: two networks, weight averaging, mixup)"),
)
class EarlyLearningRegularization(nn.Module):
    """ELR criterion: ``forward(logits, target, index) -> loss``.

    Args:
        num_examples: N, the size of the training set (indices lie in [0, N)).
        num_classes: C.
        lam: λ, weight of the regulariser (default 3.0; 0 gives plain cross-entropy).
        beta: β ∈ [0, 1), momentum of the temporal ensemble (default 0.7).
        memory_dtype: dtype of the target memory, pinned through ``.to()``/``.half()`` calls
            (None: float32, converted like any buffer). ``torch.bfloat16`` or ``torch.float16``
            halve its size; the ensemble is then accumulated at that precision.
        memory_device: device the target memory stays on whatever ``.to(device)`` does (None:
            it follows the criterion). ``"cpu"`` with a model on the GPU moves only the batch's
            rows each step.

    The target memory ``targets`` (N × C) is a buffer: it moves with ``.to(device)`` (unless
    ``memory_device`` pins it) and is saved by ``state_dict()``. It is updated on every call
    in training mode; call ``.eval()`` on the criterion to evaluate the loss without touching
    it.

    Example (the batches must carry each example's index in the training set):
        >>> import torch
        >>> from regzoo.data import TensorBatches
        >>> x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
        >>> model = torch.nn.Linear(5, 3)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> criterion = EarlyLearningRegularization(num_examples=64, num_classes=3)
        >>> for xb, yb, index in TensorBatches(x, y, batch_size=16):
        ...     loss = criterion(model(xb), yb, index)
        ...     optimizer.zero_grad(); loss.backward(); optimizer.step()
        >>> bool((criterion.targets.sum(1) > 0).all())  # every example has a running target
        True
    """

    targets: torch.Tensor

    def __init__(self, num_examples: int, num_classes: int, lam: float = 3.0,
                 beta: float = 0.7, *, memory_dtype: torch.dtype | None = None,
                 memory_device: torch.device | str | None = None) -> None:
        super().__init__()
        self.num_examples = check_positive_int("num_examples", num_examples)
        self.num_classes = check_positive_int("num_classes", num_classes, minimum=2)
        self.lam = check_range("lam", lam, 0.0)
        self.beta = check_range("beta", beta, 0.0, 1.0, high_inclusive=False)
        self.memory_dtype = memory_dtype
        self.memory_device = None if memory_device is None else _device(memory_device)
        self.register_buffer("targets", _memory(num_examples, num_classes, memory_dtype,
                                                 self.memory_device))

    def extra_repr(self) -> str:
        pinned = "".join(f", {k}={v}" for k, v in (("memory_dtype", self.memory_dtype),
                                                   ("memory_device", self.memory_device))
                         if v is not None)
        return (f"num_examples={self.num_examples}, num_classes={self.num_classes}, "
                f"lam={self.lam}, beta={self.beta}{pinned}")

    def _apply(self, fn: Any, recurse: bool = True) -> EarlyLearningRegularization:
        """``.to()``/``.cuda()``/``.half()``, except for what ``memory_*`` pins."""
        if self.memory_dtype is None and self.memory_device is None:
            return super()._apply(fn, recurse)
        memory = self._buffers.pop("targets")
        try:
            super()._apply(fn, recurse)
        finally:
            self._buffers["targets"] = memory
        # Where fn sends an empty tensor like the memory says where the memory would go.
        probe = fn(torch.empty(0, dtype=memory.dtype, device=memory.device))
        self._buffers["targets"] = memory.to(device=self.memory_device or probe.device,
                                             dtype=self.memory_dtype or probe.dtype)
        return self

    def label_issues(self, labels: torch.Tensor, *, min_margin: float = 0.0) -> LabelIssues:
        """Training examples whose target memory prefers another class than ``labels``.

        Score s_i = max_{c≠y_i} t̂_ic − t̂_iy_i with t̂_i the memory row normalised to sum 1;
        flagged when s_i > ``min_margin`` (default 0: the memory's arg-max disagrees), ranked
        most suspicious first (rule and reasons: :mod:`regzoo.core.label_issues`). Call it after
        training, with the labels the criterion trained on.

        Raises:
            ValueError: when ``labels`` does not hold one label in [0, C) per example, or when
                some example was never seen in training mode (its memory row is zero).
        """
        return memory_label_issues(self.targets, labels, min_margin=min_margin,
                                   name="the target memory")

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str,
                              *args: Any) -> None:
        check_state_shapes(self, state_dict, prefix, "build the criterion with the checkpoint's "
                           "num_examples (N) and num_classes (C)")
        super()._load_from_state_dict(state_dict, prefix, *args)

    def _check(self, logits: torch.Tensor, index: torch.Tensor,
               target: torch.Tensor | None = None) -> None:
        """The criterion kind's batch checks (regzoo.core.kinds); no target for the penalty."""
        batch = check_logits(logits, self.num_classes)
        if target is not None:
            check_target(target, batch, self.num_classes)
        check_index(index, batch, self.num_examples)

    @torch.no_grad()
    def update_targets(self, index: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """``T[i] ← β T[i] + (1 − β) p̂_i / Σ_c p̂_ic`` for every i in ``index`` (all ranks').

        Returns the updated rows of the local ``index``.
        """
        probs = probs.detach()
        probs = probs / probs.sum(dim=1, keepdim=True)
        local = index
        gathered = is_distributed()
        if gathered:
            index, probs = all_gather_cat(index), all_gather_cat(probs)
        index = index.to(self.targets.device)
        probs = probs.to(self.targets.device, self.targets.dtype)
        # lerp(a, b, w) = a + w (b − a) = β a + (1 − β) b with w = 1 − β: one kernel.
        rows = self.targets.index_select(0, index).lerp_(probs, 1.0 - self.beta)
        self.targets.index_copy_(0, index, rows)
        if not gathered:
            return rows
        return self.targets.index_select(0, local.to(self.targets.device))

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                index: torch.Tensor) -> torch.Tensor:
        """Cross-entropy plus λ times the ELR regulariser on this batch.

        Args:
            logits: z, shape (B, C).
            target: noisy labels y, shape (B,), int64.
            index: dataset indices of the batch's examples, shape (B,), int64.

        Raises:
            ValueError: on shape, dtype or index-range errors, and when ``logits`` holds NaN
                or infinite values (raised before the target memory is touched).
        """
        self._check(logits, index, target)
        log_probs = self._log_probs(logits)
        return F.nll_loss(log_probs, target) + self.lam * self._regularizer(log_probs, index)

    def penalty(self, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The regulariser alone, ``mean_i log(1 − ⟨t_i, p_i⟩)`` (unweighted), memory updated.

        For composing ELR with another task loss (PS-KD's soft targets, mixup): the caller adds
        ``lam * criterion.penalty(logits, index)`` to its own loss.
        """
        self._check(logits, index)
        return self._regularizer(self._log_probs(logits), index)

    def _log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        log_probs = logits.log_softmax(dim=1)
        # Checked before the memory update, so a NaN batch cannot poison the targets.
        if not bool(torch.isfinite(log_probs.sum())):
            check_tensor("logits", logits, finite=True)
        return log_probs

    def _regularizer(self, log_probs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        probs = log_probs.exp().clamp(CLAMP, 1.0 - CLAMP)
        index = index.long()
        rows = (self.update_targets(index, probs) if self.training
                else self.targets[index.to(self.targets.device)])
        return elr_regularizer(probs, rows.to(probs.device, probs.dtype))
