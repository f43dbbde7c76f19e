"""One outer polygon per label, for the ROI and GeoJSON writers, found block by block.

Coordinates follow ImageJ and QuPath: pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)``. Each object is
traced on its bounding-box crop upsampled 2x, so the polygon runs a quarter pixel inside the object's
outer pixel edges: it encloses every pixel centre of the object, and even a 1-pixel object or a
1-pixel-wide line gives a proper polygon (>= 4 points, area > 0). Holes are ignored and an object in
several pieces is represented by its largest piece.

Labels may be larger than memory (a zarr array): :func:`iter_contours` reads them in blocks of
:data:`BLOCK` x :data:`BLOCK` pixels, so memory holds one block plus the objects that start in it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .regions import blocks

BLOCK = 2048


def _trace(mask: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """Outer contour, (N, 2) float64 ``(x, y)``, of the True pixels of the 2-D crop ``mask`` whose pixel
    (0, 0) is pixel ``origin`` = (y, x) of the image."""
    import cv2

    upsampled = np.pad(mask.astype(np.uint8).repeat(2, axis=0).repeat(2, axis=1), 1)
    found, _ = cv2.findContours(upsampled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    largest = max(found, key=lambda c: (cv2.contourArea(c), len(c)))[:, 0, :]
    # Upsampled pixel u (after the 1-pixel pad) has its centre at (u - 1 + 0.5) / 2 in the crop.
    return (largest - 0.5) / 2 + np.array([origin[1], origin[0]], dtype=np.float64)


def object_boxes(
    labels: Any, plane: tuple[int, ...] = (), block: int = BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """Every non-zero label of the 2-D plane ``labels[plane]`` (numpy or zarr, (..., H, W)) and its
    bounding box, found block by block: ids (n,) ascending and boxes (n, 4) ``[y0, x0, y1, x1]``."""
    import fastremap
    from scipy import ndimage

    ids, boxes = [np.zeros(0, np.int64)], [np.zeros((0, 4), np.int64)]
    for ys, xs in blocks(labels.shape[-2:], block, block):
        local, mapping = fastremap.renumber(np.asarray(labels[(*plane, ys, xs)]), in_place=False)
        found = ndimage.find_objects(local)  # local ids 1..k: no gaps, no None
        old = np.zeros(len(found) + 1, np.int64)
        old[list(mapping.values())] = list(mapping.keys())
        ids.append(old[1:])
        corners = [(y.start, x.start, y.stop, x.stop) for y, x in found]
        boxes.append(np.array(corners, np.int64).reshape(-1, 4) + [ys.start, xs.start, ys.start, xs.start])
    unique, inverse = np.unique(np.concatenate(ids), return_inverse=True)
    merged = np.tile(np.array([np.iinfo(np.int64).max] * 2 + [0, 0]), (len(unique), 1))
    np.minimum.at(merged[:, :2], inverse, np.concatenate(boxes)[:, :2])
    np.maximum.at(merged[:, 2:], inverse, np.concatenate(boxes)[:, 2:])
    return unique, merged


def iter_contours(
    labels: Any, plane: tuple[int, ...] = (), block: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(label, contour)`` for every object of the 2-D plane ``labels[plane]`` (numpy or zarr array,
    (..., H, W)); contours as in :func:`outer_contours`. Objects come grouped by the ``block`` x ``block``
    block (default :data:`BLOCK`) that holds their box's top-left corner, blocks in row-major order,
    ascending labels within one; each group is traced from one region read (its objects' boxes)."""
    block = block or BLOCK
    ids, boxes = object_boxes(labels, plane, block)
    columns = -(-labels.shape[-1] // block)
    key = boxes[:, 0] // block * columns + boxes[:, 1] // block
    order = np.lexsort((ids, key))
    for group in np.split(order, np.flatnonzero(np.diff(key[order])) + 1):
        if not len(group):
            continue
        (y0, x0), (y1, x1) = boxes[group, :2].min(axis=0), boxes[group, 2:].max(axis=0)
        region = np.asarray(labels[(*plane, slice(y0, y1), slice(x0, x1))])
        for i in group:
            top, left, bottom, right = boxes[i] - [y0, x0, y0, x0]
            yield int(ids[i]), _trace(region[top:bottom, left:right] == ids[i], (boxes[i, 0], boxes[i, 1]))


def outer_contours(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Map every non-zero label id in ``labels`` (H, W) to its outer contour, an (N, 2) float64 array
    of ``(x, y)`` vertices, N >= 4, not closed (first point not repeated), in ascending label order."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D (H, W), got shape {labels.shape}")
    return dict(sorted(iter_contours(labels), key=lambda item: item[0]))
