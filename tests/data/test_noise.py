"""Label-noise models: exact counts, conventions, realised rates, determinism, errors."""

import numpy as np
import pytest
import torch

from regzoo.data import (
    CIFAR10_ASYMMETRIC_MAP,
    asymmetric_noise,
    label_noise,
    pairflip_noise,
    symmetric_noise,
)

LABELS = np.repeat(np.arange(10), 500)


def test_symmetric_over_all_classes_changes_about_rate_times_c_minus_one_over_c():
    out = symmetric_noise(LABELS, 0.4, 10, include_true=True, seed=0)
    assert abs(out.noise_rate - 0.4 * 9 / 10) < 0.02
    assert out.noise_rate == pytest.approx(float((out.labels != LABELS).mean()))


def test_symmetric_to_other_classes_changes_exactly_round_rate_n():
    out = symmetric_noise(LABELS, 0.4, 10, include_true=False, seed=0)
    assert int(out.is_noisy.sum()) == round(0.4 * LABELS.size)
    assert out.kind == "symmetric_exclusive"


def test_pairflip_moves_exactly_round_rate_n_labels_to_the_next_class():
    out = pairflip_noise(LABELS, 0.3, 10, seed=1)
    assert int(out.is_noisy.sum()) == round(0.3 * LABELS.size)
    changed = out.is_noisy
    assert np.array_equal(out.labels[changed], (LABELS[changed] + 1) % 10)


def test_asymmetric_flips_a_fraction_of_each_mapped_class_to_its_partner():
    out = asymmetric_noise(LABELS, 0.4, seed=2)
    for source, target in CIFAR10_ASYMMETRIC_MAP.items():
        members = source == LABELS
        flipped = out.labels[members] != source
        assert int(flipped.sum()) == round(0.4 * members.sum())
        assert set(out.labels[members][flipped]) == {target}
    unmapped = ~np.isin(LABELS, list(CIFAR10_ASYMMETRIC_MAP))
    assert np.array_equal(out.labels[unmapped], LABELS[unmapped])


def test_noise_is_deterministic_given_the_seed_and_differs_across_seeds():
    a = symmetric_noise(LABELS, 0.5, 10, seed=3).labels
    b = symmetric_noise(LABELS, 0.5, 10, seed=3).labels
    c = symmetric_noise(LABELS, 0.5, 10, seed=4).labels
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_torch_in_gives_torch_out_and_numpy_in_gives_numpy_out():
    assert isinstance(pairflip_noise(torch.as_tensor(LABELS), 0.2, 10).labels, torch.Tensor)
    assert isinstance(pairflip_noise(LABELS, 0.2, 10).labels, np.ndarray)


@pytest.mark.parametrize(("spec", "kind"), [("sym40", "symmetric"), ("symx40",
                         "symmetric_exclusive"), ("pair40", "pairflip"), ("asym40",
                         "asymmetric"), ("clean", "symmetric")])
def test_label_noise_parses_the_short_spec(spec, kind):
    out = label_noise(spec, LABELS, 10, seed=0)
    assert out.kind == kind
    if spec == "clean":
        assert out.noise_rate == 0.0


@pytest.mark.parametrize(("call", "message"), [
    (lambda: symmetric_noise(LABELS, 1.5, 10), "rate"),
    (lambda: symmetric_noise(LABELS, 0.1, 5), "labels must lie"),
    (lambda: symmetric_noise(LABELS.astype(float), 0.1, 10), "integer"),
    (lambda: symmetric_noise(np.array([], dtype=int), 0.1, 10), "non-empty"),
    (lambda: label_noise("gauss40", LABELS, 10), "noise spec"),
    (lambda: label_noise("sym", LABELS, 10), "noise spec"),
    (lambda: asymmetric_noise(LABELS, 0.2, {}), "mapping"),
])
def test_bad_arguments_raise_clearly(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_asymmetric_map_outside_the_classes_is_rejected():
    with pytest.raises(ValueError, match="outside"):
        label_noise("asym40", np.repeat(np.arange(5), 10), 5)
