"""Registries: discovery from real entry-point metadata, unknown names, broken plugins, conflicts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from stevedore import ExtensionManager

from vista2d_core import RecipeError, UserError, available, create, describe, load, registry
from vista2d_core.interfaces import KINDS
from vista2d_core.recipe import tomllib

ROOT = Path(__file__).resolve().parents[1]


def declared_plugins() -> dict[str, set[str]]:
    """Built-in plugin names per kind, as pyproject.toml declares them."""
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    return {g.removeprefix("vista2d."): set(eps) for g, eps in groups.items() if g.startswith("vista2d.")}


def make_distribution(
    root: Path, name: str, entry_points: dict[str, dict[str, str]], files: dict[str, str] | None = None
) -> Path:
    """Write a real installed distribution into ``root``: its modules and a ``.dist-info`` folder."""
    files = files or {}
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    info = root / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    sections = [
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
        for group, eps in entry_points.items()
    ]
    (info / "entry_points.txt").write_text("\n".join(sections))
    record = [*files, f"{info.name}/METADATA", f"{info.name}/entry_points.txt", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{r},,\n" for r in record))
    return info


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh folder on sys.path for tmp distributions; entry-point and module caches reset around the test."""
    root = tmp_path / "site"
    root.mkdir()
    modules_before = set(sys.modules)
    monkeypatch.syspath_prepend(str(root))  # a new sys.path also gives stevedore's disk cache a new key
    ExtensionManager.ENTRY_POINT_CACHE.clear()
    registry._module_distributions.cache_clear()
    yield root
    ExtensionManager.ENTRY_POINT_CACHE.clear()
    registry._module_distributions.cache_clear()
    for module in set(sys.modules) - modules_before:
        if module.startswith("v2dtest_"):
            del sys.modules[module]


GOOD = """
    import attrs
    import numpy as np

    @attrs.define
    class Options:
        level: int = attrs.field(default=1, validator=attrs.validators.ge(0))

    class Good:
        '''Labels everything above the level.'''
        Options = Options

        def __init__(self, options):
            self.options = options

        def __call__(self, logits):
            return (np.asarray(logits)[0] > self.options.level).astype(np.uint16)
"""

PP = "vista2d.postprocessors"


def test_kind_names_singular_and_plural():
    assert registry.group("reader") == "vista2d.readers"
    assert registry.group("postprocessors") == "vista2d.postprocessors"
    with pytest.raises(UserError, match="unknown plugin kind 'gizmo' \\(kinds: backbones, heads"):
        registry.group("gizmo")


def test_available_reads_metadata_without_importing(site):
    make_distribution(
        site,
        "v2dtest-lazy",
        {PP: {"lazy": "v2dtest_lazy:Plugin"}},
        {"v2dtest_lazy.py": "raise RuntimeError('imported')"},
    )
    assert "lazy" in available("postprocessors")
    assert "v2dtest_lazy" not in sys.modules
    rows = describe("postprocessors", load_plugins=False)
    assert [(r.name, r.package, r.error) for r in rows if r.name == "lazy"] == [("lazy", "v2dtest-lazy", "")]
    assert "v2dtest_lazy" not in sys.modules


def test_builtin_names_listed_without_importing_plugins():
    """In a fresh interpreter: every name pyproject.toml declares is available, and no plugin module got imported."""
    code = (
        "import json, sys, vista2d_core as v\n"
        "from vista2d_core.interfaces import KINDS\n"
        "names = {k: v.available(k) for k in KINDS}\n"
        "tops = ('vista2d_sam', 'vista2d_cellpose', 'vista2d_io', 'vista2d_runtimes', 'torch', 'cellpose')\n"
        "print(json.dumps({'names': names, 'imported': [m for m in sys.modules if m.split('.')[0] in tops]}))\n"
    )
    out = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert set(out["names"]) == set(KINDS)
    for kind, names in declared_plugins().items():
        assert names <= set(out["names"][kind]), kind
    assert out["imported"] == []


def test_unknown_name_names_group_close_matches_and_installed(site):
    make_distribution(
        site, "v2dtest-good", {PP: {"threshold": "v2dtest_good:Good"}}, {"v2dtest_good.py": GOOD}
    )
    with pytest.raises(UserError) as info:
        load("postprocessors", "threshhold")
    message = str(info.value)
    assert message.startswith("no plugin 'threshhold' in vista2d.postprocessors: did you mean 'threshold'?")
    installed = message.split("installed: ")[1].split(", ")
    assert installed == available("postprocessors") and "threshold" in installed


def test_unknown_name_without_close_match_lists_installed():
    message = registry.unknown_name_message("runtimes", "zzzzzz")
    assert "did you mean" not in message
    assert message.endswith("installed: " + ", ".join(available("runtimes")))


def test_broken_plugin_reported_while_others_load(site):
    make_distribution(
        site,
        "v2dtest-mixed",
        {PP: {"broken": "v2dtest_broken:Plugin", "good": "v2dtest_good:Good"}},
        {"v2dtest_broken.py": "raise ImportError('needs libfoo')", "v2dtest_good.py": GOOD},
    )
    with pytest.raises(UserError) as info:
        load("postprocessors", "broken")
    assert str(info.value) == (
        "plugin 'broken' in vista2d.postprocessors (v2dtest_broken:Plugin) is broken: ImportError: needs libfoo"
    )
    assert load("postprocessors", "good").__name__ == "Good"
    rows = {r.name: r for r in describe("postprocessors") if r.package == "v2dtest-mixed"}
    assert "ImportError: needs libfoo" in rows["broken"].error
    assert (rows["good"].error, rows["good"].summary) == ("", "Labels everything above the level.")


def test_plugin_missing_interface_members_named(site):
    plugin = """
        class Reader:
            Options = dict
            def read(self, path):
                return path
    """
    make_distribution(
        site,
        "v2dtest-partial",
        {"vista2d.readers": {"partial": "v2dtest_partial:Reader"}},
        {"v2dtest_partial.py": plugin},
    )
    with pytest.raises(
        UserError, match=r"does not satisfy Reader: missing Options \(an attrs class\), suffixes$"
    ):
        load("readers", "partial")


def test_postprocessor_without_call_is_rejected(site):
    """Every class is callable (``type.__call__``): the check must look for the class's own ``__call__``."""
    plugin = """
        import attrs
        from vista2d_core.interfaces import Postprocessor

        @attrs.define
        class O:
            pass

        class Plain:
            Options = O

        class Abstract(Postprocessor):  # subclasses the interface but implements nothing
            Options = O
    """
    make_distribution(
        site,
        "v2dtest-nocall",
        {PP: {"plain": "v2dtest_nocall:Plain", "abstract": "v2dtest_nocall:Abstract"}},
        {"v2dtest_nocall.py": plugin},
    )
    for name in ("plain", "abstract"):
        with pytest.raises(UserError, match="does not satisfy Postprocessor: missing __call__$"):
            load("postprocessors", name)


def test_same_name_from_two_distributions_is_an_error(site):
    make_distribution(site, "v2dtest-one", {PP: {"twin": "v2dtest_one:Good"}}, {"v2dtest_one.py": GOOD})
    make_distribution(site, "v2dtest-two", {PP: {"twin": "v2dtest_two:Good"}}, {"v2dtest_two.py": GOOD})
    assert available("postprocessors").count("twin") == 1
    with pytest.raises(UserError) as info:
        load("postprocessors", "twin")
    message = str(info.value)
    assert "plugin 'twin' in vista2d.postprocessors is registered more than once" in message
    assert "v2dtest_one:Good (v2dtest-one)" in message and "v2dtest_two:Good (v2dtest-two)" in message
    assert "v2dtest_one" not in sys.modules and "v2dtest_two" not in sys.modules


def test_create_validates_options(site):
    make_distribution(site, "v2dtest-good", {PP: {"good": "v2dtest_good:Good"}}, {"v2dtest_good.py": GOOD})
    plugin = create("postprocessors", "good", level=2)
    assert plugin.options.level == 2
    assert plugin([[[1.0, 3.0]], [[0, 0]], [[0, 0]]]).tolist() == [[0, 1]]
    with pytest.raises(RecipeError) as info:
        create("postprocessors", "good", levle=2, level=-1)
    assert info.value.problems == [  # every problem at once
        "postprocessors.good.levle: unknown option (known: level)",
        "postprocessors.good.level: must be >= 0: -1",
    ]


def test_every_member_of_an_interface_is_checked(site):
    """Declared attributes (a backbone's ``out_channels``, a writer's ``needs_logits``) count as members, and a
    hook needs an event and both halves of its state."""
    plugins = """
        import attrs

        @attrs.define
        class O:
            pass

        class Backbone:
            Options = O
            def forward(self, images):
                return images

        class Writer:
            Options = O
            def write(self, prediction, out_dir, stem):
                return []

        class Idle:
            Options = O

        class HalfState:
            Options = O
            def after_epoch(self, run, metrics):
                pass
            def state_dict(self):
                return {}
    """
    make_distribution(
        site,
        "v2dtest-members",
        {"vista2d.backbones": {"flat": "v2dtest_members:Backbone"},
         "vista2d.writers": {"flat": "v2dtest_members:Writer"},
         "vista2d.hooks": {"idle": "v2dtest_members:Idle", "half": "v2dtest_members:HalfState"}},
        {"v2dtest_members.py": plugins},
    )
    with pytest.raises(UserError, match="does not satisfy Backbone: missing out_channels$"):
        load("backbones", "flat")
    with pytest.raises(UserError, match="does not satisfy Writer: missing needs_logits$"):
        load("writers", "flat")
    with pytest.raises(UserError, match="does not satisfy Hook: missing one of before_train, after_epoch, after_train"):
        load("hooks", "idle")
    with pytest.raises(UserError, match="does not satisfy Hook: missing load_state_dict$"):
        load("hooks", "half")
