"""Adapters: a frozen pretrained layer plus a trainable update, shared by every PEFT method.

``regzoo.adapters.base`` wraps layers and gives the handle (merge, unmerge, remove, the
trainable parameters, adapter-only state dicts); ``lowrank`` is LoRA/PiSSA/SORSA's rank-r update,
``sparse`` SaRA's trained values on a chosen set of entries, ``masks`` mask tuning's learned binary
masks (straight-through scores).
Methods (SORSA, BA-LoRA, SaRA, mask tuning) build on these; see docs/architecture.md.
"""

from regzoo.adapters.base import AdapterHandle, AdapterLayer, find_targets, wrap
from regzoo.adapters.lowrank import LowRankHandle, LowRankLinear, apply_low_rank
from regzoo.adapters.masks import (
    BinaryMaskConv,
    BinaryMaskHandle,
    BinaryMaskLinear,
    apply_binary_masks,
    binarize,
    find_mask_targets,
)
from regzoo.adapters.sparse import (
    SparseHandle,
    SparseValueLayer,
    apply_sparse,
    find_sparse_targets,
    select_below,
    select_entries,
    training_state_bytes,
)

__all__ = [
    "AdapterHandle",
    "AdapterLayer",
    "BinaryMaskConv",
    "BinaryMaskHandle",
    "BinaryMaskLinear",
    "LowRankHandle",
    "LowRankLinear",
    "SparseHandle",
    "SparseValueLayer",
    "apply_binary_masks",
    "apply_low_rank",
    "apply_sparse",
    "binarize",
    "find_mask_targets",
    "find_sparse_targets",
    "find_targets",
    "select_below",
    "select_entries",
    "training_state_bytes",
    "wrap",
]
