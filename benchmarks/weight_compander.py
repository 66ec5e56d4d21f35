"""Weight Compander benchmark: training-step time with WC vs plain, vs the paper's formula, folded.

One process, one thread, steps interleaved by ``regzoo.train.time_steps``; ratios are the figures
to quote (design.md §7). The paper reports 7-14 % slower training and no inference cost after
folding.

Arms, on the same model, batch and optimiser (SGD, momentum 0.9; a step is zero_grad, forward,
cross-entropy, backward, update):

* ``plain``: the unwrapped model.
* ``fixed``, ``learned``: ``regzoo.methods.weight_compander.WeightCompander`` with a = b = 0.7
  fixed, or learned per layer from a = 0.5, b = 1.0 (a, b = softplus of raw scalars).
* ``folded``: the fixed compander after ``merge()`` (plain layers holding Ψ(V)).
* ``reference fixed``, ``reference learned``: WC written here from the paper's eq. 1 in a few
  lines (no official code exists): each Linear/Conv layer's weight is replaced by a raw parameter
  V₀ = b·tan(W₀/a) and a forward pre-hook sets ``layer.weight = a·arctan(V/b)`` before the
  layer runs, so the compander is applied to each weight in the forward, nothing else. Before
  any timing, each reference arm is checked against regzoo's on the same inputs, in float64:
  logits, gradients of V (and of the raw a, b) and the weights after three SGD steps.

Where the time goes (cProfile over 200 MLP steps, 2026-12-07): both arms run the same tensor
ops (per layer forward one ``div``, ``atan`` and ``mul``, and their backward); regzoo adds only
Python calls (``torch.nn.utils.parametrize`` evaluates each weight through the
``ParametrizationList``, ``_Compand`` and ``_Shape`` modules): about 40 more calls a step, a
few tens of µs against a step of several ms. Interleaved, 60 rounds × 5 steps, three times:
regzoo / reference 0.99–1.02 (MLP) and 0.94–1.03 (CNN), fixed and learned, within the noise of
a loaded machine.

Run: ``python benchmarks/weight_compander.py [--quick]`` or ``regzoo bench weight_compander``.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F
from _agreement import require_agreement
from torch import nn

from regzoo.data import load_digits
from regzoo.methods.weight_compander import WeightCompander
from regzoo.models import CNN, MLP
from regzoo.train import time_steps
from regzoo.train.timing import machine_line

FIXED_AB, LEARNED_START_AB = (0.7, 0.7), (0.5, 1.0)
AGREEMENT_STEPS, TOL = 3, 1e-12


def softplus_inverse(value: float) -> float:
    return value + math.log(-math.expm1(-value))


def set_companded_weight(layer: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    """Forward pre-hook: the layer's weight is a·arctan(V/b) of its raw V (paper eq. 1)."""
    if layer.learn_ab:
        a, b = F.softplus(layer.raw_a), F.softplus(layer.raw_b)
    else:
        a, b = layer.a, layer.b
    layer.weight = a * torch.atan(layer.raw_weight / b)


def paper_compander(model: nn.Module, learn: bool) -> nn.Module:
    """Compand every Linear/Conv2d weight of ``model`` in place, as the paper writes it."""
    a, b = LEARNED_START_AB if learn else FIXED_AB
    for layer in model.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            initial = layer.weight.detach()
            del layer.weight
            layer.raw_weight = nn.Parameter(b * torch.tan(initial / a))
            layer.learn_ab = learn
            if learn:
                layer.raw_a = nn.Parameter(torch.tensor(softplus_inverse(a), dtype=initial.dtype))
                layer.raw_b = nn.Parameter(torch.tensor(softplus_inverse(b), dtype=initial.dtype))
            else:
                layer.a, layer.b = a, b
            layer.register_forward_pre_hook(set_companded_weight)
    return model


def make_model(kind: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    model = MLP(64, 10, hidden=(512, 512)) if kind == "MLP" else CNN((8, 8), 10)
    return model.to(dtype)


def build(kind: str, variant: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    model = make_model(kind, dtype)
    if variant.startswith("reference"):
        return paper_compander(model, learn=variant == "reference learned")
    if variant != "plain":
        handle = WeightCompander.apply(model, learn=variant == "learned")
        if variant == "folded":
            handle.merge()
    return model.to(dtype)  # WC creates a, b in the default dtype


def companded_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def start_from_regzoo(reference: nn.Module, regzoo: nn.Module) -> None:
    """Give the reference regzoo's V, a, b (regzoo's a, b start as float32 scalars)."""
    with torch.no_grad():
        for ref, ours in zip(companded_layers(reference), companded_layers(regzoo)):
            ref.raw_weight.copy_(ours.parametrizations.weight.original)
            shape = ours.parametrizations.weight[0].shape
            if ref.learn_ab:
                ref.raw_a.copy_(shape.raw_a)
                ref.raw_b.copy_(shape.raw_b)
            else:
                ref.a, ref.b = float(shape.fixed_a), float(shape.fixed_b)


def raw_parameters(model: nn.Module, regzoo: bool) -> list[torch.Tensor]:
    """V of every companded layer, then the raw a, b of each layer (if learned)."""
    raws, shapes = [], []
    for layer in companded_layers(model):
        if regzoo:
            raws.append(layer.parametrizations.weight.original)
            shapes += list(layer.parametrizations.weight[0].shape.parameters())
        else:
            raws.append(layer.raw_weight)
            shapes += [layer.raw_a, layer.raw_b] if layer.learn_ab else []
    return raws + shapes


def check_agreement(x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """Max |diff| of logits, raw gradients and updated weights, regzoo vs reference, float64.

    Both start from the same V, a, b; differences are relative to max(1, the reference's
    largest |entry|): the gradients of the learned a, b sum over every weight of a layer.
    """
    lines = []
    x = x.to(torch.float64)
    for kind in ("MLP", "CNN"):
        for learn in (False, True):
            models = {"regzoo": build(kind, "learned" if learn else "fixed", torch.float64),
                      "reference": build(kind, f"reference {'learned' if learn else 'fixed'}",
                                         torch.float64)}
            start_from_regzoo(models["reference"], models["regzoo"])
            logits, grads = {}, {}
            for name, model in models.items():
                params = raw_parameters(model, regzoo=name == "regzoo")
                optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
                for step in range(AGREEMENT_STEPS):
                    optimizer.zero_grad(set_to_none=True)
                    out = model(x)
                    F.cross_entropy(out, y).backward()
                    if step == 0:
                        logits[name] = out.detach()
                        grads[name] = torch.cat([p.grad.reshape(-1) for p in params])
                    optimizer.step()
                with torch.no_grad():
                    model(x)  # the reference's hook sets the weights from the updated V
            weights = {name: torch.cat([m.weight.detach().reshape(-1)
                                        for m in companded_layers(model)])
                       for name, model in models.items()}
            diffs = {key: float((value["regzoo"] - value["reference"]).abs().max()
                                / value["reference"].abs().max().clamp_min(1.0))
                     for key, value in (("logits", logits), ("grad", grads),
                                        ("weights", weights))}
            variant = f"{kind}, {'learned' if learn else 'fixed'} a, b"
            require_agreement(f"regzoo and reference WC ({variant})", diffs, TOL,
                              measure="max relative |diff|")
            lines.append(f"{variant}: max relative |diff| logits {diffs['logits']:.1e}, grad "
                         f"{diffs['grad']:.1e}, weights after {AGREEMENT_STEPS} SGD steps "
                         f"{diffs['weights']:.1e}")
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    repeats, inner = (5, 3) if args.quick else (60, 5)
    data = load_digits(seed=0)
    print(f"{machine_line()}{', --quick' if args.quick else ''}")
    agreement = check_agreement(data.x_train[:96], data.y_train[:96])
    print(f"\nAgreement of regzoo WC and the paper-formula reference (float64, max relative "
          f"|diff| ≤ {TOL:g}): PASS")
    for line in agreement:
        print(f"- {line}")
    print("\n## Training step (zero_grad + forward + CE + backward + SGD step), digits\n")
    print("| model | batch | plain µs | WC fixed / plain | reference fixed / plain | fixed / "
          "reference | WC learned / plain | reference learned / plain | learned / reference "
          "| folded / plain |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    variants = ("plain", "fixed", "reference fixed", "learned", "reference learned", "folded")
    for kind in ("MLP", "CNN"):
        for batch in (64, 128):
            x, y = data.x_train[:batch], data.y_train[:batch]
            steps = {}
            for variant in variants:
                model = build(kind, variant)
                optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

                def step(model: nn.Module = model, optimizer=optimizer, x=x, y=y) -> None:
                    optimizer.zero_grad(set_to_none=True)
                    F.cross_entropy(model(x), y).backward()
                    optimizer.step()

                steps[variant] = step
            t = time_steps(steps, repeats=repeats, inner=inner)
            r = {variant: t[variant] / t["plain"] for variant in variants}
            print(f"| {kind} | {batch} | {t['plain'] * 1e6:.0f} | {r['fixed']:.3f} | "
                  f"{r['reference fixed']:.3f} | {t['fixed'] / t['reference fixed']:.3f} | "
                  f"{r['learned']:.3f} | {r['reference learned']:.3f} | "
                  f"{t['learned'] / t['reference learned']:.3f} | {r['folded']:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
