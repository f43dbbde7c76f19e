"""The contract of every plugin kind.

A plugin is a class registered under the entry-point group ``vista2d.<kind>``. It carries its settings
as an attrs class in the class attribute ``Options`` (the core structures and validates the recipe
table for the component into it) and is constructed as ``Plugin(options)``; heads also get
``in_channels``. The core checks a plugin against its kind's interface when it is loaded
(:func:`missing_members`), so a third-party plugin need not subclass these classes, only provide
their members. The one kind that is data, not a class, is ``vista2d.models``: an entry point names a
model card (a dict, or a zero-argument callable returning one) that the core structures into
:class:`ModelCard`.

Array conventions: images are arrays in their file's dtype whose axes a string of the letters T, Z, C,
Y, X names (``Image.axes``; "CYX" by default); network inputs are float tensors ``(B, 3, H, W)`` in
[0, 1]; logits are float ``(3, H, W)`` = ``[cellprob logit, dY, dX]`` with flows scaled x5 (cellpose
convention); labels are ``(H, W)`` uint16 (uint32 above 65535 objects), 0 = background, with leading
T/Z axes for time series and z-stacks (``Prediction.axes``).
"""

from __future__ import annotations

import abc
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

if TYPE_CHECKING:
    import numpy as np
    import torch


@attrs.define
class NoOptions:
    """Options of a plugin that takes none."""


@attrs.define
class Image:
    """What a reader returns: ``data`` in the file's dtype, its ``axes`` and free-form ``metadata``.

    ``data``: a numpy array, or (from ``Reader.open``) an array-like that reads regions on demand (a zarr
    or dask array: ``shape``, ``dtype``, ``ndim`` and basic slicing). ``axes``: one letter per axis of
    ``data``, from T (time), Z, C (channels), Y, X, or Q for an axis the file does not name (the core
    asks the user, ``data.axes``, rather than guess). Metadata keys the core and writers read:
    ``pixel_size`` and ``unit`` (µm, ...).
    """

    data: Any
    path: Path
    metadata: dict[str, Any] = attrs.field(factory=dict)
    axes: str = "CYX"


@attrs.define
class Prediction:
    """What writers receive for one image.

    ``labels``: uint16/uint32 labels whose axes ``axes`` names ("YX", or "ZYX", "TYX", "TZYX" for
    z-stacks and time series), a numpy array, or for images segmented block by block a zarr array on
    disk (read it in regions: ``labels[y0:y1, x0:x1]``; ``np.asarray`` loads it whole). ``image``: the
    reader's Image (``image.data`` may be lazy, with its own ``image.axes``). ``logits``: float32
    ``[cellprob logit, dY, dX]`` with axes ``axes[:-2] + "CYX"`` (C = 3), numpy or zarr, or None when
    not kept.
    """

    labels: Any
    image: Image
    logits: Any = None
    axes: str = "YX"


class Backbone(abc.ABC):
    """Image encoder (an ``nn.Module``).

    ``forward(images)``: ``images`` float (B, 3, H, W) in [0, 1] (unclipped with ``data.normalize =
    "cellpose"``), any H, W (the backbone resizes as it needs) -> features (B, ``out_channels``, h, w). The core resizes the head's output back to (H, W).

    Optional classmethod ``adopt_checkpoint(state)``, for a model family whose weight files come in another
    project's layout: a state dict whose keys are not vista2d's (``model.image_encoder.*``,
    ``model.mask_decoder.*``) -> ``(state in vista2d's layout, recipe settings)`` when it is this family's,
    else None. The core loads such files through it (checking the keys strictly) and, for a file named in
    ``model.checkpoint`` without settings of its own, takes the settings (``model``/``data``/``infer``
    tables) from the installed backbone that adopts it.
    """

    Options: ClassVar[type] = NoOptions
    out_channels: int

    @abc.abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor: ...


class Head(abc.ABC):
    """Decoder (an ``nn.Module``) built as ``Head(options, in_channels)``.

    ``forward(features)`` -> logits (B, 3, h', w') ``[cellprob logit, dY, dX]`` at any resolution; the
    core resizes them bilinearly to the input size.
    """

    Options: ClassVar[type] = NoOptions

    @abc.abstractmethod
    def forward(self, features: torch.Tensor) -> torch.Tensor: ...


class Reader(abc.ABC):
    """Reads one image file (or folder, such as an OME-Zarr ``.zarr``). ``suffixes`` lists the lower-case
    endings it accepts (".tif", ...).

    ``read(path)`` -> :class:`Image` with ``data`` a numpy array named by ``axes`` (default "CYX").
    Optional ``open(path)`` -> the same Image with ``data`` an array-like that reads regions on demand,
    for images larger than memory; the core uses it for inference when present. Both raise ``UserError``
    naming the file when it is missing, broken or of a layout they cannot read.
    """

    Options: ClassVar[type] = NoOptions
    suffixes: ClassVar[tuple[str, ...]]

    @abc.abstractmethod
    def read(self, path: Path) -> Image: ...


class Writer(abc.ABC):
    """Writes one output for one image: ``write(prediction, out_dir, stem)`` -> the paths written.

    Writes are atomic: a temporary file in ``out_dir`` renamed into place, never a half-written file.
    ``needs_logits`` says whether it reads ``prediction.logits``. Labels may be larger than memory (a
    zarr array) and have leading T/Z axes (see :class:`Prediction`): a writer reads them in regions, or
    raises ``UserError`` saying why its format cannot hold them and which writer can.
    """

    Options: ClassVar[type] = NoOptions
    needs_logits: ClassVar[bool] = False

    @abc.abstractmethod
    def write(self, prediction: Prediction, out_dir: Path, stem: str) -> list[Path]: ...


class Loss(abc.ABC):
    """Training objective.

    ``targets(labels)``: int tensor (B, H, W) of instance labels -> float32 tensor (B, C, H, W) on the same
    device. ``__call__(logits, targets)``: logits (B, 3, H, W) -> scalar tensor.
    """

    Options: ClassVar[type] = NoOptions

    @abc.abstractmethod
    def targets(self, labels: torch.Tensor) -> torch.Tensor: ...

    @abc.abstractmethod
    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...


class Postprocessor(abc.ABC):
    """Turns logits into instance labels.

    ``__call__(logits)``: float tensor or array (3, H, W) = ``[cellprob logit, dY, dX]`` (flows x5) ->
    (H, W) uint16 labels (uint32 above 65535 objects), 0 = background, objects numbered 1..N.
    """

    Options: ClassVar[type] = NoOptions

    @abc.abstractmethod
    def __call__(self, logits: Any) -> np.ndarray: ...


class Runtime(abc.ABC):
    """How a model runs: precision, compilation, engine caching.

    ``prepare(model, example)`` -> a callable ``(B, 3, H, W) float tensor -> logits float32 tensor`` for
    inference; ``example`` is an input of the shape it will see (for tracing/compiling engines) and
    ``checkpoint`` the file the weights came from (for caches), or None.
    ``can_train`` says whether :meth:`train_module`, :meth:`autocast` and :meth:`grad_scaler` may be used in
    training.
    """

    Options: ClassVar[type] = NoOptions
    can_train: ClassVar[bool] = False

    @abc.abstractmethod
    def prepare(self, model: Any, example: torch.Tensor, checkpoint: Path | None = None) -> Any: ...

    def train_module(self, model: torch.nn.Module) -> Any:
        """The callable a training step runs: ``model`` itself, or a wrapper that shares its parameters."""
        return model

    def autocast(self, device: torch.device) -> Any:
        """Context manager for the forward pass of a training step."""
        import contextlib

        return contextlib.nullcontext()

    def grad_scaler(self, device: torch.device) -> Any:
        """A ``torch.amp.GradScaler`` when the precision needs one, else None."""
        return None


class Hook(abc.ABC):
    """Training events (group ``vista2d.hooks``), built as ``Hook(options)``; every method is optional and
    called on every rank, in the order the recipe lists the hooks (``train.hooks``).

    ``before_train(run)``: the network, optimizer and data are ready (also when resuming: ``run.epoch`` is
    then the first epoch still to train). ``after_epoch(run, metrics)``: after each epoch's training and
    validation, before its checkpoints are written; ``metrics`` holds ``epoch`` (0-based), ``lr``,
    ``train_loss``, ``val_ap`` (None when the epoch was not validated), ``best_ap``, ``train_seconds``,
    ``val_seconds``, ``epoch_seconds``, the same on every rank. ``after_train(run)``: training and the final
    test are done (``run.test_ap``, None when not tested). ``on_error(run, error)``: training raised.
    ``state_dict()`` -> plain data (dicts, lists, str, numbers, tensors), saved in ``model_final.pt`` after
    every epoch; ``load_state_dict(state)`` gets it back when the run resumes, before ``before_train``.

    ``run`` (the trainer) gives ``recipe``, ``config`` (the resolved recipe as plain data, as saved in
    checkpoints), ``output_dir``, ``net`` (the network, unwrapped), ``optimizer``,
    ``device``, ``split`` (train/val/test items), ``epoch`` (the current one, 0-based), ``main`` (rank 0:
    the one that writes files and logs) and ``stop(reason)``: end training after this epoch (the best
    checkpoint is then tested as usual). A hook that stops decides from ``metrics``, which every rank shares.
    """

    Options: ClassVar[type] = NoOptions


HOOK_EVENTS = ("before_train", "after_epoch", "after_train", "on_error")


@attrs.frozen
class CardRecipe:
    """The recipe tables that go with a model's weights (backbone variant, window, postprocessor, ...),
    laid under the user's recipe when the model is named in ``model.checkpoint``."""

    model: dict[str, Any] = attrs.Factory(dict)
    data: dict[str, Any] = attrs.Factory(dict)
    infer: dict[str, Any] = attrs.Factory(dict)


def _http_url(instance: Any, attribute: attrs.Attribute, value: str) -> None:
    if not value.startswith(("https://", "http://")):
        raise ValueError(f"'{attribute.name}' must be an http(s) URL, got {value!r}")


def _sha256(instance: Any, attribute: attrs.Attribute, value: str | None) -> None:
    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ValueError(f"'{attribute.name}' must be 64 hexadecimal digits, got {value!r}")


@attrs.frozen
class ModelCard:
    """A pretrained model file published under a name (group ``vista2d.models``; the name is the entry
    point's). ``url``: where to download it (http or https); ``sha256``: its checksum, verified after
    download when given; ``licence`` is shown on first download; ``recipe``: see :class:`CardRecipe`."""

    url: str = attrs.field(validator=_http_url)
    sha256: str | None = attrs.field(default=None, validator=_sha256)
    description: str = ""
    licence: str = ""
    citation: str = ""
    recipe: CardRecipe = attrs.Factory(CardRecipe)


KINDS: dict[str, type] = {
    "backbones": Backbone,
    "heads": Head,
    "readers": Reader,
    "writers": Writer,
    "losses": Loss,
    "postprocessors": Postprocessor,
    "runtimes": Runtime,
    "hooks": Hook,
    "models": ModelCard,
}


def _defines(plugin: type, name: str) -> bool:
    """Whether ``plugin`` or a base other than ``object`` defines a concrete method ``name``.

    (``getattr`` would find ``type.__call__`` on every class, and abstract methods are not implementations.)
    """
    for cls in getattr(plugin, "__mro__", ())[:-1]:
        if name in vars(cls):
            member = vars(cls)[name]
            return callable(member) and not getattr(member, "__isabstractmethod__", False)
    return False


def _required(interface: type) -> list[str]:
    """Every member of ``interface`` a plugin must have (its own or inherited by subclassing): abstract and
    public methods, and the class attributes it declares (``out_channels``, ``suffixes``, ``can_train``, ...)."""
    names = set(getattr(interface, "__abstractmethods__", ()))
    names |= {n for n, m in vars(interface).items() if not n.startswith("_") and callable(m)}
    names |= set(vars(interface).get("__annotations__", {}))
    return sorted(names - {"Options"})


def missing_members(plugin: type, kind: str) -> list[str]:
    """Names the interface of ``kind`` requires that ``plugin`` lacks (empty when it satisfies it); for the
    class kinds (model cards are checked by structuring them into :class:`ModelCard`). Methods must be
    concrete; a declared class attribute must be set on the class (a value, or a property) and not empty.
    A hook needs at least one event, and ``state_dict`` and ``load_state_dict`` together."""
    interface = KINDS[kind]
    options = getattr(plugin, "Options", None)
    missing = [] if isinstance(options, type) and attrs.has(options) else ["Options (an attrs class)"]
    for name in _required(interface):
        member = getattr(interface, name, None)
        if callable(member) or name in getattr(interface, "__abstractmethods__", ()):
            if not _defines(plugin, name):
                missing.append(name)
        elif getattr(plugin, name, None) in (None, (), [], ""):
            missing.append(name)
    if kind == "hooks":
        if not any(_defines(plugin, event) for event in HOOK_EVENTS):
            missing.append(f"one of {', '.join(HOOK_EVENTS)}")
        state = [name for name in ("state_dict", "load_state_dict") if _defines(plugin, name)]
        if len(state) == 1:
            missing.append({"state_dict": "load_state_dict"}.get(state[0], "state_dict"))
    return missing
