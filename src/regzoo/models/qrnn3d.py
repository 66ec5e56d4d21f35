"""QRNN3D: the 3-D quasi-recurrent denoising network that HyDe ships.

Wei, Fu, Huang, "3D Quasi-Recurrent Neural Network for Hyperspectral Image Denoising", IEEE
TNNLS 2020, arXiv 2003.04547; official code https://github.com/Vandermode/QRNN3D, re-packaged
in HyDe's ``hyde/nn/models/qrnn``.

HyDe (IGARSS 2022) trains QRNN3D on 31-band ground-level cubes and applies it to cubes of any
band count; this module is the network, :mod:`regzoo.methods.hyde.dnn` trains it and runs it
with sliding windows.

The building block is the paper's quasi-recurrent unit (QRU3D). A 3-D convolution
of the input feature map ``X`` (channels × bands × rows × cols) gives a candidate ``Z`` and a
forget gate ``F``; a recurrence along the band axis ``t`` then mixes them::

    Z = tanh(W_z ∗ X),   F = σ(W_f ∗ X)
    h_t = f_t ⊙ h_{t−1} + (1 − f_t) ⊙ z_t          (h_0 = 0)

so the convolution sees a 3-band neighbourhood and the recurrence carries information along the
whole spectrum, with no weight tied to a band count: the same weights run on any number of bands.
The network (the paper's encoder–decoder; official ``QRNNREDC3D`` with ``channels=16,
num_half_layer=5, sample_idx=[1, 3]``, the ``qrnn3d`` architecture of HyDe):

* a bidirectional QRU3D feature extractor (1 → C channels; gates ``Z, F₁, F₂``, the forward and
  backward recurrences summed),
* an encoder of ``num_half_layer`` QRU3D layers; those listed in ``sample_idx`` halve rows and
  columns (stride (1, 2, 2)) and double the channels,
* a mirrored decoder (trilinear ×(1, 2, 2) upsampling then a convolution where the encoder
  downsampled), each layer's input plus the matching encoder output (additive skips),
* a bidirectional QRU3D reconstructor (C → 1), plus the network input (global residual).

Recurrence directions alternate layer by layer through encoder and decoder ("alternating
directional structure", which removes the causal dependency of one-way recurrences). Every
convolution is 3×3×3 and preceded by a BatchNorm of its input (official ``BasicConv3d``:
BatchNorm, then a bias-free convolution).

Differences from the official code, none changing the function class: the decoder's stride-1
``ConvTranspose3d`` layers are written as ``Conv3d`` (a stride-1, padding-1 transposed
convolution is a convolution with a flipped kernel); inputs whose rows or columns are not
multiples of ``2 ** len(sample_idx)`` are padded by edge replication and cropped back (the
official network needs such sizes); the initialisation is PyTorch's default (the official
training script re-initialises convolutions Kaiming-normal, fan-out), with an optional identity
start (``identity_init``) for short trainings.

Cost (counted with hooks): a forward takes 155 k multiply-adds per input voxel at C = 16 and
39 k at C = 8, linear in rows × cols × bands; the layers' outputs hold ≈ 7 C floats per input
voxel (109 at C = 16), so the memory of one call is proportional to the window it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.checks import check_choice, check_positive_int, check_tensor


class QRU3D(nn.Module):
    """One quasi-recurrent 3-D unit: a gated 3-D convolution, then f-pooling over bands.

    Args:
        in_channels, hidden_channels: feature channels in and out.
        stride: the convolution's stride (``(1, 2, 2)`` downsamples rows and columns).
        upsample: upsample rows and columns ×2 (trilinear) before the convolution (decoder).
        bidirectional: run the recurrence both ways with two forget gates and sum (first and
            last layers of QRNN3D).
        act: ``"tanh"`` (paper) or ``"relu"`` for the candidate ``Z``.
    """

    def __init__(self, in_channels: int, hidden_channels: int, *,
                 stride: tuple[int, int, int] = (1, 1, 1), upsample: bool = False,
                 bidirectional: bool = False, act: str = "tanh", bias: bool = False) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        self.hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        self.act = check_choice("act", act, ("tanh", "relu"))
        self.bidirectional = bidirectional
        self.upsample = upsample
        gates = 3 if bidirectional else 2
        self.bn = nn.BatchNorm3d(in_channels)
        self.conv = nn.Conv3d(in_channels, gates * hidden_channels, 3, stride, 1, bias=bias)

    def forward(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """Map ``x`` (batch, channels, bands, rows, cols) to the hidden states, same layout.

        ``reverse`` runs the recurrence from the last band to the first (ignored when
        bidirectional).
        """
        x = self.bn(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=(1, 2, 2), mode="trilinear", align_corners=True)
        gates = self.conv(x).split(self.hidden_channels, dim=1)
        z = gates[0].tanh() if self.act == "tanh" else gates[0].relu()
        if self.bidirectional:
            return (_f_pool(z, gates[1].sigmoid(), reverse=False)
                    + _f_pool(z, gates[2].sigmoid(), reverse=True))
        return _f_pool(z, gates[1].sigmoid(), reverse=reverse)


def _f_pool(z: torch.Tensor, f: torch.Tensor, *, reverse: bool) -> torch.Tensor:
    """``h_t = f_t h_{t−1} + (1 − f_t) z_t`` along dim 2 (bands), from either end."""
    zs, fs = z.unbind(2), f.unbind(2)  # unbind's backward is one stack, not a zero-fill per band
    order = range(len(zs) - 1, -1, -1) if reverse else range(len(zs))
    states: dict[int, torch.Tensor] = {}
    h: torch.Tensor | None = None
    for t in order:
        h = (1 - fs[t]) * zs[t] if h is None else fs[t] * h + (1 - fs[t]) * zs[t]
        states[t] = h
    return torch.stack([states[t] for t in range(len(zs))], dim=2)


class QRNN3D(nn.Module):
    """The QRNN3D encoder–decoder (HyDe's ``qrnn3d`` architecture).

    Maps a cube batch (batch, 1, bands, rows, cols) to a denoised cube of the same shape, for
    any band count and any rows/cols (padded internally to a multiple of
    ``2 ** len(sample_idx)``).

    Args:
        channels: feature channels C of the first layer (official 16).
        num_half_layer: QRU3D layers in the encoder and in the decoder (official 5).
        sample_idx: encoder layers that downsample rows and columns ×2 (official (1, 3)).
        alternating: alternate recurrence directions layer by layer (paper; official
            ``has_ad=True``); False runs every unidirectional layer forwards.
        act: candidate activation, ``"tanh"`` (paper) or ``"relu"``.
        clamp: clip the output to [0, 1] (official option, off by default as in HyDe's
            inference).
        identity_init: zero the reconstructor's convolution so the untrained network is the
            identity (the global residual passes the input through). Not in the paper or the
            official code (PyTorch's default initialisation there, then Kaiming-normal in the
            training script); short CPU trainings need it: on the HyDe full recipe, after 20
            steps of 8 crops the loss was 0.040 from the default start and 0.0055 from the
            identity, against 0.0099 for returning the noisy input.
    """

    def __init__(self, channels: int = 16, num_half_layer: int = 5,
                 sample_idx: Sequence[int] = (1, 3), *, alternating: bool = True,
                 act: str = "tanh", clamp: bool = False, identity_init: bool = False) -> None:
        super().__init__()
        check_positive_int("channels", channels)
        check_positive_int("num_half_layer", num_half_layer)
        sample_idx = tuple(sample_idx)
        if any(not isinstance(i, int) or not 0 <= i < num_half_layer for i in sample_idx):
            raise ValueError(f"sample_idx must list encoder layers in [0, {num_half_layer - 1}], "
                             f"got {sample_idx}")
        if len(set(sample_idx)) != len(sample_idx):
            raise ValueError(f"sample_idx must not repeat a layer, got {sample_idx}")
        self.multiple = 2 ** len(sample_idx)
        self.alternating = alternating
        self.clamp = clamp
        self.feature_extractor = QRU3D(1, channels, bidirectional=True, act=act)
        self.encoder = nn.ModuleList()
        width = channels
        for i in range(num_half_layer):
            if i in sample_idx:
                self.encoder.append(QRU3D(width, 2 * width, stride=(1, 2, 2), act=act))
                width *= 2
            else:
                self.encoder.append(QRU3D(width, width, act=act))
        self.decoder = nn.ModuleList()
        for i in reversed(range(num_half_layer)):
            if i in sample_idx:
                self.decoder.append(QRU3D(width, width // 2, upsample=True, act=act))
                width //= 2
            else:
                self.decoder.append(QRU3D(width, width, act=act))
        self.reconstructor = QRU3D(channels, 1, bidirectional=True, act=act, bias=True)
        if identity_init:
            nn.init.zeros_(self.reconstructor.conv.weight)
            nn.init.zeros_(self.reconstructor.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (batch, 1, bands, rows, cols) → the same shape."""
        check_tensor("x", x, ndim=5, floating=True)
        if x.shape[1] != 1:
            raise ValueError(f"x must have one channel, shape (batch, 1, bands, rows, cols); got "
                             f"shape {tuple(x.shape)}")
        rows, cols = x.shape[-2:]
        pad_r, pad_c = -rows % self.multiple, -cols % self.multiple
        if pad_r or pad_c:
            # edge replication keeps border statistics (zeros would look like a dark edge)
            x = F.pad(x, (0, pad_c, 0, pad_r, 0, 0), mode="replicate")
        feature = self.feature_extractor(x)
        skips: list[torch.Tensor] = []
        out, reverse = feature, False
        for i, layer in enumerate(self.encoder):
            out = layer(out, reverse=reverse)
            reverse ^= self.alternating
            if i < len(self.encoder) - 1:
                skips.append(out)
        for i, layer in enumerate(self.decoder):
            if i > 0:
                out = out + skips.pop()
            out = layer(out, reverse=reverse)
            reverse ^= self.alternating
        out = self.reconstructor(out + feature) + x
        if self.clamp:
            out = out.clamp(0.0, 1.0)
        return out[..., :rows, :cols]
