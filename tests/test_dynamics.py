"""The compiled cellpose dynamics (``vista2d_cellpose.dynamics``, postprocessor ``cellpose_fast``) against
cellpose itself, on label images drawn at random: random shapes, touching cells, holes, one-pixel objects,
objects on the border, empty images, more than 65535 labels, float16 and float32 logits."""

from __future__ import annotations

import warnings

import fastremap
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vista2d_core import components

# derandomize: the same examples on every run (a CI failure reproduces)
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def label_images(draw: st.DrawFn) -> np.ndarray:
    """A (H, W) int32 label image: ellipses, rings (holes), rectangles and single pixels, placed anywhere (also
    across the border), later ones painted over earlier ones (touching and cut cells), any label numbering."""
    h = draw(st.integers(8, 72))
    w = draw(st.integers(8, 72))
    yy, xx = np.mgrid[:h, :w]
    labels = np.zeros((h, w), np.int32)
    for value in draw(st.lists(st.integers(1, 10**6), max_size=12, unique=True)):
        kind = draw(st.sampled_from(["ellipse", "ring", "box", "pixel"]))
        cy, cx = draw(st.integers(-4, h + 3)), draw(st.integers(-4, w + 3))
        ry, rx = draw(st.integers(1, 20)), draw(st.integers(1, 20))
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        if kind == "ellipse":
            labels[inside <= 1] = value
        elif kind == "ring":
            labels[(inside <= 1) & (inside > 0.3)] = value
        elif kind == "box":
            labels[max(cy, 0) : cy + ry, max(cx, 0) : cx + rx] = value
        elif 0 <= cy < h and 0 <= cx < w:
            labels[cy, cx] = value
    return labels


def _cellpose_flows(labels: np.ndarray) -> np.ndarray:
    from cellpose.dynamics import masks_to_flows_gpu

    renumbered = fastremap.renumber(labels, in_place=False)[0]
    return masks_to_flows_gpu(renumbered)[0] if renumbered.max() else np.zeros((2, *labels.shape))


def _ties(labels: np.ndarray) -> np.ndarray:
    """Pixels whose heat is the same on both sides in y and in x up to float64 rounding (a symmetric cell's
    centre): there the flow's direction is rounding noise, which follows the order in which torch sums the 9
    neighbours (it changes for the last pixels of the image with the CPU's vector width)."""
    from vista2d_cellpose.dynamics import _diffuse, cell_boxes

    masks = fastremap.renumber(labels, in_place=False)[0].astype(np.int32)
    if not masks.any():
        return np.zeros(labels.shape, bool)
    boxes, centres = cell_boxes(masks)
    extent = (boxes[:, 1] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 2]) + 2
    heat = _diffuse(masks, boxes, centres, int(2 * extent.max()))
    eps = 1e-12 * heat.max()
    dy, dx = heat[2:, 1:-1] - heat[:-2, 1:-1], heat[1:-1, 2:] - heat[1:-1, :-2]
    return (np.abs(dy) <= eps) & (np.abs(dx) <= eps) & (masks > 0)


@SETTINGS
@given(label_images())
def test_labels_to_flows_equal_cellpose(labels):
    """Equal to 1e-6 at every pixel but exact ties (see :func:`_ties`), where both are rounding noise."""
    from vista2d_cellpose.flows import diffusion_flows

    got = diffusion_flows(labels[None])[0].numpy()
    ties = _ties(labels)
    assert np.abs(got - _cellpose_flows(labels))[:, ~ties].max(initial=0) <= 1e-6


def test_a_tie_is_rounding_noise_in_cellpose_too():
    """A 1x13 cell: its centre's two neighbours hold the same heat; cellpose's sign there depends on its sum
    order (this cell is in the part of the image that torch sums in another order), ours on ours."""
    labels = np.zeros((8, 13), np.int32)
    labels[0] = 1
    ties = _ties(labels)
    assert ties.sum() == 1 and ties[0, 6]
    from vista2d_cellpose.flows import diffusion_flows

    got = diffusion_flows(labels[None])[0].numpy()
    assert np.abs(got - _cellpose_flows(labels))[:, ~ties].max() <= 1e-6


def _logits(labels: np.ndarray, seed: int, dtype: type) -> np.ndarray:
    """Network-like logits of a label image: cell probability +-3 with noise, the cells' flows x5 plus smooth
    noise (so that pixels do not all fall on one point), in ``dtype``."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    cellprob = np.where(labels > 0, 3.0, -3.0) + rng.normal(0, 1.0, labels.shape)
    noise = gaussian_filter(rng.normal(0, 1.5, (2, *labels.shape)), (0, 2, 2))
    return np.concatenate([cellprob[None], 5 * _cellpose_flows(labels) + noise]).astype(dtype)


def _both(logits: np.ndarray, **options) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = components.create("postprocessors", "cellpose_fast", **options)(logits)
        reference = components.create("postprocessors", "cellpose", **options)(logits)
    return fast, reference


@SETTINGS
@given(label_images(), st.integers(0, 2**16), st.sampled_from([np.float16, np.float32]),
       st.sampled_from([0.0, 0.4, 1.0]), st.sampled_from([-1, 0, 15]))
def test_masks_equal_cellpose(labels, seed, dtype, flow_threshold, min_size):
    fast, reference = _both(_logits(labels, seed, dtype), flow_threshold=flow_threshold, min_size=min_size)
    assert fast.dtype == reference.dtype
    np.testing.assert_array_equal(fast, reference)


def test_masks_equal_cellpose_on_dense_touching_cells():
    """A 256x256 image of ~120 touching cells (Voronoi cells of random sizes), the default options."""
    from scipy import ndimage

    rng = np.random.default_rng(7)
    seeds = np.zeros((256, 256), np.int32)
    points = rng.integers(0, 256, (120, 2))
    seeds[points[:, 0], points[:, 1]] = np.arange(1, 121)
    _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[iy, ix]
    fast, reference = _both(_logits(labels, 1, np.float32), cellprob_threshold=0.0)
    assert reference.max() > 80
    np.testing.assert_array_equal(fast, reference)


def test_more_than_65535_masks_come_back_as_uint32():
    """67,600 cells of 4x4 px on a 1300x1300 grid: both postprocessors find them all, as uint32 labels."""
    labels = np.zeros((1300, 1300), np.int32)
    cells = np.arange(1, 260 * 260 + 1).reshape(260, 260)
    labels.reshape(260, 5, 260, 5)[:, :4, :, :4] = cells[:, None, :, None]
    flows = 5 * _cellpose_flows(labels)
    logits = np.concatenate([np.where(labels > 0, 3.0, -3.0)[None], flows]).astype(np.float32)
    fast, reference = _both(logits, min_size=10)
    assert fast.dtype == np.uint32 and fast.max() == 260 * 260
    np.testing.assert_array_equal(fast, reference)


def test_no_cell_pixels_give_empty_uint16_labels():
    logits = np.full((3, 40, 50), -5.0, np.float32)
    fast, reference = _both(logits)
    assert fast.dtype == np.uint16 and fast.shape == (40, 50) and not fast.any()
    np.testing.assert_array_equal(fast, reference)


@pytest.mark.parametrize("niter", [1, 39, 41, 200, 333])
def test_followed_positions_equal_cellpose_for_any_number_of_steps(niter):
    """Points are merged when they meet (after steps 40, 60, 90, 130): step counts around those give
    cellpose's final positions too."""
    import torch
    from cellpose.dynamics import follow_flows as cellpose_follow
    from vista2d_cellpose.dynamics import follow_flows

    labels = np.zeros((64, 80), np.int32)
    labels[5:30, 5:40], labels[30:60, 20:75] = 1, 2
    steps = (_logits(labels, 3, np.float32)[1:] * (labels > 0) / np.float32(5.0)).astype(np.float32)
    ys, xs = np.nonzero(labels)
    expected = cellpose_follow(steps, (ys, xs), niter=niter, device=torch.device("cpu")).int().numpy()
    np.testing.assert_array_equal(follow_flows(steps, ys, xs, niter), expected)


def test_the_benchmark_times_both_and_reports_ratios_and_agreement(tmp_path, capsys):
    """benchmarks/dynamics.py (the speed figures of docs/benchmarks.md) on one small image."""
    import importlib.util
    import json
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "dynamics.py"
    spec = importlib.util.spec_from_file_location("dynamics_benchmark", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--sizes", "192", "--json", str(tmp_path / "r.json")]) == 0
    [row] = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert row["size"] == 192 and row["cells"] >= 10 and row["masks_found"] >= 10
    assert row["masks_identical"] and row["masks_ap90"] == 1.0 and row["flows_max_abs_diff"] <= 1e-6
    assert row["masks_ratio"] == row["masks_cellpose_s"] / row["masks_fast_s"] > 0
    assert row["flows_ratio"] == row["flows_cellpose_s"] / row["flows_fast_s"] > 0
    assert "192²" in capsys.readouterr().out


def test_kernels_work_in_forked_children_and_from_several_threads():
    """Data-loader workers fork after the loss has run the kernels in the parent (GNU OpenMP's threads would
    abort them); dask or user threads may call them at the same time."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import multiprocessing, threading
        import numpy as np
        from vista2d_cellpose.dynamics import masks_to_flows
        masks = np.zeros((64, 64), np.int32); masks[5:30, 5:40] = 1; masks[35:60, 10:50] = 2
        expected = masks_to_flows(masks)
        def child(queue):
            queue.put(bool(np.array_equal(masks_to_flows(masks), expected)))
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        process = context.Process(target=child, args=(queue,))
        process.start(); process.join(60)
        results = []
        threads = [threading.Thread(target=lambda: results.append(np.array_equal(masks_to_flows(masks), expected)))
                   for _ in range(4)]
        [t.start() for t in threads]; [t.join() for t in threads]
        print(process.exitcode, queue.get(timeout=5), results)
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[0] == "0 True [True, True, True, True]", done.stderr[-2000:]
