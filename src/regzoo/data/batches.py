"""Batches that carry each example's dataset index, as ELR and PS-KD need (design.md §4).

* :class:`IndexedDataset` wraps any map-style ``Dataset`` so a ``DataLoader`` yields
  ``(x, y, index)``; use it in your own loop.
* :class:`TensorBatches` is the fast path for data held in memory: it slices tensors directly
  instead of collating one example at a time. Its order comes from a ``DistributedSampler``
  seeded by ``(seed, epoch)``, so an epoch's order does not depend on what ran before (resume
  is exact) and under ``torchrun`` each rank gets its own shard of the same permutation.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, DistributedSampler

from regzoo.core.checks import check_positive_int, check_tensor


class IndexedDataset(Dataset):
    """``dataset[i] -> (x, y, i)`` for a dataset whose items are ``(x, y)``."""

    def __init__(self, dataset: Dataset) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError("dataset must be a map-style Dataset with __getitem__ and __len__")
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[object, object, int]:
        x, y = self.dataset[index]
        return x, y, index


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


class TensorBatches:
    """Iterate ``(x[idx], y[idx], idx)`` minibatches over in-memory tensors.

    Args:
        x, y: features and labels with the same first dimension N.
        batch_size: examples per batch (per process under ``torchrun``).
        shuffle: draw a fresh permutation each epoch (seeded by ``seed`` and the epoch).
        seed: seed of the permutations.
        drop_last: drop the final incomplete batch.
        num_replicas, rank: the process group's size and this process's rank (default: read
            from ``torch.distributed`` when it is initialised, else 1 and 0). As with
            ``DistributedSampler``, the permutation is padded by repetition to a multiple of
            ``num_replicas`` so every rank sees the same number of batches.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        check_tensor("x", x)
        check_tensor("y", y, ndim=1)
        if x.shape[0] != y.shape[0]:
            raise ValueError(
                f"x and y must have the same number of examples, got {x.shape[0]} and "
                f"{y.shape[0]}"
            )
        self.x, self.y = x, y
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.drop_last = drop_last
        if num_replicas is None or rank is None:
            from regzoo.train.distributed import is_distributed

            distributed = is_distributed()
            num_replicas = torch.distributed.get_world_size() if distributed else 1
            rank = torch.distributed.get_rank() if distributed else 0
        self.sampler = DistributedSampler(
            _Indices(x.shape[0]), num_replicas=num_replicas, rank=rank, shuffle=shuffle,
            seed=seed, drop_last=False,
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``; call it before iterating each epoch."""
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        n = self.sampler.num_samples
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.int64)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.x[idx], self.y[idx], idx
