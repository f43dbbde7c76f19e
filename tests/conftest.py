"""Shared fixtures: tiny recipes and synthetic images for fast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def tiny_model_table(**backbone: object) -> dict:
    """A ``[model]`` table with the small vit_t backbone (random init)."""
    return {"backbone": {"name": "sam", "variant": "vit_t", **backbone}, "head": {"name": "vista2d"}}


def disk_labels(size: int = 96, centers=((30, 30), (60, 64), (30, 75)), radius: int = 10) -> np.ndarray:
    """(size, size) uint16 labels with one disk per centre, numbered from 1."""
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.uint16)
    for i, (cy, cx) in enumerate(centers, start=1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = i
    return labels


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
