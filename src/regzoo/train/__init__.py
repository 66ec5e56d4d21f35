"""The reference training loop, checkpoints, seeding, timing and torchrun helpers (design.md §5)."""

from regzoo.train.checkpoint import UnsafeCheckpointError, load_checkpoint, save_checkpoint
from regzoo.train.distributed import DistributedContext, all_gather_cat, init_distributed
from regzoo.train.loop import History, fit
from regzoo.train.seeding import seed_everything
from regzoo.train.timing import (
    criterion_differences,
    machine_line,
    time_criteria,
    time_steps,
)

__all__ = [
    "DistributedContext",
    "History",
    "UnsafeCheckpointError",
    "all_gather_cat",
    "criterion_differences",
    "fit",
    "init_distributed",
    "load_checkpoint",
    "machine_line",
    "save_checkpoint",
    "seed_everything",
    "time_criteria",
    "time_steps",
]
