"""The fine-tuning kit: matched accuracy, lr search, the arm table, the schedule, the cached
pretraining."""

import math
import statistics

import pytest
import torch

from regzoo import assets
from regzoo.adapters import LowRankHandle, SparseHandle
from regzoo.data.transfer import digits_transfer
from regzoo.methods.ba_lora import BALoRA
from regzoo.methods.rmt import MaskTuning
from regzoo.methods.sara import SaRA, SaRAAdamW
from regzoo.methods.sorsa import SORSA
from regzoo.models import MLP
from regzoo.repro import common
from regzoo.repro.finetune import (
    ARMS,
    adapt,
    pretrained_mlp,
    score_grid,
    search_lr,
    source_at_matched_target,
    warmup_cosine,
)

RECIPE = {"hidden": (16,), "epochs": 1, "lr": 1e-3, "batch_size": 64}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REGZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- forgetting at matched accuracy ---------------------------------------------------------


def test_matched_source_interpolates_between_the_points_around_the_crossing():
    # Target 0.7 → 0.9 crosses 0.8 halfway, so the source is halfway from 0.8 to 0.6.
    assert source_at_matched_target([0.5, 0.7, 0.9], [0.9, 0.8, 0.6], 0.8) == pytest.approx(0.7)
    # A quarter of the way: (0.75 − 0.7) / (0.9 − 0.7).
    assert source_at_matched_target([0.5, 0.7, 0.9], [0.9, 0.8, 0.6], 0.75) == pytest.approx(0.75)
    # Reaching the level exactly at a point gives that point's source value.
    assert source_at_matched_target([0.5, 0.8, 0.9], [0.9, 0.7, 0.6], 0.8) == pytest.approx(0.7)
    # Source losses interpolate the same way.
    assert source_at_matched_target([0.2, 0.6], [1.0, 2.0], 0.5) == pytest.approx(1.75)


def test_matched_source_uses_the_first_crossing_even_when_the_curve_dips_later():
    assert source_at_matched_target([0.2, 0.9, 0.5, 0.95], [1.0, 0.6, 0.1, 0.0], 0.55) == (
        pytest.approx(1.0 + (0.35 / 0.7) * (0.6 - 1.0)))


def test_matched_source_is_nan_when_the_target_never_reaches_the_level():
    assert math.isnan(source_at_matched_target([0.2, 0.3, 0.79], [1.0, 0.8, 0.7], 0.8))
    assert math.isnan(source_at_matched_target([], [], 0.8))


def test_matched_source_is_the_first_point_when_the_curve_starts_at_or_above_the_level():
    assert source_at_matched_target([0.9, 0.95], [0.6, 0.5], 0.8) == 0.6
    assert source_at_matched_target([0.8, 0.95], [0.6, 0.5], 0.8) == 0.6


def test_matched_source_rejects_curves_of_different_lengths():
    with pytest.raises(ValueError, match="pair up point by point, got 2 and 3"):
        source_at_matched_target([0.1, 0.2], [0.3, 0.4, 0.5], 0.1)


# --- learning-rate search -------------------------------------------------------------------

CURVES = {  # (lr, seed) → validation accuracy curve
    (1e-3, 0): [0.2, 0.4, 0.6], (1e-3, 1): [0.2, 0.4, 0.7],
    (1e-2, 0): [0.5, 0.7, 0.7], (1e-2, 1): [0.6, 0.6, 0.6],
    (1e-1, 0): [0.1, 0.3, 0.8], (1e-1, 1): [0.1, 0.2, 0.7],
}
RULES = {"auc": lambda curve: statistics.fmean(curve), "final": lambda curve: curve[-1]}


def test_score_grid_picks_each_rules_best_lr_by_the_mean_over_seeds():
    found = score_grid((1e-3, 1e-2, 1e-1), seeds=(0, 1), run=lambda lr, s: CURVES[lr, s],
                       rules=RULES)
    # Mean AUC: 0.417, 0.617, 0.367; mean final: 0.65, 0.65, 0.75.
    assert found["best"] == {"auc": 1e-2, "final": 1e-1}
    assert found["scores"]["final"] == {"0.001": pytest.approx(0.65),
                                        "0.01": pytest.approx(0.65), "0.1": pytest.approx(0.75)}
    assert found["runs"]["0.01"] == [CURVES[1e-2, 0], CURVES[1e-2, 1]]
    # Ties go to the first value of the grid.
    tie = score_grid((1e-3, 1e-2), seeds=(0, 1), run=lambda lr, s: CURVES[lr, s],
                     rules={"final": RULES["final"]})
    assert tie["best"]["final"] == 1e-3


def test_search_lr_runs_once_per_run_folder_and_reads_the_cache_after(tmp_path):
    calls = []

    def run(lr, seed):
        calls.append((lr, seed))
        return CURVES[lr, seed]

    first = search_lr(str(tmp_path), "search_demo", (1e-3, 1e-2, 1e-1), seeds=(0, 1), run=run,
                      rules=RULES)
    assert len(calls) == 6 and (tmp_path / "search_demo.json").is_file()
    again = search_lr(str(tmp_path), "search_demo", (1e-3, 1e-2, 1e-1), seeds=(0, 1), run=run,
                      rules=RULES)
    assert len(calls) == 6 and again == first and again["best"]["auc"] == 1e-2


def test_score_grid_rejects_an_empty_grid():
    with pytest.raises(ValueError, match="must be non-empty"):
        score_grid((), seeds=(0,), run=lambda lr, s: [0.0], rules=RULES)


# --- the arm table --------------------------------------------------------------------------

OPTIONS = {"rank": 2, "gamma": 0.05, "fraction": 0.2, "seed": 0, "task": "nlu",
           "rank_min_dim": 4, "gdr_lambda": 0.3}
HANDLES = {"full_ft": type(None), "lora": LowRankHandle, "pissa": LowRankHandle,
           "sorsa": SORSA, "sorsa_loss": SORSA, "sorsa_g0": SORSA, "ba_lora": BALoRA,
           "sara": SaRA, "sara_no_nuclear": SaRA, "sara_no_progressive": SaRA,
           "smallest": SparseHandle, "random": SparseHandle, "largest": SparseHandle,
           "r_mt": MaskTuning, "r_amt": MaskTuning}


def _mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(8, 3, hidden=(16,)).eval()


@pytest.mark.parametrize("arm", list(ARMS))
def test_every_arm_adapts_the_model_and_keeps_its_function_at_the_start(arm):
    assert set(HANDLES) == set(ARMS)
    model, x = _mlp(), torch.randn(5, 8)
    before = model(x).detach()
    adapted = adapt(model, arm, **OPTIONS)
    assert type(adapted.handle) is HANDLES[arm] and adapted.arm == arm
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert adapted.parameters and {id(p) for p in adapted.parameters} >= {id(p) for p in trainable}
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)
    optimizer = adapted.optimizer(1e-3, weight_decay=0.01)
    assert isinstance(optimizer, SaRAAdamW if isinstance(adapted.handle, SaRA)
                      else torch.optim.AdamW)
    adapted.update(optimizer, model(x).square().mean(), max_grad_norm=1.0)
    assert any(p.grad is not None for p in adapted.parameters)


def test_arms_pin_their_options_over_the_callers():
    assert adapt(_mlp(), "sorsa_g0", rank=2, gamma=0.5).handle.gamma == 0.0
    assert adapt(_mlp(), "sorsa", rank=2, gamma=0.5).handle.gamma == 0.5
    assert adapt(_mlp(), "sorsa_loss", rank=2).handle.ortho_mode == "loss"
    handle = adapt(_mlp(), "pissa", rank=2).handle
    assert {layer.init for layer in handle.layers.values()} == {"pissa"}
    assert adapt(_mlp(), "sara_no_nuclear", fraction=0.2, lambda_rank=0.1).handle.lambda_rank == 0
    assert adapt(_mlp(), "r_mt").handle.gradient_dropout is None


def test_an_unknown_arm_is_named_with_the_known_arms():
    with pytest.raises(ValueError, match=r"unknown arm 'dora'; known arms: full_ft, lora, "
                                         r"pissa, sorsa, .*r_amt"):
        adapt(_mlp(), "dora")


def test_an_option_no_adapter_takes_is_an_error():
    with pytest.raises(ValueError, match=r"options \['rnak'\] that no adapter takes"):
        adapt(_mlp(), "lora", rnak=2)


def test_adapt_moves_the_model_to_the_device_after_initialising_it(device):
    model = _mlp()
    adapted = adapt(model, "pissa", rank=2, device=device)
    assert {p.device.type for p in model.parameters()} == {device.type}
    assert {p.device.type for p in adapted.parameters} == {device.type}


# --- the schedule ---------------------------------------------------------------------------


@pytest.mark.parametrize(("steps", "ratio"), [(150, 0.03), (100, 0.03), (6, 0.03), (480, 0.0),
                                              (100, 0.0)])
def test_warmup_cosine_matches_the_hand_written_schedules_it_replaces(steps, ratio):
    """SORSA's warm-up (3 %, at least one step) and BA-LoRA's plain cosine, as written before."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    factor = warmup_cosine(optimizer, steps, ratio).lr_lambdas[0]
    warmup = max(1, math.ceil(ratio * steps)) if ratio else 0
    for step in range(steps + 3):
        if step < warmup:
            expected = (step + 1) / warmup
        else:
            expected = 0.5 * (1 + math.cos(math.pi * min(step - warmup, steps - warmup)
                                           / (steps - warmup)))
        # Equal up to the order of one multiplication (≤ 1 ulp).
        assert factor(step) == pytest.approx(expected, abs=1e-15)


def test_warmup_cosine_rejects_a_ratio_outside_zero_one():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_ratio"):
        warmup_cosine(optimizer, 10, 1.0)


# --- the cached pretraining -----------------------------------------------------------------


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _identical(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pretraining_is_built_once_then_loaded_bit_identical_to_the_uncached_path(
        cache, monkeypatch):
    calls = []
    original = common.pretrain_mlp

    def counting(*args, **kwargs):
        calls.append(kwargs["seed"])
        return original(*args, **kwargs)

    monkeypatch.setattr(common, "pretrain_mlp", counting)
    rng = torch.get_rng_state()
    built, accuracy = pretrained_mlp(3, **RECIPE)
    loaded, again = pretrained_mlp(3, **RECIPE)
    assert calls == [3] and accuracy == again
    assert torch.equal(torch.get_rng_state(), rng)  # building or loading draws nothing
    assert _identical(_state(built), _state(loaded))
    direct, direct_accuracy = original(digits_transfer(3).source, seed=3, **RECIPE)
    assert _identical(_state(direct), _state(loaded)) and direct_accuracy == accuracy
    assert len(list((cache / "assets" / "digits_mlp").glob("*.pt"))) == 1


@pytest.mark.parametrize(("content", "reason"), [
    ("garbage", "UnpicklingError"), ("wrong_keys", "expected the keys"),
    ("other_config", "built with the config"), ("other_state_dict", "RuntimeError")])
def test_an_unusable_cache_file_is_rebuilt_with_a_warning(cache, content, reason):
    reference, _ = pretrained_mlp(1, **RECIPE)
    config = {"seed": 1, **RECIPE}
    path = assets.location("digits_mlp", config)
    envelope = torch.load(path, weights_only=True)
    pretrained_mlp(1, **{**RECIPE, "hidden": (8,)})
    other = torch.load(assets.location("digits_mlp", {**config, "hidden": (8,)}),
                       weights_only=True)
    if content == "garbage":
        path.write_bytes(b"not a torch file")
    elif content == "wrong_keys":
        torch.save({"state": 1}, path)
    elif content == "other_config":  # another config's file under this key
        torch.save({**other, "key": path.stem}, path)
    else:  # the right envelope around a state dict of another architecture
        payload = {**envelope["payload"], "state_dict": other["payload"]["state_dict"]}
        torch.save({**envelope, "payload": payload}, path)
    with pytest.warns(RuntimeWarning, match=f"is unusable \\(.*{reason}.*rebuilding it"):
        rebuilt, _ = pretrained_mlp(1, **RECIPE)
    assert _identical(_state(reference), _state(rebuilt))
    pretrained_mlp(1, **RECIPE)  # the rebuilt file loads without a warning


def test_the_cache_key_follows_the_config_and_the_versions(cache, monkeypatch):
    config = {"seed": 0, **RECIPE}
    key = assets.cache_key("digits_mlp", config)
    assert key == assets.cache_key("digits_mlp", {**config, "hidden": [16]})  # tuple = list
    assert key != assets.cache_key("digits_mlp", {**config, "seed": 1})
    assert key != assets.cache_key("digits_mlp", {**config, "epochs": 2})
    assert key != assets.cache_key("digits_mlp_other", config)
    pretrained_mlp(0, **RECIPE)
    pretrained_mlp(0, **{**RECIPE, "lr": 3e-3})
    assert len(list((cache / "assets" / "digits_mlp").glob("*.pt"))) == 2
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert key != assets.cache_key("digits_mlp", config)


def test_an_unwritable_cache_folder_builds_without_caching(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("REGZOO_CACHE", str(blocker))
    with pytest.warns(RuntimeWarning, match="not usable"):
        model, _ = pretrained_mlp(0, **RECIPE)
    assert isinstance(model, MLP)


def test_a_task_of_ones_own_is_cached_under_its_own_name(cache):
    source = digits_transfer(2).source
    model, accuracy = pretrained_mlp(2, **RECIPE, task=lambda: source, task_name="demo_mlp",
                                     task_config={"variant": "plain"})
    digits, digits_accuracy = pretrained_mlp(2, **RECIPE)
    assert _identical(_state(model), _state(digits)) and accuracy == digits_accuracy
    assert {entry.name for entry in assets.list_cached()} == {"demo_mlp", "digits_mlp"}
    with pytest.raises(ValueError, match="task_name must name your own task's asset"):
        pretrained_mlp(2, **RECIPE, task=lambda: source)
    with pytest.raises(ValueError, match="pass task= too"):
        pretrained_mlp(2, **RECIPE, task_config={"variant": "plain"})
    with pytest.raises(ValueError, match=r"repeats the pretraining recipe's fields \['seed'\]"):
        pretrained_mlp(2, **RECIPE, task=lambda: source, task_name="demo_mlp",
                       task_config={"seed": 3})
