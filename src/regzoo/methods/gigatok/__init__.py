"""GigaTok (Xiong et al. 2025, arXiv 2504.08736): regularising VQ image tokenizers.

The regularisers and the tokenizers they act on:

- :mod:`regzoo.methods.gigatok.losses`: :class:`SemanticRegularizer` (the registered penalty:
  decoder hidden state → MLP → negative mean cosine with a frozen teacher's patch features) and
  :func:`vq_entropy_loss` (mean per-token entropy minus entropy of the mean assignment);
- :mod:`regzoo.methods.gigatok.tokenizer`: :class:`VQTokenizer` (2-D patch tokenizer, or 1-D
  with learnable latent queries), :class:`TokenizerConfig` (``small()``, ``large()``) and
  :func:`tokenizer_loss` (reconstruction + VQ losses + both regularisers).

The quantiser is the shared :class:`regzoo.quantizers.VectorQuantizer` (cosine codebook,
β = 0.25, rotation trick or straight-through).
"""

from regzoo.methods.gigatok.losses import (
    OFFICIAL_ENTROPY_EPS,
    SemanticRegularizer,
    match_token_grid,
    negative_mean_cosine,
    vq_entropy_loss,
)
from regzoo.methods.gigatok.tokenizer import (
    TokenizerConfig,
    TokenizerLoss,
    TokenizerOutput,
    VQTokenizer,
    tokenizer_loss,
)

__all__ = ["OFFICIAL_ENTROPY_EPS", "SemanticRegularizer", "TokenizerConfig", "TokenizerLoss",
           "TokenizerOutput", "VQTokenizer", "match_token_grid", "negative_mean_cosine",
           "tokenizer_loss", "vq_entropy_loss"]
