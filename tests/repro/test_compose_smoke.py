"""Smoke test of `regzoo repro compose --tiny` and the arms' objectives (issue 23, item 2)."""

import pytest
import torch

from regzoo.methods.elr import EarlyLearningRegularization
from regzoo.models import MLP
from regzoo.repro.compose import (
    ARMS,
    PAIRS,
    SETTINGS,
    ComposeReproConfig,
    ComposeReproduction,
    build_objective,
    methods_of,
)
from regzoo.repro.runner import STUDIES, load_reproduction, run_reproduction, validate_result


@pytest.mark.slow
def test_tiny_run_writes_valid_artefacts_with_every_arm_and_the_picked_arms(tmp_path):
    result = run_reproduction("compose", "tiny", out=tmp_path / "run", jobs=1, progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]
    for setting in ("digits_sym40", "mnist1d"):
        assert set(aggregate[setting]) == set(ARMS) | {"best_single", "best_pair"}
    picked = {r["arm"]: r["metrics"] for r in result["metrics"]["per_seed"]
              if r["setting"] == "digits_sym40"}
    pairs = {arm: picked[arm]["final_val_accuracy"] for arm in PAIRS}
    assert picked["best_pair"]["final_val_accuracy"] == max(pairs.values())
    assert result["claim"]["method"] == "best_pair" and result["claim"]["margin"] == 0.01
    assert (tmp_path / "run" / "compose.png").is_file()


def test_compose_is_a_study_with_every_setting_and_arm_in_its_full_preset():
    assert "compose" in STUDIES and isinstance(load_reproduction("compose"), ComposeReproduction)
    full = ComposeReproConfig.full()
    assert len(full.seeds) >= 5 and set(full.arms) == set(ARMS)
    assert set(full.settings) == set(SETTINGS)
    claims = ComposeReproduction().secondary_claims(full)
    # Headline in the other two settings, then 3 pairs × 2 parts + the triple × 3 pairs, × 3.
    assert len(claims) == 2 + 3 * (3 * 2 + 3)


def test_each_arm_adds_exactly_its_methods_terms_and_elr_alone_equals_the_elr_criterion():
    config = ComposeReproConfig.tiny()
    x, y, idx = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(6)
    for arm in ARMS:
        torch.manual_seed(0)
        model = MLP(5, 3, hidden=(4,))
        objective, _, state = build_objective(arm, model, config, 6, 3, 2, torch.device("cpu"))
        parts = objective(logits=model(x), target=y, index=idx).parts
        base = "pskd" if "pskd" in methods_of(arm) else "ce"
        assert set(parts) == {base} | (methods_of(arm) - {"pskd"})
        assert ("elr" in state) == ("elr" in methods_of(arm))
    torch.manual_seed(0)
    model = MLP(5, 3, hidden=(4,))
    objective, _, _ = build_objective("elr", model, config, 6, 3, 2, torch.device("cpu"))
    reference = EarlyLearningRegularization(6, 3, lam=config.elr_lam, beta=config.elr_beta)
    logits = model(x)
    torch.testing.assert_close(objective(logits=logits, target=y, index=idx).total,
                               reference(logits, y, idx))


def test_weight_compander_arms_keep_the_decay_off_the_raw_weights():
    config = ComposeReproConfig.tiny()
    model = MLP(5, 3, hidden=(4,))
    _, optimizer, _ = build_objective("elr_wc", model, config, 6, 3, 2, torch.device("cpu"))
    decays = [group["weight_decay"] for group in optimizer.param_groups]
    assert decays[0] == 0.0 and config.weight_decay in decays[1:]


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="arms must be"):
        ComposeReproConfig(arms=("ce", "mixup"))
    with pytest.raises(ValueError, match="val_fraction"):
        ComposeReproConfig(val_fraction=0.7)
