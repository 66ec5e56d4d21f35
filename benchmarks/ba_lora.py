"""BA-LoRA benchmark: what the three output regularisers cost over a plain PiSSA step.

Variants, on the same model, batch and AdamW optimiser:

* ``full FT``: every parameter trained, task loss only.
* ``PiSSA``: :func:`regzoo.adapters.apply_low_rank` with ``init="pissa"``, task loss only.
* ``BA-LoRA``: :class:`regzoo.methods.ba_lora.BALoRA` with the official weights; each step runs
  the frozen pretrained copy (the teacher f₀) and adds consistency, diversity and SVD terms.
* ``BA-LoRA, cached f₀``: the same terms with the teacher's outputs computed once beforehand
  (``keep_pretrained=False``), which is what a user with a fixed dataset can do.

Models: NLU, the reproductions' MLP 64-256-256-10 on a batch of 64 (rank 8); NLG, the tiny
causal LM (4 layers, width 128, vocabulary 512) on 16 sequences of 32 tokens (rank 8), where
the per-example SVD of a T × V logit matrix is the term that costs. Times are medians of
interleaved rounds in one process (``regzoo.train.time_steps``); ratios to PiSSA are the figures
to quote.

Run: ``regzoo bench ba_lora [--quick] [--device cuda]``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.adapters import apply_low_rank
from regzoo.methods.ba_lora import BALoRA
from regzoo.models import MLP
from regzoo.models.causal_lm import CausalLMConfig, TinyCausalLM, next_token_loss
from regzoo.train import time_steps
from regzoo.train.timing import machine_line

VARIANTS = ("full FT", "PiSSA", "BA-LoRA", "BA-LoRA, cached f₀")


def make_step(model: nn.Module, params: list[nn.Parameter], task_loss: Callable,
              x: torch.Tensor, regularizer: Callable | None) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        outputs = model(x)
        loss = task_loss(outputs)
        if regularizer is not None:
            loss = loss + regularizer(outputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def build_steps(base: nn.Module, task: str, rank: int, x: torch.Tensor,
                task_loss: Callable, targets) -> dict[str, Callable[[], None]]:
    steps: dict[str, Callable[[], None]] = {}
    full = copy.deepcopy(base)
    steps["full FT"] = make_step(full, list(full.parameters()), task_loss, x, None)
    pissa = copy.deepcopy(base)
    handle = apply_low_rank(pissa, target_modules=targets, rank=rank, init="pissa")
    steps["PiSSA"] = make_step(pissa, handle.trainable_parameters(), task_loss, x, None)
    ba = copy.deepcopy(base)
    ba_handle = BALoRA.apply(ba, target_modules=targets, rank=rank, task=task)
    steps["BA-LoRA"] = make_step(ba, ba_handle.trainable_parameters(), task_loss, x,
                                 lambda out: ba_handle.regularizer(out, inputs=x).total)
    with torch.no_grad():
        teacher = base(x)
    cached = copy.deepcopy(base)
    cached_handle = BALoRA.apply(cached, target_modules=targets, rank=rank, task=task,
                                 keep_pretrained=False)
    steps["BA-LoRA, cached f₀"] = make_step(
        cached, cached_handle.trainable_parameters(), task_loss, x,
        lambda out: cached_handle.regularizer(out, teacher).total)
    return steps


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    mlp = MLP(64, 10, hidden=(256, 256)).to(device)
    x_nlu = torch.rand(64, 64, generator=generator).to(device)
    y_nlu = torch.randint(0, 10, (64,), generator=generator).to(device)
    lm = TinyCausalLM(CausalLMConfig(vocab_size=512, max_len=32, d_model=128, n_layers=4,
                                     n_heads=4, d_ff=512)).to(device)
    tokens = torch.randint(0, 512, (16, 32), generator=generator).to(device)
    cases = [
        ("NLU: MLP 64-256-256-10, batch 64", "nlu", mlp, x_nlu,
         lambda logits: F.cross_entropy(logits, y_nlu), None),
        ("NLG: causal LM 4×128, 16×32 tokens, V=512", "nlg", lm, tokens,
         lambda logits: next_token_loss(logits, tokens), TinyCausalLM.ADAPTER_TARGETS),
    ]
    repeats = 3 if args.quick else 15
    print(f"{machine_line()}, device {device}\n")
    print("| model | variant | step ms | / PiSSA | / full FT |")
    print("|---|---|---:|---:|---:|")
    for title, task, base, x, task_loss, targets in cases:
        steps = build_steps(base, task, 8, x, task_loss, targets)
        seconds = time_steps(steps, repeats=repeats, inner=2 if args.quick else 3, warmup=2,
                             device=device)
        for variant in VARIANTS:
            print(f"| {title} | {variant} | {seconds[variant] * 1e3:.2f} | "
                  f"{seconds[variant] / seconds['PiSSA']:.2f} | "
                  f"{seconds[variant] / seconds['full FT']:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
