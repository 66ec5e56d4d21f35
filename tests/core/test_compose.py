"""Objective: weighted named terms on one forward pass, breakdown, schedules, hooks, errors."""

import pytest
import torch
import torch.nn.functional as F

from regzoo import Objective
from regzoo.core.schedules import Constant, Cosine, LinearRamp, SigmoidRamp
from regzoo.methods.elr import EarlyLearningRegularization
from regzoo.models import MLP


def _l2(model):
    return sum(p.square().sum() for p in model.parameters())


def test_objective_composes_a_criterion_and_a_penalty_and_logs_both_parts():
    torch.manual_seed(0)
    model = MLP(4, 3, hidden=(5,))
    x, y, idx = torch.randn(6, 4), torch.randint(0, 3, (6,)), torch.arange(6)
    objective = Objective()
    objective.add("elr", EarlyLearningRegularization(6, 3))
    objective.add("l2", _l2, weight=1e-3)
    logits = model(x)
    out = objective(logits=logits, target=y, index=idx, model=model)
    reference = EarlyLearningRegularization(6, 3)
    expected = reference(logits, y, idx) + 1e-3 * _l2(model)
    torch.testing.assert_close(out.total, expected)
    logged = out.as_floats()
    assert set(logged) == {"total", "elr", "l2"}
    assert logged["l2"] == pytest.approx(1e-3 * float(_l2(model).detach()))
    out.total.backward()
    assert all(p.grad is not None for p in model.parameters())
    assert "modules_by_name.elr.targets" in objective.state_dict()


def test_positional_args_map_inputs_to_callables_with_other_parameter_names():
    objective = Objective().add("ce", F.cross_entropy, args=("logits", "target"))
    logits, y = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    torch.testing.assert_close(objective(logits=logits, target=y).total,
                               F.cross_entropy(logits, y))


def test_step_and_epoch_schedules_drive_the_weights():
    objective = Objective()
    objective.add("a", lambda v: v, weight=LinearRamp(0.0, 1.0, length=4))
    objective.add("b", lambda v: v, weight=Constant(2.0), per="epoch")
    objective.add("c", lambda v: v, weight=lambda e: float(e), per="epoch")
    v = torch.tensor(1.0)
    weights = [objective(v=v).weights["a"] for _ in range(6)]
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    objective.set_epoch(3)
    assert objective(v=v).weights["c"] == 3.0


def test_hooks_run_in_registration_order():
    calls = []

    class Term(torch.nn.Module):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def forward(self, v):
            return v

        def after_backward(self, model):
            calls.append(("after_backward", self.name))

        def set_epoch(self, epoch):
            calls.append(("set_epoch", self.name, epoch))

    objective = Objective().add("first", Term("first")).add("second", Term("second"))
    objective.after_backward(torch.nn.Linear(1, 1))
    objective.set_epoch(2)
    assert calls == [("after_backward", "first"), ("after_backward", "second"),
                     ("set_epoch", "first", 2), ("set_epoch", "second", 2)]


def test_missing_input_duplicate_name_and_non_finite_terms_raise():
    objective = Objective().add("elr", EarlyLearningRegularization(4, 2))
    with pytest.raises(ValueError, match="needs inputs"):
        objective(logits=torch.randn(2, 2))
    with pytest.raises(ValueError, match="already registered"):
        objective.add("elr", F.cross_entropy)
    bad = Objective().add("nan", lambda v: v)
    with pytest.raises(FloatingPointError, match="'nan' is non-finite"):
        bad(v=torch.tensor(float("nan")))
    with pytest.raises(ValueError, match="no terms"):
        Objective()(v=torch.tensor(1.0))
    with pytest.raises(TypeError, match="scalar"):
        Objective().add("vec", lambda v: v)(v=torch.ones(3))


def test_objective_counters_survive_state_dict():
    objective = Objective().add("v", lambda v: v)
    for _ in range(3):
        objective(v=torch.tensor(1.0))
    objective.set_epoch(5)
    restored = Objective().add("v", lambda v: v)
    restored.load_state_dict(objective.state_dict())
    assert (restored.step, restored.epoch) == (3, 5)


def test_sigmoid_ramp_matches_temporal_ensembling_shape():
    ramp = SigmoidRamp(2.0, length=100)
    assert ramp(0) == pytest.approx(2.0 * torch.exp(torch.tensor(-5.0)).item())
    assert ramp(100) == ramp(1000) == 2.0
    assert ramp(50) == pytest.approx(2.0 * float(torch.exp(torch.tensor(-1.25))))
    assert SigmoidRamp(3.0, length=0)(0) == 3.0
    assert Cosine(1.0, 0.0, 10)(5) == pytest.approx(0.5)


def test_warmup_cosine_ramps_linearly_then_follows_the_cosine():
    from regzoo.core.schedules import WarmupCosine

    schedule = WarmupCosine(warmup=4, length=14)
    assert [schedule(t) for t in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert schedule(4) == pytest.approx(1.0)
    assert schedule(9) == pytest.approx(0.5)        # halfway through the 10 decay steps
    assert schedule(14) == pytest.approx(0.0) and schedule(100) == pytest.approx(0.0)
    plain = WarmupCosine(warmup=0, length=10, end=0.1)
    assert plain(0) == pytest.approx(1.0) and plain(10) == pytest.approx(0.1)
    assert plain(5) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="warmup must be shorter"):
        WarmupCosine(warmup=10, length=10)
    with pytest.raises(ValueError, match="length"):
        WarmupCosine(warmup=0, length=0)
