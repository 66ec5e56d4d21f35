"""QuantNAS benchmark: one search step (α step + weight step) per way of quantising, as ratios.

Same supernet layout, initialisation and batches for every form, timed interleaved in one
process (``regzoo.train.time_steps``, one thread):

- ``noise``: QuantNAS's quantisation noise, noisy W and X mixed before one conv per op;
- ``noise_detached``: the official code's detached noisy copies;
- ``lsq_shared``: LSQ weights + HWGQ activations mixed before one conv per op (official
  ``SharedQAConv2d``, the direct search of the reproduction);
- ``lsq_per_bit``: one conv per (op, bit) on LSQ/HWGQ-quantised inputs;
- ``fakequant_shared``: the shared form with ``torch.ao.quantization.FakeQuantize`` (per-channel
  symmetric weights, per-tensor affine activations, moving-average min/max observers) in place
  of LSQ/HWGQ — the peer fake-quantisation;
- ``plain``: the same mixture in full precision (ReLU input, float weights): plain DARTS.

Sizes: the CPU reproduction's (LR 8×8, batch 16) and the issue's GPU check (LR 16×16, batch 32).
The paper reports the noise search ≈ 30 % faster than direct quantisation; the figures to quote
are 1 − t_noise / t_form. Run: ``python benchmarks/quantnas.py [--quick]`` or
``regzoo bench quantnas``.
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from regzoo.data.superres import superres_patches
from regzoo.methods.quantnas import MixedQuantOp
from regzoo.repro.quantnas import QuantNASReproConfig, build_supernet, search_step
from regzoo.train import time_steps
from regzoo.train.timing import machine_line

FORMS = {
    "noise": ("noise", "shared", False),
    "noise_detached": ("noise", "shared", True),
    "lsq_shared": ("direct", "shared", False),
    "lsq_per_bit": ("direct", "per_bit", False),
    "fakequant_shared": ("direct", "shared", False),
    "plain": ("direct", "shared", False),
}


class FakeQuantizeOp(MixedQuantOp):
    """The shared direct form with torch.ao FakeQuantize modules (attached by :func:`_swap`)."""

    def _shared(self, holder, x, chunk):
        normed = chunk / chunk.sum()
        fq_w, fq_a = self.fake_quant[f"w_{id(holder)}"], self.fake_quant["a"]
        mixed_w = sum(a * q(holder.weight) for a, q in zip(normed, fq_w))
        mixed_x = sum(a * q(x) for a, q in zip(normed, fq_a))
        return holder.conv(mixed_x, mixed_w)


class PlainOp(MixedQuantOp):
    """The same mixture in full precision: conv(ReLU(x), W) per op (plain DARTS)."""

    def _shared(self, holder, x, chunk):
        return holder.conv(torch.relu(x), holder.weight)


def _fake_quantizers(bits: tuple[int, ...]) -> tuple[nn.ModuleList, nn.ModuleList]:
    from torch.ao.quantization import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
    )

    weights = nn.ModuleList(
        [
            FakeQuantize(
                observer=MovingAveragePerChannelMinMaxObserver,
                quant_min=-(2 ** (b - 1)),
                quant_max=2 ** (b - 1) - 1,
                dtype=torch.qint8,
                qscheme=torch.per_channel_symmetric,
                ch_axis=0,
            )
            for b in bits
        ]
    )
    acts = nn.ModuleList(
        [
            FakeQuantize(
                observer=MovingAverageMinMaxObserver,
                quant_min=0,
                quant_max=2**b - 1,
                dtype=torch.quint8,
                qscheme=torch.per_tensor_affine,
            )
            for b in bits
        ]
    )
    return weights, acts


def _swap(net: nn.Module, form: str) -> None:
    for layer in net.searched_layers():
        if form == "plain":
            layer.__class__ = PlainOp
            continue
        layer.__class__ = FakeQuantizeOp
        modules = nn.ModuleDict()
        for holder in layer.weights.values():
            modules[f"w_{id(holder)}"] = _fake_quantizers(layer.bits)[0]
        modules["a"] = _fake_quantizers(layer.bits)[1]
        layer.fake_quant = modules


def steps_for(config: QuantNASReproConfig, lr_size: int, batch: int) -> dict:
    data = superres_patches(2 * batch, hr_size=2 * lr_size, seed=0)
    lr_w, hr_w = data.lr[:batch], data.hr[:batch]
    lr_a, hr_a = data.lr[batch:], data.hr[batch:]
    steps = {}
    for name, (mode, form, detach) in FORMS.items():
        torch.manual_seed(0)
        net = build_supernet(
            config, "noise_detached" if detach else "quantnas", mode=mode, direct_form=form
        )
        if name in ("fakequant_shared", "plain"):
            _swap(net, name.removesuffix("_shared"))
        steps[name] = search_step(net, config, lr_w, hr_w, lr_a, hr_a)
    return steps


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 3 if args.quick else 15
    config = QuantNASReproConfig.full()
    print(f"{machine_line()}\n")
    print(
        f"supernet: C = {config.channels}, {config.body_cells}×{config.body_layers} + 1 "
        f"searched layers, ops {list(config.ops)}, bits {list(config.bits)}\n"
    )
    names = [n for n in FORMS if n != "noise"]
    print("| LR patch, batch | noise ms/step | " + " | ".join(f"noise / {n}" for n in names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for lr_size, batch in ((8, 16), (16, 32)):
        t = time_steps(steps_for(config, lr_size, batch), repeats=repeats, inner=2, warmup=2)
        print(
            f"| {lr_size}×{lr_size}, {batch} | {t['noise'] * 1e3:.1f} | "
            + " | ".join(f"{t['noise'] / t[n]:.2f}" for n in names)
            + " |"
        )
    print("\nnoise / form < 0.70 is the paper's '≥ 30 % faster'.")


if __name__ == "__main__":
    main(sys.argv[1:])
