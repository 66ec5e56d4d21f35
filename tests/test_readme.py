"""Every Python block of the README runs as written.

A small extractor rather than doctest: the README's blocks are scripts a user pastes, not
interactive sessions with expected output, so each block is executed in a fresh namespace in a
temporary folder, and must finish without error. A block that needs an optional extra names it
in a first-line comment ``# needs: <module>`` and is skipped when the module is missing.
"""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(encoding="utf-8"),
                    flags=re.DOTALL | re.MULTILINE)


def test_the_readme_has_examples():
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_block_runs_as_written(code, tmp_path, monkeypatch):
    needs = re.match(r"# needs: (\S+)", code)
    if needs and importlib.util.find_spec(needs.group(1)) is None:
        pytest.skip(f"needs the optional module {needs.group(1)}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md block", "exec"), {"__name__": "__readme__"})
