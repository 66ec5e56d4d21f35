"""``regzoo assets list|build|clear``: the cache of pretrained models, from the command line."""

import pytest

from regzoo import assets
from regzoo.cli import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REGZOO_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


SMALL = ["--set", "hidden=16", "--set", "epochs=1"]


def test_build_caches_a_registered_asset_that_list_then_shows(cache, capsys):
    assert main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    assert f"cache: {cache}" in out and "no cached assets" in out and "digits_mlp:" in out
    assert main(["assets", "build", "digits_mlp", "--set", "seed=2", *SMALL]) == 0
    out = capsys.readouterr().out
    path = assets.location("digits_mlp", {"seed": 2, "hidden": (16,), "epochs": 1})
    assert out.startswith(f"digits_mlp: {path} (source_accuracy ") and path.is_file()
    assert main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    assert f"digits_mlp  {path.stem}  " in out and "hidden=[16]" in out and "seed=2" in out
    # Building again loads the cached file.
    mtime = path.stat().st_mtime_ns
    assert main(["assets", "build", "digits_mlp", "--set", "seed=2", *SMALL]) == 0
    assert path.stat().st_mtime_ns == mtime


def test_clear_removes_one_asset_or_all(cache, capsys):
    for seed in ("0", "1"):
        assert main(["assets", "build", "digits_mlp", "--set", f"seed={seed}", *SMALL]) == 0
    (cache / "assets" / "other").mkdir()
    (cache / "assets" / "other" / "0123.pt").write_bytes(b"x")
    capsys.readouterr()
    assert main(["assets", "list"]) == 0
    assert "other  0123  unreadable" in capsys.readouterr().out
    assert main(["assets", "clear", "digits_mlp"]) == 0
    assert "removed 2 cached asset file(s)" in capsys.readouterr().out
    assert [entry.name for entry in assets.list_cached()] == ["other"]
    assert main(["assets", "clear"]) == 0
    assert "removed 1 cached asset file(s)" in capsys.readouterr().out
    assert assets.list_cached() == []


def test_bad_names_and_fields_are_one_line_errors(cache, capsys):
    assert main(["assets", "build", "bert_large"]) == 2
    assert "unknown asset 'bert_large'; registered assets: digits_mlp" in capsys.readouterr().err
    assert main(["assets", "build", "digits_mlp", "--set", "depth=3"]) == 2
    assert "has no config field 'depth'; fields: seed, hidden" in capsys.readouterr().err
    assert main(["assets", "build", "digits_mlp", "--set", "epochs=many"]) == 2
    assert "--set epochs='many': expected int" in capsys.readouterr().err
    assert main(["assets", "clear", "Bad/Name"]) == 2
    assert "asset name must be lower-case" in capsys.readouterr().err
