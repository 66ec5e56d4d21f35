"""Evaluation metrics shared by the reproductions.

Classification: accuracy, NLL, expected calibration error. Generative models: the Fréchet
distance between two feature sets (FID's formula on any feature extractor) and the class
histogram of generated samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_positive_int, check_tensor


def _check_pair(logits: torch.Tensor, target: torch.Tensor) -> None:
    check_tensor("logits", logits, ndim=2, floating=True)
    check_tensor("target", target, ndim=1, floating=False)
    if logits.shape[0] != target.shape[0]:
        raise ValueError(
            f"logits and target disagree on the batch size: {logits.shape[0]} vs {target.shape[0]}"
        )


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of examples whose arg-max prediction equals ``target``."""
    _check_pair(logits, target)
    return float((logits.argmax(dim=1) == target).float().mean())


def nll(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Mean negative log-likelihood (cross-entropy) of ``target`` under ``softmax(logits)``."""
    _check_pair(logits, target)
    return float(F.cross_entropy(logits.double(), target))


def expected_calibration_error(
    logits: torch.Tensor, target: torch.Tensor, num_bins: int = 15
) -> float:
    """ECE with equal-width confidence bins: ``Σ_b |B_b|/N · |acc(B_b) − conf(B_b)|``."""
    _check_pair(logits, target)
    check_positive_int("num_bins", num_bins)
    probs = logits.double().softmax(dim=1)
    confidence, prediction = probs.max(dim=1)
    correct = (prediction == target).double()
    bins = torch.clamp((confidence * num_bins).long(), max=num_bins - 1)
    conf_sum = torch.bincount(bins, weights=confidence, minlength=num_bins)
    acc_sum = torch.bincount(bins, weights=correct, minlength=num_bins)
    return float((conf_sum - acc_sum).abs().sum() / target.numel())


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in eval mode, batched, on the model's device; returns CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = [model(x[i : i + batch_size].to(device)).float().cpu()
               for i in range(0, x.shape[0], batch_size)]
    model.train(was_training)
    return torch.cat(outputs)


def classification_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """``{"accuracy", "nll", "ece"}`` of ``logits`` against ``target``."""
    return {
        "accuracy": accuracy(logits, target),
        "nll": nll(logits, target),
        "ece": expected_calibration_error(logits, target),
    }


def _symmetric_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The PSD square root of a symmetric matrix (eigenvalues rounded below zero set to 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    r"""Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017).

    .. math::

        d^2 = \lVert \mu_a - \mu_b \rVert^2
              + \operatorname{tr}\big(\Sigma_a + \Sigma_b
              - 2\,(\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2})^{1/2}\big)

    ``features_*`` are (n × d) with n ≥ 2 (unbiased covariances). The cross term is computed
    as the trace of the square root of the symmetric PSD matrix Σ_a^{1/2} Σ_b Σ_a^{1/2}, by
    eigendecompositions in float64: it equals tr((Σ_a Σ_b)^{1/2}) without the complex parts
    and NaNs that ``scipy.linalg.sqrtm(Σ_a Σ_b)`` gives on singular covariances (more
    dimensions than samples). The result is clamped at 0 against round-off.
    """
    check_tensor("features_a", features_a, ndim=2, floating=True, finite=True)
    check_tensor("features_b", features_b, ndim=2, floating=True, finite=True)
    if features_a.shape[1] != features_b.shape[1]:
        raise ValueError(f"features_a and features_b must have the same feature width, got "
                         f"{features_a.shape[1]} and {features_b.shape[1]}; extract both with "
                         "the same model")
    for name, features in (("features_a", features_a), ("features_b", features_b)):
        if features.shape[0] < 2:
            raise ValueError(f"{name} has {features.shape[0]} row(s); a covariance needs at "
                             "least 2 samples (a few thousand for a stable distance)")
    a, b = features_a.double(), features_b.double().to(features_a.device)
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _symmetric_sqrt(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    distance = (mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(float(distance), 0.0)


def class_histogram(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The share of each class among ``labels`` (integers in [0, num_classes)); sums to 1."""
    check_tensor("labels", labels, ndim=1, floating=False)
    check_positive_int("num_classes", num_classes)
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got values from "
                         f"{int(labels.min())} to {int(labels.max())}")
    return torch.bincount(labels, minlength=num_classes).double() / labels.numel()
