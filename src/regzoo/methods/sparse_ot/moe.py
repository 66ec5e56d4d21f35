"""Sparse mixture of experts (paper §6): a router that gives each expert at most k tokens.

:class:`SparseOTRouter` routes by the semi-dual sparsity-constrained plan (the paper) or by the
two baselines the reproduction compares with (top-1 with capacity, Sinkhorn then capacity);
:class:`SparseMoE` is the layer that runs each expert on its own tokens.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from regzoo.core.checks import check_choice, check_positive_int, check_range
from regzoo.methods.sparse_ot.solver import sparsity_constrained_ot

ROUTINGS = ("sparse_ot", "top1", "sinkhorn")


class Routing(NamedTuple):
    """A router's decision for groups of tokens: which expert gets which token, and weights."""

    dispatch: torch.Tensor  # (G, N, E) bool: token i is processed by expert j
    combine: torch.Tensor  # (G, N, E) gate weights on dispatched pairs (differentiable)
    logits: torch.Tensor  # (G, N, E) router logits


class SparseOTRouter(nn.Module):
    """Token-to-expert routing with a per-expert capacity (paper §6, sparse mixture of experts).

    Tokens are the rows, experts the columns of a transport problem with uniform marginals
    (a = 1/N, b = 1/E) and cost C = −logits (the router's scores, detached). ``routing``:

    * ``"sparse_ot"`` (the paper): the semi-dual sparsity-constrained plan with k = capacity;
      expert j processes the tokens in the support of T[:, j] — never more than k.
    * ``"top1"``: each token picks its highest-logit expert; an expert over capacity keeps its
      k highest-scoring tokens and drops the rest (V-MoE's batch-priority routing).
    * ``"sinkhorn"``: the entropic plan of (a, b, C) with ε = ``sinkhorn_eps`` (BASE/S-BASE-
      style balancing) picks each token's expert, then the same capacity rule as ``top1``.

    Combine weights are the softmax gate probabilities on dispatched pairs (the V-MoE
    convention), so the router learns through them; a dropped token gets no expert output.

    Args:
        in_features: token dimension.
        num_experts: E.
        capacity: tokens per expert and group, k (default ⌈N/E⌉ at call time: capacity ratio 1).
        routing: ``"sparse_ot"``, ``"top1"`` or ``"sinkhorn"``.
        gamma: γ of the sparsity-constrained problem.
        max_iter: L-BFGS iterations per routing solve.
        tol: the solver's tolerance.
        sinkhorn_eps: entropic regularisation of the Sinkhorn baseline (on costs −logits).
        sinkhorn_iters: Sinkhorn iterations.
    """

    def __init__(self, in_features: int, num_experts: int, capacity: int | None = None,
                 routing: str = "sparse_ot", gamma: float = 1.0, max_iter: int = 100,
                 tol: float = 1e-6, sinkhorn_eps: float = 0.1, sinkhorn_iters: int = 50) -> None:
        super().__init__()
        check_positive_int("in_features", in_features)
        check_positive_int("num_experts", num_experts, minimum=2)
        if capacity is not None:
            check_positive_int("capacity", capacity)
        self.routing = check_choice("routing", routing, ROUTINGS)
        self.gamma = check_range("gamma", gamma, 0.0, low_inclusive=False)
        self.sinkhorn_eps = check_range("sinkhorn_eps", sinkhorn_eps, 0.0, low_inclusive=False)
        self.max_iter = check_positive_int("max_iter", max_iter)
        self.sinkhorn_iters = check_positive_int("sinkhorn_iters", sinkhorn_iters)
        self.tol = check_range("tol", tol, 0.0)
        self.capacity = capacity
        self.num_experts = num_experts
        self.gate = nn.Linear(in_features, num_experts, bias=False)

    def forward(self, x: torch.Tensor) -> Routing:
        """Route ``x`` of shape (G, N, d) (G groups of N tokens) or (N, d) (one group)."""
        if x.ndim not in (2, 3):
            raise ValueError(f"x must be (N, d) or (G, N, d), got shape {tuple(x.shape)}")
        if x.shape[-1] != self.gate.in_features:
            raise ValueError(f"x has {x.shape[-1]} features, the router expects "
                             f"{self.gate.in_features}")
        logits = self.gate(x if x.ndim == 3 else x[None])
        G, N, E = logits.shape
        k = self.capacity or math.ceil(N / E)
        probs = torch.softmax(logits, dim=-1)
        scores = logits.detach()
        if self.routing == "sparse_ot":
            a = scores.new_full((G, N), 1.0 / N)
            b = scores.new_full((G, E), 1.0 / E)
            plan = sparsity_constrained_ot(a, b, -scores, k, self.gamma, max_iter=self.max_iter,
                                           tol=self.tol)
            dispatch = plan > 0
        else:
            if self.routing == "top1":
                priority = scores
            else:
                priority = _sinkhorn_log(-scores, self.sinkhorn_eps, self.sinkhorn_iters)
            dispatch = _top1_with_capacity(priority, k)
        combine = probs * dispatch
        if x.ndim == 2:
            return Routing(dispatch[0], combine[0], logits[0])
        return Routing(dispatch, combine, logits)


def _sinkhorn_log(C: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Log of the entropic plan with uniform marginals for a batch of costs (G, N, E)."""
    G, N, E = C.shape
    log_a, log_b = -math.log(N), -math.log(E)
    f = C.new_zeros(G, N, 1)
    g = C.new_zeros(G, 1, E)
    for _ in range(iters):
        f = eps * log_a - eps * torch.logsumexp((g - C) / eps, dim=-1, keepdim=True)
        g = eps * log_b - eps * torch.logsumexp((f - C) / eps, dim=-2, keepdim=True)
    return (f + g - C) / eps


def _top1_with_capacity(priority: torch.Tensor, k: int) -> torch.Tensor:
    """Each token to its argmax expert; each expert keeps its k highest-priority tokens."""
    choice = priority.argmax(-1, keepdim=True)
    chosen = torch.zeros_like(priority, dtype=torch.bool).scatter_(-1, choice, True)
    score = torch.where(chosen, priority, torch.full_like(priority, -math.inf))
    keep = torch.topk(score, min(k, score.shape[-2]), dim=-2).indices
    within = torch.zeros_like(chosen).scatter_(-2, keep, True)
    return chosen & within


class SparseMoE(nn.Module):
    """A sparse mixture-of-experts layer: ``router`` picks tokens, each expert sees only its own.

    y_i = Σ_j combine_ij · expert_j(x_i) over the experts that token i is dispatched to (0 for a
    dropped token; use a residual connection around the layer).
    """

    def __init__(self, router: SparseOTRouter, experts: list[nn.Module]) -> None:
        super().__init__()
        if len(experts) != router.num_experts:
            raise ValueError(f"router has {router.num_experts} experts, got {len(experts)} "
                             "expert modules")
        self.router = router
        self.experts = nn.ModuleList(experts)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        """``x`` (G, N, d) → (output (G, N, d_out), the routing used)."""
        routing = self.router(x)
        out: torch.Tensor | None = None
        for j, expert in enumerate(self.experts):
            where = routing.dispatch[..., j].nonzero(as_tuple=True)
            y = expert(x[where]) * routing.combine[..., j][where][:, None]
            if out is None:
                out = x.new_zeros(*x.shape[:-1], y.shape[-1])
            out = out.index_put(where, y, accumulate=True)
        assert out is not None  # at least two experts (checked by the router)
        return out, routing
