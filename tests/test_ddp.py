"""Two gloo processes on the CPU: each rank trains on its own share, and the weights stay identical."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from tiny_training import tiny_recipe_data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from vista2d_core.recipe import recipe_from_dict
    from vista2d_core.train import Trainer

    tmp_path = Path(tmp)
    trainer = Trainer(recipe_from_dict(tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=2)))
    trainer.fit()
    torch.save({"seen": trainer.seen, "state": trainer.net.state_dict()}, tmp_path / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_share_the_data_and_agree_on_the_weights(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert len(r0["seen"]) == len(r1["seen"]) == 2  # 4 training items: 2 per rank in the last epoch
    assert not set(r0["seen"]) & set(r1["seen"])
    for key, tensor in r0["state"].items():
        assert torch.equal(tensor, r1["state"][key]), key
    initial = _initial_weights(tmp_path)
    assert any(not torch.equal(t, initial[k]) for k, t in r0["state"].items())  # and they did train
    assert (tmp_path / "run" / "model.pt").is_file()


def _initial_weights(tmp_path: Path) -> dict[str, torch.Tensor]:
    from vista2d_core.model import build_model
    from vista2d_core.recipe import recipe_from_dict

    recipe = recipe_from_dict(tiny_recipe_data(tmp_path / "run", tmp_path / "data"))
    torch.manual_seed(recipe.seed)
    return build_model(recipe.model).state_dict()
