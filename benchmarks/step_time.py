"""Training step time of network variants (docs/training.md, "A narrower network"): forward, backward and an
AdamW step (fused, as the trainer's) on a random batch of the recipe's ``train.batch_size`` crops of
``train.augment.roi_size``, each variant the recipe's model with ``--set``-style overrides, timed back to back.

    python benchmarks/step_time.py [--recipe recipes/quickstart.toml] [--threads 2] [--steps 10]
        [--variant "vit_t: model.backbone.mlp_ratio=4.0; model.backbone.neck_channels=256" ...]

Without ``--variant``: the quickstart's network against vit_t's MLP and neck widths, one at a time and both.
A step's other parts (flow targets, crops, augmentation) are not included: they do not depend on the network.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
WIDE = {"mlp": "model.backbone.mlp_ratio=4.0", "neck": "model.backbone.neck_channels=256"}
VARIANTS = [
    f"vit_t (MLP 4x, neck 256): {WIDE['mlp']}; {WIDE['neck']}",
    f"MLP 4x, neck 128: {WIDE['mlp']}",
    f"MLP 2x, neck 256: {WIDE['neck']}",
    "as the recipe: ",
]


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``"name: key=value; key=value"`` -> (name, overrides)."""
    name, _, overrides = text.partition(":")
    return name.strip(), [o.strip() for o in overrides.split(";") if o.strip()]


def step_seconds(recipe_path: Path, overrides: list[str], steps: int) -> tuple[int, float]:
    """(parameters, median seconds of a training step after two warm-up steps) of the recipe's network."""
    from vista2d_core.model import build_model
    from vista2d_core.recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    torch.manual_seed(0)
    net = build_model(recipe.model).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=True)
    images = torch.rand(recipe.train.batch_size, 3, *recipe.train.augment.roi_size)
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        net(images).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return sum(p.numel() for p in net.parameters()), statistics.median(times[2:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "quickstart.toml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override for every variant")
    parser.add_argument("--variant", action="append", help='"name: key=value; key=value" (repeatable)')
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name, overrides in map(parse_variant, args.variant or VARIANTS):
        parameters, seconds = step_seconds(args.recipe, args.overrides + overrides, args.steps)
        rows.append({"variant": name, "parameters": parameters, "step_s": seconds})
        print(f"{name:32s} {parameters / 1e6:6.2f} M  {seconds:.3f} s per step", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "steps": args.steps, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
