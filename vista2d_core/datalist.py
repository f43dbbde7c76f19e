"""Datalists (the reference's JSON format), the training dataset and the training sampler.

A datalist is ``{"training": [{"image", "label", "fold"}, ...], "testing": [{"image", "label"?}, ...]}``
with paths relative to its ``basedir`` (default: the datalist's folder). Validation = the training
items whose ``fold`` is the recipe's fold (as MONAI's ``datafold_read``); the rest train. Several
datalists are combined; ``[data.synthetic]`` adds a generated one. Every missing or unreadable file is
reported in one UserError before any training starts.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from . import distributed
from .augment import pad_crop
from .errors import UserError
from .imageio import read_image, read_labels
from .preprocess import normalize
from .recipe import Data, Datalist

QUICK_TRAIN, QUICK_VAL = 8, 7  # the reference's quick mode


@attrs.frozen
class Item:
    """One image of a datalist: absolute paths; ``source``: the index of its datalist in the recipe."""

    image: Path
    label: Path | None
    source: int = 0


@attrs.frozen
class Split:
    """A recipe's items: ``train`` and ``val`` (from the datalists' training items), ``test``."""

    train: list[Item]
    val: list[Item]
    test: list[Item]


def resolve_datalists(data: Data) -> list[Datalist]:
    """The recipe's datalists, plus the synthetic one (generated on rank 0 if absent) when configured."""
    lists = list(data.datalists)
    if data.synthetic is not None:
        from .synthetic import generate

        s = data.synthetic
        if distributed.is_main_process():
            path = generate(s.folder, s.train_images, s.test_images, s.size, s.seed)
        distributed.barrier()
        if not distributed.is_main_process():  # reuses what rank 0 wrote
            path = generate(s.folder, s.train_images, s.test_images, s.size, s.seed)
        lists.append(Datalist(path=path))
    if not lists:
        raise UserError("data.datalists: empty (give at least one datalist or [data.synthetic])")
    return lists


def read_datalist(spec: Datalist, fold: int, source: int = 0) -> Split:
    """Items of one datalist JSON; UserError naming the file (and item) for anything malformed."""
    try:
        content = json.loads(Path(spec.path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{spec.path}: cannot read the datalist ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{spec.path}: not valid JSON: {exc}") from None
    if not isinstance(content, dict):
        raise UserError(f"{spec.path}: a datalist is a JSON object with 'training' and/or 'testing' lists")
    base = Path(spec.basedir) if spec.basedir is not None else Path(spec.path).parent
    train, val, test = [], [], []
    for key in ("training", "testing"):
        entries = content.get(key, [])
        if not isinstance(entries, list):
            raise UserError(f"{spec.path}: '{key}' must be a list of items")
        for i, entry in enumerate(entries):
            item = _item(entry, base, source, where=f"{spec.path}: {key}[{i}]", needs_label=key == "training")
            if key == "testing":
                test.append(item)
            elif entry.get("fold") == fold:
                val.append(item)
            else:
                train.append(item)
    return Split(train, val, test)


def _item(entry: Any, base: Path, source: int, where: str, needs_label: bool) -> Item:
    if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
        raise UserError(f"{where}: expected an object with an 'image' path")
    label = entry.get("label")
    if label is not None and not isinstance(label, str) or (needs_label and not label):
        raise UserError(f"{where}: expected a 'label' path")
    return Item(base / entry["image"], base / label if label else None, source)


def load_split(data: Data, datalists: Sequence[Datalist] | None = None) -> Split:
    """All datalists of ``data`` combined (``quick``: the first 8 training and 7 validation items)."""
    train, val, test = [], [], []
    for source, spec in enumerate(resolve_datalists(data) if datalists is None else datalists):
        split = read_datalist(spec, data.fold, source)
        train += split.train
        val += split.val
        test += split.test
    if data.quick:
        train, val = train[:QUICK_TRAIN], val[:QUICK_VAL]
    return Split(train, val, test)


def check_files(items: Sequence[Item], datalists: Sequence[Datalist] = ()) -> float | None:
    """Read every image and label file of ``items`` once, before any work starts; raise one UserError with a
    line per problem (missing, empty, unreadable, corrupt, no reader for the type, labels that are not whole
    non-negative numbers or do not fit their image), each naming its datalist (``datalists[item.source]``).
    Return the median object diameter (px) of the label images, as cellpose measures it (None: no objects)."""
    from concurrent.futures import ThreadPoolExecutor

    from cellpose.utils import diameters

    from .progress import progress_bar

    def check(item: Item) -> tuple[list[str], float | None]:
        where = f" (in {datalists[item.source].path})" if item.source < len(datalists) else ""
        problems, shape, diameter = [], None, None
        for path, is_label in ((item.image, False), (item.label, True)):
            if path is None:
                continue
            try:
                if is_label:
                    labels = read_labels(path)
                    if shape is not None and labels.shape != shape:
                        problems.append(f"{path}: labels of shape {labels.shape} do not fit image {item.image} "
                                        f"of shape {shape}{where}")
                    if labels.any():
                        diameter = float(diameters(labels)[0])
                else:
                    shape = read_image(path).data.shape[1:]
            except UserError as exc:
                problems.append(f"{str(exc).removesuffix('.')}{where}")
        return problems, diameter

    unique = list({(item.image, item.label): item for item in items}.values())
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool, progress_bar() as bar:
        results = list(bar.track(pool.map(check, unique), total=len(unique), description="checking data files"))
    problems = [line for found, _ in results for line in found]
    if problems:
        raise UserError(f"{len(problems)} data file problem(s):\n" + "\n".join(problems))
    sizes = [d for _, d in results if d]
    return float(np.median(sizes)) if sizes else None


def sample_weights(items: Sequence[Item]) -> torch.Tensor:
    """Weight 1 / (number of items of its datalist) per item: every datalist is equally likely."""
    sources = torch.tensor([item.source for item in items])
    counts = torch.bincount(sources)
    return 1.0 / counts[sources].double()


class TrainSampler(Sampler[tuple[int, int]]):
    """Yields ``(item index, crop seed)`` for this rank; a fresh draw every epoch from ``seed + epoch``.

    Unweighted: permutations, cut or extended to ``num_samples`` (default ``size``) rounded up to a multiple
    of the world size (as DistributedSampler).
    Weighted: ``num_samples`` draws with replacement by ``weights`` (the reference's distributed weighted
    sampler, but re-seeded each epoch). Ranks take interleaved shares of the same global draw, so they never
    overlap within an epoch (except for padding). Call :meth:`set_epoch` before each epoch.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        weights: torch.Tensor | None = None,
        num_samples: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.size, self.seed, self.weights = size, seed, weights
        self.rank = distributed.rank() if rank is None else rank
        self.world_size = distributed.world_size() if world_size is None else world_size
        total = num_samples or size
        self.per_rank = math.ceil(total / self.world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def draw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The global (indices, seeds) of the current epoch, for every rank."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.per_rank * self.world_size
        if self.weights is not None:
            indices = torch.multinomial(self.weights, total, replacement=True, generator=g)
        else:
            perms = [torch.randperm(self.size, generator=g) for _ in range(math.ceil(total / self.size))]
            indices = torch.cat(perms)[:total]
        return indices, torch.randint(0, 2**31 - 1, (total,), generator=g)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices, seeds = self.draw()
        mine = slice(self.rank, None, self.world_size)
        return iter(zip(indices[mine].tolist(), seeds[mine].tolist()))

    def __len__(self) -> int:
        return self.per_rank


class TrainDataset(Dataset):
    """Training items read, normalised (channel rules + percentiles) and randomly cropped to the ROI.

    ``dataset[(index, seed)]`` -> ``{"image": float32 (3, *roi), "label": int32 (*roi), "index": int}``;
    the crop is drawn from ``seed`` (see :class:`TrainSampler`). ``cache`` keeps normalised images in memory.
    ``diameter`` > 0: each sample brought to objects of that median diameter (:func:`diameter_factor`, measured
    once per item): a window of ``roi / factor`` is cut from the image at its own size and resampled to the ROI
    (as cellpose's ``random_rotate_and_resize``), so the work and memory per sample are bounded by the ROI.
    """

    def __init__(
        self, items: Sequence[Item], data: Data, roi: tuple[int, int], cache: bool = False, diameter: float = 0.0
    ) -> None:
        self.items, self.data, self.roi, self.diameter = list(items), data, tuple(roi), diameter
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None
        self.factors: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalised float32 (3, H, W) image and int32 (H, W) labels of item ``index``, at their own size."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        item = self.items[index]
        d = self.data
        image = normalize(read_image(item.image).data, d.channels, d.percentiles, mode=d.normalize)
        labels = read_labels(item.label)
        if labels.shape != image.shape[1:]:
            raise UserError(f"{item.label}: labels of shape {labels.shape} do not fit image {item.image} "
                            f"of shape {image.shape[1:]}")
        if self.diameter and index not in self.factors:
            self.factors[index] = diameter_factor(labels, self.diameter)
        if self.cache is not None:
            self.cache[index] = (image, labels)
        return image, labels

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, seed = key
        image, labels = self.load(index)
        factor = self.factors.get(index, 1.0)
        rng = np.random.default_rng(seed)
        if factor == 1.0:
            image, labels = pad_crop(image, labels, self.roi, rng)
        else:
            window = tuple(max(round(r / factor), 1) for r in self.roi)
            image, labels = resample(*pad_crop(image, labels, window, rng), self.roi)
        return {"image": torch.from_numpy(np.ascontiguousarray(image)),
                "label": torch.from_numpy(np.ascontiguousarray(labels)), "index": index}


def diameter_factor(labels: np.ndarray, diameter: float) -> float:
    """The factor that brings ``labels``' objects to a median diameter of ``diameter`` px (cellpose's
    ``diameters``), kept within 1/4 to 4 as inference resamples; 1.0 without objects or within 2 % of 1."""
    from cellpose.utils import diameters

    if not labels.any():
        return 1.0
    factor = min(max(diameter / float(diameters(labels)[0]), 0.25), 4.0)
    return 1.0 if abs(factor - 1.0) < 0.02 else factor


def resample(image: np.ndarray, labels: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) image and (H, W) labels resampled to ``size``: bilinear (antialiased when shrinking) and
    nearest."""
    shrink = size[0] < labels.shape[0] or size[1] < labels.shape[1]
    pixels = F.interpolate(torch.from_numpy(image)[None], size=size, mode="bilinear", antialias=shrink)
    ids = F.interpolate(torch.from_numpy(labels.astype(np.float64))[None, None], size=size, mode="nearest-exact")
    return pixels[0].numpy(), ids[0, 0].numpy().astype(labels.dtype)
