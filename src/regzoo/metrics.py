"""Evaluation metrics shared by the reproductions: accuracy, NLL, expected calibration error."""

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
