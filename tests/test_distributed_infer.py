"""Inference under torchrun: inputs are sharded across ranks and each rank writes its own outputs, and
each run leaves the process group it joined."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch.multiprocessing as mp
from conftest import UNTRAINED_POSTPROCESSOR, free_port, write_recipe

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


def _run_twice(rank: int, port: int, good: str, bad: str, out: str) -> None:
    """Rank ``rank`` of two: run ``good`` then ``bad`` (which fails after joining the group) in this process,
    and write whether a process group was still joined after each, and the error of the second."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    from vista2d_core import load_recipe
    from vista2d_core.errors import UserError
    from vista2d_core.runner import run

    status = run(load_recipe(Path(good), []))
    joined_after_good = dist.is_initialized()
    failing = load_recipe(Path(bad), [])
    try:
        run(failing)
        error = ""
    except UserError as e:
        error = str(e)
    Path(out, f"rank{rank}.json").write_text(json.dumps(
        {"status": status, "joined_after_good": joined_after_good, "joined_after_bad": dist.is_initialized(),
         "error": error}))


def test_each_run_leaves_the_process_group_it_joined(tmp_path, rng):
    """Left to the interpreter's exit, a gloo group can abort its rank after the work is done (SIGABRT,
    "terminate called without an active exception"); a second run in the same process joins afresh."""
    for i in range(3):
        tifffile.imwrite(tmp_path / f"img{i}.tif", rng.integers(0, 255, (64, 80), dtype=np.uint8))
    good = write_recipe(tmp_path / "infer.toml", "infer",
                        infer={"inputs": [str(tmp_path / "*.tif")], "postprocessor": UNTRAINED_POSTPROCESSOR})
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"training": [], "testing": []}))
    bad = write_recipe(tmp_path / "train.toml", "train", data={"datalists": [{"path": str(data)}]})
    mp.spawn(_run_twice, args=(free_port(), str(good), str(bad), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert result["status"] == 0
        assert not result["joined_after_good"] and not result["joined_after_bad"], result
        assert "no training items" in result["error"], result["error"]
    assert len(list((tmp_path / "out" / "predictions").glob("*_masks.tif"))) == 3
