"""Embedded and procedural data: nothing is downloaded (design.md §4).

Classification sources (scikit-learn's bundled digits, the offline ``mnist1d`` generator), the
label-noise models the noisy-label papers use, and batching that yields ``(x, y, index)``.
"""

from regzoo.data.batches import IndexedDataset, TensorBatches
from regzoo.data.classification import ClassificationData, load_digits, load_mnist1d, standardize
from regzoo.data.noise import (
    CIFAR10_ASYMMETRIC_MAP,
    NoisyLabels,
    asymmetric_noise,
    label_noise,
    pairflip_noise,
    symmetric_noise,
)

__all__ = [
    "CIFAR10_ASYMMETRIC_MAP",
    "ClassificationData",
    "IndexedDataset",
    "NoisyLabels",
    "TensorBatches",
    "asymmetric_noise",
    "label_noise",
    "load_digits",
    "load_mnist1d",
    "pairflip_noise",
    "standardize",
    "symmetric_noise",
]
