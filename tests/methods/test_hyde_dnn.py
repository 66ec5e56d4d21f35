"""HyDe's DNN denoising: sliding-window inference, the training recipe, the transfer helper."""

import numpy as np
import pytest
import torch
from torch import nn

from regzoo.data.hyperspectral import synthetic_cube
from regzoo.methods.hyde.dnn import (
    DenoiserTraining,
    bandwise_minmax,
    denoise_sliding,
    train_denoiser,
    window_starts,
)
from regzoo.models.qrnn3d import QRNN3D
from regzoo.repro.hyde_dnn import PRESETS, run_dnn_transfer, transfer_test_cube

TINY = DenoiserTraining(bands=12, cube_size=16, n_cubes=2, patch_size=16, band_window=6,
                        batch_size=2, steps_per_epoch=2, epochs=2)


class _Recorder(nn.Module):
    """Wraps a network; records the largest input it was given (entries)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.largest = 0
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.largest = max(self.largest, x.numel())
        self.calls += 1
        return self.inner(x)


class _WindowMark(nn.Module):
    """Returns the index of the call, constant over the window: exposes the blending weights."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.full_like(x, float(self.calls)) * self.scale


def _net(seed: int = 0) -> QRNN3D:
    torch.manual_seed(seed)
    return QRNN3D(channels=4).eval()


def _cube(rows: int = 16, cols: int = 12, bands: int = 14, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return synthetic_cube(rows, cols, bands, rank=3, seed=seed) + 0.05 * rng.standard_normal(
        (rows, cols, bands))


# --- sliding windows ---------------------------------------------------------------------------


def test_window_starts_cover_the_axis_and_end_at_its_edge():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(8, 8, 5) == [0]
    for size, window, stride in [(100, 10, 8), (64, 40, 24), (7, 1, 1)]:
        starts = window_starts(size, window, stride)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s:s + window] = True
        assert covered.all() and starts[-1] + window == size


def test_one_window_covering_the_cube_equals_the_direct_forward():
    net, cube = _net(), _cube()
    out = denoise_sliding(net, cube, band_window=14, band_stride=14, spatial_window=(16, 12),
                          spatial_stride=(16, 12), normalize=False)
    with torch.no_grad():
        direct = net(torch.from_numpy(cube).float().permute(2, 0, 1)[None, None])
    np.testing.assert_allclose(out, direct[0, 0].permute(1, 2, 0).double().numpy(), atol=1e-6)


def test_normalisation_makes_the_result_equivariant_to_per_band_affine_maps():
    net, cube = _net(), _cube()
    gain = np.linspace(0.5, 3.0, cube.shape[-1])
    offset = np.linspace(-1.0, 2.0, cube.shape[-1])
    kw = dict(band_window=6, band_stride=4, spatial_window=8, spatial_stride=4)
    base = denoise_sliding(net, cube, **kw)
    moved = denoise_sliding(net, gain * cube + offset, **kw)
    np.testing.assert_allclose(moved, gain * base + offset, atol=1e-4)


def test_overlap_blending_averages_every_window_covering_a_voxel():
    cube = np.zeros((10, 9, 11))
    mark = _WindowMark()
    out = denoise_sliding(mark, cube, band_window=5, band_stride=3, spatial_window=(4, 5),
                          spatial_stride=(3, 2), normalize=False)
    total, count, call = np.zeros_like(cube), np.zeros_like(cube), 0
    for b in window_starts(11, 5, 3):
        for r in window_starts(10, 4, 3):
            for c in window_starts(9, 5, 2):
                call += 1
                total[r:r + 4, c:c + 5, b:b + 5] += call
                count[r:r + 4, c:c + 5, b:b + 5] += 1
    np.testing.assert_allclose(out, total / count, rtol=1e-12)


def test_an_identity_like_network_returns_a_constant_cube_exactly():
    cube = np.full((12, 12, 9), 0.37)
    out = denoise_sliding(nn.Identity(), cube, band_window=4, band_stride=3, spatial_window=5,
                          spatial_stride=2)
    np.testing.assert_array_equal(out, cube)
    shifted = denoise_sliding(_Shift(0.25), cube, band_window=4, band_stride=1,
                              spatial_window=5, spatial_stride=3, normalize=False)
    np.testing.assert_allclose(shifted, cube + 0.25, rtol=0, atol=1e-7)


class _Shift(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.value


def test_the_network_never_sees_more_than_one_window():
    net = _Recorder(_net())
    small, large = _cube(16, 16, 14), _cube(24, 20, 20, seed=1)
    kw = dict(band_window=6, band_stride=5, spatial_window=12, spatial_stride=8)
    denoise_sliding(net, small, **kw)
    seen_small, calls_small = net.largest, net.calls
    denoise_sliding(net, large, **kw)
    assert seen_small == net.largest == 6 * 12 * 12  # the window, not the cube
    assert net.calls - calls_small > calls_small  # the larger cube needed more windows


def test_torch_in_gives_torch_out_and_numpy_in_gives_numpy_out():
    net, cube = _net(), _cube()
    kw = dict(band_window=6, band_stride=4, spatial_window=8, spatial_stride=4)
    from_numpy = denoise_sliding(net, cube, **kw)
    tensor = torch.from_numpy(cube).float()
    from_torch = denoise_sliding(net, tensor, **kw)
    assert isinstance(from_numpy, np.ndarray) and from_numpy.dtype == np.float64
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float32
    np.testing.assert_allclose(from_torch.numpy(), from_numpy, atol=1e-5)
    assert torch.equal(tensor, torch.from_numpy(cube).float())  # input untouched


def test_the_models_training_mode_is_restored():
    net = _net().train()
    denoise_sliding(net, _cube(), band_window=6, band_stride=4, spatial_window=8,
                    spatial_stride=4)
    assert net.training


@pytest.mark.parametrize(
    ("cube", "kwargs", "error", "match"),
    [
        (np.zeros((8, 8)), {}, ValueError, "3 dimensions"),
        (np.full((8, 8, 8), np.nan), {}, ValueError, "NaN"),
        ([[[0.0]]], {}, TypeError, "numpy array or a torch tensor"),
        (np.zeros((8, 8, 8)), {"band_window": 9}, ValueError, "larger than the cube's bands"),
        (np.zeros((8, 6, 8)), {"spatial_window": 7}, ValueError, "cube's cols"),
        (np.zeros((8, 8, 8)), {"band_stride": 5}, ValueError, "band_stride"),
        (np.zeros((8, 8, 8)), {"spatial_stride": (2, 9)}, ValueError, "spatial_stride"),
        (np.zeros((8, 8, 8)), {"band_window": 0}, ValueError, "band_window"),
        (np.zeros((8, 8, 8)), {"spatial_window": (4, 4, 4)}, ValueError, "spatial_window"),
    ],
)
def test_bad_input_is_refused_with_the_argument_named(cube, kwargs, error, match):
    args = dict(band_window=4, band_stride=4, spatial_window=4, spatial_stride=4) | kwargs
    with pytest.raises(error, match=match):
        denoise_sliding(_net(), cube, **args)


def test_a_non_module_model_is_refused():
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        denoise_sliding(lambda x: x, _cube())


def test_bandwise_minmax_round_trips_and_keeps_constant_bands():
    x = torch.rand(3, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    x[1, 2] = 0.7
    y, low, scale = bandwise_minmax(x)
    torch.testing.assert_close(y * scale + low, x)
    assert float(y.amin()) >= 0.0 and float(y.amax()) <= 1.0
    assert float(scale[1, 2]) == 1.0


# --- training ----------------------------------------------------------------------------------


def test_training_reduces_the_loss_on_a_tiny_run():
    config = DenoiserTraining(**{**TINY.__dict__, "epochs": 4, "lr_drops": ()})
    result = train_denoiser(config, model=_net(0).train(), seed=0)
    losses = result.history.curve("train_loss")
    assert losses[-1] < 0.5 * losses[0]
    assert not result.model.training and result.train_seconds > 0


class _Interrupt(Exception):
    pass


def test_resume_continues_exactly_where_an_uninterrupted_run_ends(tmp_path):
    config = DenoiserTraining(**{**TINY.__dict__, "epochs": 3})
    full = train_denoiser(config, model=_net(1).train(), seed=3)
    path = tmp_path / "ck.pt"

    def stop_in_second_epoch(record):
        if record["epoch"] == 1:  # fit logs before it checkpoints: epoch 0 alone is saved
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_denoiser(config, model=_net(1).train(), seed=3, checkpoint_path=path,
                       log=stop_in_second_epoch)
    resumed = train_denoiser(config, model=_net(2).train(), seed=3, checkpoint_path=path,
                             resume=True)  # other initial weights: the checkpoint replaces them
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b)
    assert resumed.history.curve("train_loss") == full.history.curve("train_loss")


def test_training_batches_do_not_depend_on_the_global_rng():
    a = train_denoiser(TINY, model=_net(0).train(), seed=5).history.curve("train_loss")
    net = _net(0).train()
    np.random.seed(123)
    torch.manual_seed(123)
    b = train_denoiser(TINY, model=net, seed=5).history.curve("train_loss")
    assert a == b


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise": "speckle"}, "noise"),
        ({"noise_params": {"sigmaa": 0.1}}, "noise_params"),
        ({"patch_size": 80}, "patch_size"),
        ({"band_window": 40}, "band_window"),
        ({"sigma_range": (0.2, 0.1)}, "sigma_range"),
        ({"lr": 0.0}, "lr"),
    ],
)
def test_bad_training_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DenoiserTraining(**kwargs)


# --- the transfer helper -------------------------------------------------------------------------


def test_transfer_trains_on_one_band_count_and_tests_on_another():
    for preset in PRESETS.values():
        assert preset.test_shape[2] != preset.training.bands
        assert preset.band_window == preset.training.band_window
    out = run_dnn_transfer(0, "mixed", "tiny", None)
    assert set(out) == {"psnr", "ssim", "sam", "seconds", "train_seconds"}
    assert all(np.isfinite(v) for v in out.values())
    clean, noisy = transfer_test_cube(0, "mixed", "tiny")
    assert clean.shape == noisy.shape == PRESETS["tiny"].test_shape


def test_transfer_rejects_unknown_size_and_noise():
    with pytest.raises(ValueError, match="size"):
        run_dnn_transfer(0, "gaussian", "huge", None)
    with pytest.raises(ValueError, match="noise"):
        transfer_test_cube(0, "speckle", "tiny")
