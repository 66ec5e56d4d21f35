"""Embedded and procedural data: nothing is downloaded (design.md §4).

Classification sources (scikit-learn's bundled digits, the offline ``mnist1d`` generator), the
label-noise models the noisy-label papers use, batching that yields ``(x, y, index)``, multi-domain
splits for domain generalization, a source/target pair for fine-tuning and forgetting, templated
text tasks with held-out words, and the seeded linear-SEM simulator of the DAG papers.
"""

from regzoo.data.batches import IndexedDataset, TensorBatches
from regzoo.data.classification import ClassificationData, load_digits, load_mnist1d, standardize
from regzoo.data.domains import (
    Domain,
    DomainSuite,
    digits_cmnist,
    digits_domains,
    leave_one_domain_out,
    training_domain_validation,
)
from regzoo.data.noise import (
    CIFAR10_ASYMMETRIC_MAP,
    NoisyLabels,
    asymmetric_noise,
    label_noise,
    pairflip_noise,
    symmetric_noise,
)
from regzoo.data.sem import LinearSEM, count_accuracy, is_dag, simulate_linear_sem
from regzoo.data.text_tasks import TextTask, make_text_task, sentiment_task, topic_task
from regzoo.data.transfer import Task, TransferPair, digits_transfer

__all__ = [
    "CIFAR10_ASYMMETRIC_MAP",
    "ClassificationData",
    "Domain",
    "DomainSuite",
    "IndexedDataset",
    "LinearSEM",
    "NoisyLabels",
    "Task",
    "TensorBatches",
    "TextTask",
    "TransferPair",
    "asymmetric_noise",
    "count_accuracy",
    "digits_cmnist",
    "digits_domains",
    "digits_transfer",
    "is_dag",
    "label_noise",
    "leave_one_domain_out",
    "load_digits",
    "load_mnist1d",
    "make_text_task",
    "pairflip_noise",
    "sentiment_task",
    "simulate_linear_sem",
    "standardize",
    "symmetric_noise",
    "topic_task",
    "training_domain_validation",
]
