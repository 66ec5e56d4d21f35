"""PS-KD under two gloo processes on CPU: every rank holds the one-process prediction table.

The official code all-gathers each step's softmax outputs and dataset indices so every GPU
writes every row; here :func:`regzoo.train.distributed.all_gather_cat` does the same inside the
criterion. Two ranks, each on its half of a global batch, must end with identical tables equal
to one process's table on the whole batch, and (DDP averaging the gradients) the same gradients.
Workers are spawned with the helpers of ``test_gloo.py``; everything is float64 (atol 1e-12).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_gloo import WORLD, _spawn

from regzoo.methods.pskd import ProgressiveSelfKnowledgeDistillation
from regzoo.models import MLP

pytestmark = pytest.mark.distributed

N, FEATURES, CLASSES = 16, 6, 5
B = 4  # examples per rank; the global batch holds WORLD * B
EPOCHS, STEPS = 3, 2  # steps per epoch; every epoch after the first reads the table
ATOL = 1e-12


def _problem() -> tuple[torch.Tensor, torch.Tensor, list[list[torch.Tensor]]]:
    """Data and, per epoch, the global index set of each step (a fresh permutation per epoch)."""
    g = torch.Generator().manual_seed(4321)
    x = torch.randn(N, FEATURES, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (N,), generator=g)
    plan = []
    for _ in range(EPOCHS):
        order = torch.randperm(N, generator=g)
        plan.append([order[s * WORLD * B : (s + 1) * WORLD * B] for s in range(STEPS)])
    return x, y, plan


def _train(rank: int | None, kind: str = "pskd") -> dict[str, Any]:
    """EPOCHS × STEPS SGD steps on rank ``rank``'s half of each global batch (``None``: all)."""
    from regzoo.train.distributed import DistributedContext, unwrap_model, wrap_model

    x, y, plan = _problem()
    torch.manual_seed(0)
    model: torch.nn.Module = MLP(FEATURES, CLASSES, hidden=(8,)).double()
    if rank is not None:
        model = wrap_model(model, DistributedContext(rank, WORLD, rank, torch.device("cpu")))
    criterion = ProgressiveSelfKnowledgeDistillation(N, CLASSES, alpha_T=0.8,
                                                     total_epochs=EPOCHS).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    grads, tables = [], []
    for epoch, steps in enumerate(plan):
        criterion.set_epoch(epoch)
        for idx in steps:
            if rank is not None:
                idx = idx[rank * B : (rank + 1) * B]
            logits = model(x[idx])
            loss = (criterion(logits, y[idx], idx) if kind == "pskd"
                    else F.cross_entropy(logits, y[idx]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grads.append({n: p.grad.clone() for n, p in unwrap_model(model).named_parameters()})
            optimizer.step()
        tables.append(criterion.predictions.clone())
    return {"grads": grads, "tables": tables}


def _worker(rank: int) -> dict[str, Any]:
    return _train(rank)


def test_two_ranks_hold_identical_tables_equal_to_one_process(tmp_path: Path) -> None:
    _, _, plan = _problem()
    # Non-vacuous: in a later epoch some example lands on the rank that did not write its row
    # in the previous epoch, so an ungathered table would hand that rank a zero row.
    writer = {}
    moved = False
    for steps in plan:
        for idx in steps:
            for r in range(WORLD):
                for i in idx[r * B : (r + 1) * B].tolist():
                    moved |= writer.get(i, r) != r
                    writer[i] = r
    assert moved

    ranks = _spawn(_worker, tmp_path / "out")
    reference = _train(None)
    for epoch in range(EPOCHS):
        assert torch.equal(ranks[0]["tables"][epoch], ranks[1]["tables"][epoch]), (
            f"epoch {epoch}: the ranks' tables differ")
        got, want = ranks[0]["tables"][epoch], reference["tables"][epoch]
        assert torch.allclose(got, want, rtol=0, atol=ATOL), (
            f"epoch {epoch}: max abs difference {float((got - want).abs().max()):.3g}")
    # Every example was visited each epoch: every row is a distribution.
    torch.testing.assert_close(reference["tables"][-1].sum(dim=1),
                               torch.ones(N, dtype=torch.float64))
    for r, result in enumerate(ranks):
        for step, (g, w) in enumerate(zip(result["grads"], reference["grads"])):
            for name in w:
                assert torch.allclose(g[name], w[name], rtol=0, atol=ATOL), (
                    f"rank {r}, step {step}, {name}: max abs difference "
                    f"{float((g[name] - w[name]).abs().max()):.3g}")
    # The table matters: after the first epoch PS-KD's gradients are not cross-entropy's.
    ce = _train(None, kind="ce")
    assert torch.equal(ce["grads"][0]["head.weight"], reference["grads"][0]["head.weight"])
    assert not torch.allclose(ce["grads"][STEPS]["head.weight"],
                              reference["grads"][STEPS]["head.weight"], atol=1e-6)

