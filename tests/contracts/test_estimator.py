"""Contract of every implemented ``estimator``, parametrised over the registry.

Three shapes of estimator, each with its own checks:

* a scikit-learn estimator (a class with ``fit``): scikit-learn's ``check_estimator``, and
  numpy in → numpy fitted arrays, torch in → torch fitted arrays of the input's dtype;
* a function (POT-style): numpy in → numpy out, torch in → torch out of the input's dtype and
  device, the same output for the same input, clear errors for bad input;
* an online policy (``select``/``update``/``recommend``): the same rewards give the same
  recommendation, its state lives on its device, and a bad reward is refused.

Each registered estimator gives a canonical example in ``EXAMPLES``; a newly registered one
fails here until it has one.
"""

import numpy as np
import pytest
import torch

from regzoo.registry import cards

ESTIMATORS = [pytest.param(c, id=c.slug) if c.implemented else
              pytest.param(c, id=c.slug, marks=pytest.mark.skip(reason="planned"))
              for c in cards(kind="estimator")]


def _colide():
    from regzoo.data.sem import simulate_linear_sem
    from regzoo.methods.colide import CoLiDE

    sem = simulate_linear_sem(5, 10, 200, seed=0)
    return {"shape": "sklearn",
            "make": lambda: CoLiDE(warm_iter=30, max_iter=60, checkpoint=10),
            "inputs": (sem.X,), "fitted": ("W_", "adjacency_")}


def _more_is_better():
    from regzoo.methods.more_is_better import powerlaw_task, rf_risk

    lam, coef = powerlaw_task(200)
    return {"shape": "function", "run": lambda a, b: rf_risk(a, b, 50, 100).solution,
            "inputs": (lam, coef),
            "bad": [((lam[:10], coef), ValueError, "coefficients"),
                    ((-lam, coef), ValueError, "eigenvalues")]}


def _sparse_ot():
    from regzoo.methods.sparse_ot import sparsity_constrained_ot

    rng = np.random.default_rng(0)
    a, b, cost = np.full(6, 1 / 6), np.full(5, 1 / 5), rng.random((6, 5))
    return {"shape": "function", "run": lambda a, b, m: sparsity_constrained_ot(a, b, m, 2),
            "inputs": (a, b, cost),
            "bad": [((a, b, cost[:, :4]), ValueError, "M"),
                    ((a, b, np.full((6, 5), np.nan)), ValueError, "M")]}


def _hyde():
    from regzoo.methods.hyde import denoise

    cube = np.random.default_rng(0).random((16, 16, 8))
    return {"shape": "function", "run": lambda c: denoise(c, "hyres"), "inputs": (cube,),
            "bad": [((cube[:, :, 0],), ValueError, "cube"),
                    ((np.full((16, 16, 8), np.nan),), ValueError, "cube")]}


def _holobeam():
    from regzoo.methods.holobeam.channel import random_receivers
    from regzoo.methods.holobeam.policies import HoloBeam

    channel = random_receivers(4, torch.Generator().manual_seed(0), nx=8, ny=8, snr_db=20.0)
    return {"shape": "policy", "make": lambda device: HoloBeam(channel.arms, 36, 4,
                                                               device=device)}


def _pnp_mimo():
    from regzoo.methods.pnp_mimo import NearFieldMIMO, pnp_csalsa

    op = NearFieldMIMO.x_array(3, (4, 4, 6))
    rng = np.random.default_rng(0)
    y = op(rng.standard_normal((4, 4, 6)) + 1j * rng.standard_normal((4, 4, 6)))
    re, im = y.real.copy(), y.imag.copy()
    return {"shape": "function",
            "run": lambda a, b: pnp_csalsa(a + 1j * b, op, "l1", 0.05, alpha=0.01, K=5.0,
                                           max_iter=5).magnitude,
            "inputs": (re, im),
            "bad": [((re[:2], im[:2]), ValueError, "y"),
                    ((re * np.nan, im), ValueError, "y")]}


EXAMPLES = {"colide": _colide, "more_is_better": _more_is_better, "sparse_ot": _sparse_ot,
            "hyde": _hyde, "holobeam": _holobeam, "pnp_mimo": _pnp_mimo}


def _example(card, shape):
    if card.slug not in EXAMPLES:
        pytest.fail(f"estimator {card.slug!r} has no canonical example in {__name__}.EXAMPLES")
    example = EXAMPLES[card.slug]()
    if example["shape"] != shape:
        pytest.skip(f"{card.slug} is a {example['shape']} estimator")
    return example


@pytest.mark.parametrize("card", ESTIMATORS)
def test_a_scikit_learn_estimator_passes_check_estimator(card):
    from sklearn.utils.estimator_checks import check_estimator

    example = _example(card, "sklearn")
    failed = [r["check_name"] for r in check_estimator(example["make"](), on_fail=None)
              if r["status"] == "failed"]
    assert not failed, f"{card.slug} fails scikit-learn checks: {failed}"


@pytest.mark.parametrize("card", ESTIMATORS)
def test_a_scikit_learn_estimator_returns_the_callers_array_type(card):
    example = _example(card, "sklearn")
    (X,) = example["inputs"]
    from_numpy = example["make"]().fit(X)
    from_torch = example["make"]().fit(torch.as_tensor(X, dtype=torch.float32))
    for name in example["fitted"]:
        assert isinstance(getattr(from_numpy, name), np.ndarray), name
        assert getattr(from_torch, name).dtype == torch.float32, name


@pytest.mark.parametrize("card", ESTIMATORS)
def test_a_function_gives_back_the_callers_array_type_and_dtype(card):
    example = _example(card, "function")
    out = example["run"](*example["inputs"])
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    for dtype in (torch.float32, torch.float64):
        tensors = [torch.as_tensor(a, dtype=dtype) for a in example["inputs"]]
        out_t = example["run"](*tensors)
        assert isinstance(out_t, torch.Tensor) and out_t.dtype == dtype
        assert np.allclose(out_t.double().numpy(), out, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("card", ESTIMATORS)
def test_a_function_is_deterministic_and_leaves_its_inputs_alone(card):
    example = _example(card, "function")
    inputs = [np.array(a, copy=True) for a in example["inputs"]]
    first, again = example["run"](*inputs), example["run"](*inputs)
    assert np.array_equal(first, again)
    assert all(np.array_equal(a, b) for a, b in zip(inputs, example["inputs"]))


@pytest.mark.parametrize("card", ESTIMATORS)
def test_a_function_refuses_bad_input_by_name(card):
    example = _example(card, "function")
    for args, error, match in example["bad"]:
        with pytest.raises(error, match=match):
            example["run"](*args)


@pytest.mark.parametrize("card", ESTIMATORS)
def test_a_function_follows_the_input_device(card, device):
    example = _example(card, "function")
    out = example["run"](*(torch.as_tensor(a, device=device) for a in example["inputs"]))
    assert out.device.type == device.type


def _play(policy, seed):
    rewards = torch.Generator().manual_seed(seed)
    while not policy.done:
        policy.select()
        policy.update(torch.rand(policy.batch, generator=rewards, dtype=torch.float64))
    return policy.recommend()


@pytest.mark.parametrize("card", ESTIMATORS)
def test_a_policy_recommends_the_same_arms_for_the_same_rewards(card, device):
    example = _example(card, "policy")
    first = _play(example["make"](device), seed=5)
    assert torch.equal(first, _play(example["make"](device), seed=5))
    assert first.device.type == device.type


@pytest.mark.parametrize("card", ESTIMATORS)
def test_a_policy_refuses_a_bad_reward_and_keeps_its_state(card):
    policy = _example(card, "policy")["make"]("cpu")
    policy.select()
    counts = policy.counts.clone()
    with pytest.raises(ValueError, match="reward"):
        policy.update(torch.zeros(policy.batch + 1))
    assert torch.equal(policy.counts, counts)
