"""Smoke test of `regzoo repro coherentgs --tiny`: artefacts, arms, claims, the novel-view row."""

from regzoo.repro.coherentgs import CoherentGSReproConfig
from regzoo.repro.runner import run_reproduction, validate_result


def test_tiny_run_writes_valid_artefacts_with_its_arms(tmp_path):
    result = run_reproduction("coherentgs", "tiny", out=tmp_path / "run", jobs=1,
                              progress=False)
    validate_result(result)
    arms = result["metrics"]["aggregate"]["mixed"]
    assert {"vanilla_3dgs", "coherentgs"} <= set(arms)
    for arm in ("vanilla_3dgs", "coherentgs"):
        assert 0.0 < arms[arm]["test_psnr"]["mean"] < 60.0
        assert arms[arm]["depth_mae"]["mean"] >= 0.0
        assert 0.0 <= arms[arm]["needle_share"]["mean"] <= 1.0
    assert result["claim"]["verdict"] == "inconclusive"  # one seed: a smoke run
    assert result["claim"]["margin"] == 2.0
    assert (tmp_path / "run" / "coherentgs.png").is_file()


def test_full_preset_pairs_five_seeds_per_scene_family_for_every_arm():
    full = CoherentGSReproConfig.full()
    assert len(full.seeds) >= 5 and set(full.settings) == {"mixed", "boxes", "planes"}
    assert {"vanilla_3dgs", "depth_init_free", "coherentgs", "no_decoder", "no_tv",
            "no_flow"} == set(full.arms)
    assert full.size == 32
