"""Channel rules and intensity scaling match the reference (MONAI transforms)."""

import numpy as np
import pytest
import torch

from vista2d_core.errors import UserError
from vista2d_core.preprocess import normalize, select_channels


def test_channel_rules():
    grey = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    assert select_channels(grey).shape == (3, 3, 4)
    assert (select_channels(grey[0]) == grey[0]).all()
    two = np.stack([np.zeros((3, 4)), np.ones((3, 4))])
    assert [c.mean() for c in select_channels(two)] == [0, 1, 0]
    five = np.arange(5)[:, None, None] * np.ones((5, 2, 2))
    assert [c.mean() for c in select_channels(five)] == [0, 1, 2]
    assert [c.mean() for c in select_channels(five, [4, 2])] == [4, 2, 4]
    with pytest.raises(UserError, match="data.channels"):
        select_channels(five, [7])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_scaling_matches_monai(dtype, rng):
    transforms = pytest.importorskip("monai.transforms")
    data = (rng.gamma(2.0, 30.0, size=(3, 64, 80))).astype(dtype)
    data[1] *= 3
    reference = transforms.Compose(
        [
            transforms.ScaleIntensity(minv=0, maxv=1, channel_wise=True),
            transforms.ScaleIntensityRangePercentiles(lower=1, upper=99, b_min=0, b_max=1, clip=True, channel_wise=True),
        ]
    )(torch.as_tensor(data, dtype=torch.float32))
    ours = normalize(data)
    assert ours.dtype == np.float32 and ours.min() >= 0 and ours.max() <= 1
    np.testing.assert_allclose(ours, np.asarray(reference), atol=1e-5)


def test_flat_image_is_zero_not_nan():
    assert not np.isnan(normalize(np.full((5, 5), 7, np.uint16))).any()
