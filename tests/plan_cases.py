"""The recorded plan cases of tests/data/plans/<command>/ (one JSON file each, a README per
folder): loading them as pytest parameters, and checking a case that expects a refusal."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mclu import errors

PLANS = Path(__file__).parent / "data" / "plans"


def load(command: str) -> list[Any]:
    """Every case of `command`, each a pytest parameter named after its file."""
    paths = sorted((PLANS / command).glob("*.json"))
    assert paths, f"no cases in {PLANS / command}"
    return [pytest.param(json.loads(p.read_text()), id=p.stem) for p in paths]


def refused(expected: dict[str, Any], *steps: Callable[[], object]) -> bool:
    """When the case expects an error, check that each step raises exactly that class with
    exactly that message, and say so (the caller checks nothing else); else False."""
    if "error" not in expected:
        return False
    error_class = getattr(errors, expected["error"])
    for step in steps:
        with pytest.raises(error_class) as raised:
            step()
        assert type(raised.value) is error_class
        assert str(raised.value) == expected["message"]
    return True
