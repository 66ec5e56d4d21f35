"""FTWT benchmark: a step with mask predictors vs the plain step, and static pruning two ways.

One process, one thread, steps interleaved by ``regzoo.train.time_steps``; ratios to the plain
CNN's step are the figures to quote. Setting: the reproduction's digits CNN (conv 32-64-64 with
BatchNorm, ReLU and max-pool, linear head), batch 64 of 8×8 digits.

Rows: the plain training step; FTWT's step (CE + mask loss, backbone and predictor SGD: one
forward and backward, plus the predictors and the ground truth's sort); static pruning as a
mask on the dense network (what the reproduction's static arm trains: the FLOPs are counted, not
saved); and the same static pruning built with ``torch-pruning`` (PyPI, optional: filters
physically removed, so the saving is realised). The two static forms must give the same outputs
(checked here, eval mode), and their MACs are compared with torch-pruning's own counter. Run:
``python benchmarks/ftwt.py [--quick]`` or ``regzoo bench ftwt``.
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch
import torch.nn.functional as F

from regzoo.methods.ftwt import FTWT
from regzoo.models.digit_cnn import build_cnn, digits_splits
from regzoo.train import time_steps
from regzoo.train.timing import machine_line

KEEP = (0.85, 0.9, 0.4)
"""Static keep shares per block (about the reproduction's FTWT budget at τ = 0.9)."""


def _static_rule(keep):
    def rule(out):
        return keep.to(out.dtype).expand(out.shape[0], -1)

    return rule


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats = 3 if args.quick else 15
    splits = digits_splits(0)
    x, y = splits.x_train[:64], splits.y_train[:64]
    torch.manual_seed(0)
    plain = build_cnn((32, 64, 64))
    masked = copy.deepcopy(plain)
    ftwt = copy.deepcopy(plain)
    handle = FTWT.apply(ftwt, threshold=0.9, predictor_init="random")
    static_handle = FTWT.apply(masked)
    keeps = []
    for block, share in zip(static_handle.blocks, KEEP):
        weight = block.layer.weight.detach()
        count = round(share * weight.shape[0])
        keep = torch.zeros(weight.shape[0])
        keep[weight.abs().sum((1, 2, 3)).argsort(descending=True)[:count]] = 1.0
        keeps.append(keep)
    static_handle.force_masks([_static_rule(k) for k in keeps])

    def sgd(params):
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9)

    models = {"plain": plain, "static_masked": masked}
    optimizers = {name: sgd(model.parameters()) for name, model in models.items()}
    ftwt_backbone, ftwt_predictors = sgd(handle.backbone_parameters()), handle.predictor_optimizer()

    def plain_step(name):
        def step():
            optimizers[name].zero_grad()
            F.cross_entropy(models[name](x), y).backward()
            optimizers[name].step()

        return step

    def ftwt_step():
        ftwt_backbone.zero_grad()
        ftwt_predictors.zero_grad()
        (F.cross_entropy(ftwt(x), y) + handle.penalty()).backward()
        ftwt_backbone.step()
        ftwt_predictors.step()

    steps = {
        "plain": plain_step("plain"),
        "ftwt": ftwt_step,
        "static_masked": plain_step("static_masked"),
    }
    pruned = None
    try:
        import torch_pruning as tp
    except ImportError:
        tp = None
    if tp is not None:
        pruned = copy.deepcopy(plain).eval()
        graph = tp.DependencyGraph().build_dependency(pruned, example_inputs=x[:1], verbose=False)
        convs = [m for m in pruned.body if isinstance(m, torch.nn.Conv2d)]
        for conv, keep in zip(convs, keeps):
            drop = torch.nonzero(keep == 0).flatten().tolist()
            graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=drop).prune()
        masked.eval()
        with torch.no_grad():  # before any step: both forms hold the same weights
            gap = float((pruned(x) - masked(x)).abs().max())
        macs_dense, _ = tp.utils.count_ops_and_params(plain, x[:1])
        macs_pruned, _ = tp.utils.count_ops_and_params(pruned, x[:1])
        masked.train()
        pruned.train()
        models["torch_pruning"] = pruned
        optimizers["torch_pruning"] = sgd(pruned.parameters())
        steps["torch_pruning"] = plain_step("torch_pruning")
    seconds = time_steps(steps, repeats=repeats, inner=3, warmup=2)
    print(f"{machine_line()}\n")
    print("| training step (batch 64) | ms | / plain |\n|---|---:|---:|")
    for name, value in seconds.items():
        print(f"| {name} | {value * 1e3:.2f} | {value / seconds['plain']:.2f} |")
    counted = static_handle.macs(x[:1])
    print(
        f"\nstatic pruning, MACs counted by regzoo: {counted.per_example[0]:.0f} of "
        f"{counted.dense:.0f} dense ({counted.reduction:.1%} fewer)"
    )
    print(
        f"FTWT (untrained random predictors, τ = 0.9): {handle.macs(x).reduction:.1%} fewer "
        "MACs counted on this batch"
    )
    if pruned is None:
        print("torch-pruning: skipped (pip install 'regzoo[peers]' or torch-pruning)")
        return
    print(
        f"torch-pruning: max |pruned − masked| = {gap:.2e} (eval mode); its counter: "
        f"{macs_pruned:.0f} of {macs_dense:.0f} ({1 - macs_pruned / macs_dense:.1%} fewer; it "
        "also counts BatchNorm, ReLU and pooling)"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
