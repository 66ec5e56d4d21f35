"""The reference loop: exact resume, non-finite loss, hooks, checkpoints, timing."""

import pytest
import torch
import torch.nn.functional as F

from regzoo.data import TensorBatches
from regzoo.methods.elr import EarlyLearningRegularization
from regzoo.models import MLP
from regzoo.train import fit, load_checkpoint, time_steps


class Interrupted(Exception):
    pass


def _run(tmp_path, epochs, *, resume=False, stop_after=None, dropout=0.1):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 5, generator=g), torch.randint(0, 3, (64,), generator=g)
    model = MLP(5, 3, hidden=(16,), dropout=dropout)
    criterion = EarlyLearningRegularization(64, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)

    def step(net, batch):
        xb, yb, idx = batch
        return criterion(net(xb), yb, idx)

    def evaluate(net, epoch):
        if stop_after is not None and epoch > stop_after:
            raise Interrupted
        return {"train_accuracy": float((net(x).argmax(1) == y).float().mean())}

    history = fit(model, TensorBatches(x, y, 16, seed=0), step, optimizer, epochs=epochs,
                  scheduler=scheduler, evaluate=evaluate, state={"criterion": criterion},
                  checkpoint_path=tmp_path / "ckpt.pt", resume=resume, progress=False)
    return model, criterion, history


def test_a_run_killed_after_a_checkpoint_and_resumed_matches_an_uninterrupted_run(tmp_path):
    straight_model, straight_crit, straight = _run(tmp_path / "a", 6)
    with pytest.raises(Interrupted):
        _run(tmp_path / "b", 6, stop_after=2)
    assert load_checkpoint(tmp_path / "b" / "ckpt.pt")["epoch"] == 2
    model, crit, history = _run(tmp_path / "b", 6, resume=True)
    for p, q in zip(straight_model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(p, q)
    assert torch.equal(straight_crit.targets, crit.targets)
    assert history.curve("train_loss") == straight.curve("train_loss")
    assert history.curve("train_accuracy") == straight.curve("train_accuracy")


def test_resume_of_a_finished_run_trains_no_further(tmp_path):
    _, _, first = _run(tmp_path, 3)
    _, _, again = _run(tmp_path, 3, resume=True)
    assert again.records == first.records


def test_non_finite_loss_raises_with_the_epoch_and_step():
    model = torch.nn.Linear(2, 2)

    def step(net, batch):
        return net(batch[0]).sum() * float("nan")

    batches = TensorBatches(torch.ones(4, 2), torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(FloatingPointError, match="epoch 0, step 0"):
        fit(model, batches, step, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
            progress=False)


def test_hooks_are_called_and_the_history_records_every_epoch():
    calls = []
    model = torch.nn.Linear(2, 2)

    def step(net, batch):
        return F.cross_entropy(net(batch[0]), batch[1])

    history = fit(
        model, TensorBatches(torch.randn(8, 2), torch.zeros(8, dtype=torch.long), 4), step,
        torch.optim.SGD(model.parameters(), lr=0.1), epochs=3, eval_every=2,
        evaluate=lambda net, e: {"score": float(e)},
        on_epoch_start=lambda e: calls.append(("start", e)),
        after_step=lambda: calls.append("step"), progress=False,
    )
    assert history.curve("score") == [1.0, 2.0]
    assert [r["epoch"] for r in history.records] == [0, 1, 2]
    assert calls.count("step") == 6 and ("start", 2) in calls


def test_fit_rejects_resume_without_a_checkpoint_path():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="checkpoint_path"):
        fit(model, [], lambda net, b: None, torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=1, resume=True)


def test_time_steps_returns_a_median_per_step():
    out = time_steps({"a": lambda: None, "b": lambda: sum(range(100))}, repeats=3, inner=2,
                     warmup=1)
    assert set(out) == {"a", "b"} and all(v >= 0 for v in out.values())
    with pytest.raises(ValueError, match="empty"):
        time_steps({})


def test_an_epoch_without_batches_is_an_error():
    model = torch.nn.Linear(2, 2)
    batches = TensorBatches(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), 8,
                            drop_last=True)
    with pytest.raises(ValueError, match="no batch"):
        fit(model, batches, lambda net, b: net(b[0]).sum(),
            torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, progress=False)


class _StopAfter:
    """A stop rule with saved state: stop once ``limit`` epochs have ended."""

    def __init__(self, limit):
        self.limit, self.ended = limit, 0

    def state_dict(self):
        return {"ended": self.ended}

    def load_state_dict(self, state):
        self.ended = state["ended"]


def test_stop_ends_training_after_the_epoch_and_a_resume_stays_stopped(tmp_path):
    def run(resume):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 2)
        rule = _StopAfter(2)

        def end(epoch):
            rule.ended += 1

        history = fit(model, TensorBatches(torch.randn(8, 2), torch.zeros(8, dtype=torch.long), 4),
                      lambda net, b: F.cross_entropy(net(b[0]), b[1]),
                      torch.optim.SGD(model.parameters(), lr=0.1), epochs=10,
                      on_epoch_end=end, stop=lambda: rule.ended >= rule.limit,
                      state={"rule": rule}, checkpoint_path=tmp_path / "c.pt",
                      checkpoint_every=5, resume=resume, progress=False)
        return model, history

    model, history = run(resume=False)
    assert [r["epoch"] for r in history.records] == [0, 1]
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 1  # written at the stop
    again, resumed = run(resume=True)
    assert resumed.records == history.records
    assert torch.equal(again.weight, model.weight)
