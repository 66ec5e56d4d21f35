"""The runner's provenance rules: resume by fingerprint, stale and mixed units, dirty trees,
corrupt or foreign unit records, and smoke runs that give no verdict."""

import dataclasses
import json
import logging

import pytest

from regzoo.repro import runner
from regzoo.repro.claims import Claim
from regzoo.repro.config import ReproConfig
from regzoo.repro.protocol import Reproduction, Unit, UnitResult


@dataclasses.dataclass(frozen=True)
class FakeConfig(ReproConfig):
    @classmethod
    def tiny(cls):
        return cls(seeds=(0, 1))

    @classmethod
    def quick(cls):
        return cls(seeds=(0, 1, 2, 3, 4))

    @classmethod
    def full(cls):
        return cls(seeds=(0, 1, 2, 3, 4))


class FakeReproduction(Reproduction):
    slug = "elr"
    config_type = FakeConfig
    title = "fake"
    plot_curves = (("c", "c"),)

    def __init__(self):
        self.ran = []

    def units(self, config):
        return [Unit("s", arm, seed) for arm in ("a", "b") for seed in config.seeds]

    def run_unit(self, config, unit, env):
        self.ran.append(unit.id)
        value = (1.0 if unit.arm == "a" else 0.0) + 0.01 * unit.seed
        return UnitResult({"m": value}, {"c": [0.0, value]})

    def claim(self, config):
        return Claim("a beats b", "m", "s", "a", "b", margin=0.5)


@pytest.fixture
def fake(monkeypatch, tmp_path):
    repro = FakeReproduction()
    code = {"modules": {"regzoo.repro.elr": "v1"}, "config": "c"}
    monkeypatch.setattr(runner, "load_reproduction", lambda slug: repro)
    monkeypatch.setattr(runner.provenance, "fingerprint", lambda *args, **kw: dict(code))
    monkeypatch.setattr(runner, "_git_state", lambda: ("abc", False))
    monkeypatch.setenv("REGZOO_RESULTS", str(tmp_path / "results"))
    return repro, code


def _run(tmp_path, mode="quick", **kw):
    return runner.run_reproduction("elr", mode, out=tmp_path / "run", jobs=1, progress=False,
                                   command="test", **kw)


def test_units_record_the_fingerprint_and_resume_reuses_matching_units(fake, tmp_path):
    repro, code = fake
    result = _run(tmp_path)
    assert result["run"]["fingerprint"] == code and not result["run"]["mixed"]
    record = json.loads((tmp_path / "run" / "units" / "s__a__s0.json").read_text())
    assert record["fingerprint"] == code
    repro.ran.clear()
    again = _run(tmp_path, resume=True)
    assert repro.ran == [] and again["claim"]["verdict"] == "reproduced"


def test_resume_reruns_stale_units_and_sets_their_records_aside(fake, tmp_path, caplog):
    repro, code = fake
    _run(tmp_path)
    code["modules"] = {"regzoo.repro.elr": "v2"}
    repro.ran.clear()
    with caplog.at_level(logging.WARNING):
        result = _run(tmp_path, resume=True)
    assert len(repro.ran) == 10 and not result["run"]["mixed"]
    assert "regzoo.repro.elr" in caplog.text and "s__a__s0" in caplog.text
    assert (tmp_path / "run" / "units" / "s__a__s0.json.stale").is_file()


def test_reuse_stale_keeps_old_units_and_marks_the_result_mixed(fake, tmp_path):
    repro, code = fake
    _run(tmp_path)
    code["modules"] = {"regzoo.repro.elr": "v2"}
    repro.ran.clear()
    result = _run(tmp_path, resume=True, reuse_stale=True)
    assert repro.ran == [] and result["run"]["mixed"]
    assert len(result["run"]["stale_units_kept"]) == 10
    assert "(mixed)" in (tmp_path / "run" / "result.md").read_text()


def test_reuse_stale_without_resume_is_a_usage_error(fake, tmp_path):
    with pytest.raises(ValueError, match=r"--reuse-stale .* --resume"):
        _run(tmp_path, reuse_stale=True)


@pytest.mark.parametrize("content", ["{not json", '{"setting": "s", "arm": "a", "seed": 3, '
                                     '"metrics": {"m": 1.0}}', "[1, 2]"])
def test_a_corrupt_or_foreign_unit_record_is_named_set_aside_and_rerun(fake, tmp_path, caplog,
                                                                       content):
    repro, _ = fake
    _run(tmp_path)
    bad = tmp_path / "run" / "units" / "s__a__s0.json"
    bad.write_text(content)
    repro.ran.clear()
    with caplog.at_level(logging.ERROR):
        result = _run(tmp_path, resume=True)
    assert repro.ran == ["s__a__s0"] and result["claim"]["verdict"] == "reproduced"
    assert str(bad) in caplog.text
    assert (bad.parent / "s__a__s0.json.stale").read_text() == content


def test_full_run_refuses_uncommitted_source_unless_allowed(fake, tmp_path, monkeypatch):
    repro, _ = fake
    monkeypatch.setattr(runner, "_git_state", lambda: ("abc", True))
    with pytest.raises(ValueError, match=r"uncommitted changes under src/.*--allow-dirty"):
        _run(tmp_path, mode="full")
    assert repro.ran == []  # refused before any training
    result = _run(tmp_path, mode="full", allow_dirty=True)
    assert result["run"]["git_dirty"] is True
    assert "(dirty)" in (tmp_path / "results" / "elr" / "result.md").read_text()
    monkeypatch.setattr(runner, "_git_state", lambda: (None, None))
    with pytest.raises(ValueError, match="cannot be checked"):
        _run(tmp_path / "other", mode="full")


def test_smoke_runs_give_no_verdict_and_quote_the_committed_one(fake, tmp_path):
    _run(tmp_path, mode="full")  # five seeds: the committed result
    committed = json.loads((tmp_path / "results" / "elr" / "result.json").read_text())
    assert committed["claim"]["verdict"] == "reproduced" and not committed["run"]["smoke"]
    smoke = runner.run_reproduction("elr", "tiny", out=tmp_path / "smoke", jobs=1,
                                    progress=False)
    assert smoke["run"]["smoke"] and smoke["claim"]["verdict"] == "inconclusive"
    assert smoke["run"]["committed_status"] == "reproduced · claims 1✓ 0✗ 0?"
    text = (tmp_path / "smoke" / "result.md").read_text()
    assert "Smoke run (2 seeds < 5): no verdict." in text and "reproduced · claims" in text


def test_a_full_run_with_fewer_than_five_seeds_is_not_copied_to_results(fake, tmp_path):
    _run(tmp_path, mode="full", seeds=[0, 1, 2])
    assert not (tmp_path / "results" / "elr").exists()


def test_shared_work_of_other_code_is_set_aside_on_resume(fake, tmp_path):
    _, code = fake
    _run(tmp_path)
    shared = tmp_path / "run" / "lr_search.json"
    shared.write_text('{"lr": 0.1}')
    code["modules"] = {"regzoo.repro.elr": "v2"}
    _run(tmp_path, resume=True)
    assert not shared.exists() and (tmp_path / "run" / "lr_search.json.stale").is_file()
    assert (tmp_path / "run" / "config.json").is_file()


def test_work_done_under_reuse_stale_is_rerun_by_a_later_plain_resume(fake, tmp_path):
    repro, code = fake
    _run(tmp_path)
    (tmp_path / "run" / "units" / "s__b__s4.json").unlink()  # one unit still to run
    code["modules"] = {"regzoo.repro.elr": "v2"}
    repro.ran.clear()
    mixed = _run(tmp_path, resume=True, reuse_stale=True)
    assert repro.ran == ["s__b__s4"] and mixed["run"]["mixed"]
    assert "s__b__s4" in mixed["run"]["stale_units_kept"]
    repro.ran.clear()
    clean = _run(tmp_path, resume=True)
    assert sorted(repro.ran) == sorted(u.id for u in repro.units(FakeConfig.quick()))
    assert not clean["run"]["mixed"]


def test_a_second_set_aside_keeps_the_first(fake, tmp_path):
    _, code = fake
    _run(tmp_path)
    for version in ("v2", "v3"):
        code["modules"] = {"regzoo.repro.elr": version}
        _run(tmp_path, resume=True)
    units = tmp_path / "run" / "units"
    assert (units / "s__a__s0.json.stale").is_file() and (units / "s__a__s0.json.stale.2").is_file()
