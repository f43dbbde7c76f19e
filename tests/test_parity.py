"""Numerical parity with the reference: MONAI's CellSamWrapper and its preprocessing/sliding window."""

import numpy as np
import pytest
import tifffile
import torch

from vista2d_core.model import build_model
from vista2d_core.recipe import recipe_from_dict
from vista2d_core.segmenter import Segmenter

monai = pytest.importorskip("monai")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """CellSamWrapper(checkpoint=None) under a fixed seed, saved as an official-format model.pt."""
    from monai.networks.nets.cell_sam_wrapper import CellSamWrapper

    torch.manual_seed(0)
    ref = CellSamWrapper(checkpoint=None).eval()
    # random BatchNorm statistics, so the test sees the head's running stats load too
    for module in ref.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save({"state_dict": ref.state_dict(), "config": {}, "epoch": 0, "best_metric": 0.0}, path)
    return ref, path


def recipe(path, **infer):
    return recipe_from_dict(
        {"mode": "infer", "device": "cpu", "model": {"checkpoint": str(path)}, "infer": infer}
    )


def test_same_logits_as_cellsamwrapper(official):
    """At 320 px, where every step runs: resize to 1024, encoder, head (256 px out), resize back to 320
    (256 px inputs skip the last resize; the sliding-window test below covers them)."""
    ref, path = official
    ours = build_model(recipe(path).model).eval()
    x = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(x)
        logits = ours(x)
    assert logits.shape == expected.shape == (1, 3, 320, 320)
    assert (logits - expected).abs().max().item() <= 1e-4


def test_infer_path_matches_reference_pipeline(official, tmp_path, rng):
    """reader -> channel rules -> scaling -> sliding window -> logits, against the reference's transforms."""
    from monai.inferers import SlidingWindowInfererAdapt
    from monai.transforms import Compose, ScaleIntensity, ScaleIntensityRangePercentiles

    ref, path = official
    image = (rng.gamma(2.0, 400.0, size=(256, 256))).astype(np.uint16)  # grey uint16, as a TIFF
    tifffile.imwrite(tmp_path / "cell.tif", image)
    reference_input = torch.as_tensor(np.repeat(tifffile.imread(tmp_path / "cell.tif")[None], 3, 0), dtype=torch.float32)
    reference_input = Compose(
        [
            ScaleIntensity(minv=0, maxv=1, channel_wise=True),
            ScaleIntensityRangePercentiles(lower=1, upper=99, b_min=0, b_max=1, channel_wise=True, clip=True),
        ]
    )(reference_input)
    inferer = SlidingWindowInfererAdapt(roi_size=[256, 256], sw_batch_size=1, overlap=0.625, mode="gaussian")
    with torch.no_grad():
        expected = inferer(torch.as_tensor(reference_input)[None], ref)[0]

    from vista2d_core.imageio import read_image

    ours = Segmenter(recipe(path)).logits(read_image(tmp_path / "cell.tif").data)
    assert ours.shape == (3, 256, 256)
    assert (ours - expected).abs().max().item() <= 1e-4
