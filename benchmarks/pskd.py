"""PS-KD benchmark: training-step time against cross-entropy (spec pskd.md §7).

One process, one thread, steps interleaved round-robin by ``regzoo.train.time_steps``; the ratios
are the figures to quote, absolute times are noise on a shared machine (design.md §7).

Arms, on the same model, batch and optimiser:

* ``CE``: ``F.cross_entropy``.
* ``regzoo``: ``regzoo.methods.pskd.ProgressiveSelfKnowledgeDistillation``, past its first epoch
  (the first epoch is plain cross-entropy, so timing it would flatter PS-KD).
* ``reference``: PS-KD written here from the paper's equations, evaluated the way the official
  training loop does: a float32 table on the CPU filled with one-hot labels in the first epoch,
  ``(1 − α_t)·onehot + α_t·P[idx]`` built by fancy indexing, the loss
  ``(−ỹ · log_softmax(z)).mean(0).sum()``, then ``P[idx] = softmax(z).detach()``. It stands in
  for the official code, which is not pip-installable and assumes CUDA. Before any timing, both
  PS-KD arms are checked to compute the same loss, gradient and table on the same inputs.

Run: ``python benchmarks/pskd.py [--quick]`` or ``regzoo bench pskd [--quick]``.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from _agreement import require_agreement

from regzoo.data import load_digits
from regzoo.methods.pskd import ProgressiveSelfKnowledgeDistillation
from regzoo.models import CNN, MLP
from regzoo.train import criterion_differences, time_criteria
from regzoo.train.timing import machine_line

ALPHA_T, EPOCHS = 0.8, 4
TOL = 1e-6


class PaperPSKD:
    """PS-KD as the paper writes it, evaluated as the official loop does (module docstring)."""

    def __init__(self, num_examples: int, num_classes: int, alpha_T: float = ALPHA_T,
                 total_epochs: int = EPOCHS) -> None:
        self.alpha_T, self.total_epochs, self.epoch = alpha_T, total_epochs, 0
        self.identity = torch.eye(num_classes)
        self.table = torch.zeros(num_examples, num_classes)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor,
                 index: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha_T * (self.epoch + 1) / self.total_epochs
        onehot = self.identity[labels]
        if self.epoch == 0:
            self.table[index] = onehot
        soft = ((1 - alpha) * onehot + alpha * self.table[index]).to(logits.dtype)
        loss = (-soft * F.log_softmax(logits, dim=1)).mean(0).sum()
        self.table[index] = F.softmax(logits, dim=1).detach().float()
        return loss


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels)


def check_agreement(x: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[str]:
    """Run both PS-KD arms through EPOCHS epochs of 3 overlapping batches; raise on mismatch."""
    lines = []
    n = x.shape[0]
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(0)
        model = MLP(x.shape[1], num_classes, hidden=(256, 256)).to(dtype)
        ours = ProgressiveSelfKnowledgeDistillation(n, num_classes, alpha_T=ALPHA_T,
                                                    total_epochs=EPOCHS)
        ref = PaperPSKD(n, num_classes)
        worst = {"loss": 0.0, "grad": 0.0, "table": 0.0}
        for epoch in range(EPOCHS):
            ours.set_epoch(epoch)
            ref.epoch = epoch
            for call in range(3):
                index = torch.arange(call * 32, call * 32 + 96) % 160  # rows revisited
                with torch.no_grad():
                    base = model(x[index].to(dtype)) * (1.0 + epoch)
                diffs = criterion_differences(ours, ref, base, y[index], index)
                diffs["table"] = float((ours.predictions - ref.table).abs().max())
                for key, value in diffs.items():
                    worst[key] = max(worst[key], value)
                require_agreement(f"regzoo and reference PS-KD ({dtype}, epoch {epoch}, call "
                                  f"{call})", diffs, TOL)
        lines.append(f"{str(dtype).removeprefix('torch.')}: max |diff| loss {worst['loss']:.1e}, "
                     f"grad {worst['grad']:.1e}, table {worst['table']:.1e}")
    return lines


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
    print(f"\nAgreement of regzoo PS-KD and the paper-formula reference ({EPOCHS} epochs × 3 "
          f"overlapping batches, max |diff| ≤ {TOL:g}): PASS")
    for line in agreement:
        print(f"- {line}")

    print("\n## Training step past the first epoch (zero_grad + forward + loss + backward + "
          "SGD step), digits\n")
    print("| model | batch | CE µs | regzoo µs | reference µs | regzoo/CE | reference/CE |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    index = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:64]
    x, y = data.x_train[index], data.y_train[index]
    for name in ("MLP", "CNN"):
        torch.manual_seed(0)
        model = MLP(data.num_features, c) if name == "MLP" else CNN((8, 8), c)
        ours = ProgressiveSelfKnowledgeDistillation(n, c, alpha_T=ALPHA_T, total_epochs=EPOCHS)
        ref = PaperPSKD(n, c)
        # Epoch 0 visits every example, as training does, so every row of both tables is
        # written before the timed steps of epoch 1.
        everyone = torch.arange(n)
        for criterion in (ours, ref):
            criterion(model(data.x_train).detach(), data.y_train, everyone)
        ours.set_epoch(1)
        ref.epoch = 1
        arms = {"ce": cross_entropy, "regzoo": ours, "reference": ref}
        repeats, inner = (5, 3) if args.quick else ((60, 10) if name == "MLP" else (40, 5))
        s = time_criteria(model, arms, x, y, index, repeats=repeats, inner=inner, warmup=3)
        print(f"| {name} | 64 | {s['ce'] * 1e6:.0f} | {s['regzoo'] * 1e6:.0f} | "
              f"{s['reference'] * 1e6:.0f} | {s['regzoo'] / s['ce']:.3f} | "
              f"{s['reference'] / s['ce']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
