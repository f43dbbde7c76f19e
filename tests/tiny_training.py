"""Tiny training recipes for the training tests: vit_t on a few 64 px synthetic images, CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w


def tiny_recipe_data(out: Path, data: Path, **train: Any) -> dict[str, Any]:
    """A train-only recipe table: 6 training (2 of them validation) + 2 testing 64 px images."""
    return {
        "mode": "train",
        "output_dir": str(out),
        "seed": 7,
        "device": "cpu",
        "model": {"backbone": {"name": "sam", "variant": "vit_t"}},
        "data": {"synthetic": {"folder": str(data), "train_images": 6, "test_images": 2, "size": 64},
                 "cache": True},
        "train": {"epochs": 2, "batch_size": 2, "augment": {"roi_size": [64, 64]}, **train},
        "infer": {"roi_size": [64, 64]},
    }


def write_recipe(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path
