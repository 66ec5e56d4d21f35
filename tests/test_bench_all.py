"""``regzoo bench --all``: every benchmark script run in its own process, collected in one file."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from regzoo.bench import BENCHMARKS_DIR, benchmark_scripts, methods_by_script, render, run_all
from regzoo.cli import main


def _script(folder: Path, name: str, body: str) -> None:
    (folder / f"{name}.py").write_text(textwrap.dedent(body))


@pytest.fixture
def scripts(tmp_path: Path) -> Path:
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    _script(folder, "alpha", """\
        import os, sys
        quick = "--quick" in sys.argv
        print(f"threads {os.environ['OMP_NUM_THREADS']}")
        print("| size | ratio |")
        print("|---:|---:|")
        print(f"| {10 if quick else 1000} | 1.50 |")
        """)
    _script(folder, "broken", """\
        import sys
        print("| partial |")
        sys.exit("broken benchmark needs POT: pip install 'regzoo[peers]'")
        """)
    _script(folder, "_helpers", "raise SystemExit('a helper module is not a benchmark')\n")
    return folder


def test_every_script_runs_once_and_the_file_holds_each_ones_tables(scripts, tmp_path):
    out = tmp_path / "results" / "benchmarks.md"
    runs = run_all(out, quick=True, allow_dirty=True, folder=scripts)
    assert [r.name for r in runs] == ["alpha", "broken"]
    assert [r.ok for r in runs] == [True, False]
    text = out.read_text()
    assert "`regzoo bench --all --quick`" in text and "load average" in text
    assert "| [alpha](#alpha) |" in text and "| ok |" in text
    assert "**failed** (exit 1)" in text
    assert "threads 1" in text  # one thread per benchmark
    assert "| 10 | 1.50 |" in text and "| 1000 |" not in text  # --quick reached the script
    assert "needs POT" in text  # a failure keeps its error
    assert text.index("## alpha") < text.index("## broken")


def test_a_benchmark_past_its_timeout_counts_as_failed(tmp_path):
    folder = tmp_path / "benchmarks"
    folder.mkdir()
    _script(folder, "slow", "import time\nprint('started', flush=True)\ntime.sleep(30)\n")
    [run] = run_all(tmp_path / "b.md", quick=False, timeout=1.0, allow_dirty=True,
                    folder=folder)
    assert not run.ok and "timed out after 1 s" in run.stderr
    assert run.seconds < 20


def test_an_uncommitted_or_unknown_tree_is_refused_unless_allowed(scripts, tmp_path):
    with pytest.raises(ValueError, match="--allow-dirty"):
        run_all(tmp_path / "b.md", quick=True, folder=scripts)  # not a git checkout
    assert not (tmp_path / "b.md").exists()
    text = render([], quick=False, commit=None, dirty=True)
    assert "dirty (uncommitted changes)" in text and "--quick" not in text


def test_every_implemented_method_names_a_benchmark_that_exists():
    names = {p.stem for p in benchmark_scripts(BENCHMARKS_DIR)}
    assert set(methods_by_script()) <= names


def test_a_missing_folder_and_a_bad_timeout_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no benchmarks folder"):
        benchmark_scripts(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="timeout must be positive"):
        run_all(tmp_path / "b.md", quick=True, timeout=0, folder=tmp_path)


@pytest.mark.parametrize(("argv", "message"), [
    (["bench"], "regzoo bench --all"),
    (["bench", "--all", "elr"], "drop the method name"),
])
def test_bench_command_line_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
