"""Recipes: strict validation with dotted paths, overrides, path resolution, and the resolved dump.

The built-in plugins are replaced by stand-ins with known options (``use_stand_ins``), so these tests check
the recipe machinery alone; the registry has its own tests on real entry-point metadata.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from vista2d_core import RecipeError, UserError, dump_recipe, load_recipe, recipe_from_dict, registry
from vista2d_core.interfaces import NoOptions
from vista2d_core.recipe import apply_overrides, parse_override, recipe_to_dict, tomllib, write_resolved


@attrs.define
class CellposeOptions:
    niter: int = 200
    cellprob_threshold: float = 0.0
    flow_threshold: float = attrs.field(default=0.4, validator=attrs.validators.ge(0.0))


class FakePlugin:
    """Stand-in for a built-in plugin: keeps what it was built with."""

    Options: type = NoOptions

    def __init__(self, options, *args):
        self.options, self.args = options, args


def use_stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Built-in names load as stand-ins; ``postprocessors.cellpose*`` have real-looking options."""
    from test_registry import declared_plugins

    declared = declared_plugins()

    def load(kind: str, name: str) -> type:
        kind = registry.canonical_kind(kind)
        if name not in declared[kind]:
            raise UserError(registry.unknown_name_message(kind, name))
        options = CellposeOptions if kind == "postprocessors" and name.startswith("cellpose") else NoOptions
        return type(name, (FakePlugin,), {"Options": options})

    monkeypatch.setattr(registry, "load", load)


@pytest.fixture(autouse=True)
def fake_plugins(monkeypatch):
    use_stand_ins(monkeypatch)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(recipe: Path, overrides: list[str] | None = None) -> list[str]:
    with pytest.raises(RecipeError) as info:
        load_recipe(recipe, overrides)
    assert str(info.value).splitlines() == [f"{recipe}: {p}" for p in info.value.problems]
    return info.value.problems


def test_minimal_recipe_gets_the_defaults(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.toml", 'mode = "infer"\n'))
    assert recipe.mode == ["infer"]
    assert (recipe.train.epochs, recipe.train.learning_rate, recipe.infer.overlap) == (200, 0.01, 0.625)
    assert recipe.infer.postprocessor.name == "cellpose_fast"
    assert recipe.infer.postprocessor.options == CellposeOptions()
    assert [w.name for w in recipe.infer.writers] == ["tiff"]
    assert recipe.source == tmp_path / "r.toml"


def test_unknown_key(tmp_path):
    recipe = write(tmp_path / "r.toml", 'mode = "train"\n[train]\nepoch = 3\n')
    [problem] = problems(recipe)
    assert problem.startswith("train.epoch: unknown option (known: epochs, batch_size, learning_rate,")


def test_wrong_type(tmp_path):
    recipe = write(tmp_path / "r.toml", 'mode = "train"\n[train]\nepochs = "ten"\n')
    assert problems(recipe) == ['train.epochs: expected an integer, got "ten"']


def test_bad_value_from_a_validator(tmp_path):
    recipe = write(tmp_path / "r.toml", 'mode = "infer"\n[infer]\noverlap = 1.5\n')
    assert problems(recipe) == ["infer.overlap: must be < 1.0: 1.5"]


def test_bad_mode(tmp_path):
    assert problems(write(tmp_path / "r.toml", 'mode = "fit"\n')) == [
        'mode[0]: expected one of "train", "eval", "infer", got "fit"'
    ]
    assert problems(write(tmp_path / "s.toml", "seed = 1\n")) == ["mode: missing (required)"]


def test_missing_file(tmp_path):
    recipe = write(tmp_path / "r.toml", 'mode = "eval"\n[[data.datalists]]\npath = "lists/none.json"\n')
    assert problems(recipe) == [f"data.datalists[0].path: no such file: {tmp_path / 'lists/none.json'}"]


def test_unknown_plugin_option(tmp_path):
    recipe = write(
        tmp_path / "r.toml", 'mode = "infer"\n[infer]\npostprocessor = { name = "cellpose", nitre = 5 }\n'
    )
    assert problems(recipe) == [
        "infer.postprocessor.nitre: unknown option (known: niter, cellprob_threshold, flow_threshold)"
    ]


def test_unknown_plugin_name(tmp_path):
    recipe = write(tmp_path / "r.toml", 'mode = "infer"\n[infer]\nruntime = "eagre"\n')
    [problem] = problems(recipe)
    assert problem.startswith(
        "infer.runtime.name: no plugin 'eagre' in vista2d.runtimes: did you mean 'eager'?"
    )
    assert "installed: " in problem


def test_all_problems_reported_at_once(tmp_path):
    text = """
        mode = "train"
        colour = "blue"
        [train]
        epochs = "ten"
        [[data.datalists]]
        path = "none.json"
        [infer]
        postprocessor = { name = "cellpose", flow_threshold = -1.0 }
    """
    recipe = write(tmp_path / "r.toml", text.replace("\n        ", "\n"))
    found = problems(recipe)
    assert found[0].startswith("colour: unknown option (known: mode, output_dir,")
    assert found[1:] == [
        f"data.datalists[0].path: no such file: {tmp_path / 'none.json'}",
        'train.epochs: expected an integer, got "ten"',
        "infer.postprocessor.flow_threshold: must be >= 0.0: -1.0",
    ]


def test_not_toml_and_missing_recipe(tmp_path):
    with pytest.raises(UserError, match="not valid TOML"):
        load_recipe(write(tmp_path / "r.toml", "mode = \n"))
    with pytest.raises(UserError, match="no such recipe file"):
        load_recipe(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "keys", "value"),
    [
        ("train.epochs=3", ["train", "epochs"], 3),
        ("train.learning_rate=1e-3", ["train", "learning_rate"], 0.001),
        ("train.optimizer=adamw", ["train", "optimizer"], "adamw"),
        ('train.optimizer="adamw"', ["train", "optimizer"], "adamw"),
        ("infer.inputs=['a.tif', 'b/*.png']", ["infer", "inputs"], ["a.tif", "b/*.png"]),
        ("output_dir=runs/x y", ["output_dir"], "runs/x y"),
        ("data.weighted_sampling=true", ["data", "weighted_sampling"], True),
        (
            "model.backbone={name='sam', variant='vit_t'}",
            ["model", "backbone"],
            {"name": "sam", "variant": "vit_t"},
        ),
    ],
)
def test_parse_override(text, keys, value):
    assert parse_override(text) == (keys, value)


def test_overrides_create_tables_and_expand_component_names():
    data = {"mode": "infer", "infer": {"postprocessor": "cellpose"}}
    apply_overrides(data, ["infer.postprocessor.niter=5", "data.synthetic.size=64", "seed=7"])
    assert data == {
        "mode": "infer",
        "seed": 7,
        "infer": {"postprocessor": {"name": "cellpose", "niter": 5}},
        "data": {"synthetic": {"size": 64}},
    }


def test_bad_overrides():
    with pytest.raises(UserError, match="expected key.path=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(UserError, match="seed is not a table"):
        apply_overrides({"seed": 0}, ["seed.value=1"])


def test_overrides_are_validated_like_the_file(tmp_path):
    recipe = write(tmp_path / "r.toml", 'mode = "train"\n')
    assert load_recipe(recipe, ["train.epochs=3"]).train.epochs == 3
    assert problems(recipe, ["train.epochs=ten"]) == ['train.epochs: expected an integer, got "ten"']
    loaded = load_recipe(recipe, ["infer.postprocessor.niter=5"])
    assert loaded.infer.postprocessor.options == CellposeOptions(niter=5)


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    write(tmp_path / "recipes/lists/a.json", "{}")
    text = (
        'mode = "eval"\noutput_dir = "../runs/r"\n'
        f'[[data.datalists]]\npath = "lists/a.json"\nbasedir = "{tmp_path / "images"}"\n'
    )
    monkeypatch.chdir(tmp_path / "recipes/lists")  # the working folder must not matter
    recipe = load_recipe(write(tmp_path / "recipes/r.toml", text))
    assert recipe.output_dir == tmp_path / "runs/r"  # normalised: no recipes/../
    assert recipe.data.datalists[0].path == tmp_path / "recipes/lists/a.json"
    assert recipe.data.datalists[0].basedir == tmp_path / "images"


def test_recipe_from_dict_resolves_against_base_dir(tmp_path):
    recipe = recipe_from_dict({"mode": ["train", "infer"], "output_dir": "out"}, base_dir=tmp_path)
    assert (recipe.mode, recipe.output_dir, recipe.source) == (["train", "infer"], tmp_path / "out", None)


def test_default_relative_paths_resolve_against_the_recipe_folder(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.toml", 'mode = "train"\n[data.synthetic]\nsize = 64\n'))
    assert recipe.output_dir == tmp_path / "runs/default"
    assert recipe.data.synthetic.folder == tmp_path / "data/synthetic"


def test_component_table_without_name_keeps_the_default_plugin(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.toml", 'mode = "infer"\n[infer.postprocessor]\nniter = 7\n'))
    assert recipe.infer.postprocessor.name == "cellpose_fast"
    assert recipe.infer.postprocessor.options == CellposeOptions(niter=7)


def test_show_output_reloads_to_an_equal_recipe(tmp_path):
    write(tmp_path / "a/lists/a.json", "{}")
    text = """
        mode = ["train", "eval"]
        output_dir = "runs/x"
        [[data.datalists]]
        path = "lists/a.json"
        [data.synthetic]
        size = 64
        [train]
        epochs = 3
        [infer]
        postprocessor = { name = "cellpose", niter = 5 }
        writers = ["tiff", "overlay"]
    """
    original = load_recipe(write(tmp_path / "a/r.toml", text.replace("\n        ", "\n")))
    shown = dump_recipe(original)
    assert tomllib.loads(shown)["infer"]["postprocessor"] == {
        "name": "cellpose",
        "niter": 5,
        "cellprob_threshold": 0.0,
        "flow_threshold": 0.4,
    }
    reloaded = load_recipe(write(tmp_path / "elsewhere/shown.toml", shown))
    assert recipe_to_dict(reloaded) == recipe_to_dict(original)
    assert attrs.evolve(reloaded, source=None) == attrs.evolve(original, source=None)


def test_write_resolved(tmp_path):
    recipe = recipe_from_dict({"mode": "infer", "seed": 3}, base_dir=tmp_path)
    path = write_resolved(recipe, tmp_path / "out")
    assert path == tmp_path / "out/resolved_recipe.toml"
    assert load_recipe(path).seed == 3
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["resolved_recipe.toml"]


def test_component_create_passes_options_and_arguments():
    recipe = recipe_from_dict({"mode": "infer", "infer": {"postprocessor": {"name": "cellpose", "niter": 9}}})
    plugin = recipe.infer.postprocessor.create("extra")
    assert (plugin.options.niter, plugin.args) == (9, ("extra",))
