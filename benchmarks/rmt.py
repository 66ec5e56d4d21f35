"""Mask tuning benchmark: training-step time against plain fine-tuning of the same layers.

One process, one thread, steps interleaved round-robin by ``regzoo.train.time_steps``; the ratios
are the figures to quote, absolute times are noise on a shared machine (design.md §7).

Every arm trains the self-attention linears (query, key, value, attention output) of all six
layers of the offline MiniLM (``--quick``: a random 2-layer BERT of width 32) through the
reproduction's prompt classifier, on the same batch of 8 sentences, with Adam:

* ``plain``: fine-tuning the 24 weight matrices themselves;
* ``lora``: regzoo's rank-4 LoRA on the same layers; ``peft_lora``: peft's, when installed
  (the ``peers`` extra);
* ``r_mt``: binary masks with straight-through scores, CE + mask norm (one backward);
* ``r_amt``: plus gradient dropout (two ``autograd.grad`` passes; the zero-shot teacher logits
  are cached, as in the reproduction).

It also prints each arm's trainable parameters: mask tuning trains one score per masked weight
(as many as plain fine-tuning), while the merged model costs nothing at inference.

Run: ``python benchmarks/rmt.py [--quick]`` or ``regzoo bench rmt [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.adapters import apply_low_rank
from regzoo.methods.rmt import MaskTuning
from regzoo.repro.rmt import ATTENTION, RMTReproConfig, classifiers, load_encoder, tasks
from regzoo.train import time_steps
from regzoo.train.timing import machine_line

ARMS = ("plain", "lora", "peft_lora", "r_mt", "r_amt")


def make_step(arm: str, config: RMTReproConfig, texts: list[str], target: torch.Tensor
              ) -> tuple[Callable[[], None], int] | None:
    """A closure running one training step of ``arm`` and its trainable-parameter count."""
    task, probe = tasks(config, 0)
    encoder = load_encoder(config.encoder)
    clf, _ = classifiers(encoder, task, probe, config.logit_scale)
    with torch.no_grad():
        teacher = clf(texts)
    handle = None
    if arm == "plain":
        for p in encoder.parameters():
            p.requires_grad_(False)
        params = [m.weight for name, m in encoder.bert.named_modules()
                  if isinstance(m, nn.Linear) and name.endswith(ATTENTION)]
        for p in params:
            p.requires_grad_(True)
    elif arm == "lora":
        params = apply_low_rank(encoder.bert, target_modules=list(ATTENTION), rank=4
                                ).trainable_parameters()
    elif arm == "peft_lora":
        try:
            import peft
        except ImportError:
            return None
        # peft matches suffixes: "dense" would also catch the MLP, so name attention modules.
        names = [n for n, m in encoder.bert.named_modules()
                 if isinstance(m, nn.Linear) and n.endswith(ATTENTION)]
        encoder.bert = peft.get_peft_model(encoder.bert, peft.LoraConfig(
            r=4, lora_alpha=4, target_modules=names, lora_dropout=0.0))
        params = [p for p in encoder.parameters() if p.requires_grad]
    else:
        handle = MaskTuning.apply(encoder.bert, target_modules=list(ATTENTION), variant=arm,
                                  gdr_lambda=config.gdr_lambda,
                                  generator=torch.Generator().manual_seed(0))
        params = handle.trainable_parameters()
    optimizer = torch.optim.Adam(params, lr=1e-6)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = clf(texts)
        if handle is not None:
            handle.backward(logits, target, teacher)
        else:
            F.cross_entropy(logits, target).backward()
        optimizer.step()

    return step, sum(p.numel() for p in params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a random 2-layer BERT and few repeats: a smoke run")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    config = RMTReproConfig.tiny() if args.quick else RMTReproConfig.full()
    task, _ = tasks(config, 0)
    texts = list(task.train_texts[:8])
    target = task.train_labels[:8]
    print(f"{machine_line()}{', --quick' if args.quick else ''}")
    built = {arm: make_step(arm, config, texts, target) for arm in ARMS}
    steps = {arm: b[0] for arm, b in built.items() if b is not None}
    repeats, inner = (3, 1) if args.quick else (10, 2)
    seconds = time_steps(steps, repeats=repeats, inner=inner, warmup=1)
    print(f"\n## Training step on {config.encoder}, batch 8, attention layers of every block\n")
    print("| arm | trainable parameters | ms / step | ÷ plain |")
    print("|---|---:|---:|---:|")
    for arm in steps:
        print(f"| {arm} | {built[arm][1]:,} | {seconds[arm] * 1e3:.0f} | "
              f"{seconds[arm] / seconds['plain']:.2f} |")
    if "peft_lora" not in steps:
        print("\npeft is not installed (extra `peers`): its LoRA arm was skipped.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
