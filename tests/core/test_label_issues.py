"""The memory-based label-issue rule (regzoo.core.label_issues): scores, ranking, threshold,
precision/recall/F1 and bad input."""

import pytest
import torch

from regzoo.core.label_issues import memory_label_issues

MEMORY = torch.tensor([[0.7, 0.2, 0.1],
                       [0.1, 0.1, 0.8],
                       [0.4, 0.4, 0.2],
                       [0.2, 0.5, 0.3]])


def test_score_is_best_other_class_minus_given_label():
    issues = memory_label_issues(MEMORY, torch.tensor([0, 0, 1, 0]))
    torch.testing.assert_close(issues.scores, torch.tensor([0.2 - 0.7, 0.8 - 0.1, 0.0,
                                                            0.5 - 0.2]))


def test_flags_argmax_disagreement_ranked_most_suspicious_first_and_ties_stay_unflagged():
    issues = memory_label_issues(MEMORY, torch.tensor([0, 0, 1, 0]))
    assert issues.indices.tolist() == [1, 3]
    assert issues.is_issue.tolist() == [False, True, False, True]


def test_rows_are_normalised_so_the_memory_scale_does_not_matter():
    labels = torch.tensor([2, 0, 1, 1])
    scaled = MEMORY * torch.tensor([[0.3], [2.0], [1.0], [0.01]])
    torch.testing.assert_close(memory_label_issues(scaled, labels).scores,
                               memory_label_issues(MEMORY, labels).scores)


def test_a_higher_min_margin_flags_a_subset():
    g = torch.Generator().manual_seed(0)
    memory = torch.rand(200, 6, generator=g)
    labels = torch.randint(0, 6, (200,), generator=g)
    previous = None
    for margin in (-0.5, 0.0, 0.1, 0.3):
        flagged = memory_label_issues(memory, labels, min_margin=margin).is_issue
        if previous is not None:
            assert not (flagged & ~previous).any()
        previous = flagged


def test_precision_recall_f1_by_hand():
    issues = memory_label_issues(MEMORY, torch.tensor([0, 0, 1, 0]))
    scores = issues.precision_recall_f1(torch.tensor([False, True, True, False]))
    assert scores == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "flagged": 2.0}
    none_flagged = memory_label_issues(MEMORY, MEMORY.argmax(1))
    assert none_flagged.precision_recall_f1(torch.tensor([True, False, False, False])) == {
        "precision": 1.0, "recall": 0.0, "f1": 0.0, "flagged": 0.0}


@pytest.mark.parametrize(("memory", "labels", "error", "message"), [
    (MEMORY, torch.tensor([0, 1, 2]), ValueError, "labels must have shape"),
    (MEMORY, torch.tensor([0, 1, 2, 3]), ValueError, r"labels must lie in \[0, 3\)"),
    (MEMORY, torch.tensor([0.0, 1.0, 2.0, 1.0]), TypeError, "integer class indices"),
    (torch.cat([MEMORY[:3], torch.zeros(1, 3)]), torch.tensor([0, 1, 2, 1]), ValueError,
     "1 of 4 rows never updated"),
    (MEMORY.long(), torch.tensor([0, 1, 2, 1]), TypeError, "floating-point"),
])
def test_bad_input_names_the_argument(memory, labels, error, message):
    with pytest.raises(error, match=message):
        memory_label_issues(memory, labels)


def test_min_margin_outside_its_range_is_rejected():
    with pytest.raises(ValueError, match="min_margin"):
        memory_label_issues(MEMORY, torch.tensor([0, 1, 2, 1]), min_margin=1.0)
    with pytest.raises(ValueError, match="truth must have shape"):
        memory_label_issues(MEMORY, torch.tensor([0, 1, 2, 1])).precision_recall_f1(
            torch.ones(3, dtype=torch.bool))
