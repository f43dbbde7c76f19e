"""The ``cellpose`` loss plugin: flow targets from labels, and the reference loss formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vista2d_core import components


def _discs(shape=(48, 64), cells=((12, 14, 6, 3), (30, 40, 8, 9))) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for cy, cx, r, value in cells:
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = value
    return labels


@pytest.fixture
def loss():
    return components.create("losses", "cellpose")


def test_targets_are_foreground_and_unit_flows_pointing_to_the_centre(loss):
    labels = torch.from_numpy(np.stack([_discs(), np.zeros((48, 64), np.int32)]))
    targets = loss.targets(labels)
    assert targets.shape == (2, 3, 48, 64) and targets.dtype == torch.float32
    assert torch.equal(targets[:, 0], (labels > 0).float())
    norm = targets[0, 1:].norm(dim=0)
    inside = labels[0] > 0
    unit = torch.isclose(norm, torch.ones(()), atol=1e-3)
    assert unit[inside].sum() >= inside.sum() - 2  # all but the cells' centres, where the flow is 0
    assert torch.all(targets[:, 1:][:, :, ~inside] == 0)
    assert torch.all(targets[1] == 0)  # no cells: no flows
    # right of the second disc's centre the flow points left (towards the centre), above it down
    assert targets[0, 2, 30, 45] < -0.9 and targets[0, 1, 25, 40] > 0.9


def test_targets_ignore_label_numbering(loss):
    sparse = torch.from_numpy(_discs())[None]  # labels 3 and 9
    dense = torch.from_numpy(_discs(cells=((12, 14, 6, 1), (30, 40, 8, 2))))[None]
    assert torch.equal(loss.targets(sparse), loss.targets(dense))


def test_loss_is_the_reference_formula(loss):
    torch.manual_seed(0)
    targets = loss.targets(torch.from_numpy(_discs())[None])
    logits = torch.randn(1, 3, 48, 64)
    expected = 0.5 * F.mse_loss(logits[:, 1:], 5 * targets[:, 1:]) + F.binary_cross_entropy_with_logits(
        logits[:, 0], targets[:, 0]
    )
    assert torch.allclose(loss(logits, targets), expected)
    perfect = torch.cat([(targets[:, :1] * 2 - 1) * 30, 5 * targets[:, 1:]], dim=1)
    assert loss(perfect, targets) < 1e-6 < loss(logits, targets)


def test_options_weight_the_terms():
    targets = torch.zeros(1, 3, 8, 8)
    logits = torch.ones(1, 3, 8, 8)
    flow_only = components.create("losses", "cellpose", cellprob_weight=0.0, flow_weight=1.0)
    assert torch.allclose(flow_only(logits, targets), torch.tensor(1.0))


@pytest.mark.parametrize("kernel", ["diffusion_flows", "batched_diffusion_flows"])
def test_batched_flows_equal_cellpose_image_by_image(kernel):
    """Both flow kernels (compiled per cell on CPUs, dense tensors for GPUs) give exactly cellpose's
    masks_to_flows_gpu for each image of a batch, whatever the iteration counts of the others (touching cells,
    cells cut by the border, an empty image)."""
    import fastremap
    from cellpose.dynamics import masks_to_flows_gpu
    from vista2d_cellpose import flows as kernels

    from vista2d_core.synthetic import make_image

    rng = np.random.default_rng(3)
    batch = np.stack([make_image(rng, 96)[1] for _ in range(4)] + [np.zeros((96, 96), np.uint16)]).astype(np.int32)
    batch[1] = np.where(batch[1] > 0, batch[1] + 40, 0)  # sparse numbering
    got = getattr(kernels, kernel)(batch)
    assert got.shape == (5, 2, 96, 96) and got.dtype == torch.float32
    for image, flows in zip(batch, got.numpy()):
        renumbered = fastremap.renumber(image, in_place=False)[0]
        expected = masks_to_flows_gpu(renumbered)[0] if renumbered.max() else np.zeros((2, 96, 96))
        np.testing.assert_array_equal(flows, expected.astype(np.float32))
    assert np.abs(got[:4].numpy()).max() > 0.99 and not got[4].any()
