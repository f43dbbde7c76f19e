"""Real data at size: named axes, z-stacks and time series, block-wise segmentation and its merging,
stitching across planes, resume, and a 2-worker dask cluster."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch
from conftest import UNTRAINED_POSTPROCESSOR, tiny_model_table

from vista2d_core import segment_file as segment_file_module
from vista2d_core.axes import read_plane, resolve_axes
from vista2d_core.blocks import Grid, owned_objects
from vista2d_core.cli import main
from vista2d_core.errors import UserError
from vista2d_core.executor import Executor
from vista2d_core.model import build_model, save_checkpoint
from vista2d_core.recipe import recipe_from_dict, recipe_to_dict
from vista2d_core.segment_file import segment_file
from vista2d_core.segmenter import Segmentation, Segmenter
from vista2d_core.stitch import stitch


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label arrays split the pixels the same way (equal up to renumbering)."""
    if not np.array_equal(a > 0, b > 0):
        return False
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    return len(set(pairs[0])) == len(set(pairs[1])) == pairs.shape[1]


# --- axes -----------------------------------------------------------------------------------------


def test_axes_from_files_and_the_recipe():
    assert resolve_axes("ZYX", (5, 64, 64)) == "ZYX"
    assert resolve_axes("YXS", (64, 64, 3)) == "YXC"
    assert resolve_axes("QYX", (3, 64, 64)) == "CYX"  # a few unnamed planes are channels, as for arrays
    assert resolve_axes("QQYX", (1, 2, 64, 64)) == "QCYX"  # axes of size 1 carry nothing
    assert resolve_axes("QYX", (5, 64, 64), override="tyx") == "TYX"
    with pytest.raises(UserError, match=r"a.tif: cannot tell what the axis of 5 entries is .*data.axes = \"ZYX\""):
        resolve_axes("QYX", (5, 64, 64), source="a.tif")
    with pytest.raises(UserError, match="names 3 axes but the image has 4"):
        resolve_axes("QQYX", (2, 5, 64, 64), override="ZYX", source="a.tif")


def test_planes_are_read_as_cyx_whatever_the_file_order():
    data = np.arange(2 * 3 * 4 * 5 * 6).reshape(2, 4, 5, 6, 3)  # T, Y, X, ... in an odd order: "TZYXC"
    plane = read_plane(data, "TZYXC", (1, 2), slice(1, 3), slice(0, 6))
    assert plane.shape == (3, 2, 6)
    np.testing.assert_array_equal(plane, np.moveaxis(data[1, 2, 1:3, :], -1, 0))


def test_recipe_rejects_a_bad_layout():
    with pytest.raises(UserError, match="data.axes: 'ZZYX' is not a layout"):
        recipe_from_dict({"mode": "infer", "data": {"axes": "ZZYX"}, "infer": {"inputs": ["x.tif"]}})


# --- block-wise segmentation with an ideal network ----------------------------------------------------


class IdealSegmenter:
    """What a perfect network gives for bright disks: cell probability from a threshold and cellpose flows
    of the connected components, computed on whatever region it is shown (as a block sees it)."""

    def __init__(self, recipe):
        self.recipe = recipe
        self.postprocessor = recipe.infer.postprocessor.create()
        self.calls = 0

    def plane_logits(self, data, ranges=None):
        from scipy import ndimage
        from vista2d_cellpose.flows import diffusion_flows

        self.calls += 1
        foreground = data[0] > 100
        labels, _ = ndimage.label(foreground)
        flows = diffusion_flows(labels[None])[0]
        cellprob = torch.from_numpy(np.where(foreground, 10.0, -10.0).astype(np.float32))
        return torch.cat([cellprob[None], 5 * flows])

    def labels(self, logits):
        return self.postprocessor(logits)


DISKS = [(64, 64), (20, 30), (30, 100), (100, 20), (64, 120), (120, 64), (150, 150), (40, 150), (160, 40)]


def disks_image(size=192, radius=9, centres=DISKS):
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size), np.uint8)
    for cy, cx in centres:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = 200
    return image


def ideal_recipe(**infer):
    postprocessor = {"name": "cellpose", "cellprob_threshold": 0.0, "flow_threshold": 0.0, "min_size": 5}
    return recipe_from_dict({"mode": "infer", "model": tiny_model_table(),
                             "infer": {"inputs": ["x.tif"], "postprocessor": postprocessor, **infer}})


def test_owned_objects_keep_the_ones_whose_centre_is_in_the_core():
    labels = np.zeros((40, 40), np.int32)
    labels[2:8, 2:8] = 5  # centre (4.5, 4.5): in the core
    labels[30:40, 30:40] = 7  # centre (34.5, 34.5): outside
    owned, count = owned_objects(labels, region=(10, 50, 10, 50), core=(10, 40, 10, 40))
    assert count == 1 and set(np.unique(owned)) == {0, 1} and (owned == 1).sum() == 36


def test_grid_covers_the_plane_with_cores_and_bounded_regions():
    grid = Grid(200, 130, 64, 16)
    assert grid.shape == (4, 3)
    covered = np.zeros((200, 130), int)
    for by, bx in grid.blocks():
        y0, y1, x0, x1 = grid.core(by, bx)
        covered[y0:y1, x0:x1] += 1
        ry0, ry1, rx0, rx1 = grid.region(by, bx)
        assert ry1 - ry0 <= grid.region_shape[0] and rx1 - rx0 <= grid.region_shape[1]
    assert (covered == 1).all()
    assert grid.neighbours(0, 0) == [(0, 1), (1, 0), (1, 1)]


def test_blocks_give_the_whole_images_labels_and_a_cell_on_a_corner_keeps_one_label(tmp_path):
    tifffile.imwrite(tmp_path / "disks.tif", disks_image())
    whole_segmenter = IdealSegmenter(ideal_recipe(block_size=0))
    whole, count, _ = segment_file(tmp_path / "disks.tif", whole_segmenter, Executor(), tmp_path / "w0")
    assert count == len(DISKS) and whole_segmenter.calls == 1
    block_segmenter = IdealSegmenter(ideal_recipe(block_size=64, block_overlap=24))
    blocks, count, cleanup = segment_file(tmp_path / "disks.tif", block_segmenter, Executor(), tmp_path / "w1")
    labels = np.asarray(blocks.labels)
    assert block_segmenter.calls == 9  # a 3 x 3 grid
    assert count == len(DISKS) and sorted(np.unique(labels)) == list(range(len(DISKS) + 1))
    assert same_partition(labels, np.asarray(whole.labels))
    corner = labels[55:74, 55:74]  # the disk at (64, 64) lies on the corner of four blocks
    assert len(np.unique(corner[corner > 0])) == 1
    cleanup()
    assert not (tmp_path / "w1").exists()


def test_a_stopped_block_wise_run_resumes_at_the_blocks_not_done(tmp_path, monkeypatch):
    tifffile.imwrite(tmp_path / "disks.tif", disks_image())
    recipe = ideal_recipe(block_size=64, block_overlap=24, resume=True)
    real = segment_file_module.segment_block
    done = []

    def stops_after_four(job, p, by, bx):
        if len(done) == 4:
            raise KeyboardInterrupt
        real(job, p, by, bx)
        done.append((by, bx))

    monkeypatch.setattr(segment_file_module, "segment_block", stops_after_four)
    first = IdealSegmenter(recipe)
    with pytest.raises(KeyboardInterrupt):
        segment_file(tmp_path / "disks.tif", first, Executor(), tmp_path / "work")
    assert first.calls == 4
    monkeypatch.setattr(segment_file_module, "segment_block", real)
    second = IdealSegmenter(recipe)
    resumed, _, _ = segment_file(tmp_path / "disks.tif", second, Executor(), tmp_path / "work")
    assert second.calls == 5  # only the blocks not yet done
    fresh, _, _ = segment_file(tmp_path / "disks.tif", IdealSegmenter(ideal_recipe(block_size=64, block_overlap=24)),
                               Executor(), tmp_path / "fresh")
    np.testing.assert_array_equal(np.asarray(resumed.labels), np.asarray(fresh.labels))


# --- stacks -------------------------------------------------------------------------------------------


def test_a_zyx_stack_gives_zyx_labels_stitched_through_z(tmp_path):
    planes = np.stack([disks_image(radius=r) for r in (7, 9, 9, 8)])
    tifffile.imwrite(tmp_path / "stack.tif", planes, imagej=True, metadata={"axes": "ZYX"})
    for block_size in (0, 64, 200):  # whole planes in memory; blocks; whole planes through the store on disk
        segmenter = IdealSegmenter(ideal_recipe(block_size=block_size, block_overlap=24, stitch_threshold=0.25))
        prediction, count, _ = segment_file(tmp_path / "stack.tif", segmenter, Executor(), tmp_path / f"w{block_size}")
        labels = np.asarray(prediction.labels)
        # planes of 192 px fit a block of 200, but 4 planes of labels do not: they go to the store on disk
        assert (tmp_path / f"w{block_size}").exists() == (block_size > 0)
        assert prediction.axes == "ZYX" and labels.shape == planes.shape
        assert count == len(DISKS) and labels.max() == len(DISKS)  # one label per disk through z
        for z in range(1, 4):
            np.testing.assert_array_equal(np.unique(labels[z]), np.unique(labels[0]))


def test_stitching_links_planes_as_cellpose_does(rng):
    from cellpose.utils import stitch3D

    for _ in range(5):
        planes = []
        for _z in range(4):
            plane = np.zeros((64, 64), np.uint32)
            for i in range(1, 9):
                y, x = rng.integers(0, 52, 2)
                h, w = rng.integers(4, 12, 2)
                plane[y : y + h, x : x + w] = i
            planes.append(plane)
        ours = np.stack(planes)
        offset = np.cumsum([0] + [int(p.max()) for p in planes[:-1]])
        ours = np.where(ours > 0, ours + offset[:, None, None], 0).astype(np.uint32)
        theirs = stitch3D(np.stack(planes).astype(np.uint32), stitch_threshold=0.3)
        count = stitch(ours, "Z", 0.3)
        assert same_partition(ours, theirs)
        assert count == ours.max() == len(np.unique(ours)) - 1


def test_an_ambiguous_file_is_one_clear_line_and_data_axes_fixes_it(tmp_path, capsys, tiny_checkpoint):
    tifffile.imwrite(tmp_path / "planes.tif", np.zeros((5, 40, 40), np.uint8))
    args = ["segment", str(tmp_path / "planes.tif"), "-c", str(tiny_checkpoint), "-o", str(tmp_path / "out"),
            "--set", "infer.postprocessor.cellprob_threshold=-100.0", "--set", "infer.postprocessor.flow_threshold=0.0"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "planes.tif: cannot tell what the axis of 5 entries is" in err and 'data.axes = "ZYX"' in err
    assert "Traceback" not in err
    assert main([*args, "--set", "data.axes=ZYX", "--set", "infer.roi_size=[32, 32]"]) == 0
    assert tifffile.imread(tmp_path / "out" / "planes_masks.tif").shape == (5, 40, 40)


# --- resume and dask, end to end ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    recipe = recipe_from_dict({"mode": "infer", "model": tiny_model_table(), "infer": {"inputs": ["x"]}})
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    return save_checkpoint(build_model(recipe.model), path, config=recipe_to_dict(recipe))


def segment_args(tmp_path, checkpoint, out, *extra):
    postprocessor = UNTRAINED_POSTPROCESSOR
    sets = [f"infer.postprocessor.{k}={json.dumps(v)}" for k, v in postprocessor.items() if k != "name"]
    sets += ["infer.roi_size=[32, 32]", "infer.block_size=48", "infer.block_overlap=16", *extra]
    return ["segment", str(tmp_path / "images"), "-c", str(checkpoint), "-o", str(tmp_path / out),
            *[a for s in sets for a in ("--set", s)]]


@pytest.fixture
def images(tmp_path, rng):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(folder / f"{name}.tif", rng.integers(0, 255, (72, 64), dtype=np.uint8))
    return folder


def test_resume_skips_images_whose_outputs_are_complete(tmp_path, images, tiny_checkpoint, capsys):
    args = segment_args(tmp_path, tiny_checkpoint, "out", "infer.resume=true")
    assert main(args) == 0
    out = tmp_path / "out"
    first = {p.name: p.stat().st_mtime_ns for p in out.glob("*_masks.tif")}
    assert set(first) == {"a_masks.tif", "b_masks.tif"} and not list((out / ".vista2d").glob("*.zarr"))
    (out / "b_masks.tif").unlink()
    capsys.readouterr()
    assert main(args) == 0
    assert "skipped 1 image(s) whose outputs are complete" in capsys.readouterr().err
    assert (out / "a_masks.tif").stat().st_mtime_ns == first["a_masks.tif"]  # not written again
    assert (out / "b_masks.tif").exists()


@pytest.mark.slow
def test_a_local_dask_cluster_gives_the_same_labels(tmp_path, images, tiny_checkpoint):
    (images / "b.tif").unlink()  # one image of 2 x 2 blocks: 4 tasks, then 4 merges
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each dask worker here: float sums in the same order
    try:
        assert main(segment_args(tmp_path, tiny_checkpoint, "here")) == 0
    finally:
        torch.set_num_threads(threads)
    assert main(segment_args(tmp_path, tiny_checkpoint, "dask", "infer.dask_workers=2")) == 0
    here = tifffile.imread(tmp_path / "here" / "a_masks.tif")
    there = tifffile.imread(tmp_path / "dask" / "a_masks.tif")
    assert here.max() > 1
    np.testing.assert_array_equal(here, there)


def write_ome_zarr(path, data, axes):
    import zarr

    group = zarr.open_group(path, mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=(1,) * (data.ndim - 2) + (32, 32))
    names = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    group.attrs["multiscales"] = [{
        "version": "0.4", "axes": [{"name": a, "type": names[a]} for a in axes.lower()],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * data.ndim}]}],
    }]


def test_an_ome_zarr_stack_in_gives_ome_zarr_labels_out_block_by_block(tmp_path, rng, tiny_checkpoint):
    from vista2d_io.readers import OmeZarrReader

    (tmp_path / "images").mkdir()
    write_ome_zarr(tmp_path / "images" / "cells.ome.zarr", rng.integers(0, 255, (2, 2, 80, 72), dtype=np.uint8),
                   "CZYX")
    assert main([*segment_args(tmp_path, tiny_checkpoint, "out"), "-w", "zarr,tiff"]) == 0
    out = tmp_path / "out"
    labels = OmeZarrReader(OmeZarrReader.Options()).read(out / "cells_masks.ome.zarr")
    assert labels.axes == "ZYX" and labels.data.shape == (2, 80, 72) and labels.data.max() > 1
    with tifffile.TiffFile(out / "cells_masks.tif") as tif:  # block-wise results are streamed as tiled TIFF
        assert tif.pages.first.is_tiled and tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.asarray(), labels.data)
    assert sorted(p.name for p in out.iterdir()) == [".vista2d", "cells_masks.ome.zarr", "cells_masks.tif",
                                                     "resolved_recipe.toml"]
    assert [p.name for p in (out / ".vista2d").iterdir()] == ["cells.done.json"]  # the work store is gone


def test_python_segments_a_stack_named_by_its_axes():
    segmenter = IdealSegmenter(ideal_recipe(stitch_threshold=0.25))  # Segmenter's methods on an ideal network
    planes = np.stack([disks_image(radius=r) for r in (8, 9)])
    result = Segmenter.segment(segmenter, planes, axes="ZYX")
    assert isinstance(result, Segmentation) and result.labels.shape == planes.shape
    assert result.logits.shape == (2, 3, *planes.shape[1:]) and result.cellprob.shape == planes.shape
    assert result.labels.max() == len(DISKS)  # stitched through z
    with pytest.raises(UserError, match='name its axes, e.g. axes="ZYX"'):
        Segmenter.logits(segmenter, planes[None])
