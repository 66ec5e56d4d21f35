"""Smoke test of `regzoo repro latent_quantization --tiny`: artefacts, metrics, claims."""

import math

import pytest

from regzoo.repro.latent_quantization import LatentQuantizationReproConfig
from regzoo.repro.runner import run_reproduction, validate_result


@pytest.mark.slow
def test_tiny_run_writes_valid_artefacts_with_every_metric_and_claim(tmp_path):
    result = run_reproduction("latent_quantization", "tiny", out=tmp_path / "run", jobs=1,
                              progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]["dsprites"]
    assert set(aggregate) == {"ae", "qlae", "qlae_no_wd", "midpoint"}
    for arm in ("ae", "qlae", "qlae_no_wd"):
        metrics = aggregate[arm]
        assert -0.01 <= metrics["infoe"]["mean"] <= 1
        assert 0 <= metrics["dci_i"]["mean"] <= 1
        assert metrics["bce"]["mean"] > 0 and metrics["active_latents"]["mean"] <= 8
        assert metrics["steps"]["mean"] >= 12
    mid = aggregate["midpoint"]["infom"]["mean"]
    assert mid == pytest.approx(0.5 * (aggregate["qlae"]["infom"]["mean"]
                                       + aggregate["ae"]["infom"]["mean"]))
    assert result["claim"]["margin"] == 0.10 and result["claim"]["baseline"] == "ae"
    margins = {c["baseline"]: c["margin"] for c in result["secondary_claims"]}
    assert margins["ae"] == pytest.approx(-math.log(1.1)) or margins["ae"] == 0.0
    assert margins["qlae_no_wd"] == 0.0
    assert result["claim"]["verdict"] == "inconclusive"  # one seed
    assert (tmp_path / "run" / "latent_quantization.png").is_file()


def test_presets_follow_the_issue_and_refuse_bad_options():
    full = LatentQuantizationReproConfig.full()
    assert full.steps == 10_000 and len(full.seeds) >= 5 and full.weight_decay == 0.1
    assert set(full.arms) == {"ae", "qlae", "qlae_no_wd", "qlae_global", "qlae_frozen",
                              "qlae_vq", "beta_vae"}
    with pytest.raises(ValueError, match="including 'ae' and 'qlae'"):
        LatentQuantizationReproConfig(arms=("ae",))
