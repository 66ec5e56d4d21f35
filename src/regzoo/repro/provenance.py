"""Which code a unit's numbers came from: a fingerprint of its modules and its config.

A reproduction's *closure* is ``regzoo.repro.<slug>`` plus every ``regzoo`` module it imports,
followed statically through ``import`` statements (those inside functions too) and the packages
on the way. It is read from the source files, not from ``sys.modules``: loading a reproduction
loads the registry, which imports every method, so ``sys.modules`` would tie each result to all
27 methods. Modules that only turn finished unit records into results (:data:`BOOKKEEPING`:
verdicts, reports, the runner, the registry and catalog, the CLI) are left out: a result is
re-rendered with them without training, and a change there must not re-run every unit.

The fingerprint is ``{"modules": {name: sha256 of the source}, "code": {name: code hash},
"config": sha256}``, the config hash taken over every field except the reproduction's
``unit_axes`` (seeds, arms, settings), which only add units. The *code hash*
(:func:`code_hash`) is taken over the module's syntax tree without what cannot run: docstrings
and other bare string statements, comments, layout, and the arguments of ``register(...)``,
the card a method hands the registry (its summary, equation, defaults table and declarations,
read only by bookkeeping). So documenting a method or its card does not stale its results,
while any change to what executes does. Staleness compares code hashes when the record has
them, else the source hashes (records written before code hashes existed); a unit record is
reusable exactly when they agree, :func:`changed_modules` says what differs.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import regzoo

BOOKKEEPING = frozenset({
    "regzoo.catalog",
    "regzoo.cli",
    "regzoo.registry",
    "regzoo.repro.claims",
    "regzoo.repro.provenance",
    "regzoo.repro.report",
    "regzoo.repro.runner",
})
"""Modules that never shape a unit's numbers; they are not followed or hashed."""

PACKAGE_ROOT = Path(regzoo.__file__).resolve().parent


def _module_file(name: str, root: Path) -> Path | None:
    """The source file of ``regzoo`` module ``name`` under ``root`` (None if there is none)."""
    parts = name.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(name: str, path: Path) -> set[str]:
    """Every ``regzoo.*`` name an import statement in ``path`` may refer to."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                module = ".".join(anchor + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # ``from regzoo.methods import elr`` imports the submodule ``regzoo.methods.elr``.
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return {n for n in found if n == "regzoo" or n.startswith("regzoo.")}


def module_closure(start: str, root: Path = PACKAGE_ROOT) -> list[str]:
    """``start`` and every ``regzoo`` module it needs, sorted; :data:`BOOKKEEPING` left out."""
    seen: set[str] = set()
    stack = [start]
    while stack:
        name = stack.pop()
        if name in seen or name in BOOKKEEPING:
            continue
        path = _module_file(name, root)
        if path is None:
            continue  # a name imported from a module, not a module itself
        seen.add(name)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        stack += parents
        stack += _imported_names(name, path)
    if start not in seen:
        raise ValueError(f"no source file for module {start!r} under {root}")
    return sorted(seen)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def config_hash(config: Mapping[str, Any], unit_axes: Iterable[str]) -> str:
    """A hash of the config's fields except ``unit_axes`` (they add units, not change them)."""
    kept = {k: v for k, v in config.items() if k not in set(unit_axes)}
    return _sha(json.dumps(kept, sort_keys=True, default=str).encode())


def _register_names(tree: ast.Module) -> set[str]:
    """The local names ``register`` of :mod:`regzoo.registry` is imported under."""
    return {alias.asname or alias.name for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("registry")
            for alias in node.names if alias.name == "register"}


def _executable(tree: ast.Module) -> ast.Module:
    """``tree`` without bare string statements and without ``register(...)`` decorators."""
    registers = _register_names(tree)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            node.body = [s for s in body if not (isinstance(s, ast.Expr)
                                                 and isinstance(s.value, ast.Constant)
                                                 and isinstance(s.value.value, str))]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            node.decorator_list = [d for d in node.decorator_list if not (
                isinstance(d, ast.Call) and isinstance(d.func, ast.Name)
                and d.func.id in registers)]
    return tree


def _canonical(node: Any) -> Any:
    """A rendering of a syntax tree that later Pythons keep: None and empty fields are left out.

    A field a newer Python adds to a node is empty for code that does not use it, so it
    changes nothing.
    """
    if isinstance(node, ast.AST):
        fields = [(name, _canonical(value)) for name, value in ast.iter_fields(node)
                  if value is not None and value != []]
        return [type(node).__name__, fields]
    if isinstance(node, list):
        return [_canonical(item) for item in node]
    return repr(node)


@functools.lru_cache(maxsize=4096)
def code_hash(source: bytes) -> str:
    """A hash of what ``source`` executes: layout, comments, docstrings and card text left out.

    Two sources get the same hash exactly when their syntax trees agree once bare string
    statements (docstrings, attribute docs) and ``register(...)`` decorators are removed.
    """
    tree = _executable(ast.parse(source))
    return _sha(json.dumps(_canonical(tree), separators=(",", ":")).encode())


def fingerprint(slug: str, config: Mapping[str, Any], unit_axes: Iterable[str],
                root: Path = PACKAGE_ROOT) -> dict[str, Any]:
    """The current code's fingerprint for ``slug``'s units under ``config`` (its ``as_dict``)."""
    sources = {name: _module_file(name, root).read_bytes()  # type: ignore[union-attr]
               for name in module_closure(f"regzoo.repro.{slug}", root)}
    return {"modules": {name: _sha(source) for name, source in sources.items()},
            "code": {name: code_hash(source) for name, source in sources.items()},
            "config": config_hash(config, unit_axes)}


def changed_modules(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[str]:
    """What differs between a recorded fingerprint and the current one (empty: identical).

    Module names whose code changed (by code hash where the record has one, else by source
    hash), was added to or left the closure; ``<config>`` when the config hash differs;
    ``<no fingerprint>`` for a record written before fingerprints existed.
    """
    if not recorded or "modules" not in recorded:
        return ["<no fingerprint>"]
    key = "code" if "code" in recorded else "modules"
    before, now = recorded[key], current[key]
    changed = sorted(n for n in set(before) | set(now) if before.get(n) != now.get(n))
    if recorded.get("config") != current["config"]:
        changed.append("<config>")
    return changed
