"""benchmarks/mutants.py stays usable: each bad change still applies to today's code, once, and names tests
that exist. (Running the mutants takes minutes: ``python benchmarks/mutants.py``, see docs/contributing.md.)"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _mutants_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "benchmarks" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutants", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_mutant_applies_once_and_names_existing_tests() -> None:
    mutants = _mutants_module().MUTANTS
    assert len({m.name for m in mutants}) == len(mutants)
    for m in mutants:
        text = (ROOT / m.path).read_text()
        assert text.count(m.old) == 1, f"{m.name}: the text to change occurs {text.count(m.old)} times in {m.path}"
        assert m.new != m.old and m.tests, m.name
        for node in m.tests:
            path, _, name = node.partition("::")
            source = (ROOT / path).read_text()
            assert not name or re.search(rf"^def {re.escape(name)}\(", source, re.MULTILINE), f"{m.name}: no test {node}"
