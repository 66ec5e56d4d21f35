"""HGP under DDP with 2 gloo processes: what is synchronised exactly and what is coupled.

anchors.md §9.8: higher-order terms use ``autograd.grad(create_graph=True)`` inside the loss and an
ordinary ``backward`` through the DDP wrapper. Each rank computes the penalty on its local share
of every domain's batch, so (1) the DDP-averaged gradient equals the average of the per-shard
single-process gradients (nothing is lost in synchronisation), (2) the ERM part equals the
one-process gradient on the concatenated batch, and (3) the HGP part does not — it is batch-
coupled (a nonlinear function of per-domain batch gradients), as the method's docstring says.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_gloo import WORLD, _spawn
from torch import nn

from regzoo.methods.hessian_alignment import HessianAlignment
from regzoo.models import MLP

pytestmark = pytest.mark.distributed

DOMAINS, B, FEATURES, CLASSES = 3, 4, 5, 3


def _data() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    xs = [torch.randn(WORLD * B, FEATURES, generator=g, dtype=torch.float64) + e
          for e in range(DOMAINS)]
    ys = [torch.randint(0, CLASSES, (WORLD * B,), generator=g) for _ in range(DOMAINS)]
    return xs, ys


class _Featurizer(nn.Module):
    """DDP needs one forward call: features of all domains' examples at once."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = MLP(FEATURES, CLASSES, hidden=(6,)).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


def _gradient(model: nn.Module, inner: _Featurizer, shard: int | None, alpha: float,
              beta: float) -> dict[str, torch.Tensor]:
    xs, ys = _data()
    if shard is not None:
        xs = [x[shard * B:(shard + 1) * B] for x in xs]
        ys = [y[shard * B:(shard + 1) * B] for y in ys]
    features = model(torch.cat(xs)).split([len(x) for x in xs])
    head = inner.net.head
    loss = torch.stack([F.cross_entropy(head(f), y) for f, y in zip(features, ys)]).mean()
    loss = loss + HessianAlignment(head, "hgp", alpha=alpha, beta=beta)(list(features), ys)
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in inner.named_parameters()}


def _rank_gradients(rank: int) -> dict[str, dict[str, torch.Tensor]]:
    from regzoo.train.distributed import DistributedContext, wrap_model

    inner = _Featurizer()
    model = wrap_model(inner, DistributedContext(rank, WORLD, rank, torch.device("cpu")))
    return {kind: _gradient(model, inner, rank, a, b)
            for kind, (a, b) in {"erm": (0.0, 0.0), "hgp": (1.0, 1.0)}.items()}


def test_two_rank_hgp_gradients_are_the_local_estimator_synchronised_exactly(tmp_path):
    ranks = _spawn(_rank_gradients, tmp_path, timeout=120.0)

    inner = _Featurizer()
    full = {kind: _gradient(inner, inner, None, a, b)
            for kind, (a, b) in {"erm": (0.0, 0.0), "hgp": (1.0, 1.0)}.items()}
    local = {}
    for kind, (a, b) in {"erm": (0.0, 0.0), "hgp": (1.0, 1.0)}.items():
        shards = [_gradient(inner, inner, r, a, b) for r in range(WORLD)]
        local[kind] = {n: sum(s[n] for s in shards) / WORLD for n in shards[0]}
    for result in ranks:
        for name, want in local["hgp"].items():
            assert torch.allclose(result["hgp"][name], want, rtol=0, atol=1e-12), name
        for name, want in full["erm"].items():
            assert torch.allclose(result["erm"][name], want, rtol=0, atol=1e-12), name
    # documented coupling: the local estimator is not the full-batch HGP gradient
    gap = max(float((local["hgp"][n] - full["hgp"][n]).abs().max()) for n in full["hgp"])
    assert gap > 1e-6
