"""Cellpose-SAM side by side: cellpose's own ``CellposeModel.eval`` against ``recipes/cellpose_sam.toml``,
same weights, same image, same precision, timed in one run, with the agreement of flows and masks.

    python benchmarks/cellpose_sam.py [--weights FILE] [--sizes 512 2048] [--precisions fp32 bf16]
        [--device cpu|cuda] [--runtime eager|compile|tensorrt] [--json benchmarks/results/cellpose_sam.json]

``--weights``: a cellpose 4 weight file (``cpsam_v2``); without it a randomly initialised one (ViT-L, the same
compute) is made, whose masks are empty: then ``post_*`` adds what the networks' time leaves out, the
postprocessing of cell-like logits of the same size (dense touching cells, ``benchmarks/dynamics.py``) by
cellpose's ``compute_masks`` (what ``eval`` runs) and by the recipe's ``cellpose_fast``, each with cellpose's
defaults; ``with_cells_*`` = end to end + that. Precision: fp32 on both sides, or bf16 (cellpose's
``use_bfloat16=True``; ours the ``amp`` runtime in bfloat16). End to end = image array in, labels out
(normalisation, tiles, network, blending, dynamics), the best of ``--repeats`` (the two sides alternating) after a
warm-up on a 256 px image.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dynamics import dense_labels, logits_of


def random_weights(folder: Path) -> Path:
    """A cellpose 4 weight file of a randomly initialised CPSAM (ViT-L)."""
    from cellpose.vit import CPSAM

    torch.manual_seed(0)
    path = folder / "cpsam_random"
    torch.save(CPSAM().state_dict(), path)
    return path


def test_image(size: int, seed: int = 0) -> np.ndarray:
    """A synthetic grey uint16 microscopy image (the quickstart's generator)."""
    from vista2d_core.synthetic import make_image

    image, _ = make_image(np.random.default_rng(seed), size)
    return image if image.ndim == 2 else image[..., 0]


def four_digits(value: float) -> float:
    """``value`` to 4 significant digits, for times and their ratios: a ratio of two reported times stays
    within 0.2 % of the reported ratio (3 decimals of a 35 ms time did not)."""
    return float(f"{value:.4g}")


def best_time(fn: Any, repeats: int, device: str) -> tuple[float, Any]:
    """Best wall-clock seconds of ``repeats`` calls of ``fn()`` and its last result."""
    times, result = [], None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), result


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from cellpose.dynamics import resize_and_compute_masks
    from cellpose.models import CellposeModel

    from vista2d_core.evaluate import average_precision
    from vista2d_core.segmenter import Segmenter

    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(args.weights) if args.weights else random_weights(Path(tmp))
        for precision in args.precisions:
            theirs = CellposeModel(pretrained_model=str(weights), use_bfloat16=precision == "bf16",
                                   device=torch.device(args.device))
            runtime = "{name='amp', dtype='bfloat16'}" if precision == "bf16" else f"{{name='{args.runtime}'}}"
            ours = Segmenter.from_checkpoint(weights, [f"device='{args.device}'", f"infer.runtime={runtime}"])
            warm = test_image(256, seed=99)
            theirs.eval(warm)
            ours.segment(warm)
            for size in args.sizes:
                image = test_image(size)
                t_theirs = t_ours = float("inf")
                for _ in range(args.repeats):  # interleaved: a shared machine's speed drifts
                    seconds, (masks, flows, _) = best_time(partial(theirs.eval, image), 1, args.device)
                    t_theirs = min(t_theirs, seconds)
                    seconds, result = best_time(partial(ours.segment, image), 1, args.device)
                    t_ours = min(t_ours, seconds)
                row = {
                    "size": size, "precision": precision, "device": args.device, "runtime": runtime,
                    "weights": "given" if args.weights else "random",
                    "cellpose_s": four_digits(t_theirs), "vista2d_s": four_digits(t_ours),
                    "ratio": four_digits(t_theirs / t_ours),
                    "flows_max_abs_diff": float(np.abs(result.flows - flows[1]).max()),
                    "cellprob_max_abs_diff": float(np.abs(result.logits[0] - flows[2]).max()),
                    "objects": [int(masks.max()), int(result.labels.max())],
                    "masks_ap90": average_precision(masks, result.labels, [0.9])[0],
                }
                if not args.weights:
                    logits = logits_of(dense_labels(size))
                    post = {"niter": 200, "cellprob_threshold": 0.0, "flow_threshold": 0.4, "min_size": 15,
                            "max_size_fraction": 0.4, "device": torch.device(args.device)}
                    cellpose_post = partial(resize_and_compute_masks, logits[1:], logits[0], **post)
                    t_post_theirs, cp_masks = best_time(cellpose_post, 1, args.device)
                    t_post_ours, our_masks = best_time(partial(ours.postprocessor, logits), 1, args.device)
                    row.update({
                        "post_cellpose_s": four_digits(t_post_theirs), "post_vista2d_s": four_digits(t_post_ours),
                        "post_objects": [int(cp_masks.max()), int(our_masks.max())],
                        "post_masks_ap90": average_precision(cp_masks, our_masks, [0.9])[0],
                        "with_cells_ratio": four_digits((t_theirs + t_post_theirs) / (t_ours + t_post_ours)),
                    })
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="a cellpose 4 weight file (default: random ViT-L weights)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtime", default="eager", help="vista2d's runtime for fp32 (eager, compile, tensorrt)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    with torch.no_grad():
        rows = run(args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {"torch": torch.__version__, "threads": torch.get_num_threads()}
        if args.device == "cuda":
            meta["gpu"] = torch.cuda.get_device_name()
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
