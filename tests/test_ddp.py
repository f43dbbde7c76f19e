"""Two gloo processes on the CPU: each rank trains on its own share, and the network stays identical.

The comparison is of each rank's network right after the training loop (the test stage, which reloads
rank 0's ``model.pt`` on every rank, is off): parameters agree only if DDP averaged the gradients, and
buffers (BatchNorm running statistics) only if the trainer made them rank 0's on every rank.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from conftest import free_port
from tiny_training import tiny_recipe_data


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    from vista2d_core.recipe import recipe_from_dict
    from vista2d_core.train import Trainer

    tmp_path = Path(tmp)
    data = tiny_recipe_data(tmp_path / "run", tmp_path / "data", epochs=2, test=False)
    trainer = Trainer(recipe_from_dict(data))
    trainer.fit()
    state = {
        "seen": trainer.seen,
        "ddp": isinstance(trainer.model, torch.nn.parallel.DistributedDataParallel),
        "parameters": {n: p.detach().clone() for n, p in trainer.net.named_parameters()},
        "buffers": {n: b.clone() for n, b in trainer.net.named_buffers()},
    }
    torch.save(state, tmp_path / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_share_the_data_and_agree_on_the_network(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert len(r0["seen"]) == len(r1["seen"]) == 2  # 4 training items: 2 per rank in the last epoch
    assert not set(r0["seen"]) & set(r1["seen"])
    for kind in ("parameters", "buffers"):
        assert r0[kind].keys() == r1[kind].keys() and r0[kind]
        different = [name for name, t in r0[kind].items() if not torch.equal(t, r1[kind][name])]
        assert not different, f"{kind} differ between the ranks: {different[:4]}"
    initial = _initial_state(tmp_path)
    trained = {**r0["parameters"], **r0["buffers"]}
    for group in ("model.mask_decoder.0.weight", "model.mask_decoder.0.running_mean"):
        assert not torch.equal(trained[group], initial[group]), f"{group} did not change: no training happened"
    saved = torch.load(tmp_path / "run" / "model_final.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[name], t) for name, t in trained.items())  # rank 0 saved the same network
    assert r0["ddp"] and r1["ddp"]


def _initial_state(tmp_path: Path) -> dict[str, torch.Tensor]:
    from vista2d_core.model import build_model
    from vista2d_core.recipe import recipe_from_dict

    recipe = recipe_from_dict(tiny_recipe_data(tmp_path / "run", tmp_path / "data"))
    torch.manual_seed(recipe.seed)
    return build_model(recipe.model).state_dict()
