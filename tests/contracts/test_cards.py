"""Every card default that names a parameter equals that parameter's default in the code.

A card lists a method's defaults with their sources (``regzoo info``). Where a name is a
parameter of the registered object (its ``__init__``, the function itself, a transform's
``apply``), of a function it dispatches to (``"hyres.wavelet"``: parameter ``wavelet`` of
``hyres`` in the method's module), or a field of a config dataclass it takes, the two must agree;
other entries document the paper's recipe outside the signature (a table value, a schedule).
"""

import dataclasses
import inspect
import math
import sys
import typing

import pytest

from regzoo.registry import cards

IMPLEMENTED = [pytest.param(c, id=c.slug) for c in cards() if c.implemented]


def _entry_point(card):
    obj = card.obj
    if inspect.isclass(obj):
        return obj.apply if card.kind == "transform" and hasattr(obj, "apply") else obj.__init__
    return obj


def _config_fields(function):
    """``{field: default}`` of the dataclass configs ``function`` takes."""
    fields = {}
    hints = typing.get_type_hints(function)
    for name in inspect.signature(function).parameters:
        kind = hints.get(name)
        candidates = [a for a in typing.get_args(kind) or (kind,) if dataclasses.is_dataclass(a)]
        for config in candidates:
            for field in dataclasses.fields(config):
                if field.default is not dataclasses.MISSING:
                    fields[field.name] = field.default
    return fields


def _code_default(card, name):
    """The code's default for a card entry, or ``inspect.Parameter.empty`` if it names none."""
    function = _entry_point(card)
    if "." in name:
        owner, _, name = name.partition(".")
        function = getattr(sys.modules[card.obj.__module__], owner, None)
        if function is None:
            return inspect.Parameter.empty
    parameters = inspect.signature(function).parameters
    if name in parameters:
        return parameters[name].default
    return _config_fields(function).get(name, inspect.Parameter.empty)


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12) or (math.isinf(a) and a == b)
    return a == b


@pytest.mark.parametrize("card", IMPLEMENTED)
def test_card_defaults_equal_the_code_defaults(card):
    drifted = []
    for default in card.defaults:
        code = _code_default(card, default.name)
        if code is inspect.Parameter.empty:
            continue  # the paper's recipe outside the signature: documentation only
        if not _same(code, default.value):
            drifted.append(f"{default.name}: card {default.value!r}, code {code!r}")
    assert not drifted, f"{card.slug}'s card has drifted from its code: {drifted}"


def test_a_card_entry_that_names_no_parameter_is_still_documented():
    for card in cards():
        for default in card.defaults:
            assert default.source, f"{card.slug}: card default {default.name} has no source"
