"""Super-resolution patches: shapes, range, determinism, area downsampling, bad input."""

import pytest
import torch

from regzoo.data.superres import KINDS, downsample_area, superres_patches


def test_patches_have_the_requested_shapes_range_and_equal_kind_shares():
    data = superres_patches(40, hr_size=16, seed=0)
    assert data.hr.shape == (40, 1, 16, 16) and data.lr.shape == (40, 1, 8, 8)
    assert data.hr.min() >= 0 and data.hr.max() <= 1
    assert torch.bincount(data.kind, minlength=len(KINDS)).tolist() == [10, 10, 10, 10]
    assert data.hr.flatten(1).std(dim=1).min() > 0  # no flat patch by construction
    assert len(data) == 40


def test_same_seed_same_patches_and_another_seed_other_patches():
    a, b = superres_patches(12, seed=3), superres_patches(12, seed=3)
    assert torch.equal(a.hr, b.hr)
    assert not torch.equal(a.hr, superres_patches(12, seed=4).hr)


def test_lr_is_the_block_average_of_hr():
    data = superres_patches(8, hr_size=12, scale=3, seed=1, kinds=("polygon", "digits"))
    block = data.hr[:, :, :3, :3].mean(dim=(2, 3))
    assert torch.allclose(data.lr[:, :, 0, 0], block, atol=1e-6)
    assert torch.allclose(data.lr.mean(), data.hr.mean(), atol=1e-6)


def test_polygons_are_anti_aliased():
    data = superres_patches(20, seed=2, kinds=("polygon",))
    values = data.hr.unique()
    assert values.numel() > 2 * 20  # intermediate grey levels along the edges


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "n must be"),
        ({"n": 4, "hr_size": 15}, "not divisible by scale"),
        ({"n": 4, "kinds": ("noise",)}, "kinds"),
        ({"n": 4, "kinds": ()}, "kinds"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        superres_patches(**kwargs)


def test_odd_image_size_for_x2_is_refused():
    with pytest.raises(ValueError, match="not divisible by scale=2"):
        downsample_area(torch.rand(1, 1, 7, 8), 2)
