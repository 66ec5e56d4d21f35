"""Composition contract: every criterion with every transform, in one run (issue 23, part 1).

Generated from the registry: each implemented criterion meets each implemented transform on a
small MLP. Both act in one :class:`regzoo.core.compose.Objective` (the criterion on the logits,
the transform's terms beside it), three optimiser steps are taken, and the run must

- give finite losses, move every trainable parameter of the transform and the criterion's
  per-example state;
- equal, to the last bit, the same run written by hand as ``criterion(...) + terms`` (the
  Objective is bookkeeping, never different arithmetic);
- survive a ``state_dict`` round trip: a fresh model, transform and Objective loaded from the
  run continue exactly as the run does.

A transform whose update is more than ``loss.backward(); optimizer.step()`` says how in
:data:`STEPS` (SORSA's ordered γ-step, SaRA's own optimiser, R-AMT's gradient dropout that owns
the backward pass); one with a term that needs the outputs says so in :data:`TERMS`. A new
transform or criterion joins the matrix the moment it registers.
"""

import copy

import pytest
import torch

from regzoo.core.compose import Objective
from regzoo.core.kinds import transform_owner
from regzoo.models import MLP
from regzoo.registry import card, cards

pytestmark = pytest.mark.filterwarnings("ignore:rank 8 exceeds the smaller side")

N, C, FEATURES, STEPS_TAKEN = 24, 4, 16, 3
CRITERIA = [c for c in cards(kind="criterion") if c.implemented]
TRANSFORMS = [c for c in cards(kind="transform") if c.implemented]
PAIRS = [pytest.param(crit, tr, id=f"{crit.slug}+{tr.slug}")
         for crit in CRITERIA for tr in TRANSFORMS]


def _batches():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(N, FEATURES, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (N,), generator=g)
    order = torch.randperm(N, generator=g)
    return [(x[i], y[i], i) for i in order.split(N // STEPS_TAKEN)]


def _plain_terms(handle, teacher):
    return {"transform_penalty": lambda: handle.penalty()}


def _ba_lora_terms(handle, teacher):
    return {"ba_lora": lambda logits, inputs: handle.regularizer(logits, inputs=inputs).total}


TERMS = {"ba_lora": _ba_lora_terms}
"""Per transform: the Objective terms it adds (default: its weight-side ``penalty()``)."""


def _sgd(handle):
    return torch.optim.SGD(handle.trainable_parameters(), lr=0.05)


def _update_plain(handle, optimizer, total, logits, teacher):
    total.backward()
    optimizer.step()


def _update_sorsa(handle, optimizer, total, logits, teacher):
    total.backward()
    handle.step(optimizer)  # the optimiser step, then the decoupled γ-step


def _update_rmt(handle, optimizer, total, logits, teacher):
    from regzoo.methods.rmt import distillation_loss

    # Gradient dropout owns the backward pass: the task loss is the whole Objective.
    handle.gradient_dropout.backward(total, distillation_loss(logits, teacher),
                                     handle.trainable_parameters())
    optimizer.step()


STEPS = {"sorsa": (_sgd, _update_sorsa),
         "sara": (lambda handle: handle.optimizer(lr=0.05), _update_plain),
         "rmt": (_sgd, _update_rmt)}
"""Per transform: (optimiser factory, update) when it is not plain SGD + backward + step."""


def _build(criterion_card, transform_card):
    torch.manual_seed(0)
    model = MLP(FEATURES, C, hidden=(32,)).double()
    teacher = copy.deepcopy(model).eval()
    torch.manual_seed(1)
    handle = transform_card.obj.apply(model)
    criterion = criterion_card.obj(num_examples=N, num_classes=C).double()
    make_optimizer, update = STEPS.get(transform_card.slug, (_sgd, _update_plain))
    return model, teacher, handle, criterion, make_optimizer(handle), update


def _objective(transform_card, handle, teacher, criterion):
    """The transform's terms and one Objective holding the criterion and them."""
    terms = TERMS.get(transform_card.slug, _plain_terms)(handle, teacher)
    objective = Objective().add("criterion", criterion)
    for name, term in terms.items():
        objective.add(name, term)
    return terms, objective


def _train(criterion_card, transform_card, *, use_objective, steps=STEPS_TAKEN, state=None):
    model, teacher, handle, criterion, optimizer, update = _build(criterion_card,
                                                                  transform_card)
    terms, objective = _objective(transform_card, handle, teacher, criterion)
    if state is not None:
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
    if transform_card.slug == "rmt":
        handle.gradient_dropout.generator = torch.Generator().manual_seed(3)
    losses = []
    for x, y, index in _batches()[:steps]:
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        with torch.no_grad():
            teacher_logits = teacher(x)
        if use_objective:
            total = objective(logits=logits, target=y, index=index, inputs=x).total
        else:
            total = criterion(logits, y, index)
            for name, term in terms.items():
                total = total + (term(logits, x) if name == "ba_lora" else term())
        losses.append(float(total.detach()))
        update(handle, optimizer, total, logits, teacher_logits)
    return model, handle, criterion, objective, optimizer, losses


@pytest.mark.parametrize(("criterion_card", "transform_card"), PAIRS)
def test_the_pair_trains_in_one_objective_and_updates_both(criterion_card, transform_card):
    _, handle, criterion, _, _, losses = _train(criterion_card, transform_card,
                                                    use_objective=True)
    assert all(torch.isfinite(torch.tensor(losses)))
    _, fresh_handle, fresh_criterion, *_ = _train(criterion_card, transform_card,
                                                  use_objective=True, steps=0)
    moved = [not torch.equal(a, b) for a, b in zip(handle.trainable_parameters(),
                                                  fresh_handle.trainable_parameters())]
    assert moved and all(moved), f"{transform_card.slug}: parameters left untrained"
    changed = [not torch.equal(a, b) for a, b in zip(criterion.state_dict().values(),
                                                    fresh_criterion.state_dict().values())]
    assert any(changed), f"{criterion_card.slug}: per-example state never updated"


@pytest.mark.parametrize(("criterion_card", "transform_card"), PAIRS)
def test_the_objective_equals_the_run_written_by_hand(criterion_card, transform_card):
    with_objective = _train(criterion_card, transform_card, use_objective=True)
    by_hand = _train(criterion_card, transform_card, use_objective=False)
    assert with_objective[5] == by_hand[5]
    for (name, a), b in zip(with_objective[0].state_dict().items(),
                            by_hand[0].state_dict().values()):
        assert torch.equal(a, b), f"{name} differs"
    for a, b in zip(with_objective[2].state_dict().values(), by_hand[2].state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("criterion_card", "transform_card"), PAIRS)
def test_a_state_dict_round_trip_continues_exactly(criterion_card, transform_card):
    if transform_card.slug == "rmt":
        pytest.skip("R-AMT's gradient-dropout draws come from a generator outside the state")
    straight = _train(criterion_card, transform_card, use_objective=True)
    first = _train(criterion_card, transform_card, use_objective=True, steps=2)
    state = {"model": first[0].state_dict(), "objective": first[3].state_dict(),
             "optimizer": first[4].state_dict()}
    model, teacher, handle, criterion, optimizer, update = _build(criterion_card,
                                                                  transform_card)
    _, objective = _objective(transform_card, handle, teacher, criterion)
    model.load_state_dict(state["model"])
    objective.load_state_dict(state["objective"])
    optimizer.load_state_dict(state["optimizer"])
    x, y, index = _batches()[2]
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    total = objective(logits=logits, target=y, index=index, inputs=x).total
    update(handle, optimizer, total, logits, teacher(x).detach())
    for (name, a), b in zip(model.state_dict().items(), straight[0].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=f"{name} differs")


# --- penalties with criteria ------------------------------------------------------------------

def _hessian_alignment(model):
    from regzoo.methods.hessian_alignment import HessianAlignment

    penalty = HessianAlignment(model.head)
    half = N // STEPS_TAKEN // 2

    def term(features, target):  # the batch's two halves are the two domains
        return penalty([features[:half], features[half:]], [target[:half], target[half:]])

    return penalty, term


def _dr_tune(model):
    from regzoo.methods.dr_tune import DRTune

    penalty = DRTune(model.body, copy.deepcopy(model.body), model.head, C, queue_size=8
                     ).double()
    penalty.warm_up(_batches())
    return penalty, lambda features, inputs, target: penalty(features, inputs, target)


PENALTY_RECIPES = {"hessian_alignment": _hessian_alignment, "dr_tune": _dr_tune}
"""Penalties that regularise a classifier: how each joins an Objective on the MLP."""

NOT_ON_A_CLASSIFIER = {c.slug for c in cards(kind="penalty")
                       if "not_on_a_classifier" in c.declarations}
"""Penalties whose card declares they cannot meet the shared MLP classifier, and why."""

PENALTIES = [c for c in cards(kind="penalty") if c.implemented]
PENALTY_PAIRS = [pytest.param(crit, pen, id=f"{crit.slug}+{pen.slug}")
                 for crit in CRITERIA for pen in PENALTIES if pen.slug in PENALTY_RECIPES]


def test_every_penalty_has_a_recipe_or_a_declared_reason():
    unknown = [c.slug for c in PENALTIES
               if c.slug not in PENALTY_RECIPES and c.slug not in NOT_ON_A_CLASSIFIER]
    assert not unknown, f"add a composition recipe or a declared reason for {unknown}"


def _train_with_penalty(criterion_card, penalty_card, *, use_objective):
    torch.manual_seed(0)
    model = MLP(FEATURES, C, hidden=(32,)).double()
    penalty, term = PENALTY_RECIPES[penalty_card.slug](model)
    criterion = criterion_card.obj(num_examples=N, num_classes=C).double()
    objective = Objective().add("criterion", criterion).add("penalty", term, weight=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for x, y, index in _batches():
        optimizer.zero_grad(set_to_none=True)
        features = model.features(x)
        logits = model.head(features)
        if use_objective:
            total = objective(logits=logits, target=y, index=index, features=features,
                              inputs=x).total
        else:
            extra = (term(features, x, y) if penalty_card.slug == "dr_tune"
                     else term(features, y))
            total = criterion(logits, y, index) + 0.1 * extra
        losses.append(float(total.detach()))
        total.backward()
        optimizer.step()
    return model, penalty, criterion, losses


@pytest.mark.parametrize(("criterion_card", "penalty_card"), PENALTY_PAIRS)
def test_a_criterion_and_a_penalty_train_together_as_written_by_hand(criterion_card,
                                                                      penalty_card):
    model, penalty, criterion, losses = _train_with_penalty(criterion_card, penalty_card,
                                                            use_objective=True)
    assert all(torch.isfinite(torch.tensor(losses)))
    hand = _train_with_penalty(criterion_card, penalty_card, use_objective=False)
    assert losses == hand[3]
    for a, b in zip(model.state_dict().values(), hand[0].state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(penalty.state_dict().values(), hand[1].state_dict().values()):
        assert torch.equal(a, b)
    fresh = criterion_card.obj(num_examples=N, num_classes=C).double()
    assert any(not torch.equal(a, b) for a, b in zip(criterion.state_dict().values(),
                                                    fresh.state_dict().values()))


# --- two transforms on different layers ---------------------------------------------------------

def _on_layer(slug):
    """Apply transform ``slug`` to one named layer of the model (its own targeting option)."""
    from regzoo.methods.ba_lora import BALoRA
    from regzoo.methods.ftwt import FTWT
    from regzoo.methods.hag import HardAttentionGates
    from regzoo.methods.rmt import MaskTuning
    from regzoo.methods.sara import SaRA
    from regzoo.methods.sorsa import SORSA

    return {"ba_lora": lambda model, name: BALoRA.apply(model, target_modules=[name], rank=2),
            "hag": lambda model, name: HardAttentionGates.apply(model, sites=[name]),
            "rmt": lambda model, name: MaskTuning.apply(model, target_modules=[name]),
            "sara": lambda model, name: SaRA.apply(model, target_modules=[name]),
            "sorsa": lambda model, name: SORSA.apply(model, target_modules=[name], rank=2),
            "ftwt": lambda model, name: FTWT.apply(model, targets=[name]),
            }[slug]


SELECTED_BY_TYPE = {c.slug for c in TRANSFORMS if "every_layer_of_type" in c.declarations}
"""Transforms whose card declares they cannot be confined to one layer."""

ADAPTERS = {c.slug for c in TRANSFORMS if "one_adapter_per_layer" in c.declarations}
"""Built on ``regzoo.adapters.wrap``, which freezes every parameter no transform added."""

TRAINS_BACKBONE = {c.slug for c in TRANSFORMS if "trains_backbone" in c.declarations}
"""Transforms that also fine-tune the network's own weights (an adapter after them freezes
those, by design: only the parameters they added keep training)."""

LAYERED = [c.slug for c in TRANSFORMS if c.slug not in SELECTED_BY_TYPE]
TRANSFORM_PAIRS = [pytest.param(first, second, id=f"{first}@body.0+{second}@head")
                   for first in LAYERED for second in LAYERED if first != second]


def test_every_transform_can_be_confined_to_a_layer_or_says_why_not():
    unknown = [s for s in (c.slug for c in TRANSFORMS)
               if s not in SELECTED_BY_TYPE and s not in ("ba_lora", "hag", "rmt", "sara",
                                                         "sorsa", "ftwt")]
    assert not unknown, f"add a one-layer recipe or a declared reason for {unknown}"


def _extra_terms(slug, handle, logits, x):
    if slug == "ba_lora":
        return handle.regularizer(logits, inputs=x).total
    if slug == "sara":
        term = handle.rank_term()
        return handle.penalty() if term is None else handle.penalty() + term
    return handle.penalty()


@pytest.mark.parametrize(("first", "second"), TRANSFORM_PAIRS)
def test_two_transforms_on_different_layers_both_train(first, second):
    from regzoo.methods.rmt import distillation_loss

    torch.manual_seed(0)
    model = MLP(FEATURES, C, hidden=(32,)).double()
    teacher = copy.deepcopy(model).eval()
    torch.manual_seed(1)
    handles, intended = {}, {}
    for slug, layer in ((first, "body.0"), (second, "head")):
        handles[slug] = _on_layer(slug)(model, layer)
        own = [p for p in handles[slug].trainable_parameters()
               if not (slug in TRAINS_BACKBONE and second in ADAPTERS)
               or transform_owner(p) == slug]
        intended[slug] = [p for p in own if p.requires_grad
                          and all(p is not q for ps in intended.values() for q in ps)]
    for slug, params in intended.items():
        frozen = sum(not p.requires_grad for p in params)
        assert not frozen, f"{slug}: {frozen} of its parameters frozen by the other transform"
    before = {slug: [p.detach().clone() for p in ps] for slug, ps in intended.items()}
    masked = [p for p in intended.get("rmt", [])]
    others = [p for slug, ps in intended.items() if slug != "rmt" for p in ps]
    optimizer = torch.optim.SGD([p for ps in intended.values() for p in ps], lr=0.05)
    for x, y, _ in _batches():
        optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        total = torch.nn.functional.cross_entropy(logits, y) + sum(
            _extra_terms(slug, handle, logits, x) for slug, handle in handles.items())
        assert torch.isfinite(total)
        if masked:  # R-AMT's gradient dropout on its scores; the rest plain backward
            if others:
                total.backward(inputs=others, retain_graph=True)
            handles["rmt"].gradient_dropout.backward(
                total, distillation_loss(logits, teacher(x).detach()), masked)
        else:
            total.backward()
        optimizer.step()
        if "sorsa" in handles:
            handles["sorsa"].orthonormal_step()
    for slug, params in intended.items():
        moved = [not torch.equal(p.detach(), b) for p, b in zip(params, before[slug])]
        assert moved and all(moved), f"{slug}: parameters left untrained next to the other"


# --- penalties with transforms ------------------------------------------------------------------

PENALTY_TRANSFORM_DECLARED = {(c.slug, other) for c in cards(kind="penalty")
                              for other in c.declarations.get("pairs", {})}
"""Penalty × transform pairs a penalty's card declares do not meet as applied by default."""

PENALTY_TRANSFORM_PAIRS = [
    pytest.param(pen, tr, id=f"{pen}+{tr.slug}")
    for pen in PENALTY_RECIPES for tr in TRANSFORMS
    if (pen, tr.slug) not in PENALTY_TRANSFORM_DECLARED]


def test_a_declared_penalty_transform_pair_fails_with_a_clear_error():
    from regzoo.registry import card

    for pen, slug in PENALTY_TRANSFORM_DECLARED:
        with pytest.raises(ValueError, match="head has no trainable parameters"):
            _train_penalty_with_transform(pen, card(slug), use_objective=True)


def _train_penalty_with_transform(penalty_slug, transform_card, *, use_objective):
    """Cross-entropy, the penalty on the classifier and the transform's terms, three steps.

    The transform is applied first, so the penalty sees the transformed body and head (as a user
    who adapts a network and then regularises its features would build it).
    """
    torch.manual_seed(0)
    model = MLP(FEATURES, C, hidden=(32,)).double()
    teacher = copy.deepcopy(model).eval()
    torch.manual_seed(1)
    handle = transform_card.obj.apply(model)
    penalty, penalty_term = PENALTY_RECIPES[penalty_slug](model)
    transform_terms = TERMS.get(transform_card.slug, _plain_terms)(handle, teacher)
    objective = Objective().add("ce", torch.nn.functional.cross_entropy,
                                args=("logits", "target"))
    objective.add("penalty", penalty_term, weight=0.1)
    for name, term in transform_terms.items():
        objective.add(name, term)
    make_optimizer, update = STEPS.get(transform_card.slug, (_sgd, _update_plain))
    optimizer = make_optimizer(handle)
    own = [p for p in penalty.parameters() if p.requires_grad
           and all(p is not q for group in optimizer.param_groups for q in group["params"])]
    if own:
        optimizer.add_param_group({"params": own})
    if transform_card.slug == "rmt":
        handle.gradient_dropout.generator = torch.Generator().manual_seed(3)
    losses = []
    for x, y, _ in _batches():
        optimizer.zero_grad(set_to_none=True)
        features = model.features(x)
        logits = model.head(features)
        if use_objective:
            total = objective(logits=logits, target=y, features=features, inputs=x).total
        else:
            extra = (penalty_term(features, x, y) if penalty_slug == "dr_tune"
                     else penalty_term(features, y))
            total = torch.nn.functional.cross_entropy(logits, y) + 0.1 * extra
            for name, term in transform_terms.items():
                total = total + (term(logits, x) if name == "ba_lora" else term())
        losses.append(float(total.detach()))
        with torch.no_grad():
            teacher_logits = teacher(x)
        update(handle, optimizer, total, logits, teacher_logits)
    return model, handle, penalty, losses


@pytest.mark.parametrize(("penalty_slug", "transform_card"), PENALTY_TRANSFORM_PAIRS)
def test_a_penalty_and_a_transform_train_together_as_written_by_hand(penalty_slug,
                                                                     transform_card):
    model, handle, penalty, losses = _train_penalty_with_transform(
        penalty_slug, transform_card, use_objective=True)
    assert all(torch.isfinite(torch.tensor(losses)))
    torch.manual_seed(0)
    fresh = MLP(FEATURES, C, hidden=(32,)).double()
    torch.manual_seed(1)
    fresh_handle = transform_card.obj.apply(fresh)
    moved = [not torch.equal(a, b) for a, b in zip(handle.trainable_parameters(),
                                                  fresh_handle.trainable_parameters())]
    assert moved and all(moved), f"{transform_card.slug}: parameters left untrained"
    hand = _train_penalty_with_transform(penalty_slug, transform_card, use_objective=False)
    assert losses == hand[3]
    for (name, a), b in zip(model.state_dict().items(), hand[0].state_dict().values()):
        assert torch.equal(a, b), f"{name} differs"
    for a, b in zip(penalty.state_dict().values(), hand[2].state_dict().values()):
        assert torch.equal(a, b)


# --- criteria inside a procedure ----------------------------------------------------------------

OWN_LOSS = {c.slug for c in cards(kind="procedure") if "owns_loss" in c.declarations}
"""Procedures whose card declares they own their loss (a criterion cannot join them)."""

CUSTOM_LOSS = {"stn": "train_loss"}
"""Procedures that take the training loss as an argument: the argument's name."""


def test_every_procedure_takes_a_loss_or_says_why_not():
    procedures = {c.slug for c in cards(kind="procedure") if c.implemented}
    assert procedures == set(OWN_LOSS) | set(CUSTOM_LOSS)


def _stn_with(criterion_card, *, use_objective):
    from regzoo.data import TensorBatches
    from regzoo.methods.stn import HyperMLP, Hyperparameter, HyperparameterSpace, STNConfig, fit_stn

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * N, FEATURES, generator=g)
    y = torch.randint(0, C, (2 * N,), generator=g)
    torch.manual_seed(0)
    space = HyperparameterSpace({"d1": Hyperparameter(0.05, 0.0, 0.9)})
    net = HyperMLP(FEATURES, C, (8,), ("d1",), hyper_dim=1)
    criterion = criterion_card.obj(num_examples=N, num_classes=C)
    objective = Objective().add("criterion", criterion)
    epochs_seen = []
    if hasattr(criterion, "set_epoch"):
        advance = criterion.set_epoch
        criterion.set_epoch = lambda epoch: (epochs_seen.append(epoch), advance(epoch))

    def train_loss(model, batch, hyper):
        logits = model(batch[0], hyper)
        if use_objective:
            return objective(logits=logits, target=batch[1], index=batch[2]).total
        return criterion(logits, batch[1], batch[2])

    result = fit_stn(net, space, TensorBatches(x[:N], y[:N], 8, seed=0),
                     TensorBatches(x[N:], y[N:], 8, seed=1),
                     config=STNConfig(epochs=3, warmup_epochs=1, hyper_lr=0.1),
                     train_loss=train_loss, on_epoch_start=objective.set_epoch,
                     state={"objective": objective}, progress=False)
    return net, criterion, result, epochs_seen


@pytest.mark.parametrize("criterion_card", CRITERIA, ids=lambda c: c.slug)
@pytest.mark.filterwarnings("ignore:PS-KD has seen more than two epochs")
def test_a_criterion_trains_inside_stn_as_its_training_loss(criterion_card):
    net, criterion, result, _ = _stn_with(criterion_card, use_objective=True)
    assert all(torch.isfinite(torch.tensor(result.history.curve("train_loss"))))
    fresh = criterion_card.obj(num_examples=N, num_classes=C)
    assert any(not torch.equal(a, b) for a, b in zip(criterion.state_dict().values(),
                                                    fresh.state_dict().values()))
    hand_net, *_ = _stn_with(criterion_card, use_objective=False)
    for (name, a), b in zip(net.state_dict().items(), hand_net.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs"


EPOCH_CRITERIA = [c for c in CRITERIA if hasattr(c.obj, "set_epoch")]


@pytest.mark.parametrize("criterion_card", EPOCH_CRITERIA, ids=lambda c: c.slug)
@pytest.mark.filterwarnings("ignore:PS-KD has seen more than two epochs")
def test_stn_advances_the_epoch_of_a_criterion_that_tracks_it(criterion_card):
    *_, epochs_seen = _stn_with(criterion_card, use_objective=True)
    assert epochs_seen[-2:] == [1, 2]


# --- declared pairs and mistakes of composition: clear errors -----------------------------------

@pytest.mark.parametrize("first", sorted(ADAPTERS))
@pytest.mark.parametrize("second", sorted(ADAPTERS))
def test_a_second_adapter_on_an_adapted_layer_names_the_one_it_carries(first, second):
    model = MLP(FEATURES, C, hidden=(32,)).double()
    _on_layer(first)(model, "head")
    carried = type(model.head).__name__
    with pytest.raises(ValueError, match=f"'head' already carries an adapter \\({carried}\\)"):
        _on_layer(second)(model, "head")


def test_every_card_declaration_is_known_and_says_why():
    from regzoo.registry import DECLARATIONS

    for method in cards():
        for key, reason in method.declarations.items():
            assert key in DECLARATIONS
            reasons = reason.values() if isinstance(reason, dict) else [reason]
            assert all(isinstance(r, str) and len(r) > 20 for r in reasons), (method.slug, key)
    for method in cards(kind="penalty"):
        if method.implemented:
            assert method.obj.batch_coupled == ("batch_coupled" in method.declarations), \
                f"{method.slug}: the class attribute and the card disagree on batch coupling"


@pytest.mark.parametrize("slug", sorted(ADAPTERS))
def test_an_adapter_applied_after_hag_leaves_the_gates_trainable_and_skips_their_layers(slug):
    from regzoo.methods.hag import HardAttentionGates

    model = MLP(FEATURES, C, hidden=(32,)).double()
    gates = HardAttentionGates.apply(model, sites=["body.0"])
    handle = card(slug).obj.apply(model, **({"rank": 2} if slug in ("ba_lora", "sorsa") else {}))
    assert all(p.requires_grad for p in gates.gate_parameters())
    assert {transform_owner(p) for p in handle.trainable_parameters()} >= {slug}
    # Every weight of the network itself is frozen (the gated layer's too), as peft freezes.
    assert not [name for name, p in model.named_parameters()
                if p.requires_grad and transform_owner(p) is None]


def test_an_adapter_does_not_adapt_the_layers_another_transform_added():
    from regzoo.methods.ftwt import FTWT
    from regzoo.methods.sorsa import SORSA

    model = MLP(FEATURES, C, hidden=(32,)).double()
    FTWT.apply(model, targets=["body.0"])
    handle = SORSA.apply(model, rank=2)
    assert not any("predictor" in name for name in handle.layers)
    assert all(p.requires_grad for p in model.body[0].predictor.parameters())
    with pytest.raises(ValueError, match="added to the model by ftwt"):
        SORSA.apply(model, target_modules=["body.0.predictor.linear"], rank=2)


def test_one_criterion_instance_under_two_names_is_refused():
    criterion = CRITERIA[0].obj(num_examples=N, num_classes=C)
    objective = Objective().add("first", criterion)
    with pytest.raises(ValueError, match=r"already registered as 'first'.*written twice"):
        objective.add("second", criterion)


@pytest.mark.parametrize("criterion_card", CRITERIA, ids=lambda c: c.slug)
def test_a_criterion_without_index_says_how_to_get_one(criterion_card):
    criterion = criterion_card.obj(num_examples=N, num_classes=C)
    logits, target = torch.randn(4, C), torch.randint(0, C, (4,))
    with pytest.raises(TypeError, match=r"index is None.*IndexedDataset"):
        criterion(logits, target, None)
    objective = Objective().add("crit", criterion)
    with pytest.raises(ValueError, match=r"needs inputs \['index'\].*IndexedDataset"):
        objective(logits=logits, target=target)


def test_fit_refuses_a_transform_applied_after_the_optimizer_was_built():
    from regzoo.methods.hag import HardAttentionGates
    from regzoo.train import fit

    model = MLP(FEATURES, C, hidden=(32,)).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    HardAttentionGates.apply(model, sites=["body.0"])
    batches = [(x, y) for x, y, _ in _batches()]
    with pytest.raises(ValueError, match=r"that hag added.*applied after the optimizer"):
        fit(model, batches, lambda m, b: torch.nn.functional.cross_entropy(m(b[0]), b[1]),
            optimizer, epochs=1)
