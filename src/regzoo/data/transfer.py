"""A source task and a shifted target task on the digits, for fine-tuning and forgetting.

Fine-tuning papers (SORSA, BA-LoRA, SaRA) adapt a pretrained model to a new task and ask how
much of the old one survives. Offline, the pair is built from scikit-learn's digits: the source
task is the digits as they are; the target task shows the same kind of images under a fixed
random pixel permutation and/or with every label shifted, y ↦ (y + shift) mod 10. A network
pretrained on the source must re-learn its input layer (permutation) or its read-out (shift)
to solve the target, and accuracy on the source test split measures what it forgot.

Both tasks use one stratified train/validation/test split of the 1797 images, so the source
test images are never seen during either training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from regzoo.core.checks import check_choice, check_range

SHIFTS = ("permute_shift_labels", "permute", "shift_labels")


@dataclass(frozen=True)
class Task:
    """One classification task with train, validation and test splits (float32, int64)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])


@dataclass(frozen=True)
class TransferPair:
    """The source task, the target task and the shift that relates them."""

    source: Task
    target: Task
    permutation: torch.Tensor
    label_shift: int


def _shifted(task: Task, name: str, permutation: torch.Tensor, label_shift: int) -> Task:
    def move(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, permutation], (y + label_shift) % task.num_classes

    x_train, y_train = move(task.x_train, task.y_train)
    x_val, y_val = move(task.x_val, task.y_val)
    x_test, y_test = move(task.x_test, task.y_test)
    return Task(name, x_train, y_train, x_val, y_val, x_test, y_test, task.num_classes)


def digits_transfer(seed: int = 0, *, shift: str = "permute_shift_labels", label_shift: int = 3,
                    val_fraction: float = 0.2, test_fraction: float = 0.25) -> TransferPair:
    """The digits (source) and a shifted copy (target), split and permuted by ``seed``.

    Args:
        seed: draws the stratified split and the pixel permutation.
        shift: ``"permute_shift_labels"`` (the SORSA spec's anchor: permuted pixels, labels + 3),
            ``"permute"`` (pixels only) or ``"shift_labels"`` (labels only).
        label_shift: k in y ↦ (y + k) mod 10; must not be a multiple of 10 when labels shift.
        val_fraction, test_fraction: shares of the 1797 images (defaults give 987 train,
            360 validation and 450 test images).

    Pixels are scaled to [0, 1] (divided by 16).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    check_choice("shift", shift, SHIFTS)
    check_range("val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_range("test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False,
                high_inclusive=False)
    if val_fraction + test_fraction >= 0.9:
        raise ValueError(f"val_fraction + test_fraction = {val_fraction + test_fraction:g} leaves "
                         "under 10% of the digits for training; lower them")
    if shift != "permute" and label_shift % 10 == 0:
        raise ValueError(f"label_shift={label_shift} leaves the labels unchanged; use 1..9")
    bunch = load_digits()
    x = bunch.data.astype(np.float32) / 16.0
    y = bunch.target.astype(np.int64)
    x_rest, x_te, y_rest, y_te = train_test_split(x, y, test_size=test_fraction, stratify=y,
                                                  random_state=seed)
    x_tr, x_va, y_tr, y_va = train_test_split(
        x_rest, y_rest, test_size=val_fraction / (1 - test_fraction), stratify=y_rest,
        random_state=seed)
    tensors = [torch.as_tensor(a) for a in (x_tr, y_tr, x_va, y_va, x_te, y_te)]
    source = Task("digits", *tensors, num_classes=10)
    generator = torch.Generator().manual_seed(seed)
    permutation = (torch.randperm(x.shape[1], generator=generator)
                   if shift != "shift_labels" else torch.arange(x.shape[1]))
    k = label_shift % 10 if shift != "permute" else 0
    target = _shifted(source, f"digits_{shift}", permutation, k)
    return TransferPair(source, target, permutation, k)
