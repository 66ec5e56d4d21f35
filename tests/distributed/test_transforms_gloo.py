"""Every transform under DDP: 2 gloo processes equal one process on the global batch (issue 23).

Generated from the registry, like the composition contract: each implemented transform is
applied to a small float64 MLP, wrapped in DDP on 2 ranks, and trained 3 SGD steps on cross-
entropy plus its own terms, each rank on its half of every global batch. A transform whose terms
are means over examples (or do not read the batch) must end, on both ranks, with exactly the
parameters one process reaches on the whole batch (atol 1e-10). A batch-coupled transform (a
term that is a nonlinear function of the whole batch, or an update drawn from the local
gradients) is listed in :data:`BATCH_COUPLED` with the reason: its ranks must still agree with
each other, and the test records the gap to one process.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_gloo import WORLD, _gap, _spawn

from regzoo.models import MLP
from regzoo.registry import card, cards

pytestmark = pytest.mark.distributed

N, FEATURES, CLASSES, B, STEPS, LR = 16, 16, 4, 4, 3, 0.05
TRANSFORMS = [c.slug for c in cards(kind="transform") if c.implemented]

BATCH_COUPLED = {c.slug: c.declarations["batch_coupled"] for c in cards(kind="transform")
                 if "batch_coupled" in c.declarations}
"""Transforms whose 2-rank run differs from one process on the global batch, and why."""


def _problem() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    x = torch.randn(N, FEATURES, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (N,), generator=g)
    return x, y, [torch.randperm(N, generator=g)[: WORLD * B] for _ in range(STEPS)]


def _terms(slug: str, handle: Any, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if slug == "ba_lora":
        return handle.regularizer(logits, inputs=x).total
    if slug == "sara":
        term = handle.rank_term()
        return handle.penalty() if term is None else handle.penalty() + term
    return handle.penalty()


def _train(slug: str, rank: int | None) -> list[torch.Tensor]:
    """STEPS steps on rank ``rank``'s share of each global batch (``None``: the whole batch)."""
    from regzoo.train.distributed import DistributedContext, wrap_model

    x, y, steps = _problem()
    torch.manual_seed(0)
    model = MLP(FEATURES, CLASSES, hidden=(32,)).double()
    teacher = copy.deepcopy(model).eval()
    torch.manual_seed(1)
    handle = card(slug).obj.apply(model)
    if slug == "rmt":
        handle.gradient_dropout.generator = torch.Generator().manual_seed(3)
    net = model if rank is None else wrap_model(
        model, DistributedContext(rank, WORLD, rank, torch.device("cpu")))
    optimizer = (handle.optimizer(lr=LR) if slug == "sara"
                 else torch.optim.SGD(handle.trainable_parameters(), lr=LR))
    for idx in steps:
        if rank is not None:
            idx = idx[rank * B:(rank + 1) * B]
        optimizer.zero_grad(set_to_none=True)
        logits = net(x[idx])
        loss = F.cross_entropy(logits, y[idx]) + _terms(slug, handle, logits, x[idx])
        if slug == "rmt":
            from regzoo.methods.rmt import distillation_loss

            with torch.no_grad():
                teacher_logits = teacher(x[idx])
            handle.gradient_dropout.backward(loss, distillation_loss(logits, teacher_logits),
                                             handle.trainable_parameters())
        else:
            loss.backward()
        if slug == "sorsa":
            handle.step(optimizer)
        else:
            optimizer.step()
    return [p.detach().clone() for p in handle.trainable_parameters()]


def _worker(rank: int) -> dict[str, list[torch.Tensor]]:
    return {slug: _train(slug, rank) for slug in TRANSFORMS}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, list[torch.Tensor]]]:
    return _spawn(_worker, tmp_path_factory.mktemp("transforms"), timeout=240.0)


@pytest.mark.parametrize("slug", TRANSFORMS)
def test_two_ranks_agree_and_equal_one_process_unless_batch_coupled(slug, two_ranks):
    first, second = (ranks[slug] for ranks in two_ranks)
    assert _gap(first, second) == 0.0, f"{slug}: the ranks' parameters differ"
    reference = _train(slug, None)
    before = card(slug).obj.apply(_fresh_model()).trainable_parameters()
    assert _gap(reference, list(before)) > 1e-6, f"{slug}: three steps left it untrained"
    gap = _gap(first, reference)
    if slug in BATCH_COUPLED:
        assert gap > 1e-8, f"{slug} is declared batch-coupled but equals one process"
    else:
        assert gap <= 1e-10, f"{slug}: 2 ranks differ from one process by {gap:.3g}"


def _fresh_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = MLP(FEATURES, CLASSES, hidden=(32,)).double()
    torch.manual_seed(1)
    return model


def test_every_declared_transform_is_registered():
    assert set(BATCH_COUPLED) <= set(TRANSFORMS)
