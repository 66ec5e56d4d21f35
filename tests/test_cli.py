"""The `regzoo` command: list, info, errors, report."""

import json

import pytest

from regzoo.cli import main


def test_list_shows_all_27_papers(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "elr" in out and "27 methods" in out
    assert all(f"\n{slug} " in out for slug in ("ftwt", "gigatok", "quantnas", "sparse_ot"))


def test_list_and_info_show_every_claim_and_staleness(tmp_path, monkeypatch, capsys):
    result = {"run": {"slug": "elr", "config": {}, "seeds": [0], "command": "x",
                      "created_at": "2026-12-01T00:00:00"},
              "claim": {"verdict": "reproduced", "metric": "m", "setting": "s",
                        "observed": {"mean_effect": 0.1, "se": 0.01, "n": 5}},
              "secondary_claims": [{"verdict": "not_reproduced"}, {"verdict": "inconclusive"}]}
    (tmp_path / "elr").mkdir()
    (tmp_path / "elr" / "result.json").write_text(json.dumps(result))
    monkeypatch.setenv("REGZOO_RESULTS", str(tmp_path))
    assert main(["list", "--pattern", "elr"]) == 0
    assert "reproduced · claims 1✓ 1✗ 1? · stale" in capsys.readouterr().out
    assert main(["list", "--json", "--pattern", "elr"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["claims"] == {"reproduced": 1, "not_reproduced": 1, "inconclusive": 1}
    assert row["stale"] and row["status"] == "reproduced"
    assert main(["info", "elr"]) == 0
    assert "changed since it ran: <dirty>, <no fingerprint>" in capsys.readouterr().out


def test_list_json_is_machine_readable(capsys):
    assert main(["list", "--json", "--kind", "criterion"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["slug"] for r in rows} == {"elr", "pskd"}
    assert set(rows[0]) >= {"slug", "kind", "title", "year", "status", "claim"}


def test_info_shows_the_card(capsys):
    assert main(["info", "elr"]) == 0
    out = capsys.readouterr().out
    assert "EarlyLearningRegularization" in out and "beta = 0.7" in out and "claim" in out


def test_info_shows_what_the_card_declares_about_composition(capsys):
    assert main(["info", "hessian_alignment"]) == 0
    out = capsys.readouterr().out
    assert "composition:" in out and "batch_coupled:" in out and "pairs with ba_lora:" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "elx"], "did you mean elr"),
        (["repro", "elr", "--tiny", "--set", "epochs"], "key=value"),
        (["repro", "elr", "--tiny", "--set", "noises=gauss"], "noise spec"),
        (["repro", "elr", "--tiny", "--device", "cuda:7"], "CUDA"),
    ],
)
def test_errors_are_one_clear_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "cuda" in " ".join(argv):
        pytest.importorskip("torch")
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA present")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("regzoo: error:") and message in err


def test_report_writes_the_results_index_of_a_given_folder(tmp_path, capsys):
    import shutil

    from regzoo.registry import results_dir

    shutil.copytree(results_dir() / "elr", tmp_path / "elr")
    assert main(["report", "--results", str(tmp_path)]) == 0
    assert (tmp_path / "README.md").read_text().startswith("# Results")


def test_report_prints_and_leaves_the_checkout_alone_without_write(capsys):
    from regzoo.registry import results_dir

    before = (results_dir() / "README.md").read_text()
    assert main(["report"]) == 0
    assert capsys.readouterr().out.startswith("# Results")
    assert (results_dir() / "README.md").read_text() == before
    assert main(["report", "--render"]) == 2
    assert "--write" in capsys.readouterr().err


@pytest.fixture
def gigatok_planned(monkeypatch):
    """GigaTok's card as it was before its method registered (every paper has landed since)."""
    import regzoo.registry as registry

    registry.card("gigatok")  # loads every method before the card is taken away
    monkeypatch.delitem(registry._REGISTERED, "gigatok")


@pytest.mark.parametrize("command", ["repro", "bench"])
def test_repro_or_bench_of_a_planned_method_says_it_is_planned(command, gigatok_planned, capsys):
    assert main([command, "gigatok"] + (["--tiny"] if command == "repro" else [])) == 2
    assert "planned" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["repro", "elr", "--tiny", "--device", "gpu0"], "device must be"),
        (["repro", "elr", "--tiny", "--set", "noises=sym40,sym40"], "repeats units"),
        (["repro", "elr", "--tiny", "--set", "epochs=0"], "epochs must be positive"),
        (["repro", "elr", "--tiny", "--set", "lr=nan"], "lr must be finite"),
        (["repro", "elr", "--tiny", "--seeds", "-1"], "non-negative"),
        (["report", "--results", "does-not-exist"], "does not exist"),
        (["report", "--results", "."], "holds no <slug>/result.json"),
        (["repro", "elr", "--tiny", "--reuse-stale"], "--resume"),
    ],
)
def test_more_user_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "does-not-exist").exists()
