"""HyDe's DNN denoising: train a band-count-free network, apply it with sliding windows.

HyDe (Coquelin et al., IGARSS 2022, arXiv 2204.06979) ships DNN denoisers (QRNN3D, MemNet,
DeNet, in ``hyde/nn``) with two ideas, from its abstract, that this module implements for
:class:`regzoo.models.qrnn3d.QRNN3D`: training on ground-level cubes to denoise cubes "not
spatially related to the training dataset", and a sliding window for cubes that would otherwise
need more than 40 GB. The details follow the official code:

1. **Training recipe** (official ``hsi_denoising_gauss.py`` / ``hsi_denoising_complex.py``):
   random spatial crops of 31-band ground-level cubes (ICVL), a random run of ``band_window``
   = 10 consecutive bands (official ``RandomBandPerm(10)``), flips and rotations, noise added
   on the fly, each band of the noisy crop min–max normalised and the clean crop mapped with
   the same constants, an L2 loss, Adam at 1e-3 decayed ×0.1 at 80 % and ×0.01 at 90 % of the
   epochs (official: epochs 40 and 45 of 50). Gaussian noise is *blind*: each crop draws its
   own level (official: SNR uniform in 20–30 dB; here σ uniform in ``sigma_range``). Here the
   cubes are :func:`regzoo.data.hyperspectral.synthetic_cube` (nothing is downloaded) and the
   noise is :func:`regzoo.data.hyperspectral.add_noise`, applied to the crop with all its bands
   before the band run is cut, so per-cube noise models (stripes on ``n_bands`` of the bands)
   keep their meaning.
2. **Sliding-window inference** (official ``NNInference`` / ``inference_windows``): because no
   weight depends on the band count, a network trained on 10-band windows of 31-band cubes
   denoises a cube of any band count and size by running it on overlapping windows of
   ``band_window`` bands × ``spatial_window`` pixels. The network never sees more than one
   window, so its memory (activations ≈ 10·C floats per voxel for QRNN3D width C) is bounded
   by the window, not the cube; only the output accumulator has the cube's size (it is the
   result), and it stays on the cube's device while windows run on ``device``. Overlaps are
   blended by averaging: with window starts ``s_k`` along each axis, the output is

       X̂[b, i, j] = Σ_w 1[(b, i, j) ∈ w] · f(Y_w)[b, i, j] / Σ_w 1[(b, i, j) ∈ w],

   where the count factorises over the three axes, so no count array is stored. Cost: the
   network runs on Π_axis (windows · window / size) times the cube's voxels (1.6× for the
   reproduction's 64 × 64 × 100 cube with 10/8-band and 40/24-pixel windows).

Differences from the official code: the official inference keeps, in every overlap, the later
window's values past a fixed ``buff=(4, 4, 2)`` margin (a hard seam); averaging instead uses
every window's estimate and makes the result independent of window order. The official
inference normalises the whole image per band; so does :func:`denoise_sliding` (``normalize``),
while training normalises each crop, as the official dataset does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from regzoo.core.arrays import ArrayLike, as_tensor, restore
from regzoo.core.checks import check_choice, check_positive_int, check_range
from regzoo.data.hyperspectral import NOISE_KINDS, add_noise, noise_defaults, synthetic_cube
from regzoo.models.qrnn3d import QRNN3D
from regzoo.train import History, fit, seed_everything

TRAIN_SEED_BASE = 1_000_000
"""Training cube ``i`` of a run with seed ``s`` uses ``synthetic_cube(seed=TRAIN_SEED_BASE +
1000 * s + i)``: disjoint from small test-cube seeds."""

_EPS = 1e-8


@dataclass(frozen=True)
class DenoiserTraining:
    """Hyperparameters of :func:`train_denoiser` (defaults: HyDe's recipe where it has one).

    Args:
        noise: the noise model of :func:`regzoo.data.hyperspectral.add_noise`.
        noise_params: overrides of that model's defaults.
        sigma_range: for ``noise="gaussian"``, each crop draws σ uniformly in this range (blind
            training, as HyDe's ``GaussianBlindSNRLevel``); ``None`` uses ``noise_params``' σ.
        bands: band count of the training cubes (ICVL's 31).
        cube_size: rows = cols of each training cube.
        n_cubes: number of synthetic training cubes (drawn once per run).
        rank: endmembers per training cube.
        patch_size: spatial crop size (rows = cols).
        band_window: consecutive bands per crop (official ``RandomBandPerm(10)``).
        batch_size, steps_per_epoch, epochs: crops per step, steps per epoch, epochs.
        lr: Adam's learning rate (official 1e-3).
        lr_drops: fractions of the epochs after which the rate drops ×0.1 each (official
            epochs 40 and 45 of 50).
        weight_decay: Adam's weight decay (official default 0).
        normalize: min–max normalise each band of the noisy crop (official ``band_norm``).
        augment: random rotations by 90° and flips of each crop.
    """

    noise: str = "gaussian"
    noise_params: Mapping[str, float] = field(default_factory=dict)
    sigma_range: tuple[float, float] | None = (0.05, 0.15)
    bands: int = 31
    cube_size: int = 64
    n_cubes: int = 16
    rank: int = 5
    patch_size: int = 32
    band_window: int = 10
    batch_size: int = 8
    steps_per_epoch: int = 25
    epochs: int = 10
    lr: float = 1e-3
    lr_drops: tuple[float, ...] = (0.8, 0.9)
    weight_decay: float = 0.0
    normalize: bool = True
    augment: bool = True

    def __post_init__(self) -> None:
        check_choice("noise", self.noise, NOISE_KINDS)
        unknown = sorted(set(self.noise_params) - set(noise_defaults(self.noise)))
        if unknown:
            raise ValueError(f"noise_params has unknown name(s) {unknown} for noise "
                             f"{self.noise!r}; allowed: {sorted(noise_defaults(self.noise))}")
        if self.sigma_range is not None:
            if len(self.sigma_range) != 2:
                raise ValueError(f"sigma_range must be (low, high), got {self.sigma_range}")
            low = check_range("sigma_range[0]", self.sigma_range[0], 0.0)
            check_range("sigma_range[1]", self.sigma_range[1], low)
        for name in ("bands", "cube_size", "n_cubes", "rank", "patch_size", "band_window",
                     "batch_size", "steps_per_epoch", "epochs"):
            check_positive_int(name, getattr(self, name))
        if self.patch_size > self.cube_size:
            raise ValueError(f"patch_size ({self.patch_size}) must be <= cube_size "
                             f"({self.cube_size})")
        if self.band_window > self.bands:
            raise ValueError(f"band_window ({self.band_window}) must be <= bands ({self.bands})")
        if self.rank > self.bands:
            raise ValueError(f"rank ({self.rank}) must be <= bands ({self.bands})")
        check_range("lr", self.lr, 0.0, low_inclusive=False)
        check_range("weight_decay", self.weight_decay, 0.0)
        for i, frac in enumerate(self.lr_drops):
            check_range(f"lr_drops[{i}]", frac, 0.0, 1.0, low_inclusive=False)


@dataclass(frozen=True)
class TrainedDenoiser:
    """What :func:`train_denoiser` returns.

    The trained network (in eval mode), its per-epoch history, and the training seconds summed
    over the epochs (so a resumed run counts the epochs done before the interruption).
    """

    model: nn.Module
    history: History
    train_seconds: float


def bandwise_minmax(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min–max normalise each band of ``x`` (…, bands, rows, cols) to [0, 1].

    Returns ``(normalised, low, scale)`` with ``x = normalised · scale + low``; a constant band
    gets scale 1 so it maps to 0 and back exactly.
    """
    low = x.amin(dim=(-2, -1), keepdim=True)
    span = x.amax(dim=(-2, -1), keepdim=True) - low
    scale = torch.where(span > _EPS, span, torch.ones_like(span))
    return (x - low) / scale, low, scale


class _NoisyPatches:
    """Deterministic batches of (noisy, clean) crops, shape (batch, 1, band_window, p, p).

    Epoch ``e`` draws from ``np.random.default_rng([seed, e])``, so a resumed run sees the same
    batches as an uninterrupted one.
    """

    def __init__(self, cubes: list[np.ndarray], config: DenoiserTraining, seed: int) -> None:
        self.cubes = cubes
        self.config = config
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.config.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.config.steps_per_epoch):
            pairs = [self._sample(rng) for _ in range(self.config.batch_size)]
            noisy = torch.stack([p[0] for p in pairs])
            clean = torch.stack([p[1] for p in pairs])
            yield noisy, clean

    def _sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        cube = self.cubes[rng.integers(len(self.cubes))]
        r, q = rng.integers(c.cube_size - c.patch_size + 1, size=2)
        clean = cube[r:r + c.patch_size, q:q + c.patch_size]
        params = dict(c.noise_params)
        if c.noise == "gaussian" and c.sigma_range is not None:
            params["sigma"] = rng.uniform(*c.sigma_range)
        noisy = add_noise(clean, c.noise, seed=int(rng.integers(2**63)), **params)
        b = rng.integers(c.bands - c.band_window + 1)
        pair = np.stack([noisy[..., b:b + c.band_window], clean[..., b:b + c.band_window]])
        if c.augment:
            pair = np.rot90(pair, k=int(rng.integers(4)), axes=(1, 2))
            if rng.random() < 0.5:
                pair = pair[:, :, ::-1]
        # rows×cols×bands → (1, bands, rows, cols), the network's layout
        tensor = torch.from_numpy(np.ascontiguousarray(pair.transpose(0, 3, 1, 2))).float()
        noisy_t, clean_t = tensor[0:1], tensor[1:2]
        if c.normalize:
            noisy_t, low, scale = bandwise_minmax(noisy_t)
            clean_t = (clean_t - low) / scale
        return noisy_t, clean_t


def train_denoiser(
    config: DenoiserTraining | None = None,
    *,
    model: nn.Module | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    checkpoint_path: str | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> TrainedDenoiser:
    """Train a denoiser on random crops of synthetic cubes with on-the-fly noise (HyDe's recipe).

    Args:
        config: the recipe (:class:`DenoiserTraining`; default HyDe's, at CPU scale).
        model: the network, (batch, 1, bands, rows, cols) → same shape; default
            ``QRNN3D()`` (official size) built after seeding.
        seed: seeds the training cubes, the crops, the noise and (for the default model) the
            initial weights.
        device: where to train (default the model's device, CPU for the default model).
        checkpoint_path, resume: an atomic checkpoint after every epoch, resumed exactly
            (:func:`regzoo.train.fit`).
        progress, log: a progress bar (``None``: only on a terminal) and a per-epoch callback.
    """
    config = config or DenoiserTraining()
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    seed_everything(seed)
    if model is None:
        model = QRNN3D()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if device is not None:
        model.to(device)
    cubes = [synthetic_cube(config.cube_size, config.cube_size, config.bands, rank=config.rank,
                            seed=TRAIN_SEED_BASE + 1000 * seed + i)
             for i in range(config.n_cubes)]
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    milestones = sorted({max(1, round(f * config.epochs)) for f in config.lr_drops})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)

    def step(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        noisy, clean = batch
        return F.mse_loss(net(noisy), clean)

    history = fit(model, _NoisyPatches(cubes, config, seed), step, optimizer,
                  epochs=config.epochs, scheduler=scheduler, checkpoint_path=checkpoint_path,
                  resume=resume, progress=progress, desc="hyde dnn", log=log)
    model.eval()
    return TrainedDenoiser(model, history, sum(r["seconds"] for r in history.records))


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts ``0, stride, 2·stride, …`` covering ``[0, size)``.

    The last window ends at ``size`` (shifted back, as in HyDe, rather than padded).
    """
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def _coverage(size: int, window: int, starts: list[int], device: torch.device,
              dtype: torch.dtype) -> torch.Tensor:
    count = torch.zeros(size, device=device, dtype=dtype)
    for s in starts:
        count[s:s + window] += 1
    return count


def _window_arg(name: str, value: object) -> tuple[int, int]:
    if isinstance(value, tuple | list):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a (rows, cols) pair, got {value!r}")
        return (check_positive_int(f"{name}[0]", value[0]),
                check_positive_int(f"{name}[1]", value[1]))
    v = check_positive_int(name, value)
    return v, v


def denoise_sliding(
    model: nn.Module,
    cube: ArrayLike,
    *,
    band_window: int = 10,
    band_stride: int = 8,
    spatial_window: int | tuple[int, int] = 64,
    spatial_stride: int | tuple[int, int] = 56,
    normalize: bool = True,
    device: torch.device | str | None = None,
) -> ArrayLike:
    """Denoise ``cube`` (rows×cols×bands) window by window with ``model``; same type out.

    The defaults are HyDe's band window (10 bands) with a 2-band overlap (official
    ``buff[2] = 2``); HyDe's spatial window is 256 pixels with a 4-pixel overlap.

    Args:
        model: maps (1, 1, bands, rows, cols) to the same shape for any band count (e.g.
            :class:`~regzoo.models.qrnn3d.QRNN3D`); run in eval mode under ``no_grad`` (its
            training mode is restored afterwards).
        cube: numpy array or torch tensor, rows×cols×bands, finite.
        band_window, band_stride: bands per window and the step between window starts
            (``band_stride ≤ band_window``, so windows overlap or touch).
        spatial_window, spatial_stride: pixels per window and step, an int (rows = cols) or a
            (rows, cols) pair.
        normalize: min–max normalise each band of the whole cube before the network and undo
            it afterwards (official ``NNInference(..., normalize=True)``; the recipe the network
            was trained with).
        device: where the network runs (the model is moved there); default the model's
            device. The cube, the accumulator and the result stay on the cube's device.

    Returns:
        The denoised cube, numpy (float64) for numpy input, a tensor of the input's dtype and
        device for torch input.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    y, kind = as_tensor("cube", cube, ndim=3)
    rows, cols, bands = y.shape
    bw = check_positive_int("band_window", band_window)
    bs = check_positive_int("band_stride", band_stride)
    (rw, cw), (rs, cs) = (_window_arg("spatial_window", spatial_window),
                          _window_arg("spatial_stride", spatial_stride))
    for name, window, size, axis in (("band_window", bw, bands, "bands"),
                                     ("spatial_window", rw, rows, "rows"),
                                     ("spatial_window", cw, cols, "cols")):
        if window > size:
            raise ValueError(f"{name} ({window}) is larger than the cube's {axis} ({size}); "
                             f"use a window of at most {size}")
    for name, stride, window in (("band_stride", bs, bw), ("spatial_stride", rs, rw),
                                 ("spatial_stride", cs, cw)):
        if stride > window:
            raise ValueError(f"{name} ({stride}) exceeds its window ({window}): parts of the "
                             f"cube would be skipped; use a stride of at most {window}")
    params = next(model.parameters(), None)
    if device is not None:
        model.to(device)
        run_device = torch.device(device)
    else:
        run_device = params.device if params is not None else y.device
    run_dtype = params.dtype if params is not None and params.is_floating_point() \
        else torch.float32

    x = y.permute(2, 0, 1)  # bands×rows×cols, the network's layout
    if normalize:
        x, low, scale = bandwise_minmax(x)
    out = torch.zeros_like(x)
    starts = (window_starts(bands, bw, bs), window_starts(rows, rw, rs),
              window_starts(cols, cw, cs))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for b in starts[0]:
                for r in starts[1]:
                    for c in starts[2]:
                        window = x[b:b + bw, r:r + rw, c:c + cw]
                        est = model(window.to(run_device, run_dtype)[None, None])
                        out[b:b + bw, r:r + rw, c:c + cw] += est[0, 0].to(out)
    finally:
        model.train(was_training)
    for dim, (size, window, s) in enumerate(zip((bands, rows, cols), (bw, rw, cw), starts)):
        shape = [1, 1, 1]
        shape[dim] = size
        out /= _coverage(size, window, s, out.device, out.dtype).view(shape)
    if normalize:
        out = out * scale + low
    return restore(out.permute(1, 2, 0).contiguous().to(kind.dtype), kind)

