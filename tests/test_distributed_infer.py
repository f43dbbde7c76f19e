"""Inference under torchrun: inputs are sharded across ranks and each rank writes its own outputs."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from conftest import UNTRAINED_POSTPROCESSOR, write_recipe

pytestmark = pytest.mark.slow


def test_two_ranks_share_the_inputs(tmp_path, rng):
    for i in range(5):
        tifffile.imwrite(tmp_path / f"img{i}.tif", rng.integers(0, 255, (64, 80), dtype=np.uint8))
    recipe = write_recipe(
        tmp_path / "infer.toml", "infer",
        infer={"inputs": [str(tmp_path / "*.tif")], "postprocessor": UNTRAINED_POSTPROCESSOR},
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           "-m", "vista2d_core", "run", str(recipe)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out" / "predictions"
    assert sorted(p.name for p in out.iterdir() if p.name != ".vista2d") == [f"img{i}_masks.tif" for i in range(5)]
    assert sorted(p.name for p in (out / ".vista2d").iterdir()) == [f"img{i}.done.json" for i in range(5)]
    assert "[rank 0] segmented 3 images" in done.stderr and "[rank 1] segmented 2 images" in done.stderr
