"""Smoke test of `regzoo repro latent_quantization --tiny`: artefacts, metrics, claims."""

import math

import pytest
import torch

from regzoo.repro.latent_quantization import GAN_ARMS, LatentQuantizationReproConfig
from regzoo.repro.protocol import Unit, UnitEnv
from regzoo.repro.runner import load_reproduction, run_reproduction, validate_result
from regzoo.train.distributed import DistributedContext


@pytest.mark.slow
def test_tiny_run_writes_valid_artefacts_with_every_metric_and_claim(tmp_path):
    result = run_reproduction("latent_quantization", "tiny", out=tmp_path / "run", jobs=1,
                              progress=False)
    validate_result(result)
    aggregate = result["metrics"]["aggregate"]["dsprites"]
    assert set(aggregate) == {"ae", "qlae", "qlae_no_wd", "midpoint", *GAN_ARMS}
    for arm in ("ae", "qlae", "qlae_no_wd"):
        metrics = aggregate[arm]
        assert -0.01 <= metrics["infoe"]["mean"] <= 1
        assert 0 <= metrics["dci_i"]["mean"] <= 1
        assert metrics["bce"]["mean"] > 0 and metrics["active_latents"]["mean"] <= 8
        assert metrics["steps"]["mean"] >= 12
    for arm in GAN_ARMS:
        metrics = aggregate[arm]
        assert -0.01 <= metrics["infoe"]["mean"] <= 1 and "bce" not in metrics
        assert metrics["steps"]["mean"] >= 10 and metrics["generator_steps"]["mean"] >= 2
        assert metrics["active_latents"]["mean"] <= 8
    mid = aggregate["midpoint"]["infom"]["mean"]
    assert mid == pytest.approx(0.5 * (aggregate["qlae"]["infom"]["mean"]
                                       + aggregate["ae"]["infom"]["mean"]))
    assert result["claim"]["margin"] == 0.10 and result["claim"]["baseline"] == "ae"
    margins = {c["baseline"]: c["margin"] for c in result["secondary_claims"]}
    assert margins["ae"] == pytest.approx(-math.log(1.1)) or margins["ae"] == 0.0
    assert margins["qlae_no_wd"] == 0.0
    gan = [c for c in result["secondary_claims"] if c["method"] == "qlinfowgan_gp"]
    assert len(gan) == 1 and gan[0]["baseline"] == "infowgan_gp" and gan[0]["margin"] == 0.0
    assert gan[0]["metric"] == "infom"
    assert result["claim"]["verdict"] == "inconclusive"  # one seed
    assert (tmp_path / "run" / "latent_quantization.png").is_file()


def test_presets_follow_the_issue_and_refuse_bad_options():
    full = LatentQuantizationReproConfig.full()
    assert full.steps == 10_000 and len(full.seeds) >= 5 and full.weight_decay == 0.1
    assert set(full.arms) == {"ae", "qlae", "qlae_no_wd", "qlae_global", "qlae_frozen",
                              "qlae_vq", "beta_vae", "infowgan_gp", "qlinfowgan_gp"}
    assert full.gan_steps == 6000 and full.gan_batch_size == 64 and full.generator_period == 5
    assert (full.infowgan_weight_decay, full.qlinfowgan_weight_decay) == (1e-4, 1e-3)
    with pytest.raises(ValueError, match="including 'ae' and 'qlae'"):
        LatentQuantizationReproConfig(arms=("ae",))


@pytest.mark.parametrize("arm", GAN_ARMS)
def test_the_gan_units_train_on_the_unit_device(arm, tmp_path):
    # test_devices checks the headline arm only; the GAN arms train through their own fit.
    repro = load_reproduction("latent_quantization")
    config = LatentQuantizationReproConfig.tiny()
    env = UnitEnv(context=DistributedContext(rank=0, world_size=1, local_rank=0,
                                             device=torch.device("cuda")),
                  checkpoint_path=str(tmp_path / "unit.pt"), resume=False,
                  log=lambda record: None, progress=False, workdir=str(tmp_path))
    if torch.cuda.is_available():
        result = repro.run_unit(config, Unit("dsprites", arm, 0), env)
        assert result.metrics["generator_steps"] >= 2
        return
    # Without CUDA, a unit that honours the device fails at its first move there.
    with pytest.raises((AssertionError, RuntimeError), match=r"CUDA|cuda"):
        repro.run_unit(config, Unit("dsprites", arm, 0), env)
