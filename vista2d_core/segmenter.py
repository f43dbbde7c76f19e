"""``Segmenter``: one recipe's model, runtime, sliding window and postprocessor, as a callable.

    seg = Segmenter.from_checkpoint("runs/quickstart/model.pt")   # the checkpoint's own settings
    labels = seg(array)          # (H, W), (C, H, W) or (H, W, C) array -> (H, W) uint16 labels
    result = seg.segment(array)  # labels, cell probability and flows together
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F

from .axes import STACK, planes, read_plane, resolve_axes, stack_axes, stack_shape
from .distributed import resolve_device
from .interfaces import Image, Prediction
from .model import build_model
from .preprocess import channels_first, normalize
from .recipe import Recipe, apply_overrides, load_recipe, recipe_from_dict
from .sliding_window import sliding_window
from .stitch import stitch

if TYPE_CHECKING:
    from rich.progress import Progress

log = logging.getLogger("vista2d")
AUTO_SCALES = (0.35, 2.8)  # the factors infer.auto_diameter may resample by
AUTO_TOLERANCE = 1.15  # factors closer to 1 than this count as 1 (the first pass)
AUTO_STEP = 1.4  # infer.auto_diameter also tries the measured factor times and divided by this

Images = np.ndarray | Sequence[np.ndarray]


@attrs.define
class Segmentation:
    """One image's result: ``labels`` (H, W) uint16 (uint32 above 65535 objects) and ``logits`` (3, H, W)
    float32 ``[cellprob logit, dY, dX]`` (flows x5, cellpose's ``dP`` convention); stacks keep their
    leading T/Z axes in front of both."""

    labels: np.ndarray
    logits: np.ndarray

    @property
    def cellprob(self) -> np.ndarray:
        """(..., H, W) cell probability in [0, 1] (sigmoid of the logit)."""
        return 1.0 / (1.0 + np.exp(-self.logits[..., 0, :, :]))

    @property
    def flows(self) -> np.ndarray:
        """(..., 2, H, W) flows ``[dY, dX]`` as the network gives them (x5, as cellpose's ``dP``)."""
        return self.logits[..., 1:, :, :]


class Segmenter:
    """Segments images the way ``recipe`` says (``[model]``, ``[data]`` channels/percentiles, ``[infer]``).

    ``model``: an already built network (training passes its own); else built from ``recipe.model``.
    ``tta``: overrides ``infer.tta``; ``auto = False`` turns ``infer.auto_diameter`` off (training
    validates without either, to keep validation cheap).
    Arrays may be (H, W), (C, H, W) or (H, W, C) (see :func:`~vista2d_core.preprocess.channels_first`;
    ``axes="CYX"``/``"YXC"`` says which when the shape cannot); a list of arrays gives a list of results.
    """

    def __init__(
        self,
        recipe: Recipe,
        model: torch.nn.Module | None = None,
        device: Any = None,
        tta: bool | None = None,
        auto: bool = True,
    ) -> None:
        self.recipe = recipe
        self.device = resolve_device(recipe.device) if device is None else torch.device(device)
        if model is None:
            model = self._build(recipe)
        self.model = model.to(self.device).eval()
        infer = recipe.infer
        self.scale = image_scale(recipe)
        self.auto = auto and auto_diameter(recipe)
        self.runtime = infer.runtime.create()
        self.postprocessor = infer.postprocessor.create()
        self._measured: tuple[torch.Tensor, np.ndarray] | None = None
        example = torch.zeros((infer.sw_batch_size, 3, *infer.roi_size), device=self.device)
        self._plain = self._predict = self.runtime.prepare(self.model, example, recipe.model.checkpoint)
        if infer.tta if tta is None else tta:
            self._predict = flip_averaged(self._plain)
            if tta is None:
                log.info("test-time augmentation on (infer.tta): 4x the model time; --set infer.tta=false is faster")

    @staticmethod
    def _build(recipe: Recipe) -> torch.nn.Module:
        """The recipe's model; without a checkpoint its untrained weights are drawn from ``recipe.seed`` (the
        same in every run, the global random state left as it was)."""
        if recipe.model.checkpoint is not None:
            return build_model(recipe.model)
        log.warning("model.checkpoint is not set: segmenting with untrained weights (drawn from seed %d)", recipe.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe.seed)
            return build_model(recipe.model)

    @classmethod
    def from_recipe(
        cls, recipe: Recipe | str | Path | dict, overrides: list[str] | None = None, device: Any = None
    ) -> Segmenter:
        """From a Recipe, a TOML path (with ``--set``-style ``overrides``) or a recipe dict."""
        if isinstance(recipe, dict):
            recipe = recipe_from_dict(recipe)
        elif not isinstance(recipe, Recipe):
            recipe = load_recipe(recipe, overrides)
        return cls(recipe, device=device)

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | Path, overrides: list[str] | None = None, device: Any = None
    ) -> Segmenter:
        """From a checkpoint alone, as ``vista2d segment -c`` does: a vista2d checkpoint brings its backbone,
        normalisation and ``[infer]`` settings (the official one: ViT-B at 1024); ``overrides``
        (``"infer.tta=false"``, ...) change them."""
        data = apply_overrides({"mode": "infer", "model": {"checkpoint": str(checkpoint)}}, overrides or [])
        return cls(recipe_from_dict(data), device=device)

    def preprocess(self, data: np.ndarray, ranges: list | None = None) -> torch.Tensor:
        """(C, H, W) or (H, W) array -> (1, 3, H, W) float32 tensor in [0, 1] on the device; ``ranges``
        (:func:`~vista2d_core.preprocess.channel_ranges` of the whole image) when ``data`` is a block."""
        d = self.recipe.data
        image = normalize(np.asarray(data), d.channels, d.percentiles, ranges, d.normalize)
        return torch.from_numpy(image)[None].to(self.device)

    @torch.inference_mode()
    def plane_logits(self, data: np.ndarray, ranges: list | None = None) -> torch.Tensor:
        """One plane, (C, H, W) or (H, W) as the reader gives it (whole, or a block with ``ranges``: see
        :meth:`preprocess`) -> (3, H, W) float32 logits on the device (resampled by ``scale``, or by the
        factor :meth:`auto_scale` chooses with ``infer.auto_diameter``)."""
        if not self.auto:
            return self._logits(data, ranges, self.scale)
        scale, logits, labels = self.auto_scale(data, ranges)
        if self._predict is not self._plain:  # the trials ran without test-time augmentation
            return self._logits(data, ranges, scale)
        self._measured = (logits, labels)  # the result: see labels()
        return logits

    def auto_scale(self, data: np.ndarray, ranges: list | None = None) -> tuple[float, torch.Tensor, np.ndarray]:
        """The factor for ``infer.auto_diameter``, with the logits and labels it gave (passes without test-time
        augmentation). A pass at scale 1 measures the objects' median diameter (cellpose's ``diameters``);
        the measured factor ``model.diameter / measured`` and that factor times and divided by AUTO_STEP
        are tried (within AUTO_SCALES; within AUTO_TOLERANCE of 1 counts as the first pass), and the one
        whose masks take in the largest share of the foreground (cell probability above 0.5) wins: at a
        wrong scale the flows break objects into pieces that are dropped, or miss them. Nothing found at
        scale 1: scale 1."""
        from cellpose.utils import diameters

        logits = self._logits(data, ranges, 1.0, self._plain)
        labels = self.postprocessor(logits)
        if not labels.any():
            log.debug("no objects found at scale 1: kept")
            return 1.0, logits, labels
        measured = float(diameters(labels.astype(np.int32))[0])
        factor = self.recipe.model.diameter / measured
        tried = [float(np.clip(factor * step, *AUTO_SCALES)) for step in (1.0, AUTO_STEP, 1 / AUTO_STEP)]
        tried = list(dict.fromkeys(1.0 if 1 / AUTO_TOLERANCE < t < AUTO_TOLERANCE else t for t in tried))
        first = (logits, labels) if 1.0 in tried else None  # the measuring pass, when it is also a trial
        del logits, labels
        shares: dict[float, float] = {}
        best: tuple[float, torch.Tensor, np.ndarray] | None = None  # only the best pass's arrays are kept
        for scale in tried:
            if scale == 1.0 and first is not None:
                logits, labels = first
            else:
                logits = self._logits(data, ranges, scale, self._plain)
                labels = self.postprocessor(logits)
            shares[scale] = float((labels > 0).sum()) / max(int((logits[0] > 0).sum()), 1)
            if best is None or shares[scale] > shares[best[0]]:
                best = (scale, logits, labels)
            del logits, labels
        first = None
        log.debug("objects' median diameter %.1f px; share of the foreground in masks: %s -> x%.2f", measured,
                  ", ".join(f"x{s:.2f} {shares[s]:.2f}" for s in sorted(shares)), best[0])
        return best

    def labels(self, logits: torch.Tensor) -> np.ndarray:
        """``logits`` -> labels by the postprocessor; the labels :meth:`auto_scale` made of these very
        logits (a kept first pass) are handed back instead of being made again."""
        measured, self._measured = self._measured, None
        if measured is not None and measured[0] is logits:
            return measured[1]
        return self.postprocessor(logits)

    def _logits(
        self, data: np.ndarray, ranges: list | None, scale: float, predict: Callable | None = None
    ) -> torch.Tensor:
        infer = self.recipe.infer
        image = self.preprocess(data, ranges)
        size = image.shape[-2:]
        if scale != 1.0:
            image = F.interpolate(image, scale_factor=scale, mode="bilinear", antialias=scale < 1)
        logits = sliding_window(
            image, predict or self._predict, tuple(infer.roi_size), infer.overlap, infer.sw_batch_size, infer.blend
        )
        if logits.shape[-2:] != size:
            logits = F.interpolate(logits, size=size, mode="bilinear")
        return logits[0]

    def logits(self, data: np.ndarray, axes: str | None = None) -> torch.Tensor:
        """One image array -> (3, H, W) float32 logits ``[cellprob logit, dY, dX]`` on the device."""
        return self.plane_logits(channels_first(data, axes))

    def segment(self, data: Images, axes: str | None = None) -> Segmentation | list[Segmentation]:
        """Labels and logits (cell probability, flows) of one image array, or of each in a list. A z-stack
        or time series names its axes (``axes="ZYX"``, ``"TCYX"``, ...): planes are segmented one by one,
        stitched by ``infer.stitch_threshold``, and the results keep the T/Z axes."""
        if isinstance(data, (list, tuple)):
            return [self.segment(d, axes) for d in data]
        if axes and set(axes.upper()) & set(STACK):
            data = np.asarray(data)
            image = Image(data, Path("array"), axes=resolve_axes(axes, data.shape, axes, "array"))
            labels, logits, _ = segment_planes(self, image, keep_logits=True)
            return Segmentation(labels, logits)
        logits = self.logits(data, axes)
        return Segmentation(self.labels(logits), logits.float().cpu().numpy())

    def __call__(self, data: Images, axes: str | None = None) -> np.ndarray | list[np.ndarray]:
        """One image array -> (H, W) uint16 labels (uint32 above 65535 objects); a list -> a list; a stack
        with its ``axes`` -> labels with its T/Z axes (see :meth:`segment`)."""
        if isinstance(data, (list, tuple)):
            return [self(d, axes) for d in data]
        if axes and set(axes.upper()) & set(STACK):
            return self.segment(data, axes).labels
        return self.labels(self.logits(data, axes))

    def predict(self, image: Image, keep_logits: bool = False) -> Prediction:
        """Segment a reader's Image ((C, H, W) data); keep the float32 logits for writers that need them."""
        logits = self.plane_logits(image.data)
        labels = self.labels(logits)
        kept = logits.cpu().numpy() if keep_logits else None
        return Prediction(labels=labels, image=image, logits=kept)


def auto_diameter(recipe: Recipe) -> bool:
    """Whether images are measured and resampled one by one: ``infer.auto_diameter``, unless ``infer.scale``
    or ``infer.diameter`` is given or ``model.diameter`` is unknown."""
    infer = recipe.infer
    return infer.auto_diameter and not infer.diameter and infer.scale == 1.0 and bool(recipe.model.diameter)


def image_scale(recipe: Recipe) -> float:
    """The factor images are resampled by before the model: ``infer.scale``, or with ``infer.diameter``
    the model's object diameter over the images' (cellpose's ``diam_mean / diameter``)."""
    if recipe.infer.diameter:
        return recipe.model.diameter / recipe.infer.diameter
    return recipe.infer.scale


_FLIPS = ((-2,), (-1,), (-2, -1))


def flip_averaged(predict: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Test-time augmentation (cellpose's ``augment``): wrap a tiles (B, 3, h, w) -> logits callable so that
    it returns the mean logits over the tiles and their 3 flips, each flipped back with the sign of its
    flow components corrected (dY for vertical flips, dX for horizontal ones). 4x the model calls."""

    def averaged(tiles: torch.Tensor) -> torch.Tensor:
        total = predict(tiles).float()
        for dims in _FLIPS:
            out = predict(tiles.flip(dims)).float().flip(dims)
            sign = torch.tensor([1.0, -1.0 if -2 in dims else 1.0, -1.0 if -1 in dims else 1.0], device=out.device)
            total += out * sign[:, None, None]
        return total / (1 + len(_FLIPS))

    return averaged


def segment_planes(
    segmenter: Segmenter, image: Image, keep_logits: bool = False, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Every plane of ``image`` (axes resolved) segmented whole, labels numbered over the stack and
    stitched by ``infer.stitch_threshold``: labels (*stack, H, W) uint16 (uint32 above 65535 objects),
    logits (*stack, 3, H, W) when kept, and the number of objects."""
    shape = tuple(image.data.shape)
    stack, lead = stack_shape(image.axes, shape), stack_axes(image.axes, shape)
    labels, logits, top = [], [], 0
    indices = list(planes(image.axes, shape))
    task = progress.add_task(f"{image.path.name}: planes", total=len(indices)) if progress and stack else None
    for plane in indices:
        plane_logits = segmenter.plane_logits(read_plane(image.data, image.axes, plane))
        found = segmenter.labels(plane_logits).astype(np.uint32)
        found[found > 0] += top
        top = int(found.max(initial=top))
        labels.append(found)
        if keep_logits:
            logits.append(plane_logits.float().cpu().numpy())
        if task is not None:
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    stacked = np.stack(labels).reshape(*stack, *labels[0].shape)
    threshold = segmenter.recipe.infer.stitch_threshold
    objects = stitch(stacked, lead, threshold) if threshold and lead else top
    if objects <= np.iinfo(np.uint16).max:
        stacked = stacked.astype(np.uint16)
    kept = np.stack(logits).reshape(*stack, *logits[0].shape) if keep_logits else None
    return stacked, kept, objects
