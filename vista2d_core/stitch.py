"""Link labels across the planes of a z-stack or time series (cellpose's ``stitch_threshold``).

Plane after plane, each object takes the label of the object of the previous plane it overlaps best
when their IoU reaches the threshold (and it is that object's best match), as ``cellpose.utils.stitch3D``
does; others keep a label of their own. Labels come renumbered 1..N. Works on numpy and zarr labels in
bands of rows, so memory is bounded by two bands and one entry per object.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

BAND = 1024  # rows read at a time


def _bands(height: int) -> list[slice]:
    return [slice(y, min(y + BAND, height)) for y in range(0, height, BAND)]


def _overlaps(labels: Any, before: tuple, after: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of each (after id, before id) pair of overlapping objects, over bands of rows."""
    pairs: dict[tuple[int, int], int] = {}
    for rows in _bands(labels.shape[-2]):
        a, b = np.asarray(labels[(*after, rows)]).ravel(), np.asarray(labels[(*before, rows)]).ravel()
        both = (a > 0) & (b > 0)
        if not both.any():
            continue
        found, counts = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
        for key, n in zip(map(tuple, found.T.tolist()), counts.tolist()):
            pairs[key] = pairs.get(key, 0) + n
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    keys = np.array(list(pairs), dtype=np.int64)
    return keys[:, 0], keys[:, 1], np.fromiter(pairs.values(), np.int64, len(pairs))


def stitch(labels: Any, stack_axes: str, threshold: float) -> int:
    """Stitch ``labels`` (axes ``stack_axes`` + "YX", ids unique over the whole array) in place along Z
    (else T), for every position of the other stack axis; renumber 1..N; return N."""
    along = stack_axes.index("Z" if "Z" in stack_axes else "T")
    lead = labels.shape[: len(stack_axes)]
    top = 0
    area = np.zeros(1, np.int64)
    for plane in itertools.product(*map(range, lead)):
        for rows in _bands(labels.shape[-2]):
            ids = np.asarray(labels[(*plane, rows)]).ravel()
            count = np.bincount(ids)
            if len(count) > len(area):
                area = np.pad(area, (0, len(count) - len(area)))
            area[: len(count)] += count
    top = len(area) - 1
    mapping = np.arange(top + 1, dtype=np.int64)
    others = [range(n) if i != along else range(1) for i, n in enumerate(lead)]
    for series in itertools.product(*others):
        for i in range(1, lead[along]):
            before = tuple(i - 1 if k == along else s for k, s in enumerate(series))
            after = tuple(i if k == along else s for k, s in enumerate(series))
            new, old, inter = _overlaps(labels, before, after)
            iou = inter / (area[new] + area[old] - inter)
            ok = iou >= threshold
            new, old, iou = new[ok], old[ok], iou[ok]
            if not len(iou):
                continue
            # each old object keeps only its best new matches, then each new object takes its best old one
            best_of_old = np.zeros(top + 1)
            np.maximum.at(best_of_old, old, iou)
            ok = iou >= best_of_old[old]
            new, old, iou = new[ok], old[ok], iou[ok]
            order = np.lexsort((old, -iou, new))  # per new id: highest IoU first, lowest old id on ties
            new, old = new[order], old[order]
            first = np.r_[True, new[1:] != new[:-1]]
            mapping[new[first]] = mapping[old[first]]
    used = np.unique(mapping[area > 0])
    used = used[used > 0]
    renumber = np.zeros(top + 1, np.int64)
    renumber[used] = np.arange(1, len(used) + 1)
    final = renumber[mapping].astype(labels.dtype)
    for plane in itertools.product(*map(range, lead)):
        for rows in _bands(labels.shape[-2]):
            labels[(*plane, rows)] = final[np.asarray(labels[(*plane, rows)])]
    return len(used)
