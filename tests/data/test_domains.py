"""Digits multi-domain data: Colored-MNIST correlations, rotated domains, DomainBed splits."""

import pytest
import torch

from regzoo.data.domains import (
    Domain,
    digits_cmnist,
    digits_domains,
    leave_one_domain_out,
    training_domain_validation,
)


@pytest.fixture(scope="module")
def suite():
    return digits_cmnist(0)


@pytest.fixture(scope="module")
def rotated():
    return digits_domains(0)


def _colour(domain: Domain) -> torch.Tensor:
    """1 when the image sits in the second channel (the colour), else 0."""
    return (domain.x[:, 64:].abs().sum(1) > 0).float()


def test_cmnist_sizes_binary_labels_and_one_coloured_channel(suite):
    assert [len(d) for d in suite.train] == [1297, 1297] and len(suite.test[0]) == 500
    assert suite.num_features == 128 and suite.num_classes == 1
    for d in (*suite.train, *suite.test):
        assert set(d.y.unique().tolist()) <= {0.0, 1.0}
        first, second = d.x[:, :64].abs().sum(1) > 0, d.x[:, 64:].abs().sum(1) > 0
        assert not (first & second).any()  # the other channel is zeroed


def test_cmnist_colour_agreement_follows_the_flip_probabilities(suite):
    # colour = label flipped w.p. e: agreement 1 − e within 4 binomial SE
    for d, e in zip((*suite.train, *suite.test), (0.2, 0.1, 0.9)):
        agree = float((_colour(d) == d.y).float().mean())
        se = (e * (1 - e) / len(d)) ** 0.5
        assert abs(agree - (1 - e)) < 4 * se + 1e-9, (d.name, agree)


def test_cmnist_shape_label_is_noisy_at_the_label_noise_rate():
    from sklearn.datasets import load_digits

    suite = digits_cmnist(1, n_aug=0, label_noise=0.25)
    images = torch.as_tensor(load_digits().images.reshape(1797, -1) / 16.0, dtype=torch.float32)
    test = suite.test[0]
    shapes = test.x[:, :64] + test.x[:, 64:]
    # recover each test image's digit by exact match with the raw digits
    match = (shapes[:, None, :] - images[None]).abs().sum(-1).argmin(1)
    clean = (torch.as_tensor(load_digits().target)[match] < 5).float()
    agree = float((clean == test.y).float().mean())
    assert abs(agree - 0.75) < 4 * (0.25 * 0.75 / 500) ** 0.5


def test_cmnist_is_deterministic_and_seeds_differ(suite):
    again = digits_cmnist(0)
    assert torch.equal(suite.train[0].x, again.train[0].x)
    assert torch.equal(suite.test[0].y, again.test[0].y)
    assert not torch.equal(suite.train[0].x, digits_cmnist(1).train[0].x)


def test_rotated_domains_are_disjoint_parts_and_zero_angle_is_the_upsampled_digit():
    domains = digits_domains(0, angles=(0, 90, 45))
    assert [d.name for d in domains] == ["rot0", "rot90", "rot45"]
    assert sum(len(d) for d in domains) == 1797
    assert all(d.x.shape[1] == 256 for d in domains)
    assert all(d.y.dtype == torch.int64 for d in domains)
    # rotating by 90° is the exact transpose-flip of the unrotated 16×16 image
    same = digits_domains(0, angles=(0, 0, 0))
    rot = digits_domains(0, angles=(90, 90, 90))
    turned = torch.rot90(same[1].x.reshape(-1, 16, 16), 1, (1, 2)).reshape(-1, 256)
    assert torch.allclose(rot[1].x, turned, atol=1e-5)


def test_leave_one_out_and_training_domain_validation(rotated):
    suite = leave_one_domain_out(rotated, 2)
    assert suite.test[0].name == "rot30" and [d.name for d in suite.train] == [
        "rot0", "rot15", "rot45"]
    assert suite.num_classes == 10
    fit, val = training_domain_validation(suite.train, seed=0, fraction=0.2)
    for whole, a, b in zip(suite.train, fit, val):
        assert len(a) + len(b) == len(whole) and len(b) == round(0.2 * len(whole))
        rows = torch.cat([a.x, b.x])
        assert torch.equal(rows.sort(0).values, whole.x.sort(0).values)


@pytest.mark.parametrize(("call", "match"), [
    (lambda d: digits_cmnist(0, label_noise=0.7), "label_noise must lie"),
    (lambda d: digits_cmnist(0, train_flips=()), "train_flips is empty"),
    (lambda d: digits_cmnist(0, n_test=1796), "n_test=1796"),
    (lambda d: digits_domains(0, angles=(0,)), "at least 2 domains"),
    (lambda d: leave_one_domain_out(d[:2], 0), "at least 3"),
    (lambda d: leave_one_domain_out(d, 4), "test_index must lie"),
    (lambda d: training_domain_validation(d, 0, fraction=1.0), "fraction"),
])
def test_bad_arguments_raise(call, match, rotated):
    with pytest.raises(ValueError, match=match):
        call(rotated)
