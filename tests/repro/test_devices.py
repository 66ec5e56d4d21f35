"""Every reproduction trains where the runner says: the unit's device reaches its models.

Without CUDA (CI, the CPU machines) each reproduction's first tiny unit of the paper's method
(the headline claim's arm; a peer library's arm may be CPU-only by nature) is run with a
``UnitEnv`` whose device is ``cuda``: a unit that honours the device fails at its first
``.to(device)`` with torch's "not compiled with CUDA" error, while one that ignores it would
quietly train on the CPU and return — the failure this test exists to catch. With CUDA the
unit runs there and every optimiser's parameters must live on the GPU.
"""

import pytest
import torch

from regzoo.registry import cards
from regzoo.repro.protocol import UnitEnv
from regzoo.repro.runner import load_reproduction
from regzoo.train.distributed import DistributedContext

SLUGS = [c.slug for c in cards() if c.implemented]


def _env(tmp_path, device):
    context = DistributedContext(rank=0, world_size=1, local_rank=0,
                                 device=torch.device(device))
    return UnitEnv(context=context, checkpoint_path=str(tmp_path / "unit.pt"), resume=False,
                   log=lambda record: None, progress=False, workdir=str(tmp_path))


@pytest.mark.parametrize("slug", SLUGS)
def test_the_unit_device_reaches_the_training(slug, tmp_path, monkeypatch):
    repro = load_reproduction(slug)
    config = repro.config_type.tiny()
    units = repro.units(config)
    method = repro.claim(config).method
    unit = next((u for u in units if u.arm == method), units[0])
    if torch.cuda.is_available():
        devices = set()
        original = torch.optim.Optimizer.__init__

        def recording(self, params, *args, **kwargs):
            params = list(params)
            for group in params:
                tensors = group["params"] if isinstance(group, dict) else [group]
                devices.update(t.device.type for t in tensors)
            original(self, params, *args, **kwargs)

        monkeypatch.setattr(torch.optim.Optimizer, "__init__", recording)
        repro.run_unit(config, unit, _env(tmp_path, "cuda"))
        assert devices <= {"cuda"}, f"{slug} trained parameters on {devices}"
        return
    with pytest.raises((AssertionError, RuntimeError), match=r"CUDA|cuda"):
        repro.run_unit(config, unit, _env(tmp_path, "cuda"))
