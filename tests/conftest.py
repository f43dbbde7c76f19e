"""Shared fixtures: tiny recipes and synthetic images for fast tests."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import tomli_w

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def tiny_model_table(**backbone: object) -> dict:
    """A ``[model]`` table with the small vit_t backbone (random init)."""
    return {"backbone": {"name": "sam", "variant": "vit_t", **backbone}, "head": {"name": "vista2d"}}


# With untrained weights, a foreground threshold below every logit still makes cellpose find many objects.
UNTRAINED_POSTPROCESSOR = {"name": "cellpose", "cellprob_threshold": -100.0, "flow_threshold": 0.0}


def write_recipe(path: Path, mode: str, **sections: object) -> Path:
    """Write a CPU recipe with the tiny model (output into ``out`` beside it), ``sections`` merged in."""
    data = {"mode": mode, "output_dir": "out", "device": "cpu", "model": tiny_model_table(), **sections}
    path.write_text(tomli_w.dumps(data))
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


@pytest.fixture(autouse=True)
def _no_model_downloads(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test (and its subprocesses) gets an empty model cache and VISTA2D_OFFLINE=1: a recipe that names
    a model (recipes/vista2d.toml) never downloads; tests of downloads unset it and serve files locally."""
    monkeypatch.setenv("VISTA2D_HOME", str(tmp_path_factory.mktemp("vista2d_home")))
    monkeypatch.setenv("VISTA2D_OFFLINE", "1")
