"""Checkpoints hold tensors and plain data only and load with ``weights_only=True``."""

import random

import numpy as np
import pytest
import torch

from regzoo.data import TensorBatches
from regzoo.train import UnsafeCheckpointError, fit, load_checkpoint, save_checkpoint
from regzoo.train.seeding import rng_state, set_rng_state


class _WritesAFile:
    """Unpickling this object creates ``path``: what a malicious checkpoint could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_checkpoint_carrying_a_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "shared.pt"
    torch.save({"model": {}, "payload": _WritesAFile(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"shared\.pt.*pickled Python object"):
        load_checkpoint(path)
    assert not marker.exists()


def test_resume_from_a_tampered_checkpoint_fails_before_training(tmp_path):
    model = torch.nn.Linear(2, 2)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "payload": _WritesAFile(tmp_path / "x")}, path)
    batches = TensorBatches(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(UnsafeCheckpointError, match="--resume"):
        fit(model, batches, lambda net, b: net(b[0]).sum(),
            torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, checkpoint_path=path,
            resume=True, progress=False)
    assert not (tmp_path / "x").exists()


def test_saving_an_object_that_is_not_plain_data_names_where_it_is(tmp_path):
    with pytest.raises(UnsafeCheckpointError, match=r"state\['state'\]\['ema'\]\[1\].*state_dict"):
        save_checkpoint(tmp_path / "c.pt", {"state": {"ema": [1.0, object()]}})
    with pytest.raises(UnsafeCheckpointError, match="keyed by str or int"):
        save_checkpoint(tmp_path / "c.pt", {(1, 2): 0})
    assert not (tmp_path / "c.pt").exists()


def test_the_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    random.seed(3)
    np.random.seed(4)
    torch.manual_seed(5)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    save_checkpoint(tmp_path / "rng.pt", {"rng": rng_state()})
    expected = (random.random(), np.random.randn(), np.random.randn(), torch.rand(3))
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    got = (random.random(), np.random.randn(), np.random.randn(), torch.rand(3))
    assert expected[:3] == got[:3] and torch.equal(expected[3], got[3])
