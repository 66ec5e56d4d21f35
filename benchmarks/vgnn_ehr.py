"""VGNN benchmark: the batched model against the official per-patient loop, and the KL's cost.

One process, one thread; steps interleaved round-robin by ``regzoo.train.time_steps``; the
ratios are the figures to quote (design.md §7). Data: :func:`regzoo.data.ehr.synthetic_ehr`
(200 codes, ≈ 10 recorded per visit), d = 64, one encoder layer, one head.

* **Epoch** (``n`` training visits, batch 32, Adam): ``batched`` is
  ``regzoo.methods.vgnn_ehr.train_step`` (padded dense attention over the recorded codes);
  ``per-patient`` is :func:`regzoo.methods.vgnn_ehr.per_patient_reference` with autograd on,
  the official ``VariationalGNN`` structure re-implemented (every visit runs all V + 2 nodes
  through the layers with sparse attention over its edge list), plus the same BCE, backward
  and Adam step. The reference runs without dropout and sampling (its evaluation-mode
  layers): those cost little next to the graph work, so the ratio slightly flatters the loop.
  Both arms are first checked to give the same logits (evaluation mode) to 1e-6.
* **Regulariser**: the VGNN training step over the GNN ablation's step (the variational layer,
  the reparameterisation and the KL), same batch.

``torch-geometric`` (whose ``GATConv`` would be a speed reference) is not installed in this
environment and is not a dependency: that column is left out.

Run: ``python benchmarks/vgnn_ehr.py [--quick]`` or ``regzoo bench vgnn_ehr [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from regzoo.data.ehr import synthetic_ehr
from regzoo.methods.vgnn_ehr import VGNN, balanced_pos_weight, per_patient_reference, train_step
from regzoo.train import time_steps
from regzoo.train.timing import machine_line

DIM, BATCH = 64, 32


def _model(num_codes: int, variational: bool = True) -> VGNN:
    torch.manual_seed(0)
    return VGNN(num_codes, dim=DIM, variational=variational)


def check_agreement(num_codes: int) -> float:
    """Largest |batched − per-patient| logit over 64 visits (evaluation mode, float64)."""
    data = synthetic_ehr(64, seed=11, num_codes=num_codes)
    model = _model(num_codes).double().eval()
    with torch.no_grad():
        batched, _ = model(data.codes, data.mask)
    reference = per_patient_reference(model, data.multi_hot.double())
    worst = float((batched - reference).abs().max())
    if worst > 1e-6:
        raise AssertionError(f"batched and per-patient logits differ by {worst:.2e}")
    return worst


def epoch_seconds(num_codes: int, n: int) -> dict[str, float]:
    """Seconds of one training epoch, batched vs per-patient (one epoch each, best of 2)."""
    data = synthetic_ehr(n, seed=12, num_codes=num_codes)
    pos_weight = balanced_pos_weight(data.y)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).split(BATCH)
    seconds = {}
    for arm in ("batched", "per-patient"):
        model = _model(num_codes)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-8)
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            for batch in order:
                if arm == "batched":
                    train_step(model, optimizer, data.codes[batch], data.mask[batch],
                               data.y[batch], pos_weight=pos_weight)
                    continue
                model.eval()
                optimizer.zero_grad()
                logits = per_patient_reference(model, data.multi_hot[batch], grad=True)
                loss = F.binary_cross_entropy_with_logits(logits, data.y[batch],
                                                          pos_weight=pos_weight)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
            best = min(best, time.perf_counter() - started)
        seconds[arm] = best
    return seconds


def regulariser_ratio(num_codes: int, quick: bool) -> dict[str, float]:
    """Median step seconds of VGNN and of the GNN ablation on one batch."""
    data = synthetic_ehr(BATCH, seed=13, num_codes=num_codes)
    steps = {}
    for name, variational in (("gnn", False), ("vgnn", True)):
        model = _model(num_codes, variational)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model: VGNN = model, optimizer: torch.optim.Optimizer = optimizer) -> None:
            train_step(model, optimizer, data.codes, data.mask, data.y)

        steps[name] = step
    return time_steps(steps, repeats=5 if quick else 30, inner=3 if quick else 5,
                      warmup=2 if quick else 5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"{machine_line()}")
    sizes = ((200, 64),) if args.quick else ((200, 500), (1000, 256))
    print(f"\nAgreement (evaluation mode, float64, 64 visits): max |batched − per-patient| "
          f"logit = {check_agreement(200):.1e}")
    print("\n## Training epoch: batched dense attention vs the official per-patient loop\n")
    print("| codes V | visits | batched s | per-patient s | per-patient / batched |")
    print("|---:|---:|---:|---:|---:|")
    for num_codes, n in sizes:
        s = epoch_seconds(num_codes, n)
        print(f"| {num_codes} | {n} | {s['batched']:.2f} | {s['per-patient']:.2f} | "
              f"{s['per-patient'] / s['batched']:.1f}× |")
    print("\n## Regulariser: VGNN step / GNN-ablation step (batch 32, Adam)\n")
    s = regulariser_ratio(200, args.quick)
    print("| GNN µs | VGNN µs | VGNN / GNN |")
    print("|---:|---:|---:|")
    print(f"| {s['gnn'] * 1e6:.0f} | {s['vgnn'] * 1e6:.0f} | {s['vgnn'] / s['gnn']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
