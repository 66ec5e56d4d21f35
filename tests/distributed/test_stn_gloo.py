"""STN under two gloo processes equals STN in one process on the whole batch.

Each rank trains on its shard and draws its own perturbations; DDP averages the weight gradients
and :func:`regzoo.methods.stn.fit_stn` averages the hyper gradients. To compare with one process
exactly, the test tunes a ridge penalty (no dropout masks) with a negligible perturbation scale
and fixed scales: then the only randomness left is below the tolerance, and two ranks holding
half of every global batch must end where one process on the whole batches ends. Workers are
spawned with the helpers of ``test_gloo.py``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from test_gloo import WORLD, _spawn

pytestmark = pytest.mark.distributed

PER_RANK = 8  # batch size on each rank; one process uses WORLD * PER_RANK


def _stn_run(rank: int | None, recipe: bool = False) -> dict[str, Any]:
    """Three STN epochs on rank ``rank``'s shards (``None``: one process, whole batches).

    ``recipe``: up to six epochs with the best state restored and a stop once a halving learning
    rate falls below ``min_lr`` (after epoch 2): the ranks must agree on the validation loss,
    the best epoch and the stop, and each must return the records up to it.
    """
    from torch import nn

    from regzoo.data import TensorBatches
    from regzoo.methods.stn import (
        HyperLinear,
        Hyperparameter,
        HyperparameterSpace,
        STNConfig,
        fit_stn,
    )
    from regzoo.train import init_distributed

    class Ridge(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = HyperLinear(6, 1, hyper_dim=1, bias=False)

        def forward(self, x: torch.Tensor, hyper: Any) -> torch.Tensor:
            return self.linear(x, hyper.net_input).squeeze(1)

    def train_loss(model: nn.Module, batch: Any, hyper: Any) -> torch.Tensor:
        # The fit term through the (DDP-wrapped) forward, the penalty on the module's weights.
        weight = getattr(model, "module", model).linear.effective_weight(hyper.net_input)
        fit_term = (model(batch[0], hyper) - batch[1]) ** 2
        return (fit_term + hyper["l2"] * weight[:, 0, :].pow(2).sum(dim=1)).mean()

    def val_loss(model: nn.Module, batch: Any, hyper: Any) -> torch.Tensor:
        return ((model(batch[0], hyper) - batch[1]) ** 2).mean()

    g = torch.Generator().manual_seed(7)
    x = torch.randn(64, 6, generator=g, dtype=torch.float64)
    y = x @ torch.randn(6, generator=g, dtype=torch.float64) + 0.5 * torch.randn(
        64, generator=g, dtype=torch.float64)
    torch.manual_seed(0)  # same initial weights everywhere, as DDP requires
    space = HyperparameterSpace({"l2": Hyperparameter(1.0, 0.0, math.inf, scale="log",
                                                      perturb_scale=1e-9)}).double()
    net = Ridge().double()
    batch = PER_RANK if rank is not None else WORLD * PER_RANK
    context = init_distributed("cpu") if rank is not None else None
    options: dict[str, Any] = {"epochs": 3}
    if recipe:
        options = {"epochs": 6, "reload_best": True, "min_lr": 0.01}
    result = fit_stn(net, space, TensorBatches(x[:32], y[:32], batch, seed=0),
                     TensorBatches(x[32:], y[32:], batch, seed=1),
                     config=STNConfig(warmup_epochs=1, train_lr=0.05, hyper_lr=0.1,
                                      tune_scales=False, entropy_weight=0.0, **options),
                     train_loss=train_loss, val_loss=val_loss, context=context,
                     make_scheduler=(lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, 0.5))
                     if recipe else None,
                     progress=False)
    return {"values": space.values.detach().clone(),
            "weights": [p.detach().clone() for p in net.parameters()],
            "hyper_steps": result.hyper_steps, "stop_reason": result.stop_reason,
            "best_epoch": result.best_epoch,
            "val_losses": [r.get("stn/val_loss") for r in result.history.records]}


def _stn_recipe_run(rank: int | None) -> dict[str, Any]:
    return _stn_run(rank, recipe=True)


def test_two_ranks_end_where_one_process_ends(tmp_path: Path):
    first, second = _spawn(_stn_run, tmp_path)
    alone = _stn_run(None)
    assert first["hyper_steps"] == second["hyper_steps"] == alone["hyper_steps"] > 0
    assert not torch.equal(alone["values"], torch.zeros_like(alone["values"]))
    for ranked in (first, second):
        torch.testing.assert_close(ranked["values"], alone["values"], rtol=1e-6, atol=1e-8)
        for a, b in zip(ranked["weights"], alone["weights"]):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_two_ranks_agree_on_the_recipe_and_return_the_records_up_to_the_stop(tmp_path: Path):
    first, second = _spawn(_stn_recipe_run, tmp_path)
    alone = _stn_recipe_run(None)
    # Learning rates 0.05 → 0.025 → 0.0125 → 0.00625 < 0.01 after epoch 2: three of six epochs.
    assert alone["stop_reason"] == "min_lr" and len(alone["val_losses"]) == 3
    for ranked in (first, second):
        assert (ranked["stop_reason"], ranked["best_epoch"]) == (alone["stop_reason"],
                                                                 alone["best_epoch"])
        assert ranked["val_losses"][0] is None  # the warm-up epoch
        torch.testing.assert_close(ranked["val_losses"][1:], alone["val_losses"][1:],
                                   rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(ranked["values"], alone["values"], rtol=1e-6, atol=1e-8)
        for a, b in zip(ranked["weights"], alone["weights"]):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)
