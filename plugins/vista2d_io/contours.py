"""One outer polygon per label, for the ROI and GeoJSON writers.

Coordinates follow ImageJ and QuPath: pixel ``(x, y)`` covers ``[x, x+1) x [y, y+1)``. Each object is
traced on its bounding-box crop upsampled 2x, so the polygon runs a quarter pixel inside the object's
outer pixel edges: it encloses every pixel centre of the object, and even a 1-pixel object or a
1-pixel-wide line gives a proper polygon (>= 4 points, area > 0). Holes are ignored and an object in
several pieces is represented by its largest piece.
"""

from __future__ import annotations

import numpy as np


def outer_contours(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Map every non-zero label id in ``labels`` (H, W) to its outer contour, an (N, 2) float64 array
    of ``(x, y)`` vertices, N >= 4, not closed (first point not repeated), in ascending label order."""
    import cv2
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D (H, W), got shape {labels.shape}")
    contours = {}
    for index, box in enumerate(ndimage.find_objects(labels.astype(np.int64, copy=False))):
        if box is None:
            continue
        label = index + 1
        mask = (labels[box] == label).astype(np.uint8)
        mask = np.pad(mask.repeat(2, axis=0).repeat(2, axis=1), 1)
        found, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        largest = max(found, key=lambda c: (cv2.contourArea(c), len(c)))[:, 0, :]
        # Upsampled pixel u (after the 1-pixel pad) has its centre at (u - 1 + 0.5) / 2 in the crop.
        offset = np.array([box[1].start, box[0].start], dtype=np.float64)
        contours[label] = (largest - 0.5) / 2 + offset
    return contours
