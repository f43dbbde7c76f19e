"""Every plugin installed in this environment (built-in or third-party) keeps its kind's contract, through
the helper plugin authors use too (vista2d_core.testing); and the helper catches what it should."""

from __future__ import annotations

import pytest
from test_registry import make_distribution, site  # noqa: F401  (the fixture)

from vista2d_core.testing import check_plugin, installed_plugins


@pytest.mark.parametrize(("kind", "name"), installed_plugins())
def test_installed_plugin_keeps_its_contract(kind: str, name: str) -> None:
    check_plugin(kind, name)


def test_every_kind_has_a_builtin_plugin_to_check() -> None:
    kinds = {kind for kind, _ in installed_plugins()}
    assert kinds == {"backbones", "heads", "readers", "writers", "losses", "postprocessors", "runtimes", "hooks",
                     "models"}


BROKEN = """
    import attrs
    import numpy as np

    @attrs.define
    class O:
        pass

    @attrs.define
    class Required:
        level: int

    class Float:
        '''Labels as floats.'''
        Options = O
        def __init__(self, options):
            pass
        def __call__(self, logits):
            return (np.asarray(logits)[0] > 0).astype(np.float32)

    class NeedsLevel(Float):
        Options = Required

    class Upper:
        Options = O
        suffixes = (".TIF",)
        def read(self, path):
            return None

    class Unsaveable:
        Options = O
        def __init__(self, options):
            pass
        def after_epoch(self, run, metrics):
            pass
        def state_dict(self):
            return {"fn": print}
        def load_state_dict(self, state):
            pass
"""


@pytest.mark.parametrize(("kind", "name", "message"), [
    ("postprocessors", "float", r"expected \(48, 48\) uint16 labels .* float32"),
    ("postprocessors", "needs_level", r"its Options do not build from their defaults: needs_level.level: missing"),
    ("readers", "upper", r"suffixes must be lower-case and start with '\.': \['\.TIF'\]"),
    ("hooks", "unsaveable", r"state_dict\(\) must be plain data that checkpoints load back"),
])
def test_the_helper_names_what_a_plugin_breaks(site, kind, name, message):  # noqa: F811
    make_distribution(site, "v2dtest-broken", {
        "vista2d.postprocessors": {"float": "v2dtest_broken:Float", "needs_level": "v2dtest_broken:NeedsLevel"},
        "vista2d.readers": {"upper": "v2dtest_broken:Upper"},
        "vista2d.hooks": {"unsaveable": "v2dtest_broken:Unsaveable"},
    }, {"v2dtest_broken.py": BROKEN})
    with pytest.raises(AssertionError, match=f"^plugin '{name}' in vista2d.{kind}: {message}"):
        check_plugin(kind, name)
