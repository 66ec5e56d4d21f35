"""A tiny GPT-style decoder in pure PyTorch, pretrained inside the reproductions that need an LM.

Pre-norm transformer blocks (LayerNorm → causal multi-head self-attention → residual, LayerNorm →
GELU MLP → residual), learned absolute position embeddings, a final LayerNorm and an untied
``lm_head``. Every projection is a plain ``nn.Linear`` with a conventional name — ``q_proj``,
``k_proj``, ``v_proj``, ``o_proj`` in ``attn`` and ``up_proj``, ``down_proj`` in ``mlp`` — so
adapters (LoRA, PiSSA, BA-LoRA, SORSA, ...) target them by name as they would in a LLaMA-style
model. No ``transformers`` dependency: the model is built from a config and trained from scratch
(nothing is downloaded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_choice, check_positive_int, check_range, check_tensor


@dataclass(frozen=True)
class CausalLMConfig:
    """Sizes of :class:`TinyCausalLM`; ``d_model`` must be divisible by ``n_heads``."""

    vocab_size: int
    max_len: int = 32
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 128
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_len", "d_model", "n_layers", "n_heads", "d_ff"):
            check_positive_int(name, getattr(self, name))
        check_range("dropout", self.dropout, 0.0, 1.0, high_inclusive=False)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads "
                             f"({self.n_heads}); e.g. d_model=64, n_heads=4")


class CausalSelfAttention(nn.Module):
    """Multi-head attention in which position t attends to positions ≤ t only."""

    def __init__(self, config: CausalLMConfig) -> None:
        super().__init__()
        d = config.d_model
        self.n_heads = config.n_heads
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.o_proj = nn.Linear(d, d)
        self.dropout = config.dropout

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            heads(self.q_proj(h)), heads(self.k_proj(h)), heads(self.v_proj(h)),
            is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, d))


class MLPBlock(nn.Module):
    """``down_proj(GELU(up_proj(h)))``."""

    def __init__(self, config: CausalLMConfig) -> None:
        super().__init__()
        self.up_proj = nn.Linear(config.d_model, config.d_ff)
        self.down_proj = nn.Linear(config.d_ff, config.d_model)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(h)))


class DecoderBlock(nn.Module):
    """Pre-norm block: ``h + attn(ln1(h))`` then ``h + mlp(ln2(h))``."""

    def __init__(self, config: CausalLMConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = MLPBlock(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h + self.drop(self.attn(self.ln1(h)))
        return h + self.drop(self.mlp(self.ln2(h)))


class TinyCausalLM(nn.Module):
    """Decoder-only language model: token ids ``(B, T)`` → next-token logits ``(B, T, V)``.

    Adapter targets: ``"q_proj"``, ``"k_proj"``, ``"v_proj"``, ``"o_proj"``, ``"up_proj"``,
    ``"down_proj"`` (the LLaMA names BA-LoRA's official script targets, minus ``gate_proj``
    since this MLP is not gated); ``lm_head`` and the embeddings are usually left frozen.
    """

    ADAPTER_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj",
                                        "down_proj")

    def __init__(self, config: CausalLMConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        self.blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init)
        # GPT-2's scaled init of the projections that write into the residual stream.
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the next token at every position, shape ``(B, T, vocab_size)``."""
        check_tensor("tokens", tokens, ndim=2, floating=False)
        t = tokens.shape[1]
        if t > self.config.max_len:
            raise ValueError(f"tokens has length {t} > max_len {self.config.max_len}; "
                             "build the model with a larger max_len")
        positions = torch.arange(t, device=tokens.device)
        h = self.tok_emb(tokens) + self.pos_emb(positions)
        for block in self.blocks:
            h = block(h)
        return self.lm_head(self.ln_f(h))


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, *, pad_id: int | None = None,
                    reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of predicting ``tokens[:, 1:]`` from ``logits[:, :-1]``.

    Positions whose target is ``pad_id`` are ignored. ``reduction="none"`` returns the per-position
    losses, shape ``(B, T-1)`` (zero at padded targets).
    """
    check_tensor("logits", logits, ndim=3, floating=True)
    check_tensor("tokens", tokens, ndim=2, floating=False)
    if logits.shape[:2] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} must "
                         "share (batch, length)")
    if tokens.shape[1] < 2:
        raise ValueError("tokens must have length >= 2 to have a next token")
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    target = tokens[:, 1:]
    losses = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1),
                             ignore_index=-100 if pad_id is None else pad_id,
                             reduction="none").view_as(target)
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    counted = target.numel() if pad_id is None else int((target != pad_id).sum())
    return losses.sum() / max(counted, 1)
