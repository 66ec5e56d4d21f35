r"""GigaTok's VQ tokenizers at small scale: the 2-D patch tokenizer and the 1-D query tokenizer.

Paper: Xiong et al., "GigaTok: Scaling Visual Tokenizers to 3 Billion Parameters for
Autoregressive Image Generation", 2025, arXiv 2504.08736: the hybrid CNN-transformer
tokenizer, semantic regularisation, and the finding that 1-D tokenizers scale better. Official code:
``tokenizer/tokenizer_image/vq/vq_vit_model.py`` and ``blocks.py``.

Method in three lines: an encoder turns the image into tokens z, a cosine codebook replaces each
by its nearest code (rotation trick for the gradient), a decoder rebuilds the image; the loss
is reconstruction + codebook + commitment, plus GigaTok's semantic regulariser on the decoder
hidden state at ``distill_depth`` and its entropy loss on code assignment
(:mod:`regzoo.methods.gigatok.losses`).

Architecture (:class:`VQTokenizer`, sizes in :class:`TokenizerConfig`): the image is cut into
p×p patches (G = (H/p)(W/p) grid positions), linearly embedded with learned positions, passed
through ``encoder_depth`` pre-norm transformer blocks; the **2-D** tokenizer quantises the G
patch tokens (z ∈ R^{G×d} after a linear map to the code dimension d), the **1-D** tokenizer
(``latent_tokens=N``) appends N learnable latent queries to the patch tokens and quantises only
their outputs, so the token count is free of the grid. The decoder maps codes back to width w;
the 1-D decoder prepends G learnable grid queries (mask tokens) to the N latent tokens; after
``decoder_depth`` blocks the G grid tokens are mapped linearly to p×p pixels. The hidden state
of the G grid tokens after decoder block ``distill_depth`` is what the semantic regulariser and
the linear probe read.

Loss (:func:`tokenizer_loss`): L = mean (x̂ − x)² + L_q + L_c + λ_ent·L_ent + λ_sem·L_sem with
L_q = mean(sg(z) − z_q)², L_c = β·mean(z − sg(z_q))² (element means as the official code,
:class:`regzoo.quantizers.VectorQuantizer`), K codes of dimension d, l2-normalised, β = 0.25.

Differences from the official code, and why: the official tokenizers have a CNN stem and pixel
decoder around ViTs and train with LPIPS, a PatchGAN (from 20k steps) and auxiliary "direct"
and feature-reconstruction losses (``fea_rec_loss``); at 8×8 digits there is no perceptual
network or GAN to speak of, so the loss is ℓ2 reconstruction only and the encoder/decoder are
plain transformers on 2×2 patches. The official 1-D decoder is a Q-Former-like cross-attention
block; here the grid queries and latent tokens share self-attention (the same information flow
in one block type). Cost: one encoder and decoder forward, an N×K nearest-code search, and the
regularisers' terms (losses module).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_choice, check_positive_int, check_range, check_tensor
from regzoo.methods.gigatok.losses import SemanticRegularizer, vq_entropy_loss
from regzoo.quantizers import ESTIMATORS, Quantized, VectorQuantizer


@dataclass(frozen=True)
class TokenizerConfig:
    """Sizes of a :class:`VQTokenizer` (defaults: the digits spec's 2-D tokenizer).

    ``latent_tokens=None`` is the 2-D patch tokenizer; an integer N the 1-D tokenizer with N
    learnable latent queries. ``distill_depth`` counts decoder blocks (1 = after the first).
    """

    image_size: int = 8
    channels: int = 1
    patch_size: int = 2
    width: int = 64
    encoder_depth: int = 2
    decoder_depth: int = 3
    heads: int = 4
    mlp_ratio: int = 4
    num_codes: int = 256
    code_dim: int = 8
    beta: float = 0.25
    estimator: str = "rotation"
    latent_tokens: int | None = None
    distill_depth: int = 1

    def __post_init__(self) -> None:
        for name in ("image_size", "channels", "patch_size", "width", "encoder_depth",
                     "decoder_depth", "heads", "mlp_ratio", "code_dim", "distill_depth"):
            check_positive_int(name, getattr(self, name))
        check_positive_int("num_codes", self.num_codes, minimum=2)
        check_range("beta", self.beta, 0.0)
        check_choice("estimator", self.estimator, ESTIMATORS)
        if self.image_size % self.patch_size:
            raise ValueError(f"patch_size {self.patch_size} must divide image_size "
                             f"{self.image_size}; e.g. patch_size=2 for 8×8 digits")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if self.latent_tokens is not None:
            check_positive_int("latent_tokens", self.latent_tokens)
        if self.distill_depth > self.decoder_depth:
            raise ValueError(f"distill_depth {self.distill_depth} exceeds decoder_depth "
                             f"{self.decoder_depth}; the hidden state is read after a decoder "
                             "block, so pick 1..decoder_depth")

    @property
    def grid_tokens(self) -> int:
        """G, the number of patch positions."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Tokens per image: G for the 2-D tokenizer, N for the 1-D one."""
        return self.grid_tokens if self.latent_tokens is None else self.latent_tokens

    @classmethod
    def small(cls, **overrides: object) -> TokenizerConfig:
        """The spec's "small" digits tokenizer: width 32, 2 encoder and 2 decoder blocks."""
        return dataclasses.replace(cls(width=32, encoder_depth=2, decoder_depth=2), **overrides)

    @classmethod
    def large(cls, **overrides: object) -> TokenizerConfig:
        """The spec's "large" one: width 128, 2 encoder and 4 decoder blocks (decoder-heavy)."""
        return dataclasses.replace(cls(width=128, encoder_depth=2, decoder_depth=4), **overrides)


def _block(width: int, heads: int, mlp_ratio: int) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(width, heads, mlp_ratio * width, dropout=0.0,
                                      activation="gelu", batch_first=True, norm_first=True)


@dataclass
class TokenizerOutput:
    """One forward pass: reconstruction, the quantiser's output, latents and distill hidden."""

    reconstruction: torch.Tensor
    quantized: Quantized
    latents: torch.Tensor
    hidden: torch.Tensor
    """(B, G, w): the decoder's grid tokens after block ``distill_depth``."""


class VQTokenizer(nn.Module):
    """GigaTok's tokenizer, 2-D (patch tokens) or 1-D (latent queries); module docstring."""

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        super().__init__()
        config = TokenizerConfig() if config is None else config
        if not isinstance(config, TokenizerConfig):
            raise TypeError(f"config must be a TokenizerConfig, got {type(config).__name__}")
        self.config = c = config
        w, g = c.width, c.grid_tokens
        patch_dim = c.channels * c.patch_size ** 2
        self.patch_embed = nn.Linear(patch_dim, w)
        self.encoder_pos = nn.Parameter(torch.randn(1, g, w) * 0.02)
        self.encoder = nn.ModuleList(_block(w, c.heads, c.mlp_ratio)
                                     for _ in range(c.encoder_depth))
        self.encoder_norm = nn.LayerNorm(w)
        self.to_code = nn.Linear(w, c.code_dim)
        self.quantizer = VectorQuantizer(c.num_codes, c.code_dim, beta=c.beta,
                                         estimator=c.estimator)
        self.from_code = nn.Linear(c.code_dim, w)
        self.decoder_pos = nn.Parameter(torch.randn(1, c.num_tokens, w) * 0.02)
        if c.latent_tokens is not None:
            self.latent_queries = nn.Parameter(torch.randn(1, c.latent_tokens, w) * 0.02)
            self.grid_queries = nn.Parameter(torch.randn(1, g, w) * 0.02)
        self.decoder = nn.ModuleList(_block(w, c.heads, c.mlp_ratio)
                                     for _ in range(c.decoder_depth))
        self.decoder_norm = nn.LayerNorm(w)
        self.to_pixels = nn.Linear(w, patch_dim)

    def _check_images(self, images: torch.Tensor) -> None:
        c = self.config
        check_tensor("images", images, ndim=4, floating=True, finite=True)
        expected = (c.channels, c.image_size, c.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(f"images must have shape (B, {c.channels}, {c.image_size}, "
                             f"{c.image_size}), got {tuple(images.shape)}")

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` → ``(B, G, C·p·p)`` in row-major grid order."""
        p = self.config.patch_size
        patches = F.unfold(images, kernel_size=p, stride=p)
        return patches.transpose(1, 2)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, G, C·p·p)`` → ``(B, C, H, W)``."""
        c = self.config
        return F.fold(patches.transpose(1, 2), (c.image_size, c.image_size),
                      kernel_size=c.patch_size, stride=c.patch_size)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Continuous latents z ``(B, N, d)`` before quantisation."""
        self._check_images(images)
        h = self.patch_embed(self.patchify(images)) + self.encoder_pos
        g = h.shape[1]
        if self.config.latent_tokens is not None:
            h = torch.cat([h, self.latent_queries.expand(h.shape[0], -1, -1)], dim=1)
        for block in self.encoder:
            h = block(h)
        h = self.encoder_norm(h)
        if self.config.latent_tokens is not None:
            h = h[:, g:]
        return self.to_code(h)

    def decode(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, C, H, W)`` and the grid hidden state at ``distill_depth`` from codes."""
        c = self.config
        h = self.from_code(z_hat) + self.decoder_pos
        g = c.grid_tokens
        if c.latent_tokens is not None:
            h = torch.cat([self.grid_queries.expand(h.shape[0], -1, -1), h], dim=1)
        hidden = h
        for depth, block in enumerate(self.decoder, start=1):
            h = block(h)
            if depth == c.distill_depth:
                hidden = h[:, :g]
        pixels = self.to_pixels(self.decoder_norm(h[:, :g]))
        return self.unpatchify(pixels), hidden

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        z = self.encode(images)
        quantized = self.quantizer(z)
        reconstruction, hidden = self.decode(quantized.z_hat)
        return TokenizerOutput(reconstruction, quantized, z, hidden)

    @torch.no_grad()
    def tokenize(self, images: torch.Tensor) -> torch.Tensor:
        """Code indices ``(B, N)`` of ``images``."""
        return self.quantizer.nearest(self.encode(images))

    def decode_tokens(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images and distill hidden state from code indices ``(B, N)``."""
        check_tensor("indices", indices, ndim=2, floating=False)
        if indices.shape[1] != self.config.num_tokens:
            raise ValueError(f"indices must have {self.config.num_tokens} tokens per image, got "
                             f"{indices.shape[1]}")
        if int(indices.min()) < 0 or int(indices.max()) >= self.config.num_codes:
            raise ValueError(f"indices must lie in [0, {self.config.num_codes})")
        return self.decode(F.embedding(indices, self.quantizer.codebook()))


@dataclass
class TokenizerLoss:
    """The total loss, its parts and the forward pass that made them.

    ``parts``: ``rec``, ``vq``, ``commit``, ``entropy`` (unweighted) and ``semantic`` (already
    carrying λ_sem).
    """

    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    output: TokenizerOutput


def tokenizer_loss(model: VQTokenizer, images: torch.Tensor, *,
                   semantic: SemanticRegularizer | None = None, semantic_target:
                   torch.Tensor | None = None, entropy_weight: float = 0.005,
                   tau: float = 0.01, entropy_eps: float = 0.0,
                   entropy_chunk_size: int | None = None) -> TokenizerLoss:
    """L = mean(x̂ − x)² + L_q + L_c + λ_ent·L_ent + semantic(h, target) (module docstring).

    ``semantic_target`` is what the regulariser's second argument is (default: ``images``,
    for a regulariser that holds its teacher); ``entropy_weight=0`` skips the entropy term and
    ``semantic=None`` the semantic one, leaving plain VQ training.
    """
    entropy_weight = check_range("entropy_weight", entropy_weight, 0.0)
    if semantic is not None and not isinstance(semantic, SemanticRegularizer):
        raise TypeError(f"semantic must be a SemanticRegularizer or None, got "
                        f"{type(semantic).__name__}")
    out = model(images)
    q = out.quantized
    parts = {"rec": F.mse_loss(out.reconstruction, images), "vq": q.quantization_loss,
             "commit": q.commitment_loss}
    total = parts["rec"] + parts["vq"] + parts["commit"]
    if entropy_weight > 0:
        parts["entropy"] = vq_entropy_loss(model.quantizer.affinity(out.latents), tau,
                                           eps=entropy_eps, chunk_size=entropy_chunk_size)
        total = total + entropy_weight * parts["entropy"]
    if semantic is not None:
        parts["semantic"] = semantic(out.hidden,
                                     images if semantic_target is None else semantic_target)
        total = total + parts["semantic"]
    return TokenizerLoss(total, parts, out)
