"""Every ``>>>`` example in regzoo's docstrings runs and prints what it shows.

Python's doctest over every module of the package: a module that needs an optional extra that
is not installed is skipped, so its examples run wherever the extra is.
"""

import doctest
import importlib
import pkgutil

import pytest

import regzoo


def _modules() -> list[str]:
    # __main__ runs the CLI on import.
    return sorted(m.name for m in pkgutil.walk_packages(regzoo.__path__, "regzoo.")
                  if m.name != "regzoo.__main__")


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name):
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        pytest.skip(f"{name} needs an optional dependency: {error}")
    results = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert results.failed == 0, f"{results.failed} docstring example(s) of {name} failed"


def test_no_docstring_example_is_skipped():
    finder = doctest.DocTestFinder()
    skipped = []
    for name in _modules():
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for test in finder.find(module):
            skipped += [f"{test.name}:{ex.lineno}" for ex in test.examples
                        if ex.options.get(doctest.SKIP)]
    assert not skipped, f"examples marked +SKIP: {skipped}"
