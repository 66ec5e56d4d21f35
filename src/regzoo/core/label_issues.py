r"""Label issues read from a criterion's per-example memory (ELR's targets, PS-KD's predictions).

A criterion that keeps, for every training example i, a distribution m_i over the C classes
built from the model's own past predictions has already decided which labels it does not
believe. ELR's authors answer "how do I find the noisy labels?" with: compare the target memory
with the given labels after training (github.com/shengliu66/ELR, issues). This module does that
comparison, ranked, with one documented rule.

Rule: with m̂_i = m_i / Σ_c m_ic (the memory row as a distribution; ELR's rows sum to 1 − β^k
after k updates) and the given label y_i, the score is the normalised margin

.. math::

    s_i = \max_{c \ne y_i} \hat m_{ic} - \hat m_{i y_i} \in [-1, 1],

the margin cleanlab calls ``normalized_margin`` (Northcutt et al., 2021), read from the memory
instead of out-of-fold predictions. Example i is flagged when s_i > ``min_margin``; the default
0 flags exactly the examples whose memory's arg-max is another class (ties stay unflagged).
Raising ``min_margin`` trades recall for precision. Flagged examples are ranked by s_i, most
suspicious first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from regzoo.core.checks import check_range, check_tensor


@dataclass(frozen=True)
class LabelIssues:
    """The flagged examples of :func:`memory_label_issues`, most suspicious first.

    Attributes:
        indices: dataset indices of the flagged examples, sorted by decreasing score.
        scores: s_i for every example, shape (N,).
        is_issue: boolean mask of the flagged examples, shape (N,).
        min_margin: the threshold that flagged them.
    """

    indices: torch.Tensor
    scores: torch.Tensor
    is_issue: torch.Tensor
    min_margin: float

    def precision_recall_f1(self, truth: torch.Tensor) -> dict[str, float]:
        """:func:`precision_recall_f1` of the flagged set against ``truth``."""
        return precision_recall_f1(self.is_issue, truth)


def precision_recall_f1(flagged: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    """Precision, recall and F1 of a flagged set against the true issues (both bool, (N,)).

    An empty flagged set has precision 1 (it makes no false claim); F1 is 0 when either
    precision or recall is 0. Also returns the number flagged.
    """
    flagged = torch.as_tensor(flagged).to(torch.bool).cpu()
    truth = torch.as_tensor(truth).to(torch.bool).cpu()
    if truth.shape != flagged.shape:
        raise ValueError(f"truth must have shape {tuple(flagged.shape)} (one flag per example), "
                         f"got {tuple(truth.shape)}")
    hits = int((flagged & truth).sum())
    precision = hits / int(flagged.sum()) if flagged.any() else 1.0
    recall = hits / int(truth.sum()) if truth.any() else 1.0
    f1 = 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": float(flagged.sum())}


def memory_label_issues(memory: torch.Tensor, labels: torch.Tensor, *,
                        min_margin: float = 0.0, name: str = "memory") -> LabelIssues:
    """Examples whose memory row disagrees with the given label, ranked (module docstring rule).

    Args:
        memory: m, shape (N, C), non-negative rows (any scale; normalised here).
        labels: the given (possibly noisy) labels y, shape (N,), integers in [0, C).
        min_margin: flag when s_i > min_margin, in [-1, 1) (default 0: arg-max disagrees).
        name: what ``memory`` is called in error messages.

    Raises:
        ValueError: when ``labels`` has another length than the memory or values outside
            [0, C), when a memory row is all zero (that example was never seen in training
            mode: train at least one epoch first), or when ``min_margin`` is out of range.
    """
    check_tensor(name, memory, ndim=2, floating=True, finite=True)
    min_margin = check_range("min_margin", min_margin, -1.0, 1.0, high_inclusive=False)
    labels = torch.as_tensor(labels)
    n, c = memory.shape
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), one label per example of the memory, "
                         f"got {tuple(labels.shape)}; pass the labels the criterion trained on")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= c):
        raise ValueError(f"labels must lie in [0, {c}), got values in "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    memory = memory.detach().float().cpu()
    totals = memory.sum(dim=1)
    unseen = int((totals <= 0).sum())
    if unseen:
        raise ValueError(f"{name} has {unseen} of {n} rows never updated (all zero): call "
                         "label_issues after training at least one full epoch in train mode")
    dist = memory / totals[:, None]
    labels = labels.long().cpu()
    given = dist.gather(1, labels[:, None]).squeeze(1)
    others = dist.scatter(1, labels[:, None], float("-inf")).amax(dim=1)
    scores = others - given
    is_issue = scores > min_margin
    flagged = is_issue.nonzero().squeeze(1)
    order = torch.argsort(scores[flagged], descending=True, stable=True)
    return LabelIssues(indices=flagged[order], scores=scores, is_issue=is_issue,
                       min_margin=min_margin)
