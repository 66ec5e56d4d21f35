"""Sparse adapters benchmark: SaRA's sparse path vs its dense masked path vs LoRA vs full FT.

Spec sara.md §7. One process, one thread, steps interleaved round-robin by
``regzoo.train.time_steps``; on a shared machine the ratios are the figures to quote.

Model: a stack of ``depth`` Linear(width, width) layers with ReLU (default 4 × 1024², 4.2 M
weights), batch 64, AdamW (weight decay 1e-2). Arms:

* ``full``: every parameter (torch AdamW);
* ``lora``: rank 8 on every layer (:func:`regzoo.adapters.apply_low_rank`);
* ``sara_sparse``: SaRA, smallest 10 % per matrix, unstructured backprop (1-D values);
* ``sara_dense``: the same entries through a dense masked parameter;
* ``sara_sparse_nuc``: the sparse path plus the nuclear-norm term (one SVD per step).

Memory: gradient + optimizer-state bytes after a step, counted from the tensors (exact on any
device); on CUDA also ``torch.cuda.max_memory_allocated`` over one step, minus what was
allocated before it (weights, state, the batch): the step's transient peak (activations and the
dense ∂L/∂W the sparse path forms then gathers). CPU tensors are not visible to
``tracemalloc``, so on CPU only the counted bytes are reported. Before timing, the sparse and
dense SaRA paths are checked to follow the same trajectory in float64.

Run: ``python benchmarks/sparse_adapters.py [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
from torch import nn

from regzoo.adapters.lowrank import apply_low_rank
from regzoo.adapters.sparse import training_state_bytes
from regzoo.methods.sara import SaRA
from regzoo.train import time_steps
from regzoo.train.timing import machine_line

TOL = 1e-12


def make_model(width: int, depth: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).to(dtype)


def build(arm: str, width: int, depth: int, device: torch.device
          ) -> tuple[nn.Module, list[nn.Parameter], torch.optim.Optimizer, object]:
    model = make_model(width, depth).to(device)
    if arm == "full":
        params = list(model.parameters())
        return model, params, torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2), None
    if arm == "lora":
        handle = apply_low_rank(model, rank=8)
        params = handle.trainable_parameters()
        return model, params, torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-2), handle
    handle = SaRA.apply(model, fraction=0.1, progressive_iter=None,
                        mode="dense" if arm == "sara_dense" else "sparse",
                        lambda_rank=5e-4 if arm == "sara_sparse_nuc" else 0.0)
    return model, handle.trainable_parameters(), handle.optimizer(lr=1e-4), handle


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, handle: object,
              x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        if handle is not None:
            loss = loss + handle.penalty()  # type: ignore[attr-defined]
        loss.backward()
        optimizer.step()
    return step


def check_paths_agree(width: int = 96, depth: int = 3, steps: int = 8) -> float:
    """Max |difference| of the weights after ``steps`` SaRA steps, sparse vs dense, float64."""
    weights = {}
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, width, generator=g, dtype=torch.float64)
    y = torch.randn(32, width, generator=g, dtype=torch.float64)
    for mode in ("sparse", "dense"):
        model = make_model(width, depth, torch.float64)
        handle = SaRA.apply(model, fraction=0.1, progressive_iter=steps // 2, mode=mode,
                            lambda_rank=1e-3, rank_min_dim=64)
        step = make_step(model, handle.optimizer(lr=1e-3), handle, x, y)
        for _ in range(steps):
            step()
        weights[mode] = torch.cat([layer.effective_weight().detach().reshape(-1)
                                   for layer in handle.layers.values()])
    diff = float((weights["sparse"] - weights["dense"]).abs().max())
    if diff > TOL:
        raise SystemExit(f"FAIL: sparse and dense SaRA paths disagree (max |diff| = {diff:.3g})")
    return diff


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, few repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    width, depth = (256, 2) if args.quick else (1024, 4)
    repeats, inner = (3, 2) if args.quick else (15, 3)
    print(f"{machine_line()}{', --quick' if args.quick else ''}; device {device}")
    diff = check_paths_agree()
    print(f"\nSparse vs dense SaRA path, 8 AdamW steps with nuclear norm and re-selection, "
          f"float64: max |diff| = {diff:.1e} (≤ {TOL:g}): PASS")

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, width, generator=g).to(device)
    y = torch.randn(64, width, generator=g).to(device)
    arms = ("full", "lora", "sara_sparse", "sara_dense", "sara_sparse_nuc")
    built = {arm: build(arm, width, depth, device) for arm in arms}
    steps = {arm: make_step(model, opt, handle, x, y)
             for arm, (model, _, opt, handle) in built.items()}
    seconds = time_steps(steps, repeats=repeats, inner=inner, warmup=2, device=device)

    print(f"\n## {depth} × Linear({width}, {width}), batch 64, float32: one AdamW step\n")
    header = "| arm | trainable | grad + AdamW state MiB | step ms | step / full |"
    if device.type == "cuda":
        header += " step peak over resident MiB |"
    print(header)
    print("|---|---:|---:|---:|---:|" + ("---:|" if device.type == "cuda" else ""))
    mib = 2 ** 20
    for arm in arms:
        _, params, opt, _ = built[arm]
        steps[arm]()
        counted = training_state_bytes(params, opt)
        state = (counted["gradient_bytes"] + counted["optimizer_bytes"]) / mib
        trainable = sum(p.numel() for p in params)
        row = (f"| {arm} | {trainable:,} | {state:.2f} | {seconds[arm] * 1e3:.2f} | "
               f"{seconds[arm] / seconds['full']:.2f} |")
        if device.type == "cuda":
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize(device)
            resident = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            steps[arm]()
            torch.cuda.synchronize(device)
            row += f" {(torch.cuda.max_memory_allocated(device) - resident) / mib:.2f} |"
        print(row)
    print("\nSaRA's sparse path holds 3 numbers per selected entry (value gradient, two "
          "moments) where full fine-tuning holds 3 per weight; its step still forms the dense "
          "∂L/∂W before gathering, so compute is that of full fine-tuning.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
