"""Shared test settings: one torch thread (small models run fastest so on 2 cores), CPU default.

Set ``REGZOO_TEST_DEVICE=cuda`` to run the device-aware tests on a GPU.
"""

import os

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def device() -> torch.device:
    return torch.device(os.environ.get("REGZOO_TEST_DEVICE", "cpu"))
