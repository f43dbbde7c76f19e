"""Recipes: TOML files structured into attrs classes, strictly validated.

``load_recipe(path, overrides)`` reads a TOML file, applies ``--set key.path=value`` overrides, and
returns a :class:`Recipe`; every problem (unknown key, wrong type, bad value, missing file, unknown
plugin) is reported at once with its dotted path. Relative paths resolve against the recipe's folder.
``dump_recipe`` gives the fully resolved recipe as TOML (defaults filled in).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

import attrs
from attrs import validators as v

from .components import Component, component
from .errors import RecipeError, UserError
from .options import CommandLineText, resolve_path, structure, unstructure
from .pretrained import model_file

Mode = Literal["train", "eval", "infer"]
_positive = v.gt(0)
_probability = [v.ge(0.0), v.le(1.0)]
_INFERENCE = {"inference": True}  # a setting that goes with the weights: see inference_settings


def _axes(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    from .axes import check_axes_text

    try:
        check_axes_text(value)
    except ValueError as exc:
        raise ValueError(f"'{attribute.name}' {exc}") from None


@attrs.define
class Datalist:
    """A datalist JSON in the reference format; item paths are relative to ``basedir``
    (default: the datalist's folder)."""

    path: Path = attrs.field(metadata={"must_exist": True})
    basedir: Path | None = None


CHECKPOINT_HINT = (
    " (train one with recipes/quickstart.toml, or name a pretrained model, such as \"vista2d\": docs/models.md)"
)


@attrs.define
class Model:
    """The network: backbone + head, optionally initialised from a checkpoint (official VISTA2D layout).

    ``checkpoint``: a file, or the name of a pretrained model (``"vista2d"``; ``vista2d models`` lists them),
    downloaded into the cache on first use. A vista2d checkpoint carries the settings it was trained with,
    a model's card the settings that go with its file (where the file has none); they fill in what the
    recipe leaves unset.
    """

    checkpoint: Path | None = attrs.field(
        default=None, metadata={"must_exist": True, "model_name": True, "hint": CHECKPOINT_HINT}
    )
    backbone: Component = component("backbones", "sam", inference=True)
    head: Component = component("heads", "vista2d", inference=True)
    diameter: float | None = attrs.field(default=None, validator=v.optional(_positive), metadata=_INFERENCE)
    """Median object diameter (px) of the training labels; training records it, ``infer.diameter`` uses it."""


@attrs.define
class Synthetic:
    """Generate a synthetic fluorescence-like dataset (images, labels, datalist) into ``folder`` when absent."""

    folder: Path = Path("data/synthetic")
    train_images: int = attrs.field(default=48, validator=_positive)
    test_images: int = attrs.field(default=8, validator=_positive)
    size: int = attrs.field(default=256, validator=v.ge(32))
    seed: int = 0


@attrs.define
class Data:
    """Where images come from and how they are normalised.

    ``fold``: validation = the training items of this fold; ``weighted_sampling``: every datalist equally
    likely (weight 1 / its size); ``quick``: 8 training and 7 validation items; ``cache``: keep normalised
    training images in memory (each loader worker keeps its own copy). ``axes``: the layout of the
    images' arrays, one letter per axis from T (time), Z, C (channels), Y, X (e.g. "ZCYX"), when the files'
    metadata does not say it or says it wrong. ``normalize``: ``"vista2d"`` (the reference's: 1 channel
    repeated to 3, min-max then ``percentiles`` to [0, 1], clipped) or ``"cellpose"`` (cellpose's
    ``normalize99`` per channel, not clipped, missing channels zero: what Cellpose-SAM was trained with).
    """

    datalists: list[Datalist] = attrs.Factory(list)
    synthetic: Synthetic | None = None
    fold: int = attrs.field(default=0, validator=v.ge(0))
    axes: str | None = attrs.field(default=None, validator=v.optional(_axes))
    channels: list[int] | None = attrs.field(default=None, metadata=_INFERENCE)
    percentiles: tuple[float, float] = attrs.field(default=(1.0, 99.0), metadata=_INFERENCE)
    normalize: Literal["vista2d", "cellpose"] = attrs.field(default="vista2d", metadata=_INFERENCE)
    """vista2d: min-max, percentiles to [0, 1], clipped, channels repeated; cellpose: its normalize99, missing channels 0."""
    weighted_sampling: bool = False
    quick: bool = False
    cache: bool = False


@attrs.define
class Augment:
    """Training augmentations (reference order and parameters); a probability of 0 switches one off.

    Ranges are (low, high) of a uniform draw per sample; ``rotate_range``: +- radians; ``scale_range``:
    factors, drawn per axis; ``noise_std``: the noise's std is drawn in [0, noise_std]; sharpening is
    ``blur1 + alpha * (blur1 - blur2)`` with sigma1 in ``sharpen_sigma`` and sigma2 in [``sharpen_sigma2``, sigma1].
    ``invert_prob`` and ``stain_prob`` (off by default) come last.
    """

    roi_size: tuple[int, int] = (256, 256)
    affine_prob: float = attrs.field(default=0.5, validator=_probability)
    rotate_range: float = math.pi
    scale_range: tuple[float, float] = (0.5, 1.5)
    flip_prob: float = attrs.field(default=0.5, validator=_probability)
    noise_prob: float = attrs.field(default=0.25, validator=_probability)
    noise_std: float = 0.1
    gamma_prob: float = attrs.field(default=0.25, validator=_probability)
    gamma_range: tuple[float, float] = (1.0, 2.0)
    smooth_prob: float = attrs.field(default=0.25, validator=_probability)
    smooth_sigma: tuple[float, float] = (1.0, 2.0)
    histogram_shift_prob: float = attrs.field(default=0.25, validator=_probability)
    histogram_shift_points: int = attrs.field(default=3, validator=v.ge(3))
    sharpen_prob: float = attrs.field(default=0.25, validator=_probability)
    sharpen_sigma: tuple[float, float] = (0.5, 1.0)
    sharpen_sigma2: float = 0.5
    sharpen_alpha: tuple[float, float] = (10.0, 30.0)
    invert_prob: float = attrs.field(default=0.0, validator=_probability)
    """Not in the reference: intensities mirrored per image (dark cells become bright: both polarities)."""
    stain_prob: float = attrs.field(default=0.0, validator=_probability)
    """Not in the reference: colour images only, each channel's gain and offset jittered (stain variation)."""
    stain_std: float = 0.15
    """Spread of the stain jitter: gains lognormal with this sigma, offsets uniform in +- this / 2."""
    diameter: float = attrs.field(default=0.0, validator=v.ge(0.0))
    """Not in the reference (cellpose's ``diam_mean``): when > 0, each training sample is resampled so that
    its image's objects' median diameter is this many px (a window of ``roi_size / factor`` cut and resampled;
    the factor kept within 1/4 to 4; images without objects stay as they are), and ``model.diameter`` is
    this (whatever it was): the model learns one object size and ``infer.auto_diameter`` brings every image
    to it. 0: images at their own size."""


@attrs.define
class Train:
    """Training settings (defaults: the reference's).

    Learning rate: ``warmup_epochs`` linear warm-up from ``warmup_multiplier`` x, then cosine to 0, stepped per
    epoch. ``batch_size`` is per process; ``samples_per_epoch``: default the number of training items.
    ``clip_grad_norm``: before each optimizer step, gradients scaled down to at most this global L2 norm
    (``torch.nn.utils.clip_grad_norm_``; 0: off, the reference).
    Validation (AP@0.5 of the validation items) after the epochs of the reference's schedule, denser towards
    the end (``validation_fraction`` x epochs validations, at least 10), or every ``validate_every`` epochs and after
    the last; ``validate_every = 0``: never (``model.pt`` is then the last epoch's weights, as without
    validation items).
    ``stop_below_ap``: stop (as diverged) when validation AP is below it after epoch max(20, epochs / 4);
    0 disables. ``resume``: continue from ``output_dir/model_final.pt`` (epoch, optimizer, scheduler, scaler,
    best metric, RNG states, hooks). ``test``: after training, score the best model on the labelled testing items.
    ``hooks``: plugins that see the training's events, in order (``[{ name = "mlflow", ... }]``,
    ``"early_stopping"``; ``vista2d plugins hooks`` lists them).
    """

    epochs: int = attrs.field(default=200, validator=_positive)
    batch_size: int = attrs.field(default=1, validator=_positive)
    learning_rate: float = attrs.field(default=0.01, validator=_positive)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = attrs.field(default=1e-5, validator=v.ge(0))
    warmup_epochs: int = attrs.field(default=3, validator=v.ge(0))
    warmup_multiplier: float = attrs.field(default=0.1, validator=_probability)
    grad_accumulation: int = attrs.field(default=1, validator=_positive)
    clip_grad_norm: float = attrs.field(default=0.0, validator=v.ge(0))
    samples_per_epoch: int | None = attrs.field(default=None, validator=v.optional(_positive))
    channels_last: bool = True
    validate_every: int | None = attrs.field(default=None, validator=v.optional(v.ge(0)))
    validation_fraction: float = attrs.field(default=0.16, validator=_probability)
    stop_below_ap: float = attrs.field(default=0.01, validator=_probability)
    test: bool = True
    resume: bool = False
    deterministic: bool = False
    num_workers: int = attrs.field(default=0, validator=v.ge(0))
    runtime: Component = component("runtimes", "eager")
    loss: Component = component("losses", "cellpose")
    augment: Augment = attrs.Factory(Augment)
    hooks: list[Component] = attrs.field(factory=list, metadata={"kind": "hooks"})


@attrs.define
class Infer:
    """Inference: inputs, sliding window, runtime, postprocessing and outputs.

    Tiles: ``roi_size`` windows overlapping by ``overlap``, blended by ``blend``: ``"gaussian"`` or
    ``"constant"`` weights on MONAI's window layout, or ``"cellpose"``: cellpose's layout (image padded by 8 px
    and to a multiple of 16, ``ceil((1 + 2 overlap) L / roi)`` evenly spaced tiles per axis; ``overlap`` is
    then cellpose's ``tile_overlap``) and its tapered weights.
    ``tta``: test-time augmentation, each tile's logits averaged over its 4 flips (flows sign-corrected), as
    cellpose's ``augment``: 4x the model time, usually a few points of AP. Training validates without it.
    Object size: ``scale`` resamples each image by this factor before the model (2.0 for objects half the
    size the model was trained on); or ``diameter``, your objects' typical diameter in pixels, sets the
    factor to ``model.diameter / diameter`` (cellpose's ``diameter``). Results come at the image's size.
    ``auto_diameter`` (when neither is set): each image is segmented once, its objects' median diameter
    measured, and segmented at ``model.diameter / measured`` and at that factor x1.4 and /1.4 (all between
    0.35 and 2.8; within 15% of 1 counts as 1; nothing found: 1), these passes without ``tta``; the factor
    whose masks take in the largest share of the foreground wins (then with ``tta``, when on). Block by
    block, each block on its own. About 2-3x the time, for images of unknown object size.

    Large and multi-dimensional images (docs/large-images.md): images with a side above ``block_size`` px
    are segmented block by block (0: always whole), each block with ``block_overlap`` px of context (default:
    half the window, at least two object diameters); labels are merged across block borders. Z-stacks and
    time series are segmented plane by plane; ``stitch_threshold`` (IoU, 0 = off) links labels across
    planes (z, else t) as cellpose's. ``dask_workers`` starts a local dask cluster of that many worker
    processes, ``dask_address`` uses a running scheduler ("tcp://host:8786"); blocks are its tasks.
    ``resume``: skip images whose outputs are complete and finish large ones at the blocks not yet done.
    """

    inputs: list[str] = attrs.field(factory=list, metadata={"path_pattern": True})
    runtime: Component = component("runtimes", "eager", inference=True)
    postprocessor: Component = component("postprocessors", "cellpose_fast", inference=True)
    writers: list[Component] = attrs.field(
        factory=lambda: [structure(Component, "tiff", kind="writers")],
        metadata={"kind": "writers", "default_data": ["tiff"]},
    )
    roi_size: tuple[int, int] = attrs.field(default=(256, 256), metadata=_INFERENCE)
    overlap: float = attrs.field(default=0.625, validator=[v.ge(0.0), v.lt(1.0)], metadata=_INFERENCE)
    sw_batch_size: int = attrs.field(default=1, validator=_positive, metadata=_INFERENCE)
    blend: Literal["gaussian", "constant", "cellpose"] = attrs.field(default="gaussian", metadata=_INFERENCE)
    """Tile weights on MONAI's layout (gaussian, constant), or cellpose's layout and taper (overlap = its tile_overlap)."""
    tta: bool = attrs.field(default=False, metadata=_INFERENCE)
    scale: float = attrs.field(default=1.0, validator=_positive)
    diameter: float = attrs.field(default=0.0, validator=v.ge(0.0))
    auto_diameter: bool = attrs.field(default=False, metadata=_INFERENCE)
    block_size: int = attrs.field(default=2048, validator=v.ge(0))
    block_overlap: int | None = attrs.field(default=None, validator=v.optional(v.ge(0)))
    stitch_threshold: float = attrs.field(default=0.0, validator=_probability)
    dask_workers: int = attrs.field(default=0, validator=v.ge(0))
    dask_address: str | None = None
    resume: bool = False
    output_subdir: str = "predictions"


@attrs.define
class Eval:
    """Evaluation: AP thresholds (cellpose's AP = TP / (TP + FP + FN))."""

    iou_thresholds: list[float] = attrs.Factory(lambda: [0.5, 0.75, 0.9])


@attrs.define
class Recipe:
    """A whole run. ``mode`` is one stage or a list run in order (train -> eval -> infer)."""

    mode: list[Mode] = attrs.field(converter=lambda m: [m] if isinstance(m, str) else m)
    output_dir: Path = Path("runs/default")
    seed: int = 0
    device: str = "auto"
    model: Model = attrs.Factory(Model)
    data: Data = attrs.Factory(Data)
    train: Train = attrs.Factory(Train)
    infer: Infer = attrs.Factory(Infer)
    eval: Eval = attrs.Factory(Eval)
    source: Path | None = attrs.field(default=None, metadata={"internal": True})


def _typed_on_command_line(value: Any) -> Any:
    if isinstance(value, str):
        return CommandLineText(value)
    if isinstance(value, list):
        return [_typed_on_command_line(v) for v in value]
    if isinstance(value, dict):
        return {k: _typed_on_command_line(v) for k, v in value.items()}
    return value


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` -> (["train", "epochs"], 3): the value is parsed as TOML, else kept a string.
    Strings come back as :class:`CommandLineText`: as paths they are relative to the current folder."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {text!r}: expected key.path=value, e.g. --set train.epochs=3")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [part.strip() for part in key.split(".")], _typed_on_command_line(value)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``key.path=value`` in the nested dict ``data`` (in place; returned for chaining).

    Setting a component's ``name`` to another plugin starts that component from the new plugin's
    defaults: the old plugin's options from the file are dropped (options given by earlier overrides stay).
    """
    typed: set[tuple[str, ...]] = set()
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if isinstance(child, str):  # a component given by name: turn it into a table
                child = node[key] = {"name": child}
            if not isinstance(child, dict):
                raise UserError(f"--set {text!r}: {'.'.join(keys[: i + 1])} is not a table")
            node = child
        if keys[-1] == "name" and node.get("name", value) != value:
            for option in [k for k in node if (*keys[:-1], k) not in typed]:
                del node[option]
        node[keys[-1]] = value
        typed.add(tuple(keys))
    return data


def merge_tables(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``, table by table (a new dict). A component table (one with ``name``) that
    names another plugin replaces the base's table whole; lists and values replace."""
    if "name" in over and base.get("name", over["name"]) != over["name"]:
        return dict(over)
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, str) and isinstance(out.get(key), dict) and "name" in out[key]:
            value = {"name": value}  # a component given by name only
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_tables(out[key], value)
        else:
            out[key] = value
    return out


def with_checkpoint_settings(data: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """The recipe ``data`` laid over the settings its ``model.checkpoint`` was trained with, if that is a
    vista2d checkpoint (see :func:`settings_from_checkpoint`); else ``data`` as it is.

    A checkpoint given by model name (no such file, and a card of that name installed) is fetched into the
    cache and stands in ``data`` as that file; its card's ``recipe`` tables lie under the file's own
    settings (which describe the weights themselves), and ``data`` over both. A failed download is a
    RecipeError at ``model.checkpoint``."""
    model = data.get("model")
    checkpoint = model.get("checkpoint") if isinstance(model, dict) else None
    if not isinstance(checkpoint, str):
        return data
    path = resolve_path(checkpoint, base_dir)
    card: dict[str, Any] = {}
    if not path.is_file():
        from .pretrained import fetch, is_model_name, model_card

        if not is_model_name(checkpoint):
            return data  # reported as a missing file by the structuring
        try:
            path = fetch(checkpoint)
        except UserError as exc:
            raise RecipeError([f"model.checkpoint: {exc}"]) from None
        card = unstructure(model_card(checkpoint).recipe)
        data = merge_tables(data, {"model": {"checkpoint": str(path)}})
    return merge_tables(merge_tables(card, settings_from_checkpoint(path)), data)


def _structure_recipe(data: dict[str, Any], base_dir: Path, source: str) -> Recipe:
    data = dict(data)
    data.pop("source", None)
    if "mode" in data and isinstance(data["mode"], str):
        data["mode"] = [data["mode"]]
    if "mlflow" in data:
        moved = 'mlflow: the [mlflow] table is now a training hook: train.hooks = [{ name = "mlflow", ... }]'
        raise RecipeError([f"{moved} (the same options)"], source)
    try:
        data = with_checkpoint_settings(data, base_dir)
        recipe = structure(Recipe, data, base_dir=base_dir, named_file=model_file)
    except RecipeError as exc:
        raise RecipeError(exc.problems, source) from None
    recipe.source = base_dir / source if source != "recipe" else None
    problems = []
    if not recipe.mode:
        problems.append("mode: expected at least one of train, eval, infer")
    if recipe.infer.diameter and recipe.model.diameter is None:
        problems.append("infer.diameter: the model's own object diameter is unknown: set model.diameter "
                        "(median diameter in px of the objects it was trained on) or use infer.scale instead")
    if recipe.infer.auto_diameter and recipe.model.diameter is None and "train" not in recipe.mode:  # training measures it
        problems.append("infer.auto_diameter: the model's own object diameter is unknown: set model.diameter "
                        "(median diameter in px of the objects it was trained on) or set it false")
    if recipe.infer.diameter and recipe.infer.scale != 1.0:
        problems.append("infer.scale: give infer.scale or infer.diameter, not both")
    if recipe.infer.dask_workers and recipe.infer.dask_address:
        problems.append("infer.dask_address: give infer.dask_workers (a local cluster) or infer.dask_address "
                        "(a running scheduler), not both")
    infer = recipe.infer
    if infer.block_size and infer.block_overlap is not None and infer.block_overlap >= infer.block_size:
        problems.append(f"infer.block_overlap: {infer.block_overlap} must be smaller than infer.block_size "
                        f"({infer.block_size})")
    if problems:
        raise RecipeError(problems, source)
    return recipe


def check_stages(recipe: Recipe) -> None:
    """RecipeError naming what the recipe's stages need and the recipe does not give (data to train or
    evaluate on, images to segment), with the key to set. ``vista2d run`` and ``recipe check`` call it."""
    has_data = bool(recipe.data.datalists) or recipe.data.synthetic is not None
    problems = []
    for stage, what in (("train", "training items"), ("eval", "labelled testing items")):
        if stage in recipe.mode and not has_data:
            problems.append(f"data.datalists: mode {stage} needs {what}: give at least one datalist "
                            f"(data.datalists = [{{ path = \"datalist.json\" }}]) or a [data.synthetic] table")
    if "infer" in recipe.mode and not recipe.infer.inputs and not has_data:
        problems.append("infer.inputs: nothing to segment: give files, globs or folders "
                        "(infer.inputs = [\"images/\"]) or datalists with testing items")
    if problems:
        raise RecipeError(problems, str(recipe.source) if recipe.source else "recipe")


def read_recipe_data(path: str | Path) -> dict[str, Any]:
    """The raw TOML tables of the recipe file at ``path`` (UserError naming the file when unreadable)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such recipe file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read the recipe ({exc.strerror})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate the TOML recipe at ``path``."""
    data = apply_overrides(read_recipe_data(path), overrides or [])
    recipe = _structure_recipe(data, Path(path).resolve().parent, str(path))
    recipe.source = Path(path).resolve()
    return recipe


def recipe_from_dict(data: dict[str, Any], base_dir: str | Path = ".") -> Recipe:
    """Validate a recipe given as a dict (Python API); relative paths resolve against ``base_dir``."""
    return _structure_recipe(data, Path(base_dir).resolve(), "recipe")


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain data (defaults filled in, paths absolute)."""
    data = unstructure(recipe)
    data.pop("source", None)
    return data


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as TOML text."""
    import tomli_w

    return tomli_w.dumps(recipe_to_dict(recipe))


def write_resolved(recipe: Recipe, out_dir: Path) -> Path:
    """Write ``resolved_recipe.toml`` into ``out_dir`` (atomically) and return its path."""
    from .files import atomic_write_text

    return atomic_write_text(out_dir / "resolved_recipe.toml", dump_recipe(recipe))


def inference_settings(data: dict[str, Any]) -> dict[str, Any]:
    """The ``model``, ``data`` and ``infer`` settings that go with a model's weights, taken from the resolved
    recipe ``data`` (:func:`recipe_to_dict`): the fields marked ``inference`` in :class:`Model`, :class:`Data`
    and :class:`Infer` (backbone, head, object diameter, channels, percentiles, window, blending, flips,
    runtime, postprocessor). Training writes them into every checkpoint (its ``inference`` section); the
    backbone's ``weights`` are left out, since the checkpoint holds every weight."""
    out: dict[str, Any] = {}
    for table, cls in (("model", Model), ("data", Data), ("infer", Infer)):
        given = data.get(table) or {}
        out[table] = {f.name: given[f.name] for f in attrs.fields(cls) if f.metadata.get("inference") and f.name in given}
    backbone = out["model"].get("backbone")
    if isinstance(backbone, dict):
        out["model"]["backbone"] = {k: value for k, value in backbone.items() if k != "weights"}
    return out


def settings_from_checkpoint(path: Path) -> dict[str, Any]:
    """The settings a vista2d checkpoint was trained with (:func:`inference_settings`): its ``inference``
    section, or for a checkpoint without one (written by an earlier version) the same taken from its
    ``config`` (the resolved recipe); for a state dict in another project's layout, the settings of the
    installed backbone that adopts it (a cellpose file: ``cpsam``, see :class:`~vista2d_core.interfaces.Backbone`);
    {} for other checkpoints (the official MONAI one: vit_b defaults)."""
    from .model import adopt_checkpoint, clean_state_dict, read_checkpoint

    checkpoint = read_checkpoint(path, mmap=True)
    if isinstance(checkpoint.get("inference"), dict):
        return checkpoint["inference"]
    config = checkpoint.get("config")
    model = config.get("model") if isinstance(config, dict) else None
    if isinstance(model, dict) and isinstance(model.get("backbone"), dict):
        return inference_settings(config)
    state = clean_state_dict(checkpoint["state_dict"]) if isinstance(checkpoint["state_dict"], dict) else {}
    if state and not any(key.startswith("model.") for key in state):
        from . import registry

        for name in registry.available("backbones"):
            try:
                backbone = registry.load("backbones", name)
            except UserError:
                continue  # a broken plugin is reported where it is named
            adopted = adopt_checkpoint(backbone, state)
            if adopted:
                return adopted[1]
    return {}
