"""QRNN3D: the quasi-recurrent pooling, band-count independence, shapes, bad input."""

import pytest
import torch

from regzoo.models.qrnn3d import QRNN3D, QRU3D, _f_pool


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_f_pool_matches_the_recurrence_written_out():
    z = torch.randn(2, 3, 5, 4, 4, generator=_gen(0))
    f = torch.rand(2, 3, 5, 4, 4, generator=_gen(1))
    h = torch.zeros(2, 3, 4, 4)
    expected = []
    for t in range(5):
        h = f[:, :, t] * h + (1 - f[:, :, t]) * z[:, :, t]
        expected.append(h)
    torch.testing.assert_close(_f_pool(z, f, reverse=False), torch.stack(expected, 2))
    flipped = _f_pool(z.flip(2), f.flip(2), reverse=False).flip(2)
    torch.testing.assert_close(_f_pool(z, f, reverse=True), flipped)


def test_forward_recurrence_is_causal_along_bands():
    layer = QRU3D(1, 2).eval()
    x = torch.randn(1, 1, 8, 6, 6, generator=_gen(2))
    changed = x.clone()
    changed[:, :, 6:] += 1.0  # the 3×3×3 kernel reaches band 5 from band 6, no further back
    with torch.no_grad():
        a, b = layer(x), layer(changed)
    torch.testing.assert_close(a[:, :, :5], b[:, :, :5])
    assert not torch.allclose(a[:, :, 6:], b[:, :, 6:])
    with torch.no_grad():
        a, b = layer(x, reverse=True), layer(changed, reverse=True)
    assert not torch.allclose(a[:, :, :5], b[:, :, :5])


@pytest.mark.parametrize("bands", [3, 10, 31, 47])
def test_the_same_weights_run_on_any_band_count(bands):
    torch.manual_seed(0)
    net = QRNN3D(channels=4).eval()
    x = torch.rand(2, 1, bands, 16, 12, generator=_gen(bands))
    with torch.no_grad():
        assert net(x).shape == x.shape


def test_odd_spatial_sizes_are_padded_and_cropped_back():
    torch.manual_seed(0)
    net = QRNN3D(channels=4).eval()
    x = torch.rand(1, 1, 5, 13, 10, generator=_gen(3))
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_global_residual_makes_a_zeroed_reconstructor_the_identity():
    net = QRNN3D(channels=4).eval()
    with torch.no_grad():
        net.reconstructor.conv.weight.zero_()
        net.reconstructor.conv.bias.zero_()
    x = torch.rand(1, 1, 6, 8, 8, generator=_gen(4))
    with torch.no_grad():
        torch.testing.assert_close(net(x), x)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    net = QRNN3D(channels=4, num_half_layer=3, sample_idx=(1,))
    net(torch.rand(2, 1, 6, 8, 8, generator=_gen(5))).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_bad_input_and_arguments_are_refused():
    net = QRNN3D(channels=4)
    with pytest.raises(ValueError, match="5 dimensions"):
        net(torch.rand(1, 6, 8, 8))
    with pytest.raises(ValueError, match="one channel"):
        net(torch.rand(1, 2, 6, 8, 8))
    with pytest.raises(ValueError, match="sample_idx"):
        QRNN3D(sample_idx=(5,))
    with pytest.raises(ValueError, match="act"):
        QRNN3D(act="gelu")
    with pytest.raises(TypeError, match="channels"):
        QRNN3D(channels=4.0)
