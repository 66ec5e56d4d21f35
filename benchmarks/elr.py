"""ELR benchmark: step and epoch time against cross-entropy, target-buffer memory (spec elr.md §7).

Everything runs in one process on one thread, each group of steps interleaved round-robin by
``regzoo.train.time_steps``; the ratios are the figures to quote, absolute times are noise on a
shared machine (design.md §7).

Arms of the step timing, on the same model, batch and optimiser:

* ``CE``: ``F.cross_entropy``.
* ``regzoo``: ``regzoo.methods.elr.EarlyLearningRegularization``.
* ``reference``: ELR written here straight from the paper's equations (Liu et al., NeurIPS
  2020, eq. 5-6) the way the official code evaluates them: softmax, clamp to [1e-4, 1 - 1e-4],
  an in-place EMA on a plain tensor memory through fancy indexing, then
  ``CE + lam * log(1 - <t, p>).mean()``. It stands in for the official implementation, which is
  not pip-installable. Before any timing, both ELR arms are checked to compute the same loss,
  gradient and memory on the same inputs.

Also: the target memory's size in float32 and bfloat16 (``memory_dtype``) with the step time of
each, and the cost of finding label issues, ELR's ``label_issues`` (one pass over the memory)
against cleanlab's ``find_label_issues`` on a probability matrix of the same size (cleanlab
also needs the out-of-fold probabilities, K extra trainings, not counted here; skipped without
cleanlab: ``pip install 'regzoo[peers]'``).

Run: ``python benchmarks/elr.py [--quick]`` or ``regzoo bench elr [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _agreement import require_agreement
from torch import nn

from regzoo.data import TensorBatches, load_digits
from regzoo.methods.elr import EarlyLearningRegularization
from regzoo.models import CNN, MLP
from regzoo.train import criterion_differences, time_criteria, time_steps
from regzoo.train.timing import machine_line

LAM, BETA, CLAMP = 3.0, 0.7, 1e-4
TOL = 1e-6


class PaperELR:
    """ELR as the paper writes it, evaluated as the official code does (see module docstring)."""

    def __init__(self, num_examples: int, num_classes: int, lam: float = LAM,
                 beta: float = BETA, dtype: torch.dtype = torch.float32) -> None:
        self.lam, self.beta = lam, beta
        self.target = torch.zeros(num_examples, num_classes, dtype=dtype)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor,
                 index: torch.Tensor) -> torch.Tensor:
        p = torch.clamp(F.softmax(logits, dim=1), CLAMP, 1.0 - CLAMP)
        p_sg = p.detach()
        self.target[index] = (self.beta * self.target[index]
                              + (1.0 - self.beta) * p_sg / p_sg.sum(dim=1, keepdim=True))
        regularizer = torch.log(1.0 - (self.target[index] * p).sum(dim=1)).mean()
        return F.cross_entropy(logits, labels) + self.lam * regularizer


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def check_agreement(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[str]:
    """Run both ELR arms on the same batch sequence; return a line per dtype (raise on mismatch).

    Five calls per dtype, on MLP logits of digits batches (scaled by 1, and by 100 and 200 to
    drive about half the probabilities into the clamp at either end), with overlapping indices
    so that the temporal ensemble carries state between calls. Loss, gradient on the logits and
    the updated memory must agree.
    """
    lines = []
    n = x.shape[0]
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = MLP(x.shape[1], num_classes, hidden=(256, 256)).to(dtype)
        ours = EarlyLearningRegularization(n, num_classes, lam=LAM, beta=BETA).to(dtype)
        ref = PaperELR(n, num_classes, dtype=dtype)
        worst = {"loss": 0.0, "grad": 0.0, "memory": 0.0}
        for call, scale in enumerate((1.0, 1.0, 100.0, 1.0, 200.0)):
            index = torch.arange(call * 32, call * 32 + 96) % n  # 64 of 96 rows seen before
            with torch.no_grad():
                base = model(x[index].to(dtype)) * scale
            diffs = criterion_differences(ours, ref, base, y[index], index)
            diffs["memory"] = float((ours.targets - ref.target).abs().max())
            for key, value in diffs.items():
                worst[key] = max(worst[key], value)
            require_agreement(f"regzoo and reference ELR ({dtype}, call {call})", diffs, TOL)
        lines.append(f"{str(dtype).removeprefix('torch.')}: max |diff| loss "
                     f"{worst['loss']:.1e}, grad {worst['grad']:.1e}, memory "
                     f"{worst['memory']:.1e}")
    return lines


def make_epoch(model: nn.Module, optimizer: torch.optim.Optimizer,
               criterion: Callable[..., torch.Tensor],
               batches: TensorBatches) -> Callable[[], None]:
    def epoch() -> None:
        for x, y, index in batches:
            optimizer.zero_grad(set_to_none=True)
            criterion(model(x), y, index).backward()
            optimizer.step()
    return epoch


def print_label_issue_cost(quick: bool) -> None:
    """Seconds to flag label issues from an N × C memory (ELR) and from N × C probabilities
    (cleanlab's ``find_label_issues``, its defaults, one job)."""
    try:
        from cleanlab.filter import find_label_issues
    except ImportError:
        print("\ncleanlab is not installed: the label-issue row is skipped "
              "(pip install 'regzoo[peers]')")
        return
    size, classes = (5_000, 10) if quick else (50_000, 100)
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, classes, (size,), generator=generator)
    logits = torch.randn(size, classes, generator=generator)
    logits[torch.arange(size), labels] += 4.0
    probs = logits.softmax(dim=1)
    criterion = EarlyLearningRegularization(size, classes)
    criterion.targets.copy_(probs)
    start = time.perf_counter()
    criterion.label_issues(labels)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    find_label_issues(labels.numpy(), probs.double().numpy(), n_jobs=1)
    theirs = time.perf_counter() - start
    print(f"\n## Label issues from N = {size:,}, C = {classes}\n")
    print("| ELR label_issues s | cleanlab find_label_issues s | cleanlab / ELR |")
    print("|---:|---:|---:|")
    print(f"| {ours:.4f} | {theirs:.3f} | {theirs / ours:.0f} |")


def build(name: str, num_features: int, num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return MLP(num_features, num_classes, hidden=(256, 256)) if name == "MLP" else CNN(
        (8, 8), num_classes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)

    data = load_digits(seed=0)
    n, c = data.x_train.shape[0], data.num_classes
    print(f"{machine_line()}"
          f"{', --quick' if args.quick else ''}")
    agreement = check_agreement(data.x_train, data.y_train, c)  # raises SystemExit on FAIL
    print("\nAgreement of regzoo ELR and the paper-formula reference (same inputs, 5 calls, "
          f"max |diff| ≤ {TOL:g}): PASS")
    for line in agreement:
        print(f"- {line}")

    # Step time: one interleaved group per (model, batch); fewer calls for the slower CNN.
    print("\n## Training step (zero_grad + forward + loss + backward + SGD step), digits\n")
    print("| model | batch | CE µs | regzoo µs | reference µs | regzoo/CE | reference/CE "
          "| regzoo/reference |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    for name in ("MLP", "CNN"):
        for batch in (64, 128):
            index = perm[:batch].clone()
            x, y = data.x_train[index], data.y_train[index]
            model = build(name, data.num_features, c)
            arms = {"ce": cross_entropy,
                    "regzoo": EarlyLearningRegularization(n, c, lam=LAM, beta=BETA),
                    "reference": PaperELR(n, c)}
            if args.quick:
                repeats, inner = 5, 3
            else:
                repeats, inner = (60, 10) if name == "MLP" else (40, 5)
            s = time_criteria(model, arms, x, y, index, repeats=repeats, inner=inner, warmup=3)
            print(f"| {name} | {batch} | {s['ce'] * 1e6:.0f} | {s['regzoo'] * 1e6:.0f} | "
                  f"{s['reference'] * 1e6:.0f} | {s['regzoo'] / s['ce']:.3f} | "
                  f"{s['reference'] / s['ce']:.3f} | {s['regzoo'] / s['reference']:.3f} |")

    # Whole epoch through TensorBatches (same permutation for both arms).
    print(f"\n## Whole epoch ({n} training examples, batch 64, TensorBatches), digits\n")
    print("| model | batches | CE ms | ELR ms | ELR/CE |")
    print("|---|---:|---:|---:|---:|")
    for name in ("MLP", "CNN"):
        batches = TensorBatches(data.x_train, data.y_train, 64, seed=0)
        model = build(name, data.num_features, c)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        epochs = {"ce": make_epoch(model, optimizer, cross_entropy, batches),
                  "elr": make_epoch(model, optimizer,
                                    EarlyLearningRegularization(n, c, lam=LAM, beta=BETA),
                                    batches)}
        repeats = 3 if args.quick else 40 if name == "MLP" else 15
        s = time_steps(epochs, repeats=repeats, inner=1, warmup=1)
        print(f"| {name} | {len(batches)} | {s['ce'] * 1e3:.1f} | {s['elr'] * 1e3:.1f} | "
              f"{s['elr'] / s['ce']:.3f} |")

    # Memory of the target buffer: numel * element_size of the registered buffer.
    print("\n## Target buffer (N × C; the only state ELR adds), float32 and bfloat16\n")
    print("| data | N | C | float32 MB | bfloat16 MB | MLP parameter MB |")
    print("|---|---:|---:|---:|---:|---:|")
    mlp_bytes = sum(p.numel() * p.element_size()
                    for p in MLP(data.num_features, c, hidden=(256, 256)).parameters())
    sizes = (("digits train split", n, c), ("CIFAR-100-sized", 50_000, 100),
             ("ImageNet-1k-sized", 1_281_167, 1000))
    for label, size, classes in sizes:
        full = size * classes * 4
        print(f"| {label} | {size:,} | {classes} | {full / 1e6:,.2f} | {full / 2e6:,.2f} | "
              f"{mlp_bytes / 1e6:.2f} |")
    index = perm[:64].clone()
    model = build("MLP", data.num_features, c)
    arms = {"float32": EarlyLearningRegularization(n, c),
            "bfloat16": EarlyLearningRegularization(n, c, memory_dtype=torch.bfloat16)}
    s = time_criteria(model, arms, data.x_train[index], data.y_train[index], index,
                      repeats=5 if args.quick else 60, inner=3 if args.quick else 10, warmup=3)
    print(f"\nMLP step, batch 64: bfloat16 memory / float32 memory = "
          f"{s['bfloat16'] / s['float32']:.3f}")
    print_label_issue_cost(args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
