"""VGNN: variationally regularised graph-based representation learning for EHR.

Paper: Zhu & Razavian, "Variationally Regularized Graph-based Representation Learning for
Electronic Health Records", AAAI 2021, arXiv 1912.03761 (official code:
github.com/NYUMedML/GNN_for_EHR, GPL-3.0: read, not copied).

Method in three lines: the codes recorded in a visit are the nodes of a complete graph whose
edge weights a graph-attention encoder learns; a variational layer turns every node state into a
Gaussian q(z_i) = N(μ_i, diag σ_i²) pulled towards N(0, I) by a KL penalty (the regulariser);
a decoder graph layer lets a virtual "visit" node attend to the sampled code nodes, and an MLP
on the visit node's state predicts the outcome.

Equations (the paper's method section, graph-based representation learning with an
encoder-decoder graph network and the variational regularisation of its node representations,
as the official ``model.py`` computes them):

* nodes: embedding ``e_i = E[i]`` for the recorded codes S (ids shifted by one: 0 is padding)
  and the virtual node ``V+1``; in training each code of S is dropped with probability 0.05
  (node dropout, official ``data_to_edges``).
* graph attention (one head; H heads run in parallel): ``h_i = W x_i + b``,
  ``s_ij = LeakyReLU_0.1(aᵀ[h_i ‖ h_j]) / √(d·H)``, ``α_ij = exp s_ij / Σ_{k∈N(i)} exp s_ik``,
  ``h'_i = Σ_{j∈N(i)} α_ij h_j``; a node without neighbours keeps ``h'_i = h_i = W x_i + b``.
  Encoder layer: ``x ← ELU(LN(Dropout(‖_heads h')))``, N(i) = S for i ∈ S (self-loops included),
  the visit node isolated. ``LN(x) = γ (x − mean) / (std + 1e-6) + β`` with the unbiased std (the
  paper's LayerNorm).
* variational layer: ``[μ_i, log σ_i²] = Dropout(Linear(x_i))``; ``z_i = μ_i + σ_i ⊙ ε`` in
  training, ``z_i = μ_i`` in evaluation; ``KL = (1/|S|) Σ_{i∈S} ½ Σ_k (σ²_ik − log σ²_ik − 1 +
  μ²_ik)`` per visit (:class:`VariationalRegularization`, the registered penalty).
* decoder: the visit node attends to S ∪ {V+1}: ``g = W_o(ReLU(LN(Dropout(mean_heads h'_{V+1}))))``;
  prediction ``logit = MLP(ReLU(g))``, MLP = Linear-ReLU-Dropout-Linear.
* loss (:func:`vgnn_loss`): ``BCEWithLogits(logit, y; pos_weight) + λ · KL`` with
  ``pos_weight = #neg / #pos`` (:func:`balanced_pos_weight`), batch means.

The non-variational ablation (the paper's "GNN", official ``--reg False``) is
``VGNN(..., variational=False)``: the encoder state goes straight to the decoder and the KL is 0.

Defaults and sources: ``dim`` 256, ``heads`` 1, one encoder layer (``--num_of_layers 2`` minus
the decoder), dropout 0.4, LeakyReLU slope 0.1, node dropout 0.05, λ = 1, Adam lr 1e-4 with
weight decay 1e-8 and StepLR(5, 0.5), batch 32, gradient-norm clip 5 (official ``train.py``).
Initialisation as the official code: Xavier-normal for the encoder's W and a, PyTorch's default
for the decoder's W and W_o, U[0, 1) for the decoder's a, N(0, 1) embeddings with row 0 zero.

Cost: one batched forward is O(B·P²·d·H) for P recorded codes per visit (padded), against the
official per-patient loop over the whole vocabulary (O(V·d) per patient even when P ≪ V). The
variational layer adds one Linear(d, 2d) per node, the sampling and the KL: about 1.3–1.5× the GNN
ablation's training step at d = 64, batch 32, one CPU thread. ``benchmarks/vgnn_ehr.py`` measures
both, and the batched model against :func:`per_patient_reference`, the official loop
re-implemented.

Departures from the official code, each an option where it changes results:

* KL nodes: the official code indexes the node table with the 0/1 multi-hot *values*
  (``mu[data, :]``), so its "KL over nodes" is ``((V − |S|)·KL_row0 + |S|·KL_row1) / V``: the
  padding row and the first code, whatever the visit holds. Default ``kl_on="present"`` (the
  paper's KL over the visit's code nodes, those kept by node dropout); ``kl_on="official"``
  reproduces the bug.
* Gradient clipping: the official step clips before ``backward`` (a no-op on zeroed gradients).
  :func:`train_step` clips after ``backward`` by default; ``clip_order="official"`` mimics it.
* ``pos_weight``: the official script sets #pos/#neg (down-weighting the rare positives) after
  duplicating the positives. :func:`balanced_pos_weight` returns #neg/#pos by default,
  ``official=True`` the inverse; no positive duplication here.
* λ: the official ``--lbd`` is parsed as an ``int`` (0.5 is refused); ``lam`` is a real ≥ 0.
* Heads: the official encoder's LayerNorm has width d, so H > 1 crashes; here the encoder's
  LayerNorm spans the H·d concatenated features and the variational layer maps H·d → 2d.
* Batching: padded dense attention over the recorded codes, a masked softmax (max-subtracted;
  the official ``exp`` without it is the same number when it does not overflow); visits are not
  looped. The no-neighbour rule and the isolated visit node in the encoder match the official
  code (tested against :func:`per_patient_reference` to 1e-6).
* Reductions: BCE and KL are batch means (the official sums both over the batch: the same
  objective times B, which Adam's scale invariance makes equivalent up to ε and weight decay).
* A visit with no recorded codes (or all dropped by node dropout): the visit node attends to
  itself only, so its logit comes from the virtual node's embedding (the official rule), and its
  KL is 0 in ``kl_on="present"`` (no code nodes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_choice, check_positive_int, check_range, check_tensor
from regzoo.registry import Default, register

KL_MODES = ("present", "official")
CLIP_ORDERS = ("after_backward", "official")
DEFAULT_DIM = 256
DEFAULT_DROPOUT = 0.4
DEFAULT_ALPHA = 0.1
DEFAULT_NODE_DROPOUT = 0.05
DEFAULT_LAMBDA = 1.0
DEFAULT_MAX_GRAD_NORM = 5.0


class PaperLayerNorm(nn.Module):
    """The paper's LayerNorm: ``γ (x − mean) / (std + eps) + β`` with the unbiased std."""

    def __init__(self, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.gamma * (x - mean) / (std + self.eps) + self.beta


class GraphAttentionLayer(nn.Module):
    """Dense masked graph attention with H heads (encoder: ``concat=True``; decoder: False).

    ``h = W x + b`` per head; ``α`` the row softmax of ``LeakyReLU(aᵀ[h_i ‖ h_j]) / √(d·H)``
    over the allowed neighbours; a row with no neighbour gets weight 1 on itself. Encoder:
    ``ELU(LN(Dropout(concat_heads h')))``; decoder: ``W_o(ReLU(LN(Dropout(mean_heads h'))))``.
    """

    def __init__(self, in_features: int, features: int, heads: int, dropout: float,
                 alpha: float, concat: bool) -> None:
        super().__init__()
        self.features, self.heads, self.concat = features, heads, concat
        self.W = nn.Linear(in_features, heads * features)
        self.a = nn.Parameter(torch.rand(heads, 2 * features))
        self.norm = PaperLayerNorm(heads * features if concat else features)
        self.out = None if concat else nn.Linear(features, features)
        self.dropout = nn.Dropout(dropout)
        self.alpha = alpha
        if concat:  # official GraphLayer.initialize, called for the encoder layers only
            std_w = math.sqrt(2.0 / (in_features + features))
            std_a = math.sqrt(2.0 / (1 + 2 * features))
            with torch.no_grad():
                self.W.weight.normal_(0.0, std_w)
                self.a.normal_(0.0, std_a)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """``W x + b`` split into heads: ``(B, N, in) → (B, N, H, d)``."""
        return self.W(x).unflatten(-1, (self.heads, self.features))

    def attention_weights(self, h_query: torch.Tensor, h_key: torch.Tensor,
                          allowed: torch.Tensor) -> torch.Tensor:
        """``α`` of shape ``(B, H, Nq, Nk)`` from projected states and a ``(B, Nq, Nk)`` mask.

        ``allowed`` must already hold the self-loop of every row that has no other neighbour.
        """
        left = torch.einsum("bnhd,hd->bhn", h_query, self.a[:, :self.features])
        right = torch.einsum("bnhd,hd->bhn", h_key, self.a[:, self.features:])
        scores = F.leaky_relu(left[..., :, None] + right[..., None, :], self.alpha)
        scores = scores / math.sqrt(self.features * self.heads)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        return torch.softmax(scores, dim=-1)

    def forward(self, x_query: torch.Tensor, x_key: torch.Tensor,
                allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's output for the queries and the attention weights."""
        h_key = self.project(x_key)
        h_query = h_key if x_query is x_key else self.project(x_query)
        weights = self.attention_weights(h_query, h_key, allowed)
        h = torch.einsum("bhqk,bkhd->bqhd", weights, h_key)
        if self.concat:
            return F.elu(self.norm(self.dropout(h.flatten(-2)))), weights
        h = self.norm(self.dropout(h.mean(-2)))
        return self.out(F.relu(h)), weights


def _with_lonely_self_loops(allowed: torch.Tensor) -> torch.Tensor:
    """Add the self-loop of every square-mask row that has no neighbour (the no-edge rule)."""
    eye = torch.eye(allowed.shape[-1], dtype=torch.bool, device=allowed.device)
    return allowed | (eye & ~allowed.any(-1, keepdim=True))


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_k (σ²_k − log σ²_k − 1 + μ²_k)`` over the last axis."""
    return 0.5 * (logvar.exp() - logvar - 1.0 + mu.pow(2)).sum(-1)


@register(
    "vgnn_ehr",
    kind="penalty",
    declares={
        "not_on_a_classifier": "its KL acts on a VGNN's node encodings (mu, logvar of each code "
            "node)",
    },
    summary="KL(q(z_i) ‖ N(0, I)) of the variational code-node states of a graph-attention "
            "EHR model, averaged over a visit's nodes (VGNN, the model in the same module).",
    equation="KL_b = Σ_i w_bi · ½ Σ_k (σ²_bik − log σ²_bik − 1 + μ²_bik) / Σ_i w_bi;  "
             "loss = BCE(logit, y; pos_weight) + λ · mean_b KL_b",
    defaults=(
        Default("vgnn_loss.lam", DEFAULT_LAMBDA, "official train.py --lbd (the KL weight λ)"),
        Default("VGNN.kl_on", "present", "paper, method section (the official code's KL rows are "
                "a bug: kl_on='official')"),
        Default("VGNN.dim", DEFAULT_DIM, "official train.py --embedding_size"),
        Default("VGNN.heads", 1, "official train.py --num_of_heads"),
        Default("VGNN.enc_layers", 1, "official train.py --num_of_layers 2 (minus the decoder)"),
        Default("VGNN.dropout", DEFAULT_DROPOUT, "official train.py --dropout"),
        Default("VGNN.alpha", DEFAULT_ALPHA, "official train.py (LeakyReLU slope)"),
        Default("VGNN.node_dropout", DEFAULT_NODE_DROPOUT, "official model.py data_to_edges"),
        Default("lr", 1e-4, "official train.py --lr (Adam, weight decay 1e-8, StepLR(5, 0.5))"),
        Default("train_step.max_grad_norm", DEFAULT_MAX_GRAD_NORM,
                "official utils.train (clipped after backward here)"),
        Default("pos_weight", "#neg/#pos", "paper intent; official train.py inverts it"),
    ),
    variants=("VGNN (variational=True)", "GNN ablation (variational=False)",
              "kl_on='official' (the official KL rows)", "clip_order='official'",
              "balanced_pos_weight(official=True)"),
)
class VariationalRegularization(nn.Module):
    """VGNN's regulariser: the batch mean of each visit's node-averaged KL to ``N(0, I)``.

    Called as ``penalty(mu, logvar, weight)`` with ``mu``, ``logvar`` of shape ``(B, N, d)``
    and ``weight`` ``(B, N)`` (a bool mask of the nodes that count, or non-negative weights):
    ``KL_b = Σ_i w_bi KL_bi / Σ_i w_bi`` (0 for a visit whose weights are all 0), returned as
    ``mean_b KL_b``. :class:`VGNN` calls it on its node states; add ``λ`` times the result to
    the task loss (:func:`vgnn_loss`).
    """

    needs_higher_order_grad = False
    batch_coupled = False

    def forward(self, mu: torch.Tensor, logvar: torch.Tensor,
                weight: torch.Tensor) -> torch.Tensor:
        check_tensor("mu", mu, ndim=3, floating=True)
        check_tensor("logvar", logvar, ndim=3, floating=True)
        check_tensor("weight", weight, ndim=2)
        if logvar.shape != mu.shape:
            raise ValueError(f"logvar must have the shape of mu {tuple(mu.shape)}, got "
                             f"{tuple(logvar.shape)}")
        if weight.shape != mu.shape[:2]:
            raise ValueError(f"weight must have shape (batch, nodes) = {tuple(mu.shape[:2])}, "
                             f"got {tuple(weight.shape)}")
        weight = weight.to(mu.dtype)
        if bool((weight < 0).any()):
            raise ValueError("weight must be non-negative (a node mask or node counts); got a "
                             "negative entry")
        total = weight.sum(-1)
        per_visit = (weight * kl_to_standard_normal(mu, logvar)).sum(-1)
        return torch.where(total > 0, per_visit / total.clamp_min(1e-12),
                           torch.zeros_like(total)).mean()


@dataclass(frozen=True)
class VGNNEncoding:
    """The node states of a batch (nodes: the P code slots, then the visit node).

    Attributes:
        z: ``(B, P+1, d)`` decoder input: sampled (training) or ``μ`` (evaluation); the
            encoder output for the GNN ablation.
        mu, logvar: ``(B, P+1, d)`` the variational parameters (None for the GNN ablation).
        kept: ``(B, P)`` bool, the code nodes in the graph (mask after node dropout).
        kl: ``()`` the batch mean of the visits' KL (0 for the GNN ablation).
    """

    z: torch.Tensor
    mu: torch.Tensor | None
    logvar: torch.Tensor | None
    kept: torch.Tensor
    kl: torch.Tensor


class VGNN(nn.Module):
    """The VGNN model (``variational=True``) or its GNN ablation (``variational=False``).

    ``logits, kl = model(codes, mask)`` with ``codes`` ``(B, P)`` int64 code ids in
    ``[0, num_codes)`` (any value at padded slots) and ``mask`` ``(B, P)`` bool, True at recorded
    codes. ``logits`` has shape ``(B,)``; ``kl`` is the batch mean of the visits' KL.

    Args:
        num_codes: vocabulary size V.
        dim: embedding and node-state width d.
        heads: attention heads H.
        enc_layers: encoder graph layers.
        dropout: dropout of the graph layers, the variational layer and the MLP head.
        alpha: LeakyReLU slope of the attention scores.
        node_dropout: probability of dropping each recorded code in training.
        variational: the VGNN (True) or the GNN ablation (False).
        kl_on: ``"present"`` (the visit's code nodes) or ``"official"`` (the official code's
            rows 0 and 1, see the module docstring).
        sample: draw ``z = μ + σε`` in training (False: ``z = μ`` always, for checks).
    """

    def __init__(self, num_codes: int, dim: int = DEFAULT_DIM, heads: int = 1,
                 enc_layers: int = 1, dropout: float = DEFAULT_DROPOUT,
                 alpha: float = DEFAULT_ALPHA, node_dropout: float = DEFAULT_NODE_DROPOUT,
                 variational: bool = True, kl_on: str = "present", sample: bool = True) -> None:
        super().__init__()
        self.num_codes = check_positive_int("num_codes", num_codes)
        self.dim = check_positive_int("dim", dim)
        self.heads = check_positive_int("heads", heads)
        check_positive_int("enc_layers", enc_layers)
        check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        check_range("alpha", alpha, 0.0)
        self.node_dropout = check_range("node_dropout", node_dropout, 0.0, 1.0,
                                        high_inclusive=False)
        if not isinstance(variational, bool):
            raise TypeError(f"variational must be a bool, got {variational!r}")
        self.variational = variational
        self.kl_on = check_choice("kl_on", kl_on, KL_MODES)
        self.sample = bool(sample)
        self.embed = nn.Embedding(num_codes + 2, dim, padding_idx=0)
        width = dim
        layers = []
        for _ in range(enc_layers):
            layers.append(GraphAttentionLayer(width, dim, heads, dropout, alpha, concat=True))
            width = heads * dim
        self.encoder = nn.ModuleList(layers)
        self.parameterize = nn.Linear(width, 2 * dim) if variational else None
        self.decoder = GraphAttentionLayer(dim if variational else width, dim, heads, dropout,
                                           alpha, concat=False)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout),
                                  nn.Linear(dim, 1))
        self.dropout = nn.Dropout(dropout)
        self.regularization = VariationalRegularization()

    @property
    def virtual_node(self) -> int:
        """The embedding row of the visit node (V + 1; codes are rows 1..V, padding 0)."""
        return self.num_codes + 1

    def _check_batch(self, codes: torch.Tensor, mask: torch.Tensor) -> None:
        check_tensor("codes", codes, ndim=2, floating=False)
        check_tensor("mask", mask, ndim=2)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True at recorded codes), got dtype "
                            f"{mask.dtype}")
        if mask.shape != codes.shape:
            raise ValueError(f"codes and mask must have the same shape (batch, codes), got "
                             f"{tuple(codes.shape)} and {tuple(mask.shape)}")
        present = codes[mask]
        if present.numel() and (int(present.min()) < 0 or int(present.max()) >= self.num_codes):
            raise ValueError(f"codes must lie in [0, {self.num_codes - 1}] (num_codes = "
                             f"{self.num_codes}) at recorded slots, got values in "
                             f"[{int(present.min())}, {int(present.max())}]; build the model "
                             f"with the vocabulary size or map codes to ids first")

    def encode(self, codes: torch.Tensor, mask: torch.Tensor) -> VGNNEncoding:
        """Node dropout, encoder layers and the variational layer (with the batch's KL)."""
        self._check_batch(codes, mask)
        batch, width = codes.shape
        kept = mask
        if self.training and self.node_dropout > 0:
            kept = mask & (torch.rand(mask.shape, device=mask.device) > self.node_dropout)
        ids = torch.where(kept, codes + 1, torch.zeros_like(codes))
        virtual = torch.full((batch, 1), self.virtual_node, dtype=ids.dtype, device=ids.device)
        nodes = [ids, virtual]
        official = self.variational and self.kl_on == "official"
        if official:  # the official KL reads table rows 0 (padding) and 1 (the first code)
            nodes.append(torch.tensor([[0, 1]], device=ids.device).expand(batch, 2))
        x = self.embed(torch.cat(nodes, dim=1))
        n = x.shape[1]
        allowed = torch.zeros(batch, n, n, dtype=torch.bool, device=x.device)
        allowed[:, :width, :width] = kept[:, :, None] & kept[:, None, :]
        allowed = _with_lonely_self_loops(allowed)
        for layer in self.encoder:
            x, _ = layer(x, x, allowed)
        if not self.variational:
            return VGNNEncoding(x[:, :width + 1], None, None, kept, x.new_zeros(()))
        stats = self.dropout(self.parameterize(x))
        mu, logvar = stats[..., :self.dim], stats[..., self.dim:]
        z = mu
        if self.training and self.sample:
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        if official:
            is_first = kept & (codes == 0)
            row1 = torch.where(is_first.any(1)[:, None],
                               is_first.to(mu.dtype).argmax(1)[:, None],
                               torch.full_like(is_first[:, :1], n - 1, dtype=torch.long))
            pick = torch.cat([torch.full_like(row1, n - 2), row1], dim=1)
            index = pick[..., None].expand(-1, -1, self.dim)
            present = mask.sum(1).to(mu.dtype)
            weight = torch.stack([self.num_codes - present, present], dim=1)
            kl = self.regularization(mu.gather(1, index), logvar.gather(1, index), weight)
        else:
            kl = self.regularization(mu[:, :width], logvar[:, :width], kept)
        keep = slice(0, width + 1)
        return VGNNEncoding(z[:, keep], mu[:, keep], logvar[:, keep], kept, kl)

    def decode(self, encoding: VGNNEncoding) -> torch.Tensor:
        """The visit node's state: it attends to the kept code nodes and itself."""
        z, kept = encoding.z, encoding.kept
        allowed = torch.cat([kept, torch.ones_like(kept[:, :1])], dim=1)[:, None, :]
        state, _ = self.decoder(z[:, -1:], z, allowed)
        return state[:, 0]

    def forward(self, codes: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        encoding = self.encode(codes, mask)
        return self.head(F.relu(self.decode(encoding))).squeeze(-1), encoding.kl


def per_patient_reference(model: VGNN, multi_hot: torch.Tensor, *,
                          grad: bool = False) -> torch.Tensor:
    """The logits of ``model`` (evaluation mode) computed the official way, one visit at a time.

    Every visit runs the whole vocabulary's V + 2 nodes through the layers with sparse
    attention over its edge list (recorded codes × recorded codes in the encoder, recorded codes
    and the visit node into the visit node in the decoder; a node without edges keeps
    ``W x + b``), as the official ``VariationalGNN.encoder_decoder`` does. It is the parity
    reference of the tests and the peer of ``benchmarks/vgnn_ehr.py`` (``grad=True`` keeps the
    autograd graph, for timing a training step).
    """
    check_tensor("multi_hot", multi_hot, ndim=2)
    if multi_hot.shape[1] != model.num_codes:
        raise ValueError(f"multi_hot must have num_codes = {model.num_codes} columns, got "
                         f"{multi_hot.shape[1]}")
    if model.training:
        raise ValueError("per_patient_reference is the evaluation-mode forward; call "
                         "model.eval() first")
    n_nodes = model.num_codes + 2
    device = model.embed.weight.device
    nodes = torch.arange(n_nodes, device=device)

    def layer_forward(layer: GraphAttentionLayer, x: torch.Tensor,
                      edges: torch.Tensor) -> torch.Tensor:
        h = layer.project(x[None])[0]  # (N, H, d)
        outs = []
        for k in range(layer.heads):
            a = layer.a[k]
            pair = torch.cat([h[edges[0], k], h[edges[1], k]], dim=1)
            score = F.leaky_relu(pair @ a, layer.alpha) / math.sqrt(layer.features * layer.heads)
            e = torch.sparse_coo_tensor(edges, score.exp(), (n_nodes, n_nodes),
                                        check_invariants=False)
            rowsum = torch.sparse.mm(e, torch.ones(n_nodes, 1, device=device, dtype=x.dtype))
            lonely = (rowsum == 0).squeeze(1).nonzero().squeeze(1)
            eye = torch.sparse_coo_tensor(lonely.repeat(2, 1),
                                          torch.ones(len(lonely), device=device, dtype=x.dtype),
                                          (n_nodes, n_nodes), check_invariants=False)
            outs.append(torch.sparse.mm(e + eye, h[:, k])
                        / torch.where(rowsum == 0, torch.ones_like(rowsum), rowsum))
        if layer.concat:
            return F.elu(layer.norm(torch.cat(outs, dim=1)))
        return layer.out(F.relu(layer.norm(torch.stack(outs).mean(0))))

    logits = []
    with torch.set_grad_enabled(grad):
        for row in multi_hot:
            present = row.nonzero().squeeze(1) + 1
            p = len(present)
            enc = torch.stack([present.repeat(p), present.repeat_interleave(p)])
            with_visit = torch.cat([present, torch.tensor([n_nodes - 1], device=device)])
            q = len(with_visit)
            dec = torch.stack([with_visit.repeat(q), with_visit.repeat_interleave(q)])
            x = model.embed(nodes)  # the whole table, per visit, as the official code does
            for layer in model.encoder:
                x = layer_forward(layer, x, enc)
            if model.variational:
                x = model.parameterize(x)[:, :model.dim]
            g = layer_forward(model.decoder, x, dec)[-1]
            logits.append(model.head(F.relu(g)).squeeze(-1))
    return torch.stack(logits)


def balanced_pos_weight(target: torch.Tensor, *, official: bool = False) -> torch.Tensor:
    """``#neg / #pos`` of a binary ``target`` (``official=True``: the official #pos / #neg).

    Raises ValueError when ``target`` holds no positive (or, official, no negative) label.
    """
    check_tensor("target", target, ndim=1)
    positives = float((target > 0.5).sum())
    negatives = float(target.numel() - positives)
    numerator, denominator = (positives, negatives) if official else (negatives, positives)
    if denominator == 0:
        raise ValueError(f"target has {int(positives)} positives and {int(negatives)} "
                         f"negatives; pos_weight needs both classes")
    return torch.tensor([numerator / denominator])


def vgnn_loss(logits: torch.Tensor, kl: torch.Tensor, target: torch.Tensor, *,
              lam: float = DEFAULT_LAMBDA, pos_weight: torch.Tensor | None = None
              ) -> torch.Tensor:
    """``BCEWithLogits(logits, target; pos_weight) + λ · kl`` (batch means, λ a real ≥ 0)."""
    lam = check_range("lam", lam, 0.0)
    check_tensor("logits", logits, ndim=1, floating=True)
    check_tensor("target", target, ndim=1)
    if target.shape != logits.shape:
        raise ValueError(f"target must have the shape of logits {tuple(logits.shape)}, got "
                         f"{tuple(target.shape)}")
    if pos_weight is not None:
        pos_weight = pos_weight.to(device=logits.device, dtype=logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype),
                                             pos_weight=pos_weight)
    return bce + lam * kl


def train_step(model: VGNN, optimizer: torch.optim.Optimizer, codes: torch.Tensor,
               mask: torch.Tensor, target: torch.Tensor, *, lam: float = DEFAULT_LAMBDA,
               pos_weight: torch.Tensor | None = None,
               max_grad_norm: float | None = DEFAULT_MAX_GRAD_NORM,
               clip_order: str = "after_backward") -> dict[str, float]:
    """One optimiser step on a batch; returns the loss, its BCE part and the KL.

    ``clip_order="after_backward"`` clips the fresh gradients to ``max_grad_norm`` (None: no
    clipping); ``"official"`` calls the clip before ``backward`` as the official ``utils.train``
    does, which leaves the step's gradients unclipped.
    """
    check_choice("clip_order", clip_order, CLIP_ORDERS)
    if max_grad_norm is not None:
        check_range("max_grad_norm", max_grad_norm, 0.0, low_inclusive=False)
    lam = check_range("lam", lam, 0.0)
    model.train()
    optimizer.zero_grad()
    logits, kl = model(codes, mask)
    loss = vgnn_loss(logits, kl, target, lam=lam, pos_weight=pos_weight)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the VGNN loss is not finite ({float(loss)}; KL "
                                 f"{float(kl)}); lower the learning rate")
    if max_grad_norm is not None and clip_order == "official":
        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    loss.backward()
    if max_grad_norm is not None and clip_order == "after_backward":
        nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    loss, kl = float(loss.detach()), float(kl.detach())
    return {"loss": loss, "bce": loss - lam * kl, "kl": kl}
