"""Every penalty under DDP: 2 gloo processes against one process on the global batch (issue 23).

Generated from the registry, like the transforms' contract: each implemented penalty gets a
small float64 model of the kind it needs (:data:`RECIPES`), wrapped in DDP with
:func:`regzoo.train.distributed.wrap_model` on 2 ranks and trained 3 SGD steps on its task loss
plus the penalty, each rank on its half of every global batch. A penalty whose term is a mean
over examples (or does not read the batch) must end, on both ranks, with exactly the parameters
one process reaches on the whole batch (atol 1e-10). A batch-coupled penalty (a term that is a
nonlinear function of the whole batch, or state filled from the local batch) is listed in
:data:`BATCH_COUPLED` with the reason: its ranks must still end with identical parameters, and
its gap to one process must stay above 1e-8, so the declaration cannot go stale unnoticed.
State a rank fills from its own half of the batch (a queue) differs between the ranks by
construction: :data:`RANK_LOCAL_STATE` names it and the test asserts that it differs and that
the rest agrees. Stochastic parts of the models (dropout, node dropout, the reparameterised
draw) are switched off: each process draws from its own generator, so no 2-rank run can draw
the one-process noise, and the contract is about the penalties.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from test_gloo import WORLD, _gap, _spawn
from torch import nn

from regzoo.methods.dr_tune import DRTune
from regzoo.methods.gigatok import (
    SemanticRegularizer,
    TokenizerConfig,
    VQTokenizer,
    tokenizer_loss,
)
from regzoo.methods.nde_solver_reg import SolverRegularizedODE
from regzoo.methods.soft_equivariance import (
    O2,
    O3,
    SoftEquivariance,
    TensorLayerProjector,
    TensorRep,
    modified_inertia,
)
from regzoo.methods.vgnn_ehr import VGNN, balanced_pos_weight, vgnn_loss
from regzoo.models import MLP
from regzoo.registry import card, cards

pytestmark = pytest.mark.distributed

N, B, STEPS, LR = 16, 4, 3, 0.05  # B examples per rank: a global batch holds WORLD * B
PENALTIES = [c.slug for c in cards(kind="penalty") if c.implemented]


@dataclass
class Recipe:
    """One penalty on its model: what DDP wraps, the loss of a step, the state beside it.

    ``loss(net, rows)`` is the task loss plus the penalty on the examples ``rows``, computed
    through ``net`` (``model`` or its DDP wrapper); ``state()`` returns the buffers that the
    steps change beside the parameters (DR-Tune's queues and counters; none for the others).
    """

    model: nn.Module
    loss: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    state: Callable[[], dict[str, torch.Tensor]] = field(default=dict)


def _global_batches(generator: torch.Generator) -> list[torch.Tensor]:
    """The example indices of each step's global batch (distinct within a step)."""
    return [torch.randperm(N, generator=generator)[:WORLD * B] for _ in range(STEPS)]


class _Features(nn.Module):
    """What DDP runs for DR-Tune: the classifier's features (DR-Tune applies the head itself,
    to them and to the calibrated queue; the head's gradient still reaches DDP's reducer)."""

    def __init__(self, classifier: MLP) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(x)


def _dr_tune() -> Recipe:
    g = torch.Generator().manual_seed(21)
    x = torch.randn(N, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=g)
    torch.manual_seed(0)
    classifier = MLP(6, 3, hidden=(8,)).double()
    # DRTune stays outside DDP, as its docstring uses it: DDP would broadcast rank 0's buffers
    # (the queues) over the others' at every forward.
    penalty = DRTune(classifier.body, copy.deepcopy(classifier.body), classifier.head, 3,
                     queue_size=2 * WORLD * B).double()
    penalty.warm_up([(x[i:i + B], y[i:i + B]) for i in range(0, N, B)])  # the same on every rank

    def loss(net: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        return penalty.loss(net(x[rows]), x[rows], y[rows])  # (1 − w)·CE + the DR term

    def state() -> dict[str, torch.Tensor]:
        return {name: buffer.clone() for name, buffer in penalty.named_buffers()}

    return Recipe(_Features(classifier), loss, state)


def _soft_equivariance() -> Recipe:
    x, y = modified_inertia(N, k=2, dtype=torch.float64)
    reps = [TensorRep((2, 2)), TensorRep((2, 2, 1)), TensorRep((0, 0, 1))]  # 2 masses → inertia
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(reps[0].dim, reps[1].dim), nn.Tanh(),
                          nn.Linear(reps[1].dim, reps[2].dim)).double()
    layers = [model[0], model[2]]
    projectors = {name: [TensorLayerProjector(a, b, group) for a, b in itertools.pairwise(reps)]
                  for name, group in {"O3": O3(), "O2z": O2(2)}.items()}
    penalty = SoftEquivariance(layers, projectors, {"O3": 0.5, "O2z": 1.0})

    def loss(net: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(net(x[rows]), y[rows]) + penalty()

    return Recipe(model, loss)


def _vgnn_ehr() -> Recipe:
    g = torch.Generator().manual_seed(23)
    codes = torch.randint(0, 10, (N, 5), generator=g)
    mask = torch.rand(N, 5, generator=g) < 0.7
    y = (torch.rand(N, generator=g) < 0.4).double()
    pos_weight = balanced_pos_weight(y)  # from the whole training set: a constant
    torch.manual_seed(0)
    model = VGNN(10, dim=8, dropout=0.0, node_dropout=0.0, sample=False).double()

    def loss(net: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        logits, kl = net(codes[rows], mask[rows])
        return vgnn_loss(logits, kl, y[rows], lam=1.0, pos_weight=pos_weight)

    return Recipe(model, loss)


class _Dynamics(nn.Module):
    """dz/dt = f(z), a small autonomous MLP."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class _ODEClassifier(nn.Module):
    """Linear encoder, an ODE block with the solver-heuristics penalty (ERNODE), linear head."""

    def __init__(self, features: int, width: int, classes: int) -> None:
        super().__init__()
        self.encoder = nn.Linear(features, width)
        self.ode = SolverRegularizedODE(_Dynamics(width), rtol=1e-5, atol=1e-5, reg="error")
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, stats = self.ode(self.encoder(x))
        return self.head(z), stats.reg


def _nde_solver_reg() -> Recipe:
    g = torch.Generator().manual_seed(25)
    x = torch.randn(N, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=g)
    torch.manual_seed(0)
    model = _ODEClassifier(4, 6, 3).double()

    def loss(net: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        logits, reg = net(x[rows])
        return F.cross_entropy(logits, y[rows]) + 0.1 * reg

    return Recipe(model, loss)


class _RegularizedTokenizer(nn.Module):
    """A VQ tokenizer and GigaTok's semantic regulariser in the one module DDP wraps.

    The regulariser owns trainable parameters (its MLP head φ): outside the wrapped module
    their gradients would never be averaged over the ranks.
    """

    def __init__(self, entropy_weight: float) -> None:
        super().__init__()
        config = TokenizerConfig(image_size=4, patch_size=2, width=8, encoder_depth=1,
                                 decoder_depth=1, heads=2, mlp_ratio=2, num_codes=8, code_dim=4)
        self.tokenizer = VQTokenizer(config)
        teacher = nn.Conv2d(1, 6, kernel_size=2, stride=2)  # frozen: a 2×2 grid of patch features
        self.semantic = SemanticRegularizer(8, 6, teacher=teacher)
        self.entropy_weight = entropy_weight

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return tokenizer_loss(self.tokenizer, images, semantic=self.semantic,
                              entropy_weight=self.entropy_weight).total


def _gigatok(entropy_weight: float) -> Callable[[], Recipe]:
    def build() -> Recipe:
        g = torch.Generator().manual_seed(27)
        images = torch.rand(N, 1, 4, 4, generator=g, dtype=torch.float64) * 2 - 1
        torch.manual_seed(0)
        model = _RegularizedTokenizer(entropy_weight).double()
        return Recipe(model, lambda net, rows: net(images[rows]))

    return build


RECIPES: dict[str, Callable[[], Recipe]] = {
    "dr_tune": _dr_tune,
    "gigatok": _gigatok(entropy_weight=0.0),  # the semantic regulariser alone
    "gigatok+entropy": _gigatok(entropy_weight=0.005),  # and the entropy loss (XL-XXL configs)
    "nde_solver_reg": _nde_solver_reg,
    "soft_equivariance": _soft_equivariance,
    "vgnn_ehr": _vgnn_ehr,
}
"""Each case (named by its penalty's slug, a variant after a ``+``) and how to build it."""

BATCH_COUPLED = {
    **{c.slug: c.declarations["batch_coupled"] for c in cards(kind="penalty")
       if "batch_coupled" in c.declarations and c.slug in RECIPES},
    "gigatok+entropy": card("gigatok").declarations["batch_coupled_variant"],
}
"""Cases whose 2-rank run differs from one process on the global batch, and why (the cards'
declarations)."""

RANK_LOCAL_STATE = {
    "dr_tune": ("pretrained_queue", "downstream_queue", "label_queue"),
}
"""Buffers a rank fills from its own half of each batch: they differ between the ranks (DR-Tune
enqueues the local batch, nothing gathers it); every other buffer agrees."""

COVERED_ELSEWHERE = {
    "hessian_alignment": "test_hessian_alignment_gloo.py: batch-coupled (the HGP term is a "
                         "nonlinear function of each domain's batch gradient); the 2-rank "
                         "gradient is the local estimator averaged exactly",
}
"""Penalties whose distributed contract lives in their own file."""


def _train(case: str, rank: int | None) -> dict[str, object]:
    """STEPS steps on rank ``rank``'s half of each global batch (``None``: the whole batch)."""
    from regzoo.train.distributed import DistributedContext, wrap_model

    recipe = RECIPES[case]()
    steps = _global_batches(torch.Generator().manual_seed(5))
    net = recipe.model if rank is None else wrap_model(
        recipe.model, DistributedContext(rank, WORLD, rank, torch.device("cpu")))
    trainable = [p for p in recipe.model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=LR)
    for rows in steps:
        if rank is not None:
            rows = rows[rank * B:(rank + 1) * B]
        optimizer.zero_grad(set_to_none=True)
        recipe.loss(net, rows).backward()
        optimizer.step()
    return {"parameters": [p.detach().clone() for p in trainable], "state": recipe.state()}


def _worker(rank: int) -> dict[str, dict[str, object]]:
    return {case: _train(case, rank) for case in RECIPES}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, dict[str, object]]]:
    return _spawn(_worker, tmp_path_factory.mktemp("penalties"), timeout=240.0)


@pytest.mark.parametrize("case", sorted(RECIPES))
def test_two_ranks_agree_and_equal_one_process_unless_batch_coupled(case, two_ranks):
    first, second = (ranks[case] for ranks in two_ranks)
    assert _gap(first["parameters"], second["parameters"]) == 0.0, \
        f"{case}: the ranks' parameters differ"
    reference = _train(case, None)["parameters"]
    before = [p.detach() for p in RECIPES[case]().model.parameters() if p.requires_grad]
    assert _gap(reference, before) > 1e-6, f"{case}: three steps left it untrained"
    gap = _gap(first["parameters"], reference)
    if case in BATCH_COUPLED:
        assert gap > 1e-8, f"{case} is declared batch-coupled but equals one process ({gap:.3g})"
    else:
        assert gap <= 1e-10, f"{case}: 2 ranks differ from one process by {gap:.3g}"


@pytest.mark.parametrize("case", sorted(RECIPES))
def test_only_the_declared_rank_local_state_differs_between_ranks(case, two_ranks):
    first, second = (ranks[case]["state"] for ranks in two_ranks)
    assert first.keys() == second.keys()
    local = RANK_LOCAL_STATE.get(case, ())
    assert set(local) <= set(first), f"{case}: declared buffers {local} not in its state"
    for name in first:
        equal = torch.equal(first[name], second[name])
        if name in local:
            assert not equal, f"{case}: {name} is declared rank-local but agrees on both ranks"
        else:
            assert equal, f"{case}: {name} differs between the ranks"


@pytest.mark.parametrize("case", sorted(c for c in RECIPES if "+" not in c))
def test_the_card_declares_the_coupling_the_run_measures(case):
    assert card(case).obj.batch_coupled == (case in BATCH_COUPLED), \
        f"{case}: the class attribute batch_coupled disagrees with BATCH_COUPLED"


def test_every_penalty_has_a_case_or_a_declared_home():
    covered = {case.partition("+")[0] for case in RECIPES} | set(COVERED_ELSEWHERE)
    missing = sorted(set(PENALTIES) - covered)
    assert not missing, f"add a recipe to RECIPES (or a declared reason) for {missing}"
    assert covered <= set(PENALTIES), "a case or declaration names an unregistered penalty"
    assert set(BATCH_COUPLED) | set(RANK_LOCAL_STATE) <= set(RECIPES)
