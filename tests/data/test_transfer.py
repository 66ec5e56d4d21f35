"""The digits transfer pair: a true permutation and label shift of one disjoint split."""

import pytest
import torch

from regzoo.data.transfer import digits_transfer


def test_target_is_the_source_under_the_permutation_and_label_shift():
    pair = digits_transfer(3)
    s, t = pair.source, pair.target
    assert sorted(pair.permutation.tolist()) == list(range(64))
    assert not torch.equal(pair.permutation, torch.arange(64))
    for xs, ys, xt, yt in ((s.x_train, s.y_train, t.x_train, t.y_train),
                           (s.x_test, s.y_test, t.x_test, t.y_test)):
        assert torch.equal(xt, xs[:, pair.permutation])
        assert torch.equal(yt, (ys + 3) % 10)
    assert (s.x_train.shape[0], s.x_val.shape[0], s.x_test.shape[0]) == (987, 360, 450)


def test_splits_are_disjoint_and_seeded():
    pair = digits_transfer(0)
    rows = {split: {tuple(r.tolist()) for r in getattr(pair.source, f"x_{split}")}
            for split in ("train", "val", "test")}
    assert not rows["train"] & rows["test"] and not rows["val"] & rows["test"]
    again = digits_transfer(0)
    assert torch.equal(again.target.x_train, pair.target.x_train)
    assert not torch.equal(digits_transfer(1).permutation, pair.permutation)


def test_single_shifts():
    only_labels = digits_transfer(0, shift="shift_labels", label_shift=13)
    assert torch.equal(only_labels.target.x_test, only_labels.source.x_test)
    assert only_labels.label_shift == 3
    only_pixels = digits_transfer(0, shift="permute")
    assert torch.equal(only_pixels.target.y_test, only_pixels.source.y_test)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="shift"):
        digits_transfer(0, shift="rotate")
    with pytest.raises(ValueError, match="label_shift=10"):
        digits_transfer(0, label_shift=10)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction"):
        digits_transfer(0, val_fraction=0.5, test_fraction=0.45)
