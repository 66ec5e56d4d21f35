r"""GigaTok's two regularisers: semantic alignment of decoder features, and code-entropy loss.

Paper: Xiong et al., "GigaTok: Scaling Visual Tokenizers to 3 Billion
Parameters for Autoregressive Image Generation", 2025, arXiv 2504.08736 (official code:
github.com/SilentView/GigaTok, ``tokenizer/tokenizer_image/vq/vq_loss.py``, ``vq_vit_model.py``,
``blocks.py``; read at commit 182920c).

Method in three lines: bigger VQ tokenizers reconstruct better but give latent spaces an
autoregressive model finds harder; GigaTok pulls a hidden state of the tokenizer's *decoder*
towards the patch features of a frozen pre-trained encoder (semantic regularisation), and for
billion-parameter tokenizers adds an entropy loss on code assignment that keeps the codebook in
use. (Equations below are named by the paper's method sections, not numbered: the numbers were
not checked.)

Semantic regularisation (paper, method section; official ``VQLoss.proj_loss``, ``distill_mlp``).
Decoder hidden state after layer ``distill_depth`` (3 officially): h ∈ R^{B×N×w}; MLP head
φ = Linear(w, 4w)–SiLU–Linear(4w, 4w)–SiLU–Linear(4w, D); frozen teacher patch features
f = T(x) ∈ R^{B×N_T×D} (DINOv2-B ``x_norm_patchtokens``, no gradient). With φ(h) resampled to
the teacher's grid (bilinear interpolation of the √N×√N token grid to √N_T×√N_T when N ≠ N_T):

.. math::

    L_{sem} = -\frac{1}{B}\sum_b \frac{1}{N_T}\sum_t \cos(\phi(h)_{b,t}, f_{b,t}),

added with weight λ_sem = 0.5 (``proj_weight``, the ``VQLoss`` default no config overrides).
:class:`SemanticRegularizer` returns λ_sem·L_sem.

Entropy loss (paper, billion-scale training; official ``compute_entropy_loss``, after
MAGVIT/LlamaGen). Affinity a_ij = −‖z_i − e_j‖² of token i to code j
(:meth:`regzoo.quantizers.VectorQuantizer.affinity`), temperature τ = 0.01,
p_i = softmax(a_i/τ), p̄ = mean_i p_i, H the Shannon entropy:

.. math::

    L_{ent} = \frac{1}{N}\sum_i H(p_i) - H(\bar p),

minimal (−log K) for confident assignments spread evenly over the K codes, 0 for uniform p_i
and for every token sure of the same code. Weight λ_ent = 0.005 in the XL-XXL and 2-D B-L
configs, 0 in the 1-D B-L and small configs. :func:`vq_entropy_loss` computes it in row chunks
(``chunk_size``) with activation checkpointing, so the N×K softmax is never held for backward
in full: at K = 16384 the memory is one chunk's.

Defaults and sources: λ_sem = 0.5 (``VQLoss(proj_weight=0.5)``), MLP ratio 4 (``distill_mlp``),
distill_depth 3 (``configs/vq/*.yaml``), τ = 0.01 and λ_ent = 0.005 (``VQ_XLXXL256.yaml``,
``VQ_BL256_2d.yaml``). Cost: the semantic term adds one frozen-teacher forward per batch (cache
it per image when there is no augmentation) and the MLP on N tokens; the entropy term one
N×K softmax (``benchmarks/gigatok.py`` measures both).

Differences from the official code, and why:

* The official entropy code adds 1e-5 inside the logarithm of p̄ (and inside ``log_softmax``,
  where a constant shift is a no-op). That moves the closed forms: at K = 16384 a confident,
  balanced assignment gives −9.552 instead of −log K = −9.704, and a uniform one +0.152 instead
  of 0. The paper's formula is the default (``eps=0``); ``eps=1e-5`` is the official variant.
* Teacher preprocessing (map to [0, 1], ImageNet normalisation, bicubic resize to 224) belongs to
  DINOv2; :class:`SemanticRegularizer` takes the teacher as a callable and leaves preprocessing
  to it (the digits reproduction maps [−1, 1] back to the teacher's [0, 1]).
* The grid match (bilinear interpolation of the student's projected tokens to the teacher's
  grid) is needed only when the grids differ; the official configs make them equal (256 tokens).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from regzoo.core.checks import check_positive_int, check_range, check_real, check_tensor
from regzoo.registry import Default, register

OFFICIAL_ENTROPY_EPS = 1e-5
"""The constant the official ``compute_entropy_loss`` adds inside the logarithm of p̄."""


def _entropy_parts(affinity: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_i H(p_i) and Σ_i p_i over the rows of one chunk."""
    logits = affinity / tau
    log_p = F.log_softmax(logits, dim=-1)
    p = log_p.exp()
    return -(p * log_p).sum(), p.sum(0)


def vq_entropy_loss(affinity: torch.Tensor, tau: float = 0.01, *, eps: float = 0.0,
                    chunk_size: int | None = None) -> torch.Tensor:
    """GigaTok's entropy loss mean_i H(softmax(a_i/τ)) − H(mean_i softmax(a_i/τ)) (module doc).

    Args:
        affinity: ``(..., K)`` logits a_ij of each token to each code (−squared distance).
        tau: temperature τ > 0 (0.01 officially).
        eps: constant inside log p̄ (0: the paper's formula; 1e-5: the official code).
        chunk_size: rows per chunk; with a gradient each chunk is recomputed in backward
            (activation checkpointing), so memory is one chunk's softmax, not N×K. ``None``:
            one chunk.

    Returns:
        The scalar loss in ``affinity``'s dtype, between −log K and log K.
    """
    check_tensor("affinity", affinity, floating=True)
    if affinity.ndim < 2 or affinity.shape[-1] < 2:
        raise ValueError(f"affinity must have shape (..., K) with K ≥ 2 codes, got "
                         f"{tuple(affinity.shape)}; pass quantizer.affinity(z)")
    tau = check_real("tau", tau)
    if tau <= 0:
        raise ValueError(f"tau must be > 0 (a softmax temperature), got {tau}; the official "
                         "value is 0.01")
    eps = check_range("eps", eps, 0.0)
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    if not bool(torch.isfinite(affinity.detach()).all()):
        raise ValueError("affinity contains NaN or infinite values; check the latents and the "
                         "codebook")
    rows = affinity.reshape(-1, affinity.shape[-1])
    chunks = rows.split(chunk_size or rows.shape[0])
    entropy_sum = rows.new_zeros(())
    p_sum = rows.new_zeros(rows.shape[-1])
    for chunk in chunks:
        if len(chunks) > 1 and chunk.requires_grad:
            h, p = checkpoint(_entropy_parts, chunk, tau, use_reentrant=False)
        else:
            h, p = _entropy_parts(chunk, tau)
        entropy_sum = entropy_sum + h
        p_sum = p_sum + p
    n = rows.shape[0]
    p_bar = p_sum / n
    # A code no token can reach has p̄_j = 0 (exp underflows at τ = 0.01): clamp inside the log
    # so its term is 0·log(tiny) = 0 with a finite gradient (xlogy's is −∞ there).
    tiny = torch.finfo(p_bar.dtype).tiny
    log_p_bar = torch.log(p_bar + eps) if eps > 0 else torch.log(p_bar.clamp_min(tiny))
    avg_entropy = -(p_bar * log_p_bar).sum()
    return entropy_sum / n - avg_entropy


def _grid_side(n: int, name: str) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{name} has {n} tokens, not a square grid; the token grids can be "
                         "matched by interpolation only when both are square (e.g. 16 = 4×4)")
    return side


def match_token_grid(tokens: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """``(B, N, D)`` tokens on a √N×√N grid resampled bilinearly to ``num_tokens`` tokens."""
    b, n, d = tokens.shape
    if n == num_tokens:
        return tokens
    side = _grid_side(n, "the student's hidden state")
    target = _grid_side(num_tokens, "the teacher's features")
    grid = tokens.transpose(1, 2).reshape(b, d, side, side)
    grid = F.interpolate(grid, size=(target, target), mode="bilinear", align_corners=False)
    return grid.flatten(2).transpose(1, 2)


def negative_mean_cosine(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """L_sem = −mean over batch and tokens of cos(student, teacher), grids matched (doc)."""
    student = match_token_grid(student, teacher.shape[1])
    return -F.cosine_similarity(student, teacher, dim=-1).mean()


@register(
    "gigatok",
    kind="penalty",
    declares={
        "not_on_a_classifier": "it aligns a VQ tokenizer decoder's token grid with a frozen "
            "encoder's patch features: it joins a tokenizer's reconstruction loss",
        "batch_coupled_variant": "the entropy loss (vq_entropy_loss, weight 0.005 in the official "
            "XL-XXL configs) subtracts H(p̄), the entropy of the batch's mean code assignment",
    },
    summary="Semantic regularisation of a VQ image tokenizer: an MLP head on a decoder hidden "
            "state is aligned by cosine similarity with a frozen pre-trained encoder's patch "
            "features; plus an entropy loss on code assignment.",
    equation="L = L_rec + L_vq + L_commit + λ_sem·(−mean_{b,t} cos(φ(h_b,t), f_b,t)) "
             "+ λ_ent·(mean_i H(p_i) − H(mean_i p_i)),  p_i = softmax(−‖z_i − e‖²/τ)",
    defaults=(
        Default("weight", 0.5, "official vq_loss.py VQLoss(proj_weight=0.5); no config "
                "overrides it"),
        Default("hidden_mult", 4, "official blocks.py distill_mlp: w → 4w → 4w → D, SiLU"),
        Default("distill_depth", 3, "official configs/vq/*.yaml (the digits reproduction uses "
                "decoder layer 1 of 2–4)"),
        Default("vq_entropy_loss.tau", 0.01, "official vq_vit_model.py compute_entropy_loss"),
        Default("vq_entropy_loss.eps", 0.0, "paper formula; the official code adds 1e-5 "
                "inside log p̄ (eps=1e-5)"),
        Default("entropy weight", 0.005, "official VQ_XLXXL256.yaml and VQ_BL256_2d.yaml (0 in "
                "the 1-D B-L and small configs)"),
        Default("codebook", "K=16384, dim 8, l2-normalised, β=0.25, rotation trick",
                "official configs; regzoo.quantizers.VectorQuantizer"),
    ),
    variants=("2-D patch tokenizer (regzoo.methods.gigatok.VQTokenizer)",
              "1-D tokenizer with learnable latent queries (latent_tokens=N)",
              "straight-through estimator instead of the rotation trick",
              "entropy loss with the official 1e-5 inside the log (eps=1e-5)"),
)
class SemanticRegularizer(nn.Module):
    """GigaTok's semantic regulariser λ_sem·L_sem on a decoder hidden state (module docstring).

    Args:
        student_dim: w, the width of the decoder hidden state.
        teacher_dim: D, the teacher's feature dimension.
        teacher: frozen callable mapping the images to patch features ``(B, N_T, D)`` (or a
            ``(B, D, h, w)`` map); it is frozen here (no gradient, evaluation mode). ``None``:
            the call's second argument is the teacher features themselves (precomputed).
        weight: λ_sem (0.5 officially).
        hidden_mult: the MLP's hidden width as a multiple of w (4 officially).

    Call ``regularizer(hidden, target)`` with ``hidden`` the ``(B, N, w)`` decoder tokens and
    ``target`` the images (with a teacher) or the teacher features (without one).
    """

    needs_higher_order_grad = False
    batch_coupled = False

    def __init__(self, student_dim: int, teacher_dim: int, *, teacher: nn.Module | None = None,
                 weight: float = 0.5, hidden_mult: int = 4) -> None:
        super().__init__()
        check_positive_int("student_dim", student_dim)
        check_positive_int("teacher_dim", teacher_dim)
        check_positive_int("hidden_mult", hidden_mult)
        self.weight = check_range("weight", weight, 0.0)
        if teacher is not None and not callable(teacher):
            raise TypeError(f"teacher must be a callable nn.Module or None, got "
                            f"{type(teacher).__name__}")
        self.student_dim, self.teacher_dim = student_dim, teacher_dim
        hidden = hidden_mult * student_dim
        self.head = nn.Sequential(nn.Linear(student_dim, hidden), nn.SiLU(),
                                  nn.Linear(hidden, hidden), nn.SiLU(),
                                  nn.Linear(hidden, teacher_dim))
        self.teacher = teacher
        if isinstance(teacher, nn.Module):
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> SemanticRegularizer:
        super().train(mode)
        if isinstance(self.teacher, nn.Module):
            self.teacher.eval()
        return self

    @torch.no_grad()
    def teacher_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's ``(B, N_T, D)`` patch tokens of ``images`` (no gradient)."""
        if self.teacher is None:
            raise ValueError("this regulariser has no teacher; pass the teacher features as the "
                             "second argument instead of images")
        features = self.teacher(images)
        if features.ndim == 4:
            features = features.flatten(2).transpose(1, 2)
        return features

    def forward(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_tensor("hidden", hidden, ndim=3, floating=True, finite=True)
        if hidden.shape[-1] != self.student_dim:
            raise ValueError(f"hidden has width {hidden.shape[-1]} but student_dim is "
                             f"{self.student_dim}; pass the decoder's (B, N, w) hidden state at "
                             "distill_depth or build the regulariser with its width")
        check_tensor("target", target, floating=True, finite=True)
        features = target if self.teacher is None else self.teacher_features(target)
        features = features.detach()
        if features.ndim != 3 or features.shape[-1] != self.teacher_dim:
            raise ValueError(f"teacher features must have shape (B, N_T, {self.teacher_dim}), got "
                             f"{tuple(features.shape)}; check teacher_dim and the teacher")
        if features.shape[0] != hidden.shape[0]:
            raise ValueError(f"hidden has batch {hidden.shape[0]} but the teacher features have "
                             f"{features.shape[0]}; pass the same images to both")
        if features.shape[1] != hidden.shape[1]:
            _grid_side(hidden.shape[1], "hidden")
            _grid_side(features.shape[1], "the teacher features")
        return self.weight * negative_mean_cosine(self.head(hidden), features.to(hidden.dtype))
