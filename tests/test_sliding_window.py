"""The sliding window matches MONAI's sliding_window_inference window for window."""

import itertools

import pytest
import torch

from vista2d_core.sliding_window import importance_map, sliding_window, window_starts

monai_inferers = pytest.importorskip("monai.inferers")


@pytest.mark.parametrize("shape", [(256, 256), (300, 700), (100, 180), (513, 257)])
@pytest.mark.parametrize("batch", [1, 4])
def test_matches_monai(shape, batch):
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 5, padding=2)
    image = torch.rand(1, 3, *shape)
    with torch.no_grad():
        expected = monai_inferers.sliding_window_inference(image, (256, 256), 1, net, overlap=0.625, mode="gaussian")
        ours = sliding_window(image, net, (256, 256), 0.625, batch)
    assert ours.shape == (1, 3, *shape)
    assert torch.allclose(ours, expected, atol=1e-6)


def test_window_starts_cover_the_axis_flush_with_the_border():
    starts = window_starts(700, 256, 0.625)
    assert starts[0] == 0 and starts[-1] == 700 - 256
    assert all(b - a <= 96 for a, b in itertools.pairwise(starts))


def test_constant_blend_averages():
    image = torch.rand(1, 3, 300, 300)
    out = sliding_window(image, lambda x: x * 2, (256, 256), 0.5, 2, mode="constant")
    assert torch.allclose(out, image * 2, atol=1e-6)
    assert importance_map((8, 8), "gaussian").min() >= 1e-3
