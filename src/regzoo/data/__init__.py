"""Embedded and procedural data: nothing is downloaded (design.md §4).

Classification sources (scikit-learn's bundled digits, the offline ``mnist1d`` generator), the
label-noise models the noisy-label papers use, batching that yields ``(x, y, index)``, multi-domain
splits for domain generalization, a source/target pair for fine-tuning and forgetting, templated
text tasks with held-out words, a toy grammar for tiny language models, hyperspectral cubes with
their noise models and metrics, and the seeded linear-SEM simulator of the DAG papers.
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
from regzoo.data.hyperspectral import (
    NOISE_KINDS,
    add_noise,
    noise_defaults,
    psnr,
    sam,
    ssim,
    synthetic_cube,
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
from regzoo.data.text_corpus import Corpus, ToyGrammar, object_accuracy
from regzoo.data.text_tasks import TextTask, make_text_task, sentiment_task, topic_task
from regzoo.data.transfer import Task, TransferPair, digits_transfer

__all__ = [
    "CIFAR10_ASYMMETRIC_MAP",
    "NOISE_KINDS",
    "ClassificationData",
    "Corpus",
    "Domain",
    "DomainSuite",
    "IndexedDataset",
    "LinearSEM",
    "NoisyLabels",
    "Task",
    "TensorBatches",
    "TextTask",
    "ToyGrammar",
    "TransferPair",
    "add_noise",
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
    "noise_defaults",
    "object_accuracy",
    "pairflip_noise",
    "psnr",
    "sam",
    "sentiment_task",
    "simulate_linear_sem",
    "ssim",
    "standardize",
    "symmetric_noise",
    "synthetic_cube",
    "topic_task",
    "training_domain_validation",
]
