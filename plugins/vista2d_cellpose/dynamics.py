"""Cellpose's dynamics on the CPU as compiled kernels (numba): the same arithmetic, in less time.

- :func:`masks_to_flows` = ``cellpose.dynamics.masks_to_flows_gpu``: heat diffused from each cell's centre for
  ``2 * largest cell extent`` iterations (float64, Jacobi updates, the 9 neighbours added in cellpose's order),
  then the normalised central-difference gradient. Cells never exchange heat, so each cell diffuses inside its
  own bounding box (a few kB that stay in cache) instead of gathering from the whole image on every iteration;
  cells run in parallel. Results equal cellpose's to float64 rounding; at exact ties (the heat equal on both
  sides in y and in x, e.g. a symmetric cell's centre) the direction is rounding noise in both, and torch's
  sum order there changes with the image's last pixels and the CPU's vector width.
- :func:`follow_flows` = ``cellpose.dynamics.follow_flows``: ``niter`` Euler steps of every pixel along the
  bilinearly sampled flows, in the normalised coordinates and float32 arithmetic of ``torch.grid_sample``
  (``align_corners=False``, zero padding), one point at a time (its neighbourhood stays in cache) and points in
  parallel. Final positions equal cellpose's except where float32 rounding moves a point across a pixel edge.
- :func:`flow_errors`: cellpose's ``flow_error`` (mean squared difference between the flows of the masks and the
  network's flows / 5, per mask).

Kernels compile on first use (about 35 s on 2 cores) and are cached on disk next to this module. They run on numba's
fork-safe ``workqueue`` threads (data-loader workers fork after the loss has used them; GNU OpenMP's layer would
abort those children) unless ``NUMBA_THREADING_LAYER`` says otherwise; calls are serialised (that layer is not
thread-safe) and use as many threads as torch does.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import numba
import numpy as np
from numba import njit, prange

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"
_LOCK = threading.Lock()


@contextlib.contextmanager
def _parallel() -> Iterator[None]:
    """One kernel call at a time, on torch's thread count (one per dask worker, all cores alone)."""
    import torch

    with _LOCK:
        before = numba.get_num_threads()
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        try:
            yield
        finally:
            numba.set_num_threads(before)

# A pixel's 9 neighbours (itself first) in cellpose's order: the diffusion adds them in this order.
_DY = np.array([0, -1, 1, 0, 0, -1, -1, 1, 1])
_DX = np.array([0, 0, 0, -1, 1, -1, 1, -1, 1])


def cell_boxes(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels 1..N (consecutive) -> (N, 4) int64 boxes ``[y0, y1, x0, x1)`` and (N, 2) int64 centres (cellpose's
    ``get_centers``: the cell pixel nearest the rounded mean position, the mean itself when it is in the cell)."""
    from scipy.ndimage import find_objects

    slices = find_objects(masks)
    boxes = np.array([[s[0].start, s[0].stop, s[1].start, s[1].stop] for s in slices], np.int64).reshape(-1, 4)
    return boxes, _centres(masks, boxes)


@njit(cache=True, parallel=True)
def _centres(masks: np.ndarray, boxes: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    n = boxes.shape[0]
    out = np.zeros((n, 2), np.int64)
    for c in prange(n):
        y0, y1, x0, x1 = boxes[c, 0], boxes[c, 1], boxes[c, 2], boxes[c, 3]
        sy = 0
        sx = 0
        count = 0
        for y in range(y0, y1):
            for x in range(x0, x1):
                if masks[y, x] == c + 1:
                    sy += y - y0
                    sx += x - x0
                    count += 1
        ym = int(np.round(sy / count))
        xm = int(np.round(sx / count))
        if masks[y0 + ym, x0 + xm] != c + 1:
            best = -1.0
            for y in range(y0, y1):  # the first nearest pixel in row-major order, as numpy's argmin
                for x in range(x0, x1):
                    if masks[y, x] == c + 1:
                        d = float((x - x0 - xm) ** 2 + (y - y0 - ym) ** 2)
                        if best < 0 or d < best:
                            best = d
                            out[c, 0] = y
                            out[c, 1] = x
        else:
            out[c, 0] = y0 + ym
            out[c, 1] = x0 + xm
    return out


@njit(cache=True, parallel=True)
def _diffuse(masks: np.ndarray, boxes: np.ndarray, centres: np.ndarray, niter: int) -> np.ndarray:  # pragma: no cover
    """Heat of every cell after ``niter`` iterations, as one (H + 2, W + 2) float64 image (1 px zero margin)."""
    h_img, w_img = masks.shape
    heat = np.zeros((h_img + 2, w_img + 2))
    for c in prange(boxes.shape[0]):
        y0, y1, x0, x1 = boxes[c, 0], boxes[c, 1], boxes[c, 2], boxes[c, 3]
        h = y1 - y0 + 2
        w = x1 - x0 + 2
        label = c + 1
        inside = np.zeros((h, w))
        for y in range(y0, y1):
            for x in range(x0, x1):
                if masks[y, x] == label:
                    inside[y - y0 + 1, x - x0 + 1] = 1.0
        same = np.zeros((9, h, w))  # neighbour k of the pixel has the pixel's label (0 outside the cell)
        for k in range(9):
            for y in range(1, h - 1):
                for x in range(1, w - 1):
                    same[k, y, x] = inside[y, x] * inside[y + _DY[k], x + _DX[k]]
        t = np.zeros((h, w))
        new = np.zeros((h, w))
        cy = centres[c, 0] - y0 + 1
        cx = centres[c, 1] - x0 + 1
        for _ in range(niter):
            t[cy, cx] += 1.0
            for y in range(1, h - 1):
                for x in range(1, w - 1):
                    s = t[y, x] * same[0, y, x]
                    s += t[y - 1, x] * same[1, y, x]
                    s += t[y + 1, x] * same[2, y, x]
                    s += t[y, x - 1] * same[3, y, x]
                    s += t[y, x + 1] * same[4, y, x]
                    s += t[y - 1, x - 1] * same[5, y, x]
                    s += t[y - 1, x + 1] * same[6, y, x]
                    s += t[y + 1, x - 1] * same[7, y, x]
                    s += t[y + 1, x + 1] * same[8, y, x]
                    new[y, x] = s / 9.0
            t, new = new, t
        for y in range(1, h - 1):
            for x in range(1, w - 1):
                if inside[y, x] > 0:
                    heat[y0 + y, x0 + x] = t[y, x]
    return heat


@njit(cache=True, parallel=True)
def _gradient(masks: np.ndarray, heat: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    h, w = masks.shape
    mu = np.zeros((2, h, w))
    for y in prange(h):
        for x in range(w):
            if masks[y, x] > 0:
                dy = heat[y + 2, x + 1] - heat[y, x + 1]
                dx = heat[y + 1, x + 2] - heat[y + 1, x]
                norm = 1e-60 + (dy * dy + dx * dx) ** 0.5
                mu[0, y, x] = dy / norm
                mu[1, y, x] = dx / norm
    return mu


def masks_to_flows(masks: np.ndarray) -> np.ndarray:
    """(H, W) labels numbered 1..N without gaps (0 = background) -> (2, H, W) float64 unit flows [dY, dX]
    towards each cell's centre, 0 outside cells: cellpose's ``masks_to_flows_gpu(masks)[0]``."""
    masks = np.ascontiguousarray(masks, dtype=np.int32)  # one dtype: one compiled version of each kernel
    if masks.max(initial=0) == 0:
        return np.zeros((2, *masks.shape))
    with _parallel():
        boxes, centres = cell_boxes(masks)
        extent = (boxes[:, 1] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 2]) + 2
        return _gradient(masks, _diffuse(masks, boxes, centres, int(2 * extent.max())))


def flow_errors(masks: np.ndarray, flows: np.ndarray) -> np.ndarray:
    """Labels 1..N and the network's (2, H, W) flows (x5) -> (N,) mean squared flow error of each mask."""
    return mean_per_label(masks, ((masks_to_flows(masks) - flows / 5.0) ** 2).sum(axis=0))


def mean_per_label(masks: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Labels 1..N, (H, W) values -> (N,) mean of the values over each label's pixels."""
    n = int(masks.max(initial=0))
    sums = np.bincount(masks.ravel(), weights=values.ravel(), minlength=n + 1)
    counts = np.bincount(masks.ravel(), minlength=n + 1)
    return sums[1:] / np.maximum(counts[1:], 1)


_LANES = 32  # points stepped together: independent chains of arithmetic keep the CPU's pipelines full
_MERGES = (40, 60, 90, 130)  # after these steps, points that have met are merged (most meet late)


@njit(cache=True, inline="always")
def _fma(a: np.float32, b: np.float32, c: np.float32) -> np.float32:  # pragma: no cover - compiled
    """float32 ``a * b + c`` rounded once, as torch's CPU ``grid_sample`` computes (fused multiply-adds: pixel
    coordinates and the sum over the four corners; the float64 product of two float32 numbers is exact)."""
    return np.float32(np.float64(a) * np.float64(b) + np.float64(c))


@njit(cache=True, parallel=True)
def _steps(px: np.ndarray, py: np.ndarray, flow_x: np.ndarray, flow_y: np.ndarray, steps: int) -> None:  # pragma: no cover
    """``steps`` of cellpose's ``steps_interp`` on normalised float32 positions, in place: ``grid_sample``
    (bilinear, ``align_corners=False``, zero padding) spelled out in torch's CPU arithmetic, then the clamp."""
    h, w = flow_x.shape
    one = np.float32(1.0)
    zero = np.float32(0.0)
    half = np.float32(0.5)
    sx = np.float32(w) / np.float32(2.0)
    sy = np.float32(h) / np.float32(2.0)
    n = px.shape[0]
    for block in prange((n + _LANES - 1) // _LANES):
        start = block * _LANES
        stop = min(start + _LANES, n)
        for _ in range(steps):
            for j in range(start, stop):
                ix = _fma(px[j] + one, sx, -half)
                iy = _fma(py[j] + one, sy, -half)
                x0 = np.floor(ix)
                y0 = np.floor(iy)
                we = ix - x0
                ww = one - we
                ns = iy - y0
                nn = one - ns
                xi = int(x0)
                yi = int(y0)
                vx = zero
                vy = zero
                if 0 <= yi < h:
                    if 0 <= xi < w:
                        vx = _fma(flow_x[yi, xi], nn * ww, vx)
                        vy = _fma(flow_y[yi, xi], nn * ww, vy)
                    if 0 <= xi + 1 < w:
                        vx = _fma(flow_x[yi, xi + 1], nn * we, vx)
                        vy = _fma(flow_y[yi, xi + 1], nn * we, vy)
                if 0 <= yi + 1 < h:
                    if 0 <= xi < w:
                        vx = _fma(flow_x[yi + 1, xi], ns * ww, vx)
                        vy = _fma(flow_y[yi + 1, xi], ns * ww, vy)
                    if 0 <= xi + 1 < w:
                        vx = _fma(flow_x[yi + 1, xi + 1], ns * we, vx)
                        vy = _fma(flow_y[yi + 1, xi + 1], ns * we, vy)
                px[j] = min(max(px[j] + vx, -one), one)
                py[j] = min(max(py[j] + vy, -one), one)


@njit(cache=True)
def _merge(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """Points at bit-identical positions move identically from now on: keep one of each (hash table);
    return the kept positions and, for every input point, the index of its kept point."""
    n = px.shape[0]
    size = 1
    while size < 2 * n:
        size *= 2
    keys = np.empty(size, np.int64)
    slots = np.full(size, -1, np.int64)
    index = np.empty(n, np.int64)
    kept = 0
    bits_x = px.view(np.int32)
    bits_y = py.view(np.int32)
    for i in range(n):
        key = (np.int64(bits_x[i]) << 32) | (np.int64(bits_y[i]) & 0xFFFFFFFF)
        slot = (key * -7046029254386353131) & (size - 1)  # Fibonacci hashing
        while slots[slot] >= 0 and keys[slot] != key:
            slot = (slot + 1) & (size - 1)
        if slots[slot] < 0:
            slots[slot] = kept
            keys[slot] = key
            px[kept] = px[i]
            py[kept] = py[i]
            kept += 1
        index[i] = slots[slot]
    return px[:kept].copy(), py[:kept].copy(), index


def follow_flows(flows: np.ndarray, ys: np.ndarray, xs: np.ndarray, niter: int) -> np.ndarray:
    """(2, H, W) float32 flows [dY, dX] in pixels per step, start pixels -> (2, N) int32 final [y, x] after
    ``niter`` steps: cellpose's ``follow_flows(flows, (ys, xs), niter).int()``. Points whose positions become
    bit-identical (most of them, as they converge) are stepped once for all."""
    h, w = flows.shape[1:]
    one, two = np.float32(1.0), np.float32(2.0)
    flow_x = (flows[1].astype(np.float32) * np.float32(2.0 / (w - 1))).astype(np.float32)
    flow_y = (flows[0].astype(np.float32) * np.float32(2.0 / (h - 1))).astype(np.float32)
    px = xs.astype(np.float32) / np.float32(w - 1) * two - one
    py = ys.astype(np.float32) / np.float32(h - 1) * two - one
    owner = np.arange(len(px))
    done = 0
    with _parallel():
        for stop in [*(m for m in _MERGES if m < niter), niter]:
            _steps(px, py, flow_x, flow_y, stop - done)
            done = stop
            if done < niter:
                px, py, index = _merge(px, py)
                owner = index[owner]
    half = np.float32(0.5)
    final_y = ((py + one) * half * np.float32(h - 1)).astype(np.int32)
    final_x = ((px + one) * half * np.float32(w - 1)).astype(np.int32)
    return np.stack([final_y[owner], final_x[owner]])
