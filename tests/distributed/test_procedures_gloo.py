"""Every procedure under DDP: 2 gloo processes against one process, or a declared reason (issue 23).

Generated from the registry, like the penalties' and transforms' contracts. A procedure that
trains under DDP gets a case here: its fit function runs on 2 ranks with its ``context`` (each
rank on its shard of every epoch's permutation, the per-rank batch half the global one) and on
one process with the global batch, in float64; both ranks must end with identical parameters,
equal to one process's to 1e-10. STN has its own file. A procedure that trains in one process
by design is declared in :data:`ONE_PROCESS` with the reason, so a new procedure cannot slip
through without either.
"""

from __future__ import annotations

import pytest
import torch
from test_gloo import WORLD, _gap, _spawn

from regzoo.registry import cards

pytestmark = pytest.mark.distributed

N, B, EPOCHS = 16, 4, 3  # B images per rank: one process trains on WORLD * B
PROCEDURES = [c.slug for c in cards(kind="procedure") if c.implemented]

COVERED_ELSEWHERE = {"stn": "test_stn_gloo.py: 2 ranks end where one process ends"}

ONE_PROCESS = {
    "adapt_unlearn": "its GAN stages step a generator and a discriminator (with R1) inside one "
                     "step function: fit(distribute=False)",
    "coherentgs": "the per-pixel Gaussians of one scene are the model and every step renders "
                  "its training views: not data-parallel, fit(distribute=False); the context "
                  "only picks the device",
    "gifd": "an attack on one fixed, shared model: nothing is trained, nothing to average",
    "quantnas": "first-order DARTS alternates α steps on one split with weight steps on the "
                "other inside one step function: fit(distribute=False)",
}
"""Procedures that train in one process by design, and why."""


def _images() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (torch.rand(N, 1, 6, 6, generator=g, dtype=torch.float64) > 0.5).double()


def _qlae_model() -> torch.nn.Module:
    from regzoo.methods.latent_quantization.qlae import LatentAutoencoder

    torch.manual_seed(0)
    return LatentAutoencoder(36, 4, latent="quantized", hidden=(16,)).double()


def _fit_qlae(rank: int | None) -> list[torch.Tensor]:
    from regzoo.methods.latent_quantization.qlae import QLAEConfig, fit_qlae
    from regzoo.train.distributed import DistributedContext

    model = _qlae_model()
    context = None if rank is None else DistributedContext(rank, WORLD, rank,
                                                           torch.device("cpu"))
    config = QLAEConfig(epochs=EPOCHS, batch_size=B if rank is not None else WORLD * B)
    fit_qlae(model, _images(), config=config, context=context, progress=False)
    return [p.detach().clone() for p in model.parameters()]


CASES = {"latent_quantization": (_fit_qlae, _qlae_model)}
"""Procedures that train under DDP: the fit that runs them (``None``: one process) and the
untrained model it starts from."""


def _worker(rank: int) -> dict[str, list[torch.Tensor]]:
    return {slug: fit(rank) for slug, (fit, _) in CASES.items()}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, list[torch.Tensor]]]:
    return _spawn(_worker, tmp_path_factory.mktemp("procedures"), timeout=240.0)


@pytest.mark.parametrize("slug", sorted(CASES))
def test_two_ranks_agree_and_equal_one_process(slug, two_ranks):
    first, second = (ranks[slug] for ranks in two_ranks)
    assert _gap(first, second) == 0.0, f"{slug}: the ranks' parameters differ"
    fit, untrained = CASES[slug]
    reference = fit(None)
    assert _gap(reference, list(untrained().parameters())) > 1e-6, f"{slug}: left untrained"
    gap = _gap(first, reference)
    assert gap <= 1e-10, f"{slug}: 2 ranks differ from one process by {gap:.3g}"


def test_every_procedure_runs_under_ddp_or_says_why_not():
    declared = set(CASES) | set(COVERED_ELSEWHERE) | set(ONE_PROCESS)
    missing = sorted(set(PROCEDURES) - declared)
    assert not missing, f"add a DDP case or a declared reason for {missing}"
    assert declared <= set(PROCEDURES), "a case or declaration names an unregistered procedure"
