r"""QuantNAS's three quantisers: quantisation noise, LSQ weights and HWGQ activations.

* Quantisation noise (paper, section "Quantization noise"; official ``quant_noise``): for a
  tensor t and b bits,
  :math:`\Delta_b(t) = \operatorname{sg}\big((\max t - \min t)/(2^b - 1)\big)\cdot
  \varepsilon/2`, ε ~ N(0, I) (``"gaussian"``, std = (max − min)/(2^b − 1)/2) or
  :math:`\Delta_b(t) = \operatorname{sg}\big((\max t - \min t)/(2^b - 1)\big)\cdot u`,
  u ~ U(−½, ½) (``"uniform"``: the rounding error of a b-bit uniform grid over the range).
* LSQ (Esser et al. 2020, learned step size; official ``LsqQuan``, per output channel, signed
  range [−2^{b−1}, 2^{b−1} − 1]): :math:`q(w) = s\cdot\lfloor\operatorname{clip}(w/s,
  n_-, n_+)\rceil` with a straight-through round, the step s initialised to
  2·mean|w|/√n₊ and its gradient scaled by 1/√(n₊·numel).
* HWGQ (Cai et al. 2017, half-wave Gaussian quantiser; official ``HWGQ``): activations clipped
  to [0, c_b·(2^b − 1)] and rounded to multiples of the fixed step c_b (the optimal step for a
  unit Gaussian's positive half), straight-through round. 32 bits: a plain ReLU.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NOISE_KINDS = ("gaussian", "uniform")
FULL_PRECISION = 32
"""A bit-width of 32 means no quantisation (the full-precision reference)."""
HWGQ_STEPS = {
    1: 1.0576462792297525,
    2: 0.6356366866203315,
    3: 0.3720645813370479,
    4: 0.21305606790772952,
    8: 0.020300567823662602,
    16: 9.714825915156693e-05,
}
"""HWGQ's step per bit-width (the official table; these are the bit-widths searchable)."""


def check_bits(name: str, bits: object, *, allow_full: bool = False) -> int:
    """``bits`` as an int in HWGQ's table (or 32 when ``allow_full``), else a clear error."""
    allowed = sorted(HWGQ_STEPS) + ([FULL_PRECISION] if allow_full else [])
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in allowed:
        raise ValueError(f"{name} must be one of {allowed} bits, got {bits!r}")
    return bits


def quantization_noise(
    t: torch.Tensor, bits: int, kind: str = "gaussian", generator: torch.Generator | None = None
) -> torch.Tensor:
    """Δ_b(t): noise of the magnitude of b-bit uniform quantisation over t's range (detached)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"kind must be one of {NOISE_KINDS}, got {kind!r}")
    check_bits("bits", bits)
    with torch.no_grad():
        unit = (t.max() - t.min()) / (2**bits - 1)
        if kind == "gaussian":
            eps = torch.randn(t.shape, generator=generator, device=t.device, dtype=t.dtype) / 2
        else:
            eps = torch.rand(t.shape, generator=generator, device=t.device, dtype=t.dtype) - 0.5
        return unit * eps


class _RoundPass(torch.autograd.Function):
    """Round in the forward pass, identity in the backward pass (straight-through)."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


def round_pass(x: torch.Tensor) -> torch.Tensor:
    """Straight-through rounding: ⌊x⌉ forward, gradient 1 backward."""
    return _RoundPass.apply(x)


class LSQQuantizer(nn.Module):
    """Learned-step-size fake quantisation of a weight, one step per output channel.

    Args:
        bits: b (32: identity).
        weight: the weight whose shape and magnitude initialise the steps (2·mean|w|/√n₊ per
            output channel).
        trainable: learn the steps (paper); ``False`` keeps them at their initial value, as the
            official search code does by accident (its quantisers live in a plain list).
    """

    def __init__(self, bits: int, weight: torch.Tensor, *, trainable: bool = True) -> None:
        super().__init__()
        self.bits = check_bits("bits", bits, allow_full=True)
        self.n_neg = -(2 ** (self.bits - 1))
        self.n_pos = 2 ** (self.bits - 1) - 1
        with torch.no_grad():
            dims = list(range(1, weight.ndim))
            init = (
                weight.detach().abs().mean(dim=dims, keepdim=True)
                * 2
                / math.sqrt(max(self.n_pos, 1))
            )
            init = init.clamp_min(1e-8)
        self.step = nn.Parameter(init, requires_grad=trainable)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.bits >= FULL_PRECISION:
            return w
        scale = 1.0 / math.sqrt(self.n_pos * w.numel())
        s = (self.step - self.step * scale).detach() + self.step * scale
        return round_pass(torch.clamp(w / s, self.n_neg, self.n_pos)) * s


def hwgq(x: torch.Tensor, bits: int) -> torch.Tensor:
    """HWGQ activation quantisation (ReLU at 32 bits); straight-through round."""
    if bits >= FULL_PRECISION:
        return torch.relu(x)
    step = HWGQ_STEPS[bits]
    clipped = x.clamp(0.0, step * (2**bits - 1))
    return round_pass(clipped / step) * step
