"""Properties of ELR+ (fit_elr_plus): averaging, target source, limiting case, determinism."""

import copy

import pytest
import torch
import torch.nn.functional as F

from regzoo.data import TensorBatches
from regzoo.methods.elr import ELRPlusConfig, fit_elr_plus
from regzoo.methods.elr.plus import ELRPlusPair
from regzoo.models import MLP


def _data(n=40, d=6, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def _make():
    return MLP(6, 3, hidden=(8,))


def test_pair_predicts_the_mean_of_the_two_networks_logits():
    torch.manual_seed(0)
    pair = ELRPlusPair(_make(), _make())
    x = torch.randn(5, 6)
    torch.testing.assert_close(pair(x), 0.5 * (pair.nets[0](x) + pair.nets[1](x)))


def test_weight_average_update_is_the_exponential_moving_average():
    torch.manual_seed(0)
    pair = ELRPlusPair(_make(), _make())
    before = [p.clone() for p in pair.averaged[0].parameters()]
    with torch.no_grad():
        for p in pair.nets[0].parameters():
            p.add_(1.0)
    pair.update_average(0, 0.9)
    for avg, old, live in zip(pair.averaged[0].parameters(), before, pair.nets[0].parameters()):
        torch.testing.assert_close(avg, 0.9 * old + 0.1 * live)
    assert all(not p.requires_grad for p in pair.averaged.parameters())


def test_without_mixup_and_lambda_each_network_trains_as_plain_cross_entropy():
    x, y = _data()
    config = ELRPlusConfig(lam=0.0, mixup_alpha=0.0, epochs=1, batch_size=8, lr=0.1,
                           milestones=(100,))
    result = fit_elr_plus(_make, x, y, 3, config=config, seed=3, progress=False)

    torch.manual_seed(3)
    reference = _make()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9,
                                weight_decay=5e-4)
    batches = TensorBatches(x, y, 8, seed=3)
    batches.set_epoch(0)
    for xb, yb, _ in batches:
        optimizer.zero_grad()
        F.cross_entropy(reference(xb), yb).backward()
        optimizer.step()
    for a, b in zip(result.model.nets[0].parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_targets_of_each_network_come_from_the_other_networks_average():
    x, y = _data()
    config = ELRPlusConfig(lam=3.0, beta=0.7, mixup_alpha=0.0, epochs=1, batch_size=40)
    torch.manual_seed(5)
    expected_pair = ELRPlusPair(_make(), _make())
    frozen = fit_elr_plus(_make, x, y, 3, config=config, seed=5, progress=False,
                          make_optimizer=lambda params: torch.optim.SGD(params, lr=0.0))
    result = frozen
    with torch.no_grad():
        for k in (0, 1):
            other = copy.deepcopy(expected_pair.averaged[1 - k]).train()
            expected = 0.3 * other(x).softmax(dim=1)
            torch.testing.assert_close(result.targets[k], expected)


def test_fit_elr_plus_is_deterministic_given_the_seed():
    x, y = _data()
    config = ELRPlusConfig(epochs=2, batch_size=8, ema_step=10)
    a = fit_elr_plus(_make, x, y, 3, config=config, seed=1, progress=False)
    b = fit_elr_plus(_make, x, y, 3, config=config, seed=1, progress=False)
    for p, q in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(p, q)
    assert a.history.curve("train_loss") == b.history.curve("train_loss")


def test_resumed_elr_plus_run_ends_where_an_uninterrupted_one_does(tmp_path):
    x, y = _data()
    full = ELRPlusConfig(epochs=4, batch_size=8, ema_step=20)
    straight = fit_elr_plus(_make, x, y, 3, config=full, seed=2, progress=False)
    path = tmp_path / "plus.pt"
    with pytest.raises(_Interrupted):
        fit_elr_plus(_make, x, y, 3, config=full, seed=2, progress=False,
                     checkpoint_path=str(path), evaluate=_stop_after(1))
    resumed = fit_elr_plus(_make, x, y, 3, config=full, seed=2, progress=False,
                           checkpoint_path=str(path), resume=True)
    for p, q in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(p, q)
    assert torch.equal(straight.targets[0], resumed.targets[0])


class _Interrupted(Exception):
    pass


def _stop_after(epoch):
    """An evaluate hook that kills the run after the checkpoint of ``epoch`` was written."""

    def evaluate(model, e):
        if e > epoch:
            raise _Interrupted
        return {}

    return evaluate


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"beta": 1.0}, "beta"), ({"ema_alpha": 1.0}, "ema_alpha"), ({"lam": -1}, "lam"),
     ({"epochs": 0}, "epochs"), ({"mixup_alpha": -1.0}, "mixup_alpha")],
)
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ELRPlusConfig(**kwargs)


def test_mismatched_inputs_are_rejected():
    x, y = _data()
    with pytest.raises(ValueError, match="same number of rows"):
        fit_elr_plus(_make, x, y[:-1], 3, config=ELRPlusConfig(epochs=1), progress=False)
