"""Provenance: import closures, fingerprints, and which results an edit makes stale."""

import shutil

import pytest

from regzoo.repro import provenance
from regzoo.repro.provenance import (
    BOOKKEEPING,
    PACKAGE_ROOT,
    changed_modules,
    config_hash,
    fingerprint,
    module_closure,
)

SLUGS = ("elr", "pskd", "sorsa", "sara", "hessian_alignment", "sparse_ot")


def test_closure_holds_the_reproduction_its_method_and_shared_code_but_no_bookkeeping():
    closure = module_closure("regzoo.repro.pskd")
    assert {"regzoo.repro.pskd", "regzoo.methods.pskd", "regzoo.repro.protocol",
            "regzoo.repro.config", "regzoo", "regzoo.methods"} <= set(closure)
    # PS-KD + ELR composes the two methods, so ELR's modules are PS-KD's dependencies too.
    assert "regzoo.methods.elr.loss" in closure
    assert not set(closure) & BOOKKEEPING
    assert "regzoo.methods.sorsa" not in closure and "regzoo.repro.elr" not in closure


def test_relative_imports_and_from_imports_of_submodules_are_followed(tmp_path):
    root = tmp_path / "regzoo"
    (root / "pkg").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "repro").mkdir()
    (root / "repro" / "__init__.py").write_text("")
    (root / "repro" / "demo.py").write_text("from ..pkg import leaf\nfrom . import other\n")
    (root / "repro" / "other.py").write_text("def f():\n    import regzoo.pkg.lazy\n")
    (root / "pkg" / "__init__.py").write_text("from .base import thing\n")
    for name in ("leaf", "base", "lazy"):
        (root / "pkg" / f"{name}.py").write_text("thing = 1\n")
    closure = module_closure("regzoo.repro.demo", root)
    assert closure == sorted(["regzoo", "regzoo.repro", "regzoo.repro.demo", "regzoo.repro.other",
                              "regzoo.pkg", "regzoo.pkg.base", "regzoo.pkg.leaf",
                              "regzoo.pkg.lazy"])
    with pytest.raises(ValueError, match="no source file"):
        module_closure("regzoo.repro.missing", root)


def _fingerprints(root):
    return {slug: fingerprint(slug, {"seeds": [0]}, ("seeds",), root) for slug in SLUGS}


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("src") / "regzoo"
    shutil.copytree(PACKAGE_ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _stale_after_editing(root, relative, edit=lambda text: text + "\n_an_edit = 1\n"):
    before = _fingerprints(root)
    path = root / relative
    original = path.read_text()
    path.write_text(edit(original))
    try:
        after = _fingerprints(root)
    finally:
        path.write_text(original)
    return {slug for slug in SLUGS if changed_modules(before[slug], after[slug])}


def test_editing_one_method_stales_only_its_result_and_the_results_that_import_it(source_copy):
    # The fine-tuning kit maps every arm to its adapter: a fine-tuning method's edit stales all
    # four fine-tuning results (SORSA and SaRA stand for them here).
    assert _stale_after_editing(source_copy, "methods/sorsa.py") == {"sorsa", "sara"}
    assert _stale_after_editing(source_copy, "repro/sara.py") == {"sara"}
    # PS-KD's reproduction composes ELR's criterion: an ELR edit stales both.
    assert _stale_after_editing(source_copy, "methods/elr/loss.py") == {"elr", "pskd"}
    assert _stale_after_editing(source_copy, "repro/pskd.py") == {"pskd"}


def test_editing_bookkeeping_stales_nothing_and_shared_code_stales_everything(source_copy):
    assert _stale_after_editing(source_copy, "repro/report.py") == set()
    assert _stale_after_editing(source_copy, "repro/claims.py") == set()
    assert _stale_after_editing(source_copy, "registry.py") == set()
    assert _stale_after_editing(source_copy, "repro/protocol.py") == set(SLUGS)


def _document(text):
    """A comment, a longer module docstring and an attribute docstring: nothing that runs."""
    return text.replace('"""', '"""Documented. ', 1) + '\n# a comment\n"""An attribute doc."""\n'


def test_documentation_layout_and_card_text_stale_nothing(source_copy):
    assert _stale_after_editing(source_copy, "methods/sorsa.py", _document) == set()
    assert _stale_after_editing(source_copy, "repro/protocol.py", _document) == set()
    # The card: every argument of the register(...) decorator is read by bookkeeping only.
    assert _stale_after_editing(
        source_copy, "methods/elr/loss.py",
        lambda text: text.replace('kind="criterion",', 'kind="criterion", note="x",', 1)) == set()
    assert _stale_after_editing(
        source_copy, "methods/elr/loss.py",
        lambda text: text.replace("import torch\n", "import torch\nimport math\n", 1)) \
        == {"elr", "pskd"}


def test_code_hash_ignores_docstrings_comments_layout_and_register_but_not_code():
    base = (b"from regzoo.registry import register\n@register('x', kind='criterion')\n"
            b"def f(a):\n    'doc'\n    return a + 1\n")
    same = (b"from regzoo.registry import register\n\n@register('x', kind='penalty', more=1)\n"
            b"def f(a):  # comment\n    '''other doc'''\n    return (a +\n            1)\n")
    assert provenance.code_hash(base) == provenance.code_hash(same)
    for different in (base.replace(b"a + 1", b"a + 2"), base.replace(b"'doc'", b"a = 1"),
                      base.replace(b"@register(", b"@other(")):
        assert provenance.code_hash(base) != provenance.code_hash(different)


def test_changed_modules_compares_code_hashes_when_the_record_has_them():
    now = {"modules": {"a": "1"}, "code": {"a": "c1"}, "config": "c"}
    assert changed_modules({"modules": {"a": "0"}, "code": {"a": "c1"}, "config": "c"}, now) == []
    assert changed_modules({"modules": {"a": "1"}, "code": {"a": "c0"}, "config": "c"},
                           now) == ["a"]
    # A record from before code hashes: its source hashes decide.
    assert changed_modules({"modules": {"a": "1"}, "config": "c"}, now) == []
    assert changed_modules({"modules": {"a": "0"}, "config": "c"}, now) == ["a"]


def test_changed_modules_names_what_differs():
    now = {"modules": {"a": "1", "b": "2"}, "config": "c"}
    assert changed_modules(now, now) == []
    assert changed_modules({"modules": {"a": "1", "b": "3"}, "config": "c"}, now) == ["b"]
    assert changed_modules({"modules": {"a": "1"}, "config": "x"}, now) == ["b", "<config>"]
    assert changed_modules(None, now) == ["<no fingerprint>"]


def test_config_hash_ignores_the_axes_that_only_add_units():
    base = {"seeds": [0, 1], "arms": ["a"], "lr": 0.1}
    axes = ("seeds", "arms")
    assert config_hash(base, axes) == config_hash({**base, "seeds": [0, 1, 2, 3]}, axes)
    assert config_hash(base, axes) != config_hash({**base, "lr": 0.2}, axes)


def test_fingerprint_of_the_installed_package_is_stable():
    first = provenance.fingerprint("elr", {"seeds": [0]}, ("seeds",))
    assert first == provenance.fingerprint("elr", {"seeds": [1, 2]}, ("seeds",))
    assert "regzoo.methods.elr.loss" in first["modules"]
