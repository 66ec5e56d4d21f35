"""Data sources and batching: splits by seed, scaling, indices, distributed sharding."""

import pytest
import torch

from regzoo.data import IndexedDataset, TensorBatches, load_digits, load_mnist1d


def test_digits_split_is_stratified_deterministic_and_unit_scaled():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert a.x_train.shape == (1198, 64) and a.x_test.shape == (599, 64)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert float(a.x_train.min()) >= 0.0 and float(a.x_train.max()) <= 1.0
    test_counts = torch.bincount(a.y_test, minlength=10)
    all_counts = test_counts + torch.bincount(a.y_train, minlength=10)
    assert bool(((test_counts - all_counts / 3).abs() <= 1).all())
    assert a.num_classes == 10


def test_standard_scaling_uses_training_statistics():
    data = load_digits(seed=0, scale="standard")
    used = data.x_train.std(dim=0) > 0
    torch.testing.assert_close(data.x_train.mean(dim=0), torch.zeros(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.x_train.std(dim=0)[used], torch.ones(int(used.sum())),
                               atol=1e-4, rtol=0)


def test_mnist1d_is_generated_offline():
    data = load_mnist1d(seed=0, num_samples=500)
    assert data.x_train.shape[1] == 40 and data.num_classes == 10
    assert data.x_train.shape[0] + data.x_test.shape[0] == 500


def test_bad_split_arguments_are_rejected():
    with pytest.raises(ValueError, match="scale"):
        load_digits(scale="minmax")
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.0)


def test_tensor_batches_cover_every_example_once_per_epoch_with_its_index():
    x = torch.arange(50.0)[:, None]
    y = torch.arange(50)
    batches = TensorBatches(x, y, 8, seed=0)
    seen = []
    for xb, yb, idx in batches:
        assert torch.equal(x[idx], xb) and torch.equal(y[idx], yb)
        seen.append(idx)
    assert sorted(torch.cat(seen).tolist()) == list(range(50))
    assert len(batches) == 7


def test_epoch_order_depends_only_on_seed_and_epoch():
    x, y = torch.zeros(30, 1), torch.zeros(30, dtype=torch.long)
    a, b = TensorBatches(x, y, 30, seed=1), TensorBatches(x, y, 30, seed=1)
    a.set_epoch(3)
    for e in (0, 1, 2, 3):
        b.set_epoch(e)
        order_b = next(iter(b))[2]
    assert torch.equal(next(iter(a))[2], order_b)
    a.set_epoch(4)
    assert not torch.equal(next(iter(a))[2], order_b)


def test_ranks_get_disjoint_equal_shards_of_one_permutation():
    x, y = torch.zeros(40, 1), torch.zeros(40, dtype=torch.long)
    shards = [torch.cat([b[2] for b in TensorBatches(x, y, 7, seed=0, num_replicas=2,
                                                       rank=r)]) for r in (0, 1)]
    assert shards[0].numel() == shards[1].numel() == 20
    assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())


def test_indexed_dataset_appends_the_index():
    ds = IndexedDataset(torch.utils.data.TensorDataset(torch.arange(5.0), torch.arange(5)))
    assert ds[3] == (torch.tensor(3.0), torch.tensor(3), 3)
    assert len(ds) == 5


def test_tensor_batches_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="same number of examples"):
        TensorBatches(torch.zeros(5, 2), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="batch_size"):
        TensorBatches(torch.zeros(5, 2), torch.zeros(5, dtype=torch.long), 0)


def test_building_a_cnn_leaves_batchnorm_untouched_and_rejects_tiny_inputs():
    from regzoo.models import CNN

    model = CNN((8, 8), 10)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(int(m.num_batches_tracked) == 0 for m in norms)
    with pytest.raises(ValueError, match="too small"):
        CNN((2, 2), 10)
