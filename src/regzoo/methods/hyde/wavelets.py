"""Orthogonal 2-D wavelet transform of every band of a cube, through PyWavelets (MIT licence).

The Rasti et al. MATLAB codes (HyRes, FORPDN, WSRRR) pad each image symmetrically to a multiple
of 2^L and apply WaveLab's periodised orthogonal transform (``FWT2_PO``), so that the transform
``D₂ᵀ`` is orthogonal: white noise stays white with the same variance, which SURE needs. We do
the same with ``pywt.wavedec2(mode="periodization")`` on all bands at once (``axes=(0, 1)``).
HyDe 0.4.3 instead uses ``pytorch_wavelets`` with symmetric boundary handling, a redundant
(non-orthogonal) transform; that is one reason its numbers differ from ours.

Coefficients are returned as a (P × C) matrix, P = padded rows × padded cols, ordered like
``pywt.coeffs_to_array``; :attr:`Wavelet2D.groups` gives the row indices of the approximation
band (group 0) and of each detail level from coarsest to finest (groups 1..L), the blocks in
which the methods choose their thresholds or penalty weights.

PyWavelets runs on the CPU in float64: a CUDA cube makes one round trip per transform. The
rest of every method stays on the cube's device.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from regzoo.core.checks import check_positive_int


def _pywt() -> Any:
    # Imported on first use so that `import regzoo` works without PyWavelets installed.
    try:
        import pywt
    except ImportError as error:
        raise ImportError("the HyDe wavelet methods need PyWavelets: pip install PyWavelets "
                          "(declared by regzoo's dependencies)") from error
    return pywt


class Wavelet2D:
    """A fixed-size periodised 2-D DWT with symmetric pre-padding, ``forward`` and ``inverse``.

    Args:
        rows, cols: the image size before padding.
        wavelet: a PyWavelets name (``"db5"``: Daubechies with 5 vanishing moments, 10 taps).
        level: decomposition levels L; the image is padded to a multiple of 2^L.
    """

    def __init__(self, rows: int, cols: int, wavelet: str = "db5", level: int = 5) -> None:
        check_positive_int("level", level)
        pywt = _pywt()
        if wavelet not in pywt.wavelist(kind="discrete"):
            raise ValueError(f"wavelet must be a discrete PyWavelets name such as 'db5', "
                             f"got {wavelet!r}")
        self.wavelet, self.level = wavelet, level
        self.rows, self.cols = rows, cols
        block = 2**level
        self.padded = (-(-rows // block) * block, -(-cols // block) * block)
        probe = self._decompose(np.zeros((*self.padded, 1)))
        _, slices = pywt.coeffs_to_array(probe, axes=(0, 1))
        # Keep the spatial slices and take every channel (the probe had one).
        self._slices = [(*slices[0][:2], slice(None))] + [
            {key: (*s[:2], slice(None)) for key, s in level.items()} for level in slices[1:]]
        index = np.arange(self.padded[0] * self.padded[1]).reshape(*self.padded, 1)
        groups = [index[self._slices[0]].ravel()]
        for level_slices in self._slices[1:]:
            groups.append(np.concatenate([index[s].ravel() for s in level_slices.values()]))
        self.groups: list[np.ndarray] = groups
        self.finest_diagonal: np.ndarray = index[self._slices[-1]["dd"]].ravel()
        """Rows of the finest diagonal (HH₁) subband, for the MAD noise estimate."""

    def _decompose(self, padded: np.ndarray) -> list:
        pywt = _pywt()
        with warnings.catch_warnings():
            # Levels beyond pywt's "useful" depth are exact with periodisation (the filter
            # wraps around); the official codes use them too (HyRes: L = 5 on 64×64).
            warnings.simplefilter("ignore", UserWarning)
            return pywt.wavedec2(padded, self.wavelet, mode="periodization", level=self.level,
                                 axes=(0, 1))

    def forward(self, cube: torch.Tensor) -> torch.Tensor:
        """Coefficients (P × C) of a rows×cols×C cube (P = padded rows·cols)."""
        array = cube.detach().cpu().numpy().astype(np.float64)
        pad = ((0, self.padded[0] - self.rows), (0, self.padded[1] - self.cols), (0, 0))
        coeffs = self._decompose(np.pad(array, pad, mode="symmetric"))
        flat, _ = _pywt().coeffs_to_array(coeffs, axes=(0, 1))
        out = torch.from_numpy(flat.reshape(-1, array.shape[-1]))
        return out.to(device=cube.device, dtype=cube.dtype)

    def inverse(self, coefficients: torch.Tensor) -> torch.Tensor:
        """The rows×cols×C cube of a (P × C) coefficient matrix (padding cropped)."""
        array = coefficients.detach().cpu().numpy().astype(np.float64)
        array = array.reshape(*self.padded, -1)
        pywt = _pywt()
        coeffs = pywt.array_to_coeffs(array, self._slices, output_format="wavedec2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            image = pywt.waverec2(coeffs, self.wavelet, mode="periodization", axes=(0, 1))
        out = torch.from_numpy(np.ascontiguousarray(image[: self.rows, : self.cols]))
        return out.to(device=coefficients.device, dtype=coefficients.dtype)
