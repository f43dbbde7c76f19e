"""Cellpose-SAM plugins (vista2d_cpsam), with cellpose 4's own code as the reference: its ``CPSAM`` network,
``CellposeModel.eval`` (normalisation, tiles, blending, dynamics), its weight files and its finetuning.

Most tests build cellpose's ``CPSAM`` around a small SAM encoder (``cellpose.vit.sam_model_registry``
patched): cellpose's own code then turns it into Cellpose-SAM (8-px patches, cut positional embeddings,
global attention, readout) in a second instead of a minute. One slow test uses the real ViT-L.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage
from segment_anything.modeling import ImageEncoderViT
from torch import nn
from vista2d_cpsam.backbone import CpsamBackbone, CpsamOptions, global_blocks
from vista2d_cpsam.weights import eval_settings, to_cellpose

from vista2d_core.cli import main
from vista2d_core.errors import RecipeError, UserError
from vista2d_core.evaluate import average_precision
from vista2d_core.model import load_checkpoint, read_checkpoint
from vista2d_core.preprocess import normalize
from vista2d_core.pretrained import cache_path, model_card
from vista2d_core.recipe import load_recipe, recipe_from_dict
from vista2d_core.segmenter import Segmenter
from vista2d_core.sliding_window import cellpose_padding, cellpose_starts, taper_mask

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"embed_dim": 64, "depth": 2, "num_heads": 2}


@pytest.fixture
def small_cellpose(monkeypatch: pytest.MonkeyPatch) -> None:
    """cellpose's CPSAM built around a small SAM encoder (SMALL) instead of ViT-L, by cellpose's own code."""
    import cellpose.vit

    def build(checkpoint: object = None) -> SimpleNamespace:
        encoder = ImageEncoderViT(
            img_size=1024, patch_size=16, mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6), qkv_bias=True,
            use_rel_pos=True, global_attn_indexes=global_blocks(SMALL["depth"]), window_size=14, out_chans=256,
            **SMALL,
        )
        return SimpleNamespace(image_encoder=encoder)

    monkeypatch.setattr(cellpose.vit, "sam_model_registry", {"vit_l": build})


def cellpose_file(path: Path, seed: int = 0) -> Path:
    """A cellpose 4 weight file (``torch.save(CPSAM().state_dict())``) with random weights, the zero-initialised
    ones (positional embeddings, relative-position tables) drawn too so that they matter."""
    from cellpose.vit import CPSAM

    torch.manual_seed(seed)
    net = CPSAM()
    with torch.no_grad():
        net.encoder.pos_embed.normal_(0, 0.05)
        for block in net.encoder.blocks:
            block.attn.rel_pos_h.normal_(0, 0.05)
            block.attn.rel_pos_w.normal_(0, 0.05)
    torch.save(net.state_dict(), path)
    return path


def cellpose_model(path: Path):
    from cellpose.models import CellposeModel

    return CellposeModel(pretrained_model=str(path), use_bfloat16=False)


def cellpose_net(path: Path) -> nn.Module:
    from cellpose.vit import CPSAM

    net = CPSAM()
    net.load_state_dict(torch.load(path, weights_only=True), strict=True)
    return net.eval()


def cells_image(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """uint16 image of separate bright disks (radius 6-14 px) on a noisy dark background."""
    rng = np.random.default_rng(seed)
    image = rng.normal(200, 20, shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for cy in range(20, shape[0] - 20, 40):
        for cx in range(20, shape[1] - 20, 40):
            r = rng.uniform(6, 14)
            disk = (yy - cy - rng.integers(-3, 4)) ** 2 + (xx - cx - rng.integers(-3, 4)) ** 2 <= r * r
            image[disk] = rng.uniform(2000, 2400)
    return np.clip(image, 0, 65535).astype(np.uint16)


# the network ------------------------------------------------------------------------------------------------
def test_logits_equal_cellposes_cpsam_and_the_file_brings_its_settings(small_cellpose, tmp_path):
    path = cellpose_file(tmp_path / "cpsam_small")
    segmenter = Segmenter.from_checkpoint(path, ["device='cpu'"])
    recipe = segmenter.recipe
    assert (recipe.model.backbone.name, recipe.model.head.name) == ("cpsam", "cpsam")
    options = recipe.model.backbone.options
    assert (options.embed_dim, options.depth, options.num_heads, options.patch_size, options.tile) == (64, 2, 2, 8, 256)
    assert (recipe.data.normalize, recipe.infer.blend, recipe.infer.overlap) == ("cellpose", "cellpose", 0.1)
    assert (tuple(recipe.infer.roi_size), recipe.infer.sw_batch_size, recipe.infer.tta) == ((256, 256), 8, False)
    post = recipe.infer.postprocessor.options
    assert (post.cellprob_threshold, post.flow_threshold, post.min_size, post.niter, post.max_size_fraction) == (
        0.0, 0.4, 15, 200, 0.4)
    net = cellpose_net(path)
    x = torch.rand(3, 3, 256, 256)
    with torch.no_grad():
        theirs = net(x)[0]
        ours = segmenter.model(x)
    assert ours.shape == (3, 3, 256, 256)
    torch.testing.assert_close(ours, theirs[:, (2, 0, 1)], rtol=0, atol=1e-5)  # [cellprob, dY, dX]
    assert theirs.abs().max() > 0.1


@pytest.mark.slow
def test_a_vit_l_file_as_cellpose_writes_it(tmp_path):
    path = cellpose_file(tmp_path / "cpsam")  # the real size: SAM ViT-L, 305 M parameters
    segmenter = Segmenter.from_checkpoint(path, ["device='cpu'"])
    options = segmenter.recipe.model.backbone.options
    assert options == CpsamOptions()  # the defaults are Cellpose-SAM's ViT-L
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        theirs = cellpose_net(path)(x)[0]
        ours = segmenter.model(x)
    torch.testing.assert_close(ours, theirs[:, (2, 0, 1)], rtol=0, atol=1e-5)


def test_layer_drop_skips_blocks_in_training_only():
    torch.manual_seed(0)
    backbone = CpsamBackbone(CpsamOptions(**SMALL, layer_drop=0.9))
    x = torch.rand(4, 3, 64, 64)  # other sizes than the native tile interpolate the positional embeddings
    with torch.no_grad():
        backbone.eval()
        assert backbone(x).shape == (4, 256, 8, 8)
        assert torch.equal(backbone(x), backbone(x))
        backbone.train()
        outputs = [backbone(x) for _ in range(6)]
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])
    torch.manual_seed(1)
    plain = CpsamBackbone(CpsamOptions(**SMALL)).train()
    with torch.no_grad():
        assert torch.equal(plain(x), plain(x))


# the pipeline -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "axes", "channel_axis"),
    [((300, 520), "YX", None), ((2, 290, 270), "CYX", 0), ((270, 300, 3), "YXC", 2), ((4, 200, 230), "CYX", 0)],
    ids=["grey", "2-channel", "rgb", "4-channel"],
)
def test_flows_and_cell_probability_equal_cellpose_eval(small_cellpose, tmp_path, shape, axes, channel_axis):
    path = cellpose_file(tmp_path / "cpsam_small", seed=len(shape))
    rng = np.random.default_rng(3)
    image = rng.gamma(2.0, 300.0, shape).astype(np.uint16)
    _, flows, _ = cellpose_model(path).eval(image, channel_axis=channel_axis)
    result = Segmenter.from_checkpoint(path, ["device='cpu'"]).segment(image, axes)
    assert np.abs(result.flows - flows[1]).max() <= 1e-3
    assert np.abs(result.logits[0] - flows[2]).max() <= 1e-3
    assert np.abs(flows[1]).max() > 0.1


class CellFinder(nn.Module):
    """A stand-in network that sees cells: connected regions of channel 0 above 0.5 in each tile, their
    cellpose flows x5 and a cell-probability logit of +-5, ``[cellprob, dY, dX]``."""

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        from vista2d_cellpose.flows import diffusion_flows

        labels = np.stack([ndimage.label(tile[0] > 0.5)[0] for tile in tiles.float().cpu().numpy()])
        flows = diffusion_flows(labels).numpy()
        cellprob = np.where(labels > 0, 5.0, -5.0).astype(np.float32)[:, None]
        return torch.from_numpy(np.concatenate((cellprob, 5 * flows), axis=1))


def test_masks_equal_cellpose_eval(small_cellpose, tmp_path):
    """The same network in both pipelines (one that finds the cells, as random weights do not): cellpose's
    tiles, taper blending and dynamics against ours, across tile seams."""
    path = cellpose_file(tmp_path / "cpsam_small")
    image = cells_image((600, 530))
    finder = CellFinder()
    model = cellpose_model(path)
    model.net.forward = lambda x: (finder(x)[:, (1, 2, 0)], torch.zeros(len(x), 256))
    theirs, flows, _ = model.eval(image)
    segmenter = Segmenter.from_checkpoint(path, ["device='cpu'"])
    segmenter._predict = finder
    result = segmenter.segment(image)
    assert theirs.max() >= 150  # 14 x 13 cells, some across the seams of the 3 x 3 tiles
    assert np.abs(result.flows - flows[1]).max() <= 1e-3
    assert average_precision(theirs, result.labels, [0.9])[0] >= 0.99
    cellpose_post = Segmenter.from_checkpoint(path, ["device='cpu'", "infer.postprocessor.name=cellpose"])
    assert np.array_equal(cellpose_post.postprocessor(result.logits), result.labels)


def test_block_wise_segmentation_normalises_blocks_as_the_whole_image(small_cellpose, tmp_path):
    """Large images go block by block: each block normalised with the whole plane's percentiles (cellpose's
    way), the labels merged across block borders, the same cells as the whole image at once."""
    from vista2d_core.executor import Executor
    from vista2d_core.segment_file import segment_file

    path = cellpose_file(tmp_path / "cpsam_small")
    tifffile.imwrite(tmp_path / "cells.tif", cells_image((600, 530)))
    found = {}
    for block_size in (0, 300):
        segmenter = Segmenter.from_checkpoint(path, ["device='cpu'", f"infer.block_size={block_size}",
                                                     "infer.block_overlap=64"])
        segmenter._predict = CellFinder()
        prediction, count, cleanup = segment_file(tmp_path / "cells.tif", segmenter, Executor(), tmp_path / f"w{block_size}")
        found[block_size] = (np.asarray(prediction.labels), count)
        cleanup()
    (whole, whole_count), (blocks, block_count) = found[0], found[300]
    assert whole_count == block_count >= 150
    assert average_precision(whole, blocks, [0.9])[0] >= 0.99


@pytest.mark.parametrize("shape", [(256, 256), (100, 300), (240, 250), (528, 1000), (2049, 17)])
def test_tiles_and_taper_are_cellposes(shape):
    from cellpose.transforms import _taper_mask, get_pad_yx, make_tiles

    ypad1, ypad2, xpad1, xpad2 = get_pad_yx(*shape, min_size=(256, 256))
    assert (cellpose_padding(shape[0], 256), cellpose_padding(shape[1], 256)) == ((ypad1, ypad2), (xpad1, xpad2))
    padded = (shape[0] + ypad1 + ypad2, shape[1] + xpad1 + xpad2)
    for overlap in (0.1, 0.02, 0.3, 0.7):
        _, ysub, xsub, _, _ = make_tiles(np.zeros((1, *padded), np.float32), bsize=256, tile_overlap=overlap)
        starts = [(y, x) for y in cellpose_starts(padded[0], 256, overlap) for x in cellpose_starts(padded[1], 256, overlap)]
        assert starts == [(int(y[0]), int(x[0])) for y, x in zip(ysub, xsub)]
    np.testing.assert_allclose(taper_mask((256, 256)).numpy(), _taper_mask(256, 256), rtol=1e-6)


@pytest.mark.parametrize(
    "shape", [(64, 80), (1, 64, 80), (2, 64, 80), (3, 64, 80), (5, 64, 80)], ids=["YX", "1", "2", "3", "5"]
)
def test_cellpose_normalisation_is_cellposes(shape):
    from cellpose.transforms import convert_image, normalize_img

    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 500.0, shape).astype(np.uint16)
    if len(shape) == 3 and shape[0] >= 3:
        image[1] = 7  # a constant channel: zeros
        image[2, :, :] = 1000
        image[2, :2, :2] = 1001  # percentiles 1e-3 apart or less: zeros
    ours = normalize(image, mode="cellpose")
    theirs = normalize_img(convert_image(image, channel_axis=None if image.ndim == 2 else 0))
    theirs = np.moveaxis(theirs, -1, 0)
    expected = np.zeros((3, *shape[-2:]), np.float32)
    expected[: len(theirs)] = theirs[:3]
    np.testing.assert_array_equal(ours, expected)


def test_cellpose_normalisation_samples_large_planes_as_cellpose():
    from cellpose.transforms import normalize99

    plane = np.random.default_rng(1).gamma(2.0, 500.0, (3400, 3320)).astype(np.float32)  # > 224**3 pixels
    np.testing.assert_array_equal(normalize(plane, mode="cellpose")[0], normalize99(plane, downsample=True))


# files, names, errors ---------------------------------------------------------------------------------------
def test_loading_errors_name_the_keys(small_cellpose, tmp_path):
    path = cellpose_file(tmp_path / "cpsam_small")
    state = torch.load(path, weights_only=True)
    broken = dict(state)
    del broken["encoder.neck.0.weight"]
    broken["encoder.extra"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken")
    with pytest.raises(UserError, match=r"missing keys model\.image_encoder\.neck\.0\.weight; unexpected keys "
                                        r"model\.image_encoder\.extra"):
        Segmenter.from_checkpoint(tmp_path / "broken", ["device='cpu'"])
    # a size the file is not: wrong shapes are named
    recipe = recipe_from_dict({"mode": "infer", "model": {"checkpoint": str(path), "backbone": {"name": "cpsam",
                                                                                                "embed_dim": 32}}})
    with pytest.raises(UserError, match=r"wrong shapes model\.image_encoder\.blocks\.0"):
        Segmenter(recipe, device="cpu")
    # cellpose 3 or any other layout is not taken for a Cellpose-SAM file: the sam default fails on its keys
    torch.save({"downsample.down.res_down_0.conv.0.weight": torch.zeros(1)}, tmp_path / "cyto3")
    with pytest.raises(UserError, match=r"missing keys model\.image_encoder\..*unexpected keys downsample"):
        Segmenter.from_checkpoint(tmp_path / "cyto3", ["device='cpu'"])
    (tmp_path / "torn").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="torn: cannot load checkpoint"):
        Segmenter.from_checkpoint(tmp_path / "torn", ["device='cpu'"])


def test_saved_in_both_layouts(small_cellpose, tmp_path):
    from cellpose.vit import CPSAM
    from vista2d_cpsam.weights import save_cellpose

    path = cellpose_file(tmp_path / "cpsam_small")
    assert main(["models", "convert", str(path), str(tmp_path / "model.pt")]) == 0
    checkpoint = read_checkpoint(tmp_path / "model.pt")
    assert checkpoint["inference"]["data"]["normalize"] == "cellpose"  # ours: weights and settings
    net = Segmenter.from_checkpoint(tmp_path / "model.pt", ["device='cpu'"]).model
    save_cellpose(tmp_path / "model.pt", tmp_path / "back")
    again = CPSAM()
    again.load_model(tmp_path / "back", device=torch.device("cpu"), strict=True)  # cellpose's own loader
    original = torch.load(path, weights_only=True)
    assert all(torch.equal(t, original[k]) for k, t in torch.load(tmp_path / "back", weights_only=True).items())
    assert set(to_cellpose(net.state_dict())) == set(original)


def test_cards_name_cellposes_files_and_settings(small_cellpose, tmp_path):
    from cellpose.models import _MODEL_URL

    for name in ("cpsam", "cpsam_v2"):
        card = model_card(name)
        assert card.url == _MODEL_URL + name  # where cellpose itself downloads them
        assert card.recipe.infer == eval_settings()["infer"] and card.recipe.data == eval_settings()["data"]
    with pytest.raises(RecipeError, match="model 'cpsam_v2' is not in the cache and VISTA2D_OFFLINE is set"):
        recipe_from_dict({"mode": "infer", "model": {"checkpoint": "cpsam_v2"}})
    cache_path("cpsam_v2").parent.mkdir(parents=True)
    cellpose_file(cache_path("cpsam_v2"))
    recipe = load_recipe(ROOT / "recipes/cellpose_sam.toml")  # names cpsam_v2
    assert recipe.model.checkpoint == cache_path("cpsam_v2")
    assert recipe.model.backbone.options.embed_dim == 64  # the file's own size, over the card's ViT-L
    settings = eval_settings()
    assert recipe.infer.blend == settings["infer"]["blend"] and recipe.data.normalize == "cellpose"
    post = settings["infer"]["postprocessor"]
    assert recipe.infer.postprocessor.name == post.pop("name")
    assert {k: getattr(recipe.infer.postprocessor.options, k) for k in post} == post


def test_vista2d_segment_with_every_writer(small_cellpose, tmp_path):
    path = cellpose_file(tmp_path / "cpsam_small")
    (tmp_path / "imgs").mkdir()
    tifffile.imwrite(tmp_path / "imgs" / "a.tif", cells_image((200, 180)))
    tifffile.imwrite(tmp_path / "imgs" / "b.tif", cells_image((120, 300), seed=1))
    writers = "tiff,flows,overlay,rois,geojson,zarr"
    assert main(["segment", str(tmp_path / "imgs"), "-c", str(path), "-o", str(tmp_path / "out"), "-w", writers]) == 0
    out = tmp_path / "out"
    for stem, shape in (("a", (200, 180)), ("b", (120, 300))):
        assert tifffile.imread(out / f"{stem}_masks.tif").shape == shape
        assert tifffile.imread(out / f"{stem}_flows.tif").shape[-2:] == shape
        assert (out / f"{stem}_overlay.png").is_file() and (out / f"{stem}.geojson").is_file()
        assert (out / f"{stem}_rois.zip").is_file() and (out / f"{stem}_masks.ome.zarr" / "0").is_dir()


# training and runtimes ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_finetune_recipe_trains_from_a_cellpose_file(small_cellpose, tmp_path):
    from vista2d_core.runner import run

    path = cellpose_file(tmp_path / "cpsam_small")
    recipe = load_recipe(ROOT / "recipes/finetune_cellpose_sam.toml", [
        f"model.checkpoint='{path}'", f"output_dir='{tmp_path / 'run'}'", "device='cpu'",
        f"data.synthetic={{folder='{tmp_path / 'data'}', train_images=4, test_images=2, size=96}}",
        "train.epochs=2", "train.warmup_epochs=0", "train.learning_rate=1e-3", "train.runtime.name=eager", "train.augment.roi_size=[64, 64]",
        "train.validate_every=1",
    ])
    assert recipe.model.backbone.options.layer_drop == 0.4 and recipe.model.backbone.options.depth == 2
    assert run(recipe) == 0
    trained = read_checkpoint(tmp_path / "run" / "model.pt")
    assert trained["inference"]["model"]["backbone"]["name"] == "cpsam"
    before = torch.load(path, weights_only=True)
    after = to_cellpose(trained["state_dict"])
    assert not torch.equal(after["out.weight"], before["out.weight"])  # it trained
    assert torch.equal(after["W2"], before["W2"])  # and the fixed readout stayed fixed
    net = Segmenter.from_checkpoint(tmp_path / "run" / "model.pt", ["device='cpu'"]).model
    load_checkpoint(net, tmp_path / "run" / "model.pt")


@pytest.mark.slow
@pytest.mark.parametrize(("runtime", "atol"), [("amp", 0.15), ("compile", 1e-4)])
def test_runtimes_run_cellpose_sam(small_cellpose, tmp_path, runtime, atol):
    path = cellpose_file(tmp_path / "cpsam_small")
    image = cells_image((240, 260))
    eager = Segmenter.from_checkpoint(path, ["device='cpu'"]).segment(image).logits
    other = Segmenter.from_checkpoint(path, ["device='cpu'", f"infer.runtime.name={runtime}"]).segment(image).logits
    assert np.abs(other - eager).max() <= atol * max(1.0, np.abs(eager).max())


def test_the_side_by_side_benchmark_reports_times_ratios_and_agreement(small_cellpose, tmp_path):
    """benchmarks/cellpose_sam.py (the figures of docs/benchmarks.md) on one small image, fp32."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("cellpose_sam_benchmark", ROOT / "benchmarks" / "cellpose_sam.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = cellpose_file(tmp_path / "cpsam_small")
    module.main(["--weights", str(path), "--sizes", "300", "--precisions", "fp32", "--json", str(tmp_path / "r.json")])
    [row] = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert (row["size"], row["precision"], row["weights"]) == (300, "fp32", "given")
    assert row["ratio"] > 0 and abs(row["ratio"] - row["cellpose_s"] / row["vista2d_s"]) <= 0.01 * row["ratio"]
    assert row["flows_max_abs_diff"] <= 1e-3 and row["cellprob_max_abs_diff"] <= 1e-3
    assert row["masks_ap90"] >= 0.99 and "post_cellpose_s" not in row  # given weights: no stand-in cells
