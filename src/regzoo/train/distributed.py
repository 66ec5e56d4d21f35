"""``torchrun`` support: process-group set-up, gathering, gradient sync (anchors.md §9.8).

Launch any regzoo training under ``torchrun --nproc_per_node=K``: :func:`init_distributed` reads
the variables torchrun sets and joins the group (gloo on CPU, nccl on CUDA); the reference loop
then wraps the model in ``DistributedDataParallel`` and shards batches by rank; rank 0 alone
writes files. Per-example state (ELR's target memory) is kept identical on every rank with
:func:`all_gather_cat`. Rule for penalties with higher-order terms: use
``autograd.grad(create_graph=True)`` inside the loss and a plain ``backward()``, never
``backward(create_graph=True)`` through DDP (pytorch/pytorch#63929); :func:`sync_gradients` is the
fallback for graphs that trip DDP's hooks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: rank, world size, and the device it should use."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1


_LOCAL_ONLY = False


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Within this block :func:`is_distributed` is False, so no collective is issued.

    For work one rank does alone (rank 0 timing a step): a collective there would wait forever
    for ranks that are not calling it.
    """
    global _LOCAL_ONLY
    previous, _LOCAL_ONLY = _LOCAL_ONLY, True
    try:
        yield
    finally:
        _LOCAL_ONLY = previous


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised (and in use)."""
    return (not _LOCAL_ONLY and dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` → CUDA when available else CPU; ``"cuda"`` without CUDA raises a clear error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:K', got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available; use device='cpu'")
    return device


def init_distributed(device: str | torch.device | None = "cpu") -> DistributedContext:
    """Join the process group torchrun describes, or return a single-process context.

    Under torchrun (``WORLD_SIZE`` > 1) this initialises ``torch.distributed`` once, with the
    gloo backend on CPU and nccl on CUDA, and picks ``cuda:LOCAL_RANK`` for CUDA devices.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device)
    if world_size > 1:
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank, world_size, local_rank, device)


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (first dimension may differ by rank) from every rank, rank order.

    Without a process group it returns ``tensor``. The result carries no gradient.
    """
    if not is_distributed():
        return tensor
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(int(s) for s in sizes))
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    chunks = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded.contiguous())
    return torch.cat([c[: int(s)] for c, s in zip(chunks, sizes)])


def all_reduce_mean(value: float, device: torch.device) -> float:
    """Average a Python number over ranks (identity without a process group)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / dist.get_world_size()


def sync_gradients(model: nn.Module) -> None:
    """Average ``.grad`` over ranks by hand: the fallback when a model is not DDP-wrapped."""
    if not is_distributed():
        return
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def wrap_model(model: nn.Module, context: DistributedContext,
               find_unused_parameters: bool = False) -> nn.Module:
    """DDP-wrap ``model`` when several processes train; otherwise return it unchanged."""
    if not context.enabled:
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
