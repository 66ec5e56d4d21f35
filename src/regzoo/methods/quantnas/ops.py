r"""QuantNAS's layers: the mixed (operation × bit-width) layer, a fixed quantised conv and ADQ.

:class:`MixedQuantOp` holds one weight per candidate operation o, shared by all its bit-widths
b ∈ B, and mixes the candidates with the layer's probabilities p(o, b) (one softmax over all
|O|·|B| pairs). Three ways to form the mixture (``mode``/``direct_form``):

* ``mode="noise"`` (QuantNAS; official ``QuaNoiseConv2d``): per op, with a_b = p(o, b),
  a_fp = 1/(|B| + 1) and a'_b = a_b/(Σ_b a_b + a_fp),

  .. math::

      \tilde W = a_{fp} W + \sum_b a'_b\,(W + \Delta_b(W)),\quad
      \tilde X = a_{fp}\,\mathrm{ReLU}(X) + \sum_b a'_b\,(\mathrm{ReLU}(X) +
      \Delta_b(\mathrm{ReLU}(X))),\quad
      y_o = \mathrm{conv}(\tilde X, \tilde W)\cdot\textstyle\sum_b a_b

  — one convolution per op whatever |B|. ``detach_noisy=True`` is the official code's form
  ((W + Δ_b) detached: W and X get gradient through the a_fp share only);
* ``mode="direct", direct_form="shared"`` (official ``SharedQAConv2d``): the same single
  convolution on :math:`\tilde W = \sum_b \hat a_b\,q^{LSQ}_b(W)`, :math:`\tilde X = \sum_b
  \hat a_b\,q^{HWGQ}_b(X)`, â_b = a_b/Σ_b a_b, output scaled by Σ_b a_b;
* ``mode="direct", direct_form="per_bit"``: the paper's mixture written out,
  :math:`y_o = \sum_b a_b\,\mathrm{conv}(q^{HWGQ}_b(X), q^{LSQ}_b(W))` — one convolution per
  (op, bit).

Ops whose probabilities are all 0 are skipped (a one-hot p runs one op). Expected BitOps of the
layer in the search (official ``_fetch_info``): Σ_{o,b} p(o, b)·FLOPs(o)·b with FLOPs =
2·MACs (no bias). :class:`ADQ` is the paper's Adaptive Deviation for Quantization around a
residual body f with skip s: out = f(BN(x))·φ(std(s)) + s, std over (C, H, W) per sample, φ a
learned 1×1 conv on that scalar (w = 1.5, b = 0 at init); ``enabled=False`` is the plain
residual f(x) + s (official ``skip_mode``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.methods.quantnas.quantizers import (
    NOISE_KINDS,
    LSQQuantizer,
    check_bits,
    hwgq,
    quantization_noise,
)

PRIMITIVES: dict[str, tuple[int, int, int] | None] = {
    "conv1x1": (1, 1, 1),
    "conv3x3": (3, 1, 1),
    "conv5x5": (5, 1, 1),
    "conv1x1_g2": (1, 2, 1),
    "conv3x3_g2": (3, 2, 1),
    "conv5x5_g2": (5, 2, 1),
    "conv3x3_d2": (3, 1, 2),
    "skip": None,
}
"""Candidate operations: (kernel, groups, dilation) of a 'same'-padded conv, or ``None`` for the
identity (official ``simple_*``, ``simple_*_grouped_2``, ``simple_3x3_d2``, ``skip_connect``)."""
MODES = ("noise", "direct")
DIRECT_FORMS = ("shared", "per_bit")


def check_ops(name: str, ops: Sequence[str], c_in: int, c_out: int) -> tuple[str, ...]:
    """Validate a list of candidate operations for a (c_in → c_out) layer."""
    if isinstance(ops, str) or not isinstance(ops, Sequence) or len(ops) == 0:
        raise ValueError(
            f"{name} must be a non-empty list of operations from {tuple(PRIMITIVES)}, got {ops!r}"
        )
    for op in ops:
        if op not in PRIMITIVES:
            raise ValueError(f"{name}: unknown operation {op!r}; choose from {tuple(PRIMITIVES)}")
        spec = PRIMITIVES[op]
        if spec is None and c_in != c_out:
            raise ValueError(
                f"{name}: 'skip' needs c_in == c_out, got {c_in} → {c_out}; drop it "
                "from this layer's operations"
            )
        if spec is not None and (c_in % spec[1] or c_out % spec[1]):
            raise ValueError(
                f"{name}: {op!r} has {spec[1]} groups, which must divide c_in={c_in} "
                f"and c_out={c_out}"
            )
    if len(set(ops)) != len(ops):
        raise ValueError(f"{name} lists an operation twice: {ops!r}")
    return tuple(ops)


def check_bit_list(name: str, bits: Sequence[int]) -> tuple[int, ...]:
    """Validate a non-empty list of distinct searchable bit-widths."""
    if isinstance(bits, (str, int)) or not isinstance(bits, Sequence) or len(bits) == 0:
        raise ValueError(
            f"{name} must be a non-empty list of bit-widths such as [4, 8], got {bits!r}"
        )
    checked = tuple(check_bits(name, b) for b in bits)
    if len(set(checked)) != len(checked):
        raise ValueError(f"{name} lists a bit-width twice: {bits!r}")
    return checked


def conv_macs(op: str, c_in: int, c_out: int, height: int, width: int) -> int:
    """Multiply-accumulates of ``op`` on a (c_in, height, width) input ('same' padding)."""
    spec = PRIMITIVES[op]
    if spec is None:
        return 0
    kernel, groups, _ = spec
    return c_in * c_out * kernel * kernel // groups * height * width


class _OpWeight(nn.Module):
    """One candidate's conv weight (shared by its bit-widths) and, in direct mode, its LSQ steps."""

    def __init__(
        self,
        op: str,
        c_in: int,
        c_out: int,
        bits: tuple[int, ...],
        *,
        with_lsq: bool,
        train_steps: bool,
    ) -> None:
        super().__init__()
        kernel, groups, dilation = PRIMITIVES[op]  # type: ignore[misc]
        conv = nn.Conv2d(
            c_in, c_out, kernel, padding="same", groups=groups, dilation=dilation, bias=False
        )
        self.weight = conv.weight
        self.groups, self.dilation, self.padding = groups, dilation, dilation * (kernel - 1) // 2
        self.lsq = nn.ModuleList(
            [LSQQuantizer(b, self.weight, trainable=train_steps) for b in bits] if with_lsq else []
        )

    def conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, padding=self.padding, dilation=self.dilation, groups=self.groups)


class MixedQuantOp(nn.Module):
    """A searchable layer over ``ops`` × ``bits`` with weights shared across bit-widths.

    Args:
        c_in, c_out: channels.
        ops: candidate operations (keys of :data:`PRIMITIVES`).
        bits: candidate bit-widths of weights and activations.
        mode: ``"noise"`` (QuantNAS) or ``"direct"`` (LSQ/HWGQ fake quantisation).
        noise: ``"gaussian"`` or ``"uniform"`` quantisation noise (noise mode).
        detach_noisy: the official code's detached noisy copies (noise mode).
        direct_form: ``"shared"`` (one conv per op, official) or ``"per_bit"`` (direct mode).
        train_steps: learn the LSQ steps (direct mode; the official search never trains them).

    ``forward(x, probs)`` takes the layer's probabilities p(o, b), a vector of length
    ``len(ops) * len(bits)`` ordered op-major (op 0 at every bit, then op 1, …).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        ops: Sequence[str],
        bits: Sequence[int],
        *,
        mode: str = "noise",
        noise: str = "gaussian",
        detach_noisy: bool = False,
        direct_form: str = "shared",
        train_steps: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("c_in", c_in), ("c_out", c_out)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.ops = check_ops("ops", ops, c_in, c_out)
        self.bits = check_bit_list("bits", bits)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
        if direct_form not in DIRECT_FORMS:
            raise ValueError(f"direct_form must be one of {DIRECT_FORMS}, got {direct_form!r}")
        self.c_in, self.c_out = c_in, c_out
        self.mode, self.noise, self.detach_noisy = mode, noise, bool(detach_noisy)
        self.direct_form = direct_form
        self.weights = nn.ModuleDict(
            {
                op: _OpWeight(
                    op, c_in, c_out, self.bits, with_lsq=mode == "direct", train_steps=train_steps
                )
                for op in self.ops
                if PRIMITIVES[op] is not None
            }
        )

    @property
    def num_choices(self) -> int:
        """|O|·|B|, the length of the layer's probability vector."""
        return len(self.ops) * len(self.bits)

    def check_probs(self, probs: torch.Tensor) -> None:
        if (
            not isinstance(probs, torch.Tensor)
            or probs.ndim != 1
            or probs.numel() != self.num_choices
        ):
            shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else type(probs)
            raise ValueError(
                f"probs must be a vector of {self.num_choices} = {len(self.ops)} ops "
                f"× {len(self.bits)} bits probabilities, got {shape}"
            )

    def forward(self, x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        self.check_probs(probs)
        if x.ndim != 4 or x.shape[1] != self.c_in:
            raise ValueError(f"x must be (N, {self.c_in}, H, W), got {tuple(x.shape)}")
        out = None
        relu = torch.relu(x) if self.mode == "noise" else None
        for op, chunk in zip(self.ops, probs.split(len(self.bits))):
            if not bool((chunk != 0).any()):
                continue
            total = chunk.sum()
            if PRIMITIVES[op] is None:
                y = x * total
            elif self.mode == "noise":
                y = self._noise(self.weights[op], relu, chunk) * total
            elif self.direct_form == "shared":
                y = self._shared(self.weights[op], x, chunk) * total
            else:
                y = self._per_bit(self.weights[op], x, chunk)
            out = y if out is None else out + y
        if out is None:
            raise ValueError("probs is all zeros: at least one (op, bit) needs weight")
        return out

    def _noise(self, holder: _OpWeight, x: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        w = holder.weight
        a_fp = 1.0 / (len(self.bits) + 1)
        scaled = chunk / (chunk.sum() + a_fp)
        mixed_w, mixed_x = a_fp * w, a_fp * x
        for a, bits in zip(scaled, self.bits):
            noisy_w = w + quantization_noise(w, bits, self.noise)
            noisy_x = x + quantization_noise(x, bits, self.noise)
            if self.detach_noisy:
                noisy_w, noisy_x = noisy_w.detach(), noisy_x.detach()
            mixed_w = mixed_w + a * noisy_w
            mixed_x = mixed_x + a * noisy_x
        return holder.conv(mixed_x, mixed_w)

    def _shared(self, holder: _OpWeight, x: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        normed = chunk / chunk.sum()
        mixed_w = sum(a * q(holder.weight) for a, q in zip(normed, holder.lsq))
        mixed_x = sum(a * hwgq(x, b) for a, b in zip(normed, self.bits))
        return holder.conv(mixed_x, mixed_w)

    def _per_bit(self, holder: _OpWeight, x: torch.Tensor, chunk: torch.Tensor) -> torch.Tensor:
        return sum(
            a * holder.conv(hwgq(x, b), q(holder.weight))
            for a, b, q in zip(chunk, self.bits, holder.lsq)
            if bool(a != 0)
        )

    def expected_bitops(self, probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Σ_{o,b} p(o, b)·FLOPs(o)·b on an (height, width) input, FLOPs = 2·MACs (search form)."""
        self.check_probs(probs)
        costs = torch.tensor(
            [
                2.0 * conv_macs(op, self.c_in, self.c_out, height, width) * b
                for op in self.ops
                for b in self.bits
            ],
            dtype=probs.dtype,
            device=probs.device,
        )
        return (probs * costs).sum()


class QuantConv(nn.Module):
    """A fixed conv of the final network: LSQ weights and HWGQ activations at ``bits``.

    ``bits=32`` is full precision (ReLU input, float weights); ``op="skip"`` is the identity.
    """

    def __init__(
        self, c_in: int, c_out: int, op: str, bits: int, *, train_steps: bool = True
    ) -> None:
        super().__init__()
        check_ops("op", [op], c_in, c_out)
        self.op, self.c_in, self.c_out = op, c_in, c_out
        self.bits = check_bits("bits", bits, allow_full=True)
        self.holder = (
            None
            if PRIMITIVES[op] is None
            else _OpWeight(op, c_in, c_out, (bits,), with_lsq=True, train_steps=train_steps)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.holder is None:
            return x
        return self.holder.conv(hwgq(x, self.bits), self.holder.lsq[0](self.holder.weight))

    def bitops(self, height: int, width: int) -> float:
        """MACs·b_w·b_a = FLOPs·b²/2 (official final-model count); 0 for the identity."""
        return float(conv_macs(self.op, self.c_in, self.c_out, height, width) * self.bits**2)


class ADQ(nn.Module):
    """Adaptive Deviation for Quantization: out = f(BN(x))·φ(std(s)) + s (module docstring)."""

    def __init__(self, channels: int, *, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = bool(enabled)
        if self.enabled:
            self.bn = nn.BatchNorm2d(channels)
            self.phi = nn.Conv2d(1, 1, 1)
            with torch.no_grad():
                self.phi.weight.fill_(1.5)
                self.phi.bias.zero_()

    def forward(
        self,
        x: torch.Tensor,
        body: Callable[[torch.Tensor], torch.Tensor],
        skip: torch.Tensor | None = None,
    ) -> torch.Tensor:
        skip = x if skip is None else skip
        if not self.enabled:
            return body(x) + skip
        std = skip.std(dim=(1, 2, 3), keepdim=True)
        return body(self.bn(x)) * self.phi(std) + skip
