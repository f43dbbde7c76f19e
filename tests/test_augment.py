"""Training augmentations: geometry shared by images and labels, each transform switchable, reproducible."""

from __future__ import annotations

import math

import attrs
import numpy as np
import pytest
import torch

from vista2d_core.augment import Augmenter, gaussian_blur, pad_crop
from vista2d_core.recipe import Augment

OFF = {"affine_prob": 0.0, "flip_prob": 0.0, "noise_prob": 0.0, "gamma_prob": 0.0, "smooth_prob": 0.0,
       "histogram_shift_prob": 0.0, "sharpen_prob": 0.0}


def only(**options) -> Augment:
    return Augment(**{**OFF, **options})


def _batch(n=4, size=64, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros((n, size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for b in range(n):
        for i in range(1, 6):
            cy, cx = rng.integers(8, size - 8, 2)
            labels[b][(yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(3, 8) ** 2] = i
    labels = torch.from_numpy(labels)
    images = (labels > 0).float()[:, None].repeat(1, 3, 1, 1) * 0.8 + 0.1
    return images, labels


def test_pad_crop_pads_small_images_and_keeps_image_and_labels_aligned():
    rng = np.random.default_rng(0)
    labels = np.arange(40 * 30, dtype=np.int32).reshape(40, 30) + 1
    image = np.stack([labels] * 3).astype(np.float32)
    img, lab = pad_crop(image, labels, (32, 32), rng)
    assert img.shape == (3, 32, 32) and lab.shape == (32, 32)
    assert np.array_equal(img[0], lab)
    assert (lab[:, 0] == 0).all() and (lab[:, -1] == 0).all()  # width 30 padded by 1 on each side
    windows = {tuple(pad_crop(image, labels, (32, 32), rng)[1][1, 1:3]) for _ in range(20)}
    assert len(windows) > 1  # the crop moves


def test_everything_off_is_the_identity():
    images, labels = _batch()
    out, lab = Augmenter(only(), torch.Generator().manual_seed(0))(images, labels)
    assert torch.equal(out, images) and torch.equal(lab, labels)


def test_quarter_turn_moves_images_and_labels_together():
    images, labels = _batch(n=2)
    out, lab = Augmenter.affine(images, labels, torch.full((2,), math.pi / 2), torch.ones(2, 2))
    turned = torch.rot90(labels, 1, dims=(1, 2))
    if not torch.equal(lab, turned):
        turned = torch.rot90(labels, -1, dims=(1, 2))
    assert torch.equal(lab, turned)
    assert torch.allclose(out[:, 0], (turned > 0).float() * 0.8 + 0.1, atol=1e-4)


def test_scale_changes_object_size_per_axis():
    labels = torch.zeros(1, 64, 64, dtype=torch.int32)
    labels[0, 24:40, 24:40] = 7
    images = labels[:, None].float().repeat(1, 3, 1, 1)
    _, lab = Augmenter.affine(images, labels, torch.zeros(1), torch.tensor([[0.5, 1.0]]))
    rows, cols = torch.nonzero(lab[0] == 7, as_tuple=True)
    assert rows.max() - rows.min() + 1 == 32 and cols.max() - cols.min() + 1 == 16  # y zoomed in 2x, x kept
    assert set(lab.unique().tolist()) <= {0, 7}


def test_affine_labels_stay_original_values_and_dtype():
    images, labels = _batch(n=8)
    out, lab = Augmenter(only(affine_prob=1.0), torch.Generator().manual_seed(1))(images, labels)
    assert lab.dtype == labels.dtype and out.shape == images.shape
    assert set(lab.unique().tolist()) <= set(labels.unique().tolist())
    assert not torch.equal(lab, labels)
    # bilinear image and nearest labels agree away from edges: inside objects the image is bright
    assert (out[:, 0][lab > 0] > 0.5).float().mean() > 0.95


def test_flips_apply_to_both():
    images, labels = _batch()
    out, lab = Augmenter(only(flip_prob=1.0), torch.Generator())(images, labels)
    assert torch.equal(lab, labels.flip(-1).flip(-2)) and torch.equal(out, images.flip(-1).flip(-2))


def test_probability_is_per_sample():
    images, labels = _batch(n=64, size=32)
    out, _ = Augmenter(only(noise_prob=0.5), torch.Generator().manual_seed(0))(images, labels)
    changed = (out != images).flatten(1).any(1).float().mean()
    assert 0.3 < changed < 0.7


def test_intensity_transforms_leave_labels_and_behave():
    images, labels = _batch()
    gen = torch.Generator().manual_seed(0)
    out, lab = Augmenter(only(noise_prob=1.0, noise_std=0.1), gen)(images, labels)
    assert torch.equal(lab, labels) and 0 < (out - images).std() < 0.1
    out, _ = Augmenter(only(gamma_prob=1.0), gen)(images, labels)
    assert torch.allclose(out.amin((1, 2, 3)), images.amin((1, 2, 3)), atol=1e-5)
    assert (out <= images + 1e-6).all()  # gamma >= 1 darkens the mid-tones
    out, _ = Augmenter(only(histogram_shift_prob=1.0), gen)(images, labels)
    assert torch.allclose(out.amax((1, 2, 3)), images.amax((1, 2, 3)), atol=1e-5)
    out, _ = Augmenter(only(smooth_prob=1.0), gen)(images, labels)
    assert out.std() < images.std() and torch.allclose(out.mean(), images.mean(), atol=0.02)
    out, _ = Augmenter(only(sharpen_prob=1.0), gen)(images, labels)
    assert out.max() > images.max() + 0.5  # overshoot at edges


def test_inversion_mirrors_intensities_within_each_image():
    images, labels = _batch()
    out, lab = Augmenter(only(invert_prob=1.0), torch.Generator().manual_seed(0))(images, labels)
    assert torch.equal(lab, labels)
    assert torch.allclose(out[labels[:, None].expand_as(out) > 0], torch.tensor(0.1))  # cells were 0.9
    assert torch.allclose(out[labels[:, None].expand_as(out) == 0], torch.tensor(0.9))


def test_stain_jitter_changes_colour_images_per_channel_and_leaves_grey_ones_grey():
    images, labels = _batch()
    images[:2, 1] *= 0.5  # two colour images, two grey ones
    out, _ = Augmenter(only(stain_prob=1.0, stain_std=0.3), torch.Generator().manual_seed(0))(images, labels)
    assert torch.equal(out[2:], images[2:])
    ratios = (out[:2] - out[:2].amin((2, 3), keepdim=True)) / (images[:2] - images[:2].amin((2, 3), keepdim=True))
    gains = ratios.nan_to_num(0).amax((2, 3))  # (2 images, 3 channels): each channel its own gain
    assert (gains - gains[:, :1]).abs().amax(1).min() > 1e-3


def test_gaussian_blur_keeps_constants_and_spreads_a_point():
    flat = torch.full((2, 3, 20, 20), 0.3)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([1.0, 2.0]), torch.tensor([1.5, 0.5])), flat)
    point = torch.zeros(1, 1, 21, 21)
    point[0, 0, 10, 10] = 1
    blurred = gaussian_blur(point, torch.tensor([2.0]), torch.tensor([1.0]))
    assert torch.isclose(blurred.sum(), torch.tensor(1.0), atol=1e-5)
    assert blurred[0, 0, 13, 10] > blurred[0, 0, 10, 13]  # wider along y


def test_reproducible_from_the_generator_seed():
    images, labels = _batch(n=6)

    def run(seed):
        return Augmenter(Augment(), torch.Generator().manual_seed(seed))(images, labels)

    a, b, c = run(3), run(3), run(4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_options_validate():
    with pytest.raises(ValueError):
        attrs.evolve(Augment(), flip_prob=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_result_on_gpu():
    images, labels = _batch(n=6)
    cpu = Augmenter(Augment(), torch.Generator().manual_seed(5))(images, labels)
    gpu = Augmenter(Augment(), torch.Generator().manual_seed(5))(images.cuda(), labels.cuda())
    assert torch.allclose(cpu[0], gpu[0].cpu(), atol=1e-4)
    assert (cpu[1] != gpu[1].cpu()).float().mean() < 0.01
