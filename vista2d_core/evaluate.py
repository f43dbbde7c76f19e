"""``mode = "eval"``: segment the datalists' testing items and score them against their labels.

AP per image is cellpose's definition, ``TP / (TP + FP + FN)`` with Hungarian matching at each IoU
threshold (``cellpose.metrics.average_precision``), averaged per datalist, then across datalists. Each
image also gets its object counts, the objects matched at IoU 0.5 and the median size of the matched
predictions relative to their annotations (``size_ratio``: above 1, masks larger than annotated).
The table is printed and written as ``eval.json`` and ``eval.csv`` into the output folder.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np

from . import distributed
from .context import RunContext, start_run
from .datalist import Item
from .errors import UserError
from .files import atomic_write_text
from .imageio import read_image, read_labels
from .progress import console, progress_bar
from .recipe import Recipe

log = logging.getLogger("vista2d")


@attrs.define
class ImageScore:
    """AP of one image at each threshold, with its datalist index, object counts, the objects matched at
    IoU 0.5 and the median predicted / annotated area of those (None without matches)."""

    image: str
    source: int
    ap: list[float]
    true_objects: int
    predicted_objects: int
    matched: int = 0
    size_ratio: float | None = None


def average_precision(true: np.ndarray, pred: np.ndarray, thresholds: Sequence[float]) -> list[float]:
    """Cellpose's AP = TP / (TP + FP + FN) at each IoU threshold; 1.0 when both images are empty."""
    from cellpose.metrics import average_precision as cellpose_ap

    true, pred = _consecutive(true), _consecutive(pred)
    if true.max() == 0 and pred.max() == 0:
        return [1.0] * len(thresholds)
    ap = cellpose_ap([true], [pred], threshold=list(thresholds))[0][0]
    return [float(a) for a in ap]


def matched_sizes(true: np.ndarray, pred: np.ndarray) -> tuple[int, float | None]:
    """Objects matched one to one at IoU 0.5 (cellpose's Hungarian matching, the true positives of AP@0.5)
    and the median of their predicted / annotated areas (None without matches)."""
    from cellpose.metrics import mask_ious

    true, pred = _consecutive(true), _consecutive(pred)
    if true.max() == 0 or pred.max() == 0:
        return 0, None
    iou, partner = mask_ious(true, pred)
    hit = iou >= 0.5
    if not hit.any():
        return 0, None
    true_area = np.bincount(true.ravel())[1:]
    pred_area = np.bincount(pred.ravel())
    return int(hit.sum()), float(np.median(pred_area[partner[hit]] / true_area[hit]))


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..N in order (cellpose's metrics count objects by the largest label)."""
    import fastremap

    return fastremap.renumber(np.ascontiguousarray(labels), in_place=False)[0]


def score_labels(item: Item, pred: np.ndarray, thresholds: Sequence[float]) -> ImageScore:
    """Score predicted labels against ``item``'s label file (UserError naming the file when it has none or
    its shape differs)."""
    if item.label is None:
        raise UserError(f"{item.image}: this testing item has no 'label': cannot score it")
    true = read_labels(item.label)
    if true.shape != pred.shape:
        raise UserError(f"{item.label}: label shape {true.shape} differs from its image's {pred.shape}")
    ap = average_precision(true, pred, thresholds)
    matched, ratio = matched_sizes(true, pred)
    return ImageScore(str(item.image), item.source, ap, int(len(np.unique(true)) - 1), int(len(np.unique(pred)) - 1),
                      matched, ratio)


def score_items(segmenter: Any, items: Sequence[Item], thresholds: Sequence[float], description: str = "scoring") -> list[ImageScore]:
    """Segment each item with ``segmenter`` and score it against its label file."""
    scores = []
    with progress_bar() as bar:
        for item in bar.track(items, description=description):
            scores.append(score_labels(item, segmenter.predict(read_image(item.image)).labels, thresholds))
    return scores


class Scorer:
    """Scores the testing items from predictions made elsewhere (the infer stage's, when a run has both
    stages: each image segmented once). Call it with each image's path and labels, then :meth:`finish`."""

    def __init__(self, recipe: Recipe, context: RunContext) -> None:
        self.recipe, self.context = recipe, context
        self.items = {str(item.image): item for item in context.split.test}
        self.scores: list[ImageScore] = []

    def __call__(self, path: Path, labels: np.ndarray) -> None:
        """Score one testing item's predicted labels (UserError when ``path`` is not a testing item)."""
        item = self.items.get(str(path))
        if item is None:
            raise UserError(f"{path}: not one of the datalists' testing items: cannot score it")
        self.scores.append(score_labels(item, np.asarray(labels), self.recipe.eval.iou_thresholds))

    def finish(self) -> dict[str, Any]:
        """Gather every rank's scores; print the table, write eval.json and eval.csv; return the results."""
        scores = distributed.gather(self.scores)
        names = [str(d.path) for d in self.context.datalists]
        thresholds = self.recipe.eval.iou_thresholds
        results = {"thresholds": list(thresholds), **summarize(scores, names), "images": [attrs.asdict(s) for s in scores]}
        if distributed.is_main_process():
            print_table(results)
            write_results(results, self.recipe.output_dir)
        return results


def summarize(scores: Sequence[ImageScore], names: Sequence[str]) -> dict[str, Any]:
    """Mean AP per datalist (``names[source]``) and the mean of those means; object counts summed and
    the median of the images' size ratios, per datalist and in ``totals``."""
    rows = []
    for source, name in enumerate(names):
        mine = [s for s in scores if s.source == source]
        if mine:
            rows.append({"datalist": name, "images": len(mine), "ap": np.mean([s.ap for s in mine], axis=0).tolist(),
                         **_counts(mine)})
    overall = np.mean([r["ap"] for r in rows], axis=0).tolist() if rows else []
    return {"datalists": rows, "overall": overall, "totals": _counts(scores)}


def _counts(scores: Sequence[ImageScore]) -> dict[str, Any]:
    ratios = [s.size_ratio for s in scores if s.size_ratio is not None]
    return {
        "true_objects": sum(s.true_objects for s in scores),
        "predicted_objects": sum(s.predicted_objects for s in scores),
        "matched": sum(s.matched for s in scores),
        "size_ratio": float(np.median(ratios)) if ratios else None,
    }


def evaluate(recipe: Recipe, context: RunContext | None = None) -> dict[str, Any]:
    """Run the eval stage; print the table, write eval.json and eval.csv; return the results. ``context``:
    the run's (:func:`~vista2d_core.context.start_run`), set up from ``recipe`` when not given."""
    from .segmenter import Segmenter

    if context is None:
        context = start_run(attrs.evolve(recipe, mode=["eval"]))
    scorer = Scorer(recipe, context)
    segmenter = Segmenter(recipe, device=context.device)
    scorer.scores = score_items(segmenter, distributed.shard(context.split.test), recipe.eval.iou_thresholds, "evaluating")
    return scorer.finish()


def print_table(results: dict[str, Any]) -> None:
    """The per-datalist AP table on the terminal, with the objects annotated, matched at IoU 0.5 and the
    matched masks' median size relative to their annotations."""
    import os

    from rich.table import Column, Table

    table = Table(Column("datalist", overflow="fold"), "images", *[f"AP@{t:g}" for t in results["thresholds"]],
                  "objects", "matched", "size", title="evaluation")
    for row in results["datalists"]:
        name = os.path.relpath(row["datalist"]) if row["datalist"].startswith(os.getcwd() + os.sep) else row["datalist"]
        table.add_row(name, str(row["images"]), *[f"{a:.4f}" for a in row["ap"]], *_count_cells(row))
    table.add_row("overall", str(len(results["images"])), *[f"{a:.4f}" for a in results["overall"]],
                  *_count_cells(results["totals"]), style="bold")
    console.print(table)


def _count_cells(counts: dict[str, Any]) -> list[str]:
    ratio = counts["size_ratio"]
    return [str(counts["true_objects"]), str(counts["matched"]), "-" if ratio is None else f"x{ratio:.2f}"]


def write_results(results: dict[str, Any], out_dir: Path) -> None:
    """``eval.json`` (everything) and ``eval.csv`` (one row per image, then per datalist, then overall:
    AP at each threshold, then the objects annotated, predicted and matched at IoU 0.5 and the size ratio,
    empty without matches)."""
    columns = [f"ap@{t:g}" for t in results["thresholds"]]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["scope", "name", "images", *columns, "true_objects", "predicted_objects", "matched@0.5", "size_ratio"])
    for image in results["images"]:
        writer.writerow(["image", image["image"], 1, *image["ap"], *_count_values(image)])
    for row in results["datalists"]:
        writer.writerow(["datalist", row["datalist"], row["images"], *row["ap"], *_count_values(row)])
    writer.writerow(["overall", "", len(results["images"]), *results["overall"], *_count_values(results["totals"])])
    atomic_write_text(out_dir / "eval.json", json.dumps(results, indent=1))
    atomic_write_text(out_dir / "eval.csv", buffer.getvalue())


def _count_values(counts: dict[str, Any]) -> list[Any]:
    ratio = counts["size_ratio"]
    return [counts["true_objects"], counts["predicted_objects"], counts["matched"], "" if ratio is None else ratio]
