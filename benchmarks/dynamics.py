"""Cellpose dynamics: the ``cellpose_fast`` postprocessor and the labels -> flows kernel against cellpose's
``compute_masks`` and ``masks_to_flows_gpu``, timed in the same run, with the ratios and the agreement.

    python benchmarks/dynamics.py [--sizes 1024 2048] [--device cpu|cuda] [--json benchmarks/results/dynamics.json]

Test images: dense, touching cells of random sizes (Voronoi cells cut to random radii, ~500 cells per
1024x1024, 60% of the pixels); network-like logits: cell probability +-3 with noise, the cells' flows x5
plus smooth noise. Postprocessors run with the recipes' defaults (cellprob 0.4, flow 0.4, min_size 15,
niter 200). Each timing is the best of ``--repeats`` after one warm-up of the fast kernels (compilation).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def dense_labels(size: int, seed: int = 0) -> np.ndarray:
    """(size, size) int32 labels: ~500 touching cells per 1024x1024, Voronoi cells cut to random radii, half
    of the borders between neighbours opened by a pixel."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    n = 500 * size * size // 1024**2
    seeds = np.zeros((size, size), np.int32)
    points = rng.integers(0, size, (n, 2))
    seeds[points[:, 0], points[:, 1]] = np.arange(1, n + 1)
    dist, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[iy, ix]
    radius = rng.uniform(0.6, 1.2, n + 1) * 1.2 * np.sqrt(size * size / n / np.pi)
    labels[dist > radius[labels]] = 0
    eroded = ndimage.grey_erosion(labels, size=3)
    labels[(eroded != labels) & (rng.random(labels.shape) < 0.5)] = 0
    return labels


def logits_of(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """(3, H, W) float32 ``[cellprob, dY, dX]`` a well-trained network would give for ``labels``."""
    from scipy.ndimage import gaussian_filter
    from vista2d_cellpose.flows import diffusion_flows

    rng = np.random.default_rng(seed)
    flows = diffusion_flows(labels[None])[0].numpy()  # cellpose's flows (identical, tested), sooner
    cellprob = np.where(labels > 0, 3.0, -3.0) + rng.normal(0, 1.0, labels.shape)
    noise = gaussian_filter(rng.normal(0, 1.5, (2, *labels.shape)), (0, 2, 2))
    return np.concatenate([cellprob[None], 5 * flows + noise]).astype(np.float32)


def best_time(fn: Any, repeats: int, sync: Any) -> tuple[float, Any]:
    """Best wall-clock seconds of ``repeats`` calls of ``fn`` and its last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times), result


def measure(size: int, device: str, repeats: int) -> dict[str, Any]:
    """Time and compare both pairs at one image size."""
    import fastremap
    import torch
    from cellpose.dynamics import masks_to_flows_gpu
    from vista2d_cellpose.flows import diffusion_flows

    from vista2d_core import components
    from vista2d_core.evaluate import average_precision

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    labels = dense_labels(size)
    logits = torch.from_numpy(logits_of(labels)).to(dev)
    masks = fastremap.renumber(labels, in_place=False)[0]
    options = {"cellprob_threshold": 0.4, "flow_threshold": 0.4, "min_size": 15, "niter": 200}
    reference = components.create("postprocessors", "cellpose", **options)
    fast = components.create("postprocessors", "cellpose_fast", **options)
    fast(logits[:, :64, :64])  # compile the kernels (cached on disk afterwards)
    diffusion_flows(masks[None, :64, :64], dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_ref, ref_masks = best_time(lambda: reference(logits), repeats, sync)
        t_fast, fast_masks = best_time(lambda: fast(logits), repeats, sync)
        t_ref_flows, ref_flows = best_time(lambda: masks_to_flows_gpu(masks, device=dev)[0], repeats, sync)
        t_fast_flows, fast_flows = best_time(lambda: diffusion_flows(masks[None], dev)[0].cpu().numpy(), repeats, sync)
    ap = average_precision(ref_masks, fast_masks, [0.5, 0.9])
    return {
        "size": size, "cells": int(masks.max()), "cell_fraction": round(float((labels > 0).mean()), 3),
        "masks_cellpose_s": t_ref, "masks_fast_s": t_fast, "masks_ratio": t_ref / t_fast,
        "masks_found": int(ref_masks.max()), "masks_ap50": ap[0], "masks_ap90": ap[1],
        "masks_identical": bool(np.array_equal(ref_masks, fast_masks)),
        "flows_cellpose_s": t_ref_flows, "flows_fast_s": t_fast_flows, "flows_ratio": t_ref_flows / t_fast_flows,
        "flows_max_abs_diff": float(np.abs(fast_flows - ref_flows).max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch
    from rich.console import Console
    from rich.table import Table

    from vista2d_core.bench import environment

    rows = [measure(size, args.device, args.repeats) for size in args.sizes]
    table = Table(title=f"cellpose dynamics on {args.device}: cellpose vs vista2d (cellpose_fast)")
    for column in ("image", "cells", "masks: cellpose s", "fast s", "ratio", "AP@0.9", "identical",
                   "flows: cellpose s", "fast s", "ratio", "max |diff|"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(f"{r['size']}²", str(r["cells"]), f"{r['masks_cellpose_s']:.2f}", f"{r['masks_fast_s']:.2f}",
                      f"{r['masks_ratio']:.1f}x", f"{r['masks_ap90']:.4f}", str(r["masks_identical"]),
                      f"{r['flows_cellpose_s']:.2f}", f"{r['flows_fast_s']:.3f}", f"{r['flows_ratio']:.1f}x",
                      f"{r['flows_max_abs_diff']:.1e}")
    Console(width=150).print(table)
    if args.json:
        report = {"environment": environment(torch.device(args.device)), "rows": rows}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
