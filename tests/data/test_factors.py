"""Mini-dSprites: the full factorial, deterministic, each combination a distinct image."""

import itertools

import pytest
import torch

from regzoo.data.factors import mini_dsprites


@pytest.mark.parametrize("orientation", [False, True])
def test_full_factorial_distinct_binary_images(orientation):
    data = mini_dsprites(orientation=orientation)
    assert data.factor_sizes == ((3, 4, 8, 8, 4) if orientation else (3, 4, 8, 8))
    expected = list(itertools.product(*(range(n) for n in data.factor_sizes)))
    assert data.factors.tolist() == [list(c) for c in expected]
    flat = data.images.reshape(len(data.images), -1)
    assert set(flat.unique().tolist()) == {0.0, 1.0}
    assert torch.unique(flat, dim=0).shape[0] == len(expected)
    assert bool((flat.sum(1) > 0).all())


def test_deterministic_and_factors_move_the_sprite_as_named():
    a, b = mini_dsprites(), mini_dsprites()
    assert torch.equal(a.images, b.images)
    index = {tuple(f): i for i, f in enumerate(a.factors.tolist())}
    rows, cols = torch.arange(32.0)[:, None], torch.arange(32.0)[None]

    def centre(combo):
        image = a.images[index[combo], 0]
        return float((image * cols).sum() / image.sum()), float((image * rows).sum() / image.sum())

    x0, y0 = centre((0, 0, 0, 0))
    x1, y1 = centre((0, 0, 7, 0))
    assert x1 > x0 + 10 and abs(y1 - y0) < 1e-6          # x moves the sprite right
    assert centre((0, 0, 0, 7))[1] > y0 + 10              # y moves it down
    small, large = (a.images[index[(0, k, 3, 3)]].sum() for k in (0, 3))
    assert large > small                                  # scale grows the area


def test_size_must_resolve_the_positions():
    with pytest.raises(ValueError, match="size"):
        mini_dsprites(8)
