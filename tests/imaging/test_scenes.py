"""The procedural scene generator: exact intersections, voxel counts, multi-view consistency."""

import numpy as np
import pytest

from regzoo.imaging import (
    Box,
    PinholeCamera,
    Plane,
    Scene,
    Sphere,
    look_at,
    pixel_rays,
    random_scene,
    raycast,
    voxelize,
)


def _camera(eye=(0.0, 0.0, 0.0), target=(0.0, 0.0, 3.0), size=9):
    return PinholeCamera(12.0, 12.0, size / 2, size / 2, look_at(eye, target))


def test_look_at_from_the_origin_is_the_identity_and_rays_have_unit_depth():
    assert np.allclose(look_at((0, 0, 0), (0, 0, 1)), np.eye(4))
    camera = _camera(eye=(0.3, -0.2, 0.1), target=(0.5, 0.4, 3.0))
    origins, directions = pixel_rays(camera, 5, 7)
    local = directions @ camera.c2w[:3, :3]
    assert np.allclose(local[..., 2], 1.0)
    assert np.allclose(origins, camera.center)


def test_sphere_and_box_depths_are_exact_on_the_optical_axis():
    camera = _camera()
    sphere = Scene((Sphere(center=(0.0, 0.0, 3.0), radius=0.5),))
    hits = raycast(sphere, camera, 9, 9)
    assert hits.depth[4, 4] == pytest.approx(2.5)
    assert hits.primitive[0, 0] == -1 and np.isinf(hits.depth[0, 0])
    box = Scene((Box(center=(0.0, 0.0, 3.0), half_size=(5.0, 5.0, 0.25)),))
    assert np.allclose(raycast(box, camera, 9, 9).depth, 2.75)


def test_nearest_surface_wins_and_background_catches_every_ray():
    front = Box(center=(0.0, 0.0, 2.0), half_size=(0.2, 0.2, 0.2), color=(1.0, 0.0, 0.0))
    back = Plane(center=(0.0, 0.0, 6.0), normal=(0.0, 0.0, -1.0), half_size=(100.0, 100.0))
    hits = raycast(Scene((front,), background=back), _camera(), 9, 9)
    assert hits.primitive[4, 4] == 0 and hits.depth[4, 4] == pytest.approx(1.8)
    assert (hits.primitive >= 0).all()
    assert np.allclose(hits.depth[0, 0], 6.0)


def test_a_point_has_the_same_colour_from_two_views():
    scene = Scene((), background=Plane(center=(0.0, 0.0, 4.0), normal=(0.0, 0.0, -1.0),
                                       half_size=(100.0, 100.0), pattern="noise"))
    left, right = _camera(eye=(-0.2, 0, 0)), _camera(eye=(0.6, 0, 0), target=(0.6, 0, 3))
    a = raycast(scene, left, 9, 9)
    origins, directions = pixel_rays(left, 9, 9)
    point = origins[4, 4] + a.depth[4, 4] * directions[4, 4]
    local = right.w2c[:3, :3] @ point + right.w2c[:3, 3]
    px, py = (right.K @ (local / local[2]))[:2]
    col, row = int(np.floor(px)), int(np.floor(py))
    # Shift the principal point so that the point lands exactly on a pixel centre of `right`.
    aligned = PinholeCamera(right.fx, right.fy, right.cx + col + 0.5 - px,
                            right.cy + row + 0.5 - py, right.c2w)
    b = raycast(scene, aligned, 9, 9)
    assert row != 4 or col != 4
    assert np.allclose(a.rgb[4, 4], b.rgb[row, col], atol=1e-9)


def test_voxelize_counts_and_overlaps():
    xs = ys = zs = np.arange(10) * 0.1
    box = Box(center=(0.45, 0.45, 0.45), half_size=(0.2, 0.1, 0.3), value=0.5)
    sphere = Sphere(center=(0.4, 0.4, 0.4), radius=0.05, value=0.9)
    sheet = Plane(center=(0.45, 0.45, 0.8), normal=(0.0, 0.0, 1.0), half_size=(0.2, 0.2))
    volume = voxelize(Scene((box, sphere, sheet)), xs, ys, zs)
    assert volume[4, 4, 4] == 0.9                       # the larger value wins
    assert (volume == 0.5).sum() == 4 * 2 * 6 - 1
    assert (volume == 1.0).sum() == 4 * 4                # the sheet is one voxel thick


def test_random_scene_is_deterministic_and_inside_bounds():
    bounds = ((-0.15, 0.15), (-0.15, 0.15), (0.35, 0.65))
    a = random_scene(3, bounds=bounds, background=False, max_tilt=0.0)
    assert a == random_scene(3, bounds=bounds, background=False, max_tilt=0.0)
    assert a != random_scene(4, bounds=bounds, background=False, max_tilt=0.0)
    for primitive in a.primitives:
        assert all(lo <= c <= hi for c, (lo, hi) in zip(primitive.center, bounds, strict=True))
        assert 0.3 <= primitive.value <= 1.0


@pytest.mark.parametrize(("build", "match"), [
    (lambda: random_scene(0, bounds=((0, 1), (0, 1))), "bounds"),
    (lambda: random_scene(0, n_boxes=-1), "n_boxes"),
    (lambda: random_scene(0, value_range=(0.5, 0.1)), "value_range"),
    (lambda: PinholeCamera(10, 10, 4, 4, np.eye(3)), "c2w"),
    (lambda: PinholeCamera(0, 10, 4, 4, np.eye(4)), "focal"),
    (lambda: look_at((0, 0, 0), (0, 1, 0)), "parallel"),
    (lambda: Box(pattern="dots"), "pattern"),
    (lambda: voxelize(Scene(()), np.zeros(0), np.zeros(3), np.zeros(3)), "xs"),
])
def test_bad_input(build, match):
    with pytest.raises(ValueError, match=match):
        build()
