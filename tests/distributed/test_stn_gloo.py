"""STN under two gloo processes: λ, σ and the weights stay identical on every rank.

Each rank trains on its shard and draws its own perturbations and validation batches; DDP averages
the weight gradients and :func:`regzoo.methods.stn.fit_stn` averages the hyper gradients, so
the ranks must never drift apart. Workers are spawned with the helpers of ``test_gloo.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from test_gloo import _spawn

pytestmark = pytest.mark.distributed


def _stn_rank(rank: int) -> dict[str, Any]:
    from regzoo.data import TensorBatches
    from regzoo.methods.stn import (
        HyperMLP,
        Hyperparameter,
        HyperparameterSpace,
        STNConfig,
        fit_stn,
    )
    from regzoo.train import init_distributed

    g = torch.Generator().manual_seed(7)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)  # same initial weights on both ranks, as DDP requires
    space = HyperparameterSpace({"d1": Hyperparameter(0.1, 0.0, 0.9)})
    net = HyperMLP(6, 2, (8,), ("d1",), hyper_dim=1)
    torch.manual_seed(100 + rank)  # different perturbations and dropout masks per rank
    result = fit_stn(net, space, TensorBatches(x[:32], y[:32], 8, seed=0),
                     TensorBatches(x[32:], y[32:], 8, seed=1),
                     config=STNConfig(epochs=3, warmup_epochs=1, hyper_lr=0.1, scale_lr=0.1),
                     context=init_distributed("cpu"), progress=False)
    return {"values": space.values.detach().clone(), "scales": space.scales.detach().clone(),
            "weights": [p.detach().clone() for p in net.parameters()],
            "hyper_steps": result.hyper_steps}


def test_two_ranks_hold_identical_hyperparameters_and_weights(tmp_path: Path):
    first, second = _spawn(_stn_rank, tmp_path)
    assert first["hyper_steps"] == second["hyper_steps"] > 0
    assert torch.equal(first["values"], second["values"])
    assert torch.equal(first["scales"], second["scales"])
    assert not torch.equal(first["values"], torch.logit(torch.tensor([0.1 / 0.9])))
    for a, b in zip(first["weights"], second["weights"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
