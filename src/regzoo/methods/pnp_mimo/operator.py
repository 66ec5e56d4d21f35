"""The near-field MIMO Born operator A, its adjoint, noise, and the two classical imagers.

Forward model (paper §II; official ``src/forward_models/bornapprox.py`` at commit 3b8b15c, the
last with the source: a later commit removed ``src/``): transmitters p_t
(t = 1..N_T), receivers q_r (r = 1..N_R), frequencies f_k with wavenumbers κ_k = 2π f_k / c,
voxel centres s_v with complex reflectivity x_v:

    y[k, t, r] = Σ_v x_v · exp(−j κ_k (R_tv + R_rv)) / (4π R_tv R_rv) + n[k, t, r],

R_tv = ‖s_v − p_t‖, R_rv = ‖s_v − q_r‖, so y = A x + n with A ∈ C^{(N_F N_T N_R) × N_V}.
:class:`NearFieldMIMO` applies A and Aᴴ either from the dense matrix (small grids) or matrix-free,
forming the kernel of ``chunk`` frequencies at a time from the cached distances (large grids:
memory O(chunk · N_T N_R N_V) instead of O(N_F N_T N_R N_V)).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from regzoo.core.checks import check_choice, check_positive_int, check_real

SPEED_OF_LIGHT = 299_792_458.0
"""c in m/s (scipy.constants.speed_of_light, as the official code)."""
DENSE_LIMIT_BYTES = 256 * 2**20
"""``mode="auto"`` stores the dense matrix when it takes at most this many bytes."""
COMPLEX_DTYPES = (torch.complex64, torch.complex128)
_REAL_OF = {torch.complex64: torch.float32, torch.complex128: torch.float64}
_COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def _as_real_array(name: str, value: Any, ndim: int) -> torch.Tensor:
    """A float64 CPU copy of a real coordinate array with ``ndim`` dimensions."""
    if isinstance(value, torch.Tensor):
        if value.is_complex():
            raise TypeError(f"{name} must be real coordinates, got dtype {value.dtype}")
        array = value.detach().cpu().to(torch.float64)
    else:
        try:
            array = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be an array of real numbers, got "
                            f"{type(value).__name__}") from None
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {tuple(array.shape)}")
    if not bool(torch.isfinite(array).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return array.clone()


def x_array_positions(n_tx: int = 12, n_rx: int = 13, width: float = 0.3
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The paper's sparse "X" array on the plane z = 0 (official ``src/config.py``).

    Receivers: ``n_rx`` points evenly on the diagonal (−w/2, −w/2) → (w/2, w/2); transmitters:
    ``n_tx`` points on the other diagonal (−w/2, w/2) → (w/2, −w/2). Returns ``(tx, rx)``,
    arrays of shape (n_tx, 3) and (n_rx, 3) in metres.
    """
    check_positive_int("n_tx", n_tx)
    check_positive_int("n_rx", n_rx)
    half = check_real("width", width) / 2
    if half <= 0:
        raise ValueError(f"width must be > 0 metres, got {width}")
    a_rx, a_tx = np.linspace(0, 1, n_rx)[:, None], np.linspace(0, 1, n_tx)[:, None]
    rx = np.array([-half, -half, 0.0]) + a_rx * np.array([2 * half, 2 * half, 0.0])
    tx = np.array([-half, half, 0.0]) + a_tx * np.array([2 * half, -2 * half, 0.0])
    return tx, rx


@dataclass(frozen=True)
class NoisyMeasurements:
    """Measurements with complex white Gaussian noise at a given SNR.

    ``noise_var`` = mean|Ax|² / 10^(SNR/10) (E|n|² per entry; official ``snrdB2nvar``) and
    ``eps`` = sqrt(noise_var · M), the radius of the data ball ‖y − Ax‖ ≤ ε that C-SALSA uses
    (official ``main-simulated.ipynb``).
    """

    y: Any
    noise_var: float
    eps: float


class NearFieldMIMO:
    """The Born-approximation operator A of a planar MIMO array and a voxel grid.

    Args:
        tx: transmitter positions, shape (N_T, 3), metres.
        rx: receiver positions, shape (N_R, 3), metres.
        freqs: frequencies in Hz, shape (N_F,), each > 0.
        grid: the voxel centres' coordinates ``(xs, ys, zs)``, three 1-D arrays (metres);
            an image has shape (len(xs), len(ys), len(zs)).
        dtype: ``torch.complex128`` (the official code's, default) or ``torch.complex64``.
        device: where A is applied (default CPU).
        mode: ``"dense"`` (store the (M, N_V) matrix), ``"matrix_free"`` (form the kernel of
            ``chunk`` frequencies per product) or ``"auto"`` (dense up to
            :data:`DENSE_LIMIT_BYTES`).
        chunk: frequencies per block in matrix-free mode.

    Images have shape (..., nx, ny, nz) and measurements (..., N_F, N_T, N_R); leading axes are
    a batch. numpy in gives numpy out, torch in gives torch out (on the input's device).
    """

    def __init__(self, tx: Any, rx: Any, freqs: Any, grid: Sequence[Any], *,
                 dtype: torch.dtype = torch.complex128, device: torch.device | str | None = None,
                 mode: str = "auto", chunk: int = 1) -> None:
        if dtype not in COMPLEX_DTYPES:
            raise TypeError(f"dtype must be torch.complex64 or torch.complex128, got {dtype}")
        check_choice("mode", mode, ("auto", "dense", "matrix_free"))
        self.chunk = check_positive_int("chunk", chunk)
        tx_t, rx_t = _as_real_array("tx", tx, 2), _as_real_array("rx", rx, 2)
        for name, pos in (("tx", tx_t), ("rx", rx_t)):
            if pos.shape[0] == 0:
                raise ValueError(f"{name} is empty: give at least one antenna position")
            if pos.shape[1] != 3:
                raise ValueError(f"{name} must have shape (n, 3) (x, y, z in metres), got "
                                 f"{tuple(pos.shape)}")
        freqs_t = _as_real_array("freqs", freqs, 1)
        if freqs_t.numel() == 0:
            raise ValueError("freqs is empty: give at least one frequency in Hz")
        if bool((freqs_t <= 0).any()):
            raise ValueError(f"freqs must be > 0 Hz, got minimum {float(freqs_t.min())}")
        if isinstance(grid, (np.ndarray, torch.Tensor)) or len(grid) != 3:
            raise ValueError("grid must be three 1-D coordinate arrays (xs, ys, zs), got "
                             f"{type(grid).__name__} of length {len(grid)}")
        axes = [_as_real_array(f"grid[{i}]", g, 1) for i, g in enumerate(grid)]
        for i, axis in enumerate(axes):
            if axis.numel() == 0:
                raise ValueError(f"grid[{i}] is empty: each axis needs at least one voxel")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.tx, self.rx, self.freqs, self.axes = tx_t, rx_t, freqs_t, axes
        self.grid_shape = tuple(int(a.numel()) for a in axes)
        self.meas_shape = (int(freqs_t.numel()), int(tx_t.shape[0]), int(rx_t.shape[0]))
        self.n_voxels = math.prod(self.grid_shape)
        self.n_meas = math.prod(self.meas_shape)
        if mode == "auto":
            itemsize = 16 if dtype == torch.complex128 else 8
            mode = "dense" if self.n_meas * self.n_voxels * itemsize <= DENSE_LIMIT_BYTES \
                else "matrix_free"
        self.mode = mode
        # Geometry and phases stay in float64 (a phase κ(R_t + R_r) of ~300 rad loses 1e-5 rad
        # in float32); only the kernel is cast to ``dtype``.
        real = torch.float64
        voxels = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        r_tx = torch.cdist(tx_t, voxels)  # (T, N)
        r_rx = torch.cdist(rx_t, voxels)  # (R, N)
        if bool((r_tx == 0).any()) or bool((r_rx == 0).any()):
            raise ValueError("a voxel centre coincides with an antenna: the Born kernel "
                             "1/(4π R_t R_r) is infinite there; move the grid off the array")
        self._voxels = voxels
        self._r_tx = r_tx.to(self.device, real)
        self._r_rx = r_rx.to(self.device, real)
        self._kappa = (2 * math.pi * freqs_t / SPEED_OF_LIGHT).to(self.device, real)
        path = self._r_tx[:, None, :] + self._r_rx[None, :, :]  # (T, R, N)
        self._path = path
        self._amplitude = 1.0 / (4 * math.pi * self._r_tx[:, None, :] * self._r_rx[None, :, :])
        self._matrix: torch.Tensor | None = None
        if mode == "dense":
            self._matrix = self._block(0, self.meas_shape[0]).reshape(self.n_meas,
                                                                      self.n_voxels)

    # ---------------------------------------------------------------- construction helpers

    @classmethod
    def x_array(cls, n_freqs: int = 10, grid_shape: Sequence[int] = (25, 25, 49), *,
                f_min: float = 4e9, f_max: float = 16e9, width: float = 0.3,
                n_tx: int = 12, n_rx: int = 13,
                bounds: Sequence[tuple[float, float]] = ((-0.15, 0.15), (-0.15, 0.15),
                                                         (0.35, 0.65)),
                **options: Any) -> NearFieldMIMO:
        """The paper's simulated system (official ``src/config.py``).

        The 12 Tx / 13 Rx "X" array over 0.3 m, ``n_freqs`` frequencies evenly in [4, 16] GHz,
        the scene x, y ∈ [−0.15, 0.15] m, z ∈ [0.35, 0.65] m on a ``grid_shape`` grid
        (25×25×49 there).
        ``options`` go to the constructor (dtype, device, mode, chunk).
        """
        check_positive_int("n_freqs", n_freqs)
        if len(grid_shape) != 3 or len(bounds) != 3:
            raise ValueError(f"grid_shape and bounds must have 3 entries (x, y, z), got "
                             f"{tuple(grid_shape)} and {len(bounds)} bounds")
        tx, rx = x_array_positions(n_tx, n_rx, width)
        grid = [np.linspace(lo, hi, check_positive_int("grid_shape", int(n)))
                for (lo, hi), n in zip(bounds, grid_shape)]
        return cls(tx, rx, np.linspace(f_min, f_max, n_freqs), grid, **options)

    def to(self, device: torch.device | str) -> NearFieldMIMO:
        """The same operator applied on ``device`` (self when it is already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return NearFieldMIMO(self.tx, self.rx, self.freqs, self.axes, dtype=self.dtype,
                             device=device, mode=self.mode, chunk=self.chunk)

    @property
    def voxel_positions(self) -> np.ndarray:
        """The voxel centres, shape (nx·ny·nz, 3), in the images' C order."""
        return self._voxels.numpy().copy()

    @property
    def matrix(self) -> torch.Tensor:
        """The dense A, shape (N_F·N_T·N_R, N_V) (built on demand in matrix-free mode)."""
        if self._matrix is not None:
            return self._matrix
        return self._block(0, self.meas_shape[0]).reshape(self.n_meas, self.n_voxels)

    def _block(self, start: int, stop: int) -> torch.Tensor:
        """Rows of A for frequencies ``start:stop``, shape (stop − start, T, R, N)."""
        kappa = self._kappa[start:stop, None, None, None]
        return torch.polar(self._amplitude.expand(stop - start, -1, -1, -1),
                           -kappa * self._path).to(self.dtype)

    # ------------------------------------------------------------------------ products

    def _wrap(self, name: str, value: Any, trailing: tuple[int, ...]
              ) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
        """``value`` validated and cast to the operator's dtype and device, and its un-wrapper.

        The un-wrapper gives the caller's array type (and device) back.
        """
        if isinstance(value, np.ndarray):
            if not (np.issubdtype(value.dtype, np.floating)
                    or np.issubdtype(value.dtype, np.complexfloating)):
                raise TypeError(f"{name} must be a real or complex floating array, got dtype "
                                f"{value.dtype}")
            tensor = torch.from_numpy(np.ascontiguousarray(value))

            def back(t: torch.Tensor) -> Any:
                return t.cpu().numpy()
        elif isinstance(value, torch.Tensor):
            if not (value.is_floating_point() or value.is_complex()):
                raise TypeError(f"{name} must be a real or complex floating tensor, got dtype "
                                f"{value.dtype}")
            tensor, device = value.detach(), value.device

            def back(t: torch.Tensor) -> Any:
                return t.to(device)
        else:
            raise TypeError(f"{name} must be a numpy array or a torch tensor, got "
                            f"{type(value).__name__}")
        if tuple(tensor.shape[tensor.ndim - len(trailing):]) != trailing \
                or tensor.ndim < len(trailing):
            raise ValueError(f"{name} must have shape (..., {', '.join(map(str, trailing))}), "
                             f"got {tuple(tensor.shape)}")
        return tensor.to(self.device, self.dtype), back

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.n_voxels)
        if self._matrix is not None:
            out = flat @ self._matrix.T
        else:
            blocks = []
            for start in range(0, self.meas_shape[0], self.chunk):
                stop = min(start + self.chunk, self.meas_shape[0])
                a = self._block(start, stop).reshape(-1, self.n_voxels)
                blocks.append(flat @ a.T)
            out = torch.cat(blocks, dim=-1)
        return out.reshape(*x.shape[:-3], *self.meas_shape)

    def _adjoint(self, y: torch.Tensor, kernel: Callable[[int, int], torch.Tensor] | None = None
                 ) -> torch.Tensor:
        """Σ conj(W) y over measurements, W = A's rows (or ``kernel``'s, block by block)."""
        flat = y.reshape(-1, self.n_meas)
        if self._matrix is not None and kernel is None:
            out = flat @ self._matrix.conj()
        else:
            out = torch.zeros(flat.shape[0], self.n_voxels, dtype=self.dtype, device=self.device)
            per_freq = self.meas_shape[1] * self.meas_shape[2]
            make = kernel or self._block
            for start in range(0, self.meas_shape[0], self.chunk):
                stop = min(start + self.chunk, self.meas_shape[0])
                w = make(start, stop).reshape(-1, self.n_voxels)
                out = out + flat[:, start * per_freq:stop * per_freq] @ w.conj()
        return out.reshape(*y.shape[:-3], *self.grid_shape)

    def forward(self, x: Any) -> Any:
        """A x for images of shape (..., nx, ny, nz) → measurements (..., N_F, N_T, N_R)."""
        tensor, back = self._wrap("x", x, self.grid_shape)
        return back(self._forward(tensor))

    __call__ = forward

    def adjoint(self, y: Any) -> Any:
        """Aᴴ y for measurements (..., N_F, N_T, N_R) → images (..., nx, ny, nz)."""
        tensor, back = self._wrap("y", y, self.meas_shape)
        return back(self._adjoint(tensor))

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """AᴴA x on tensors already in the operator's dtype and device (the solver's inner loop)."""
        return self._adjoint(self._forward(x))

    # ------------------------------------------------------------------- classical imagers

    def _kirchhoff_block(self, compensate_aperture: bool) -> Callable[[int, int], torch.Tensor]:
        z = self._voxels[:, 2].to(self.device, self._r_tx.dtype)
        cos_t = (z[None, :] - self.tx[:, 2:3].to(z)) / self._r_tx  # ∂R_t/∂z, (T, N)
        cos_r = (z[None, :] - self.rx[:, 2:3].to(z)) / self._r_rx
        product = self._r_tx[:, None, :] * self._r_rx[None, :, :]
        weight = cos_t[:, None, :] * cos_r[None, :, :]
        if not compensate_aperture:
            weight = weight / product

        def block(start: int, stop: int) -> torch.Tensor:
            kappa = self._kappa[start:stop, None, None, None]
            jk = torch.complex(torch.zeros_like(kappa), kappa)
            migration = weight * (jk * jk * product + jk * self._path + 1) \
                * torch.exp(jk * self._path)
            return migration.conj().to(self.dtype)  # _adjoint applies conj(W)

        return block

    def back_projection(self, y: Any) -> Any:
        """Back-projection (official ``BackProjection``): x(s_v) = Σ y[k,t,r] e^{+jκ_k(R_tv+R_rv)}.

        Aᴴy without the 1/(4π R_t R_r) spreading weights (a pure phase-matched sum).
        """
        tensor, back = self._wrap("y", y, self.meas_shape)

        def block(start: int, stop: int) -> torch.Tensor:
            kappa = self._kappa[start:stop, None, None, None]
            return torch.polar(torch.ones_like(self._path).expand(stop - start, -1, -1, -1),
                               -kappa * self._path).to(self.dtype)

        return back(self._adjoint(tensor, block))

    def kirchhoff_migration(self, y: Any, *, compensate_aperture: bool = False) -> Any:
        """Kirchhoff migration (official ``KirchhoffMigration``; Wang, Aubry & Yarovoy 2020).

        x(s_v) = Σ_{k,t,r} y · (∂R_t/∂z)(∂R_r/∂z) ((jκ)² R_t R_r + jκ (R_t + R_r) + 1)
                 · e^{+jκ (R_t + R_r)} / (R_t R_r),

        the last factor dropped with ``compensate_aperture=True``. The official kernel carries
        an extra constant 4 (and 4 R_t R_r in the divisor), which no normalised image sees.
        The notebook's default is ``compensate_aperture=False``.
        """
        tensor, back = self._wrap("y", y, self.meas_shape)
        return back(self._adjoint(tensor, self._kirchhoff_block(compensate_aperture)))

    # ------------------------------------------------------------------------------ noise

    def add_noise(self, measurements: Any, snr_db: float, *,
                  generator: torch.Generator | None = None) -> NoisyMeasurements:
        """Noisy measurements Ax + n, n circular Gaussian, E|n|² = mean|Ax|² / 10^(SNR/10).

        The draw comes from ``generator`` (a CPU generator, so a seed means the same noise on
        every device).
        """
        snr_db = check_real("snr_db", snr_db)
        tensor, back = self._wrap("measurements", measurements, self.meas_shape)
        power = float(tensor.abs().pow(2).mean())
        noise_var = power / 10 ** (snr_db / 10)
        noise = torch.randn(2, *tensor.shape, generator=generator, dtype=torch.float64)
        noise = torch.complex(noise[0], noise[1]).to(self.device, self.dtype)
        y = tensor + math.sqrt(noise_var / 2) * noise
        return NoisyMeasurements(back(y), noise_var, math.sqrt(noise_var * self.n_meas))
