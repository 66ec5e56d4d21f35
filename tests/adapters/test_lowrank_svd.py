"""The randomised SVD start of PiSSA/SORSA (init_svd="lowrank", peft's pissa_niter_N): exact on
exact-rank weights, near-optimal on decaying spectra, output-preserving, seeded."""

import copy

import pytest
import torch
from torch import nn

from regzoo.adapters import apply_low_rank
from regzoo.adapters.lowrank import LowRankLinear, principal_svd
from regzoo.methods.sorsa import SORSA


def _weight(out=60, inp=40, decay=0.7, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(out, inp, generator=g, dtype=dtype)).Q
    V = torch.linalg.qr(torch.randn(inp, inp, generator=g, dtype=dtype)).Q
    sigma = decay ** torch.arange(inp, dtype=dtype)
    return U * sigma @ V.t()


def _rank_r_error(U, sigma, Vh, weight):
    return torch.linalg.matrix_norm(weight - U * sigma @ Vh).item()


def test_lowrank_is_exact_on_a_weight_of_exactly_that_rank():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(30, 5, generator=g, dtype=torch.float64) @ torch.randn(
        5, 20, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    U, sigma, Vh = principal_svd(weight, 5, svd="lowrank", niter=0)
    _, exact, _ = principal_svd(weight, 5)
    torch.testing.assert_close(sigma, exact, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(U * sigma @ Vh, weight, rtol=0, atol=1e-10)


def test_subspace_iterations_approach_the_optimal_rank_r_error():
    weight = _weight()
    optimal = _rank_r_error(*principal_svd(weight, 8), weight)
    errors = []
    for niter in (0, 1, 4):
        torch.manual_seed(0)
        errors.append(_rank_r_error(*principal_svd(weight, 8, svd="lowrank", niter=niter),
                                    weight))
    assert errors[0] > errors[1] > errors[2] >= optimal * (1 - 1e-12)
    assert errors[2] <= optimal * 1.01


@pytest.mark.parametrize("init", ["pissa", "sorsa"])
def test_lowrank_start_keeps_the_layer_output_and_is_seeded(init):
    torch.manual_seed(0)
    base = nn.Linear(40, 60).double()
    x = torch.randn(7, 40, dtype=torch.float64)
    before = base(x).detach()
    torch.manual_seed(3)
    layer = LowRankLinear(copy.deepcopy(base), 6, init=init, init_svd="lowrank", svd_niter=2)
    torch.testing.assert_close(layer(x), before, rtol=0, atol=1e-12)
    torch.manual_seed(3)
    again = LowRankLinear(copy.deepcopy(base), 6, init=init, init_svd="lowrank", svd_niter=2)
    assert torch.equal(layer.A, again.A) and torch.equal(layer.B, again.B)


def test_handles_pass_the_option_through_and_reject_bad_values():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 4))
    weight = model[0].weight.detach().clone()
    exact = SORSA.apply(copy.deepcopy(model), rank=4, target_modules=["0"])
    fast = SORSA.apply(model, rank=4, target_modules=["0"], init_svd="lowrank", svd_niter=8)
    optimal, found = (torch.linalg.matrix_norm(weight - h.layers["0"].delta_weight()).item()
                      for h in (exact, fast))
    # A random 20×30 layer has no spectral gap: measured found/optimal ≤ 1.015 over 6 seeds.
    assert optimal <= found <= 1.03 * optimal
    assert not torch.equal(fast.layers["0"].S, exact.layers["0"].S)
    with pytest.raises(ValueError, match="init_svd"):
        apply_low_rank(nn.Linear(8, 8), rank=2, init="pissa", init_svd="random")
    with pytest.raises(ValueError, match="svd_niter"):
        apply_low_rank(nn.Linear(8, 8), rank=2, init="pissa", svd_niter=-1)
