r"""Structured best-response layers and per-example dropout (STN paper §4.2, eq. 10–11).

Every layer holds an "elementary" weight set (W_e, b_e) and a "hyper" set (W_h, b_h) of the
same shape; the hyperparameters gate the hyper set per output unit (per channel for a
convolution):

.. math::

    \hat y = s\,(W_e x + b_e) + a(\tilde\lambda) \odot (W_h x) + c(\tilde\lambda) \odot b_h,
    \qquad [a; c] = U \tilde\lambda

with a learned scalar s (initialised to 1), U ∈ R^{2·out × h} without bias, initialised
N(0, 0.01²), and both weight sets U(±1/√fan_in) as in the official ``hyperlinear.py``. For a
two-layer linear network with a Jacobian-norm penalty the exact best response has this form
(paper §4.1); in general it is a cheap local approximation whose cost is two weight sets per
layer. ``x`` holds one example per row and ``λ̃`` one hyperparameter row per example, so every
example can use its own perturbed hyperparameters in one forward pass.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_positive_int
from regzoo.methods.stn.hyperparameters import HyperBatch


class _BestResponse(nn.Module):
    """The gate ``[a; c] = U λ̃`` and the scalar ``s`` shared by linear and conv layers."""

    def __init__(self, out_features: int, hyper_dim: int) -> None:
        super().__init__()
        check_positive_int("hyper_dim", hyper_dim)
        self.out_features = out_features
        self.hyper_dim = hyper_dim
        self.gate = nn.Linear(hyper_dim, 2 * out_features, bias=False)
        self.elem_scale = nn.Parameter(torch.ones(1))
        nn.init.normal_(self.gate.weight, std=0.01)

    def gates(self, net_input: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        if net_input.shape != (batch, self.hyper_dim):
            raise ValueError(f"hyperparameter input must have shape ({batch}, {self.hyper_dim}) "
                             f"(one row per example), got {tuple(net_input.shape)}")
        a, c = self.gate(net_input).split(self.out_features, dim=1)
        return a, c


def _uniform_fan_in(tensor: torch.Tensor, fan_in: int) -> None:
    bound = 1.0 / math.sqrt(fan_in)
    nn.init.uniform_(tensor, -bound, bound)


class HyperLinear(_BestResponse):
    """``nn.Linear`` with an STN best-response gate (eq. above); ``forward(x, net_input)``."""

    def __init__(self, in_features: int, out_features: int, hyper_dim: int,
                 bias: bool = True) -> None:
        check_positive_int("in_features", in_features)
        check_positive_int("out_features", out_features)
        super().__init__(out_features, hyper_dim)
        self.in_features = in_features
        self.elem_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.hyper_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.elem_bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.hyper_bias = nn.Parameter(torch.empty(out_features)) if bias else None
        for p in (self.elem_weight, self.hyper_weight, self.elem_bias, self.hyper_bias):
            if p is not None:
                _uniform_fan_in(p, in_features)

    def forward(self, x: torch.Tensor, net_input: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"x must have shape (batch, {self.in_features}), got "
                             f"{tuple(x.shape)}")
        a, c = self.gates(net_input, x.shape[0])
        out = self.elem_scale * F.linear(x, self.elem_weight, self.elem_bias)
        out = out + a * F.linear(x, self.hyper_weight)
        if self.hyper_bias is not None:
            out = out + c * self.hyper_bias
        return out

    def effective_weight(self, net_input: torch.Tensor) -> torch.Tensor:
        """The per-example weight matrices ``s W_e + diag(a_i) W_h`` (B × out × in).

        For penalties on the weights themselves (an L2 coefficient as the tuned hyperparameter).
        """
        a, _ = self.gates(net_input, net_input.shape[0])
        return self.elem_scale * self.elem_weight + a.unsqueeze(2) * self.hyper_weight


class HyperConv2d(_BestResponse):
    """``nn.Conv2d`` with the best-response gate applied per output channel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, hyper_dim: int,
                 *, stride: int = 1, padding: int = 0, bias: bool = True) -> None:
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("kernel_size", kernel_size)
        super().__init__(out_channels, hyper_dim)
        self.stride, self.padding = stride, padding
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        fan_in = in_channels * kernel_size * kernel_size
        self.elem_weight = nn.Parameter(torch.empty(shape))
        self.hyper_weight = nn.Parameter(torch.empty(shape))
        self.elem_bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.hyper_bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        for p in (self.elem_weight, self.hyper_weight, self.elem_bias, self.hyper_bias):
            if p is not None:
                _uniform_fan_in(p, fan_in)

    def forward(self, x: torch.Tensor, net_input: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"x must have shape (batch, channels, H, W), got {tuple(x.shape)}")
        a, c = self.gates(net_input, x.shape[0])

        def conv(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
            return F.conv2d(x, weight, bias, stride=self.stride, padding=self.padding)

        out = self.elem_scale * conv(self.elem_weight, self.elem_bias)
        out = out + a[:, :, None, None] * conv(self.hyper_weight, None)
        if self.hyper_bias is not None:
            out = out + (c * self.hyper_bias)[:, :, None, None]
        return out


def per_example_dropout(x: torch.Tensor, rates: torch.Tensor, training: bool,
                        *, channels: bool = False) -> torch.Tensor:
    """Inverted dropout with one rate per example (``rates``: B), as the official ``dropout.py``.

    With ``channels=True`` whole channels (dim 1 of a B × C × … tensor) drop together
    (``dropout_2d``). The rates are detached: the regulariser is not differentiated (§4.3).
    """
    if not training:
        return x
    if rates.shape != (x.shape[0],):
        raise ValueError(f"rates must have shape ({x.shape[0]},), one per example, got "
                         f"{tuple(rates.shape)}")
    keep = 1.0 - rates.detach().to(x.dtype)
    mask_shape = (x.shape[0], x.shape[1]) if channels else x.shape
    view = (x.shape[0],) + (1,) * (len(mask_shape) - 1)
    mask = torch.bernoulli(keep.view(view).expand(mask_shape)) / keep.view(view)
    if channels:
        mask = mask.view(*mask.shape, *(1,) * (x.ndim - 2))
    return x * mask


class HyperMLP(nn.Module):
    """An MLP of :class:`HyperLinear` layers with a tuned dropout rate after each hidden layer.

    ``forward(x, hyper)`` reads the rate of hidden layer k from ``hyper[dropout_names[k]]``
    (spec §5: per-layer dropout, 64-256-256-10 on digits).
    """

    def __init__(self, in_features: int, num_classes: int, hidden: Sequence[int],
                 dropout_names: Sequence[str], hyper_dim: int) -> None:
        super().__init__()
        if len(dropout_names) != len(hidden):
            raise ValueError(f"dropout_names needs one name per hidden layer ({len(hidden)}), "
                             f"got {list(dropout_names)}")
        sizes = [in_features, *hidden, num_classes]
        self.layers = nn.ModuleList(HyperLinear(i, o, hyper_dim)
                                    for i, o in itertools.pairwise(sizes))
        self.dropout_names = tuple(dropout_names)

    def forward(self, x: torch.Tensor, hyper: HyperBatch) -> torch.Tensor:
        for layer, name in zip(self.layers[:-1], self.dropout_names):
            x = F.relu(layer(x, hyper.net_input))
            x = per_example_dropout(x, hyper[name], self.training)
        return self.layers[-1](x, hyper.net_input)
