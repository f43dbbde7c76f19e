"""Large images: peak memory and time of ``vista2d segment`` whole vs block by block, agreement of the two,
and the same labels on a 2-worker dask cluster.

    python benchmarks/large_images.py --checkpoint runs/quickstart/model.pt [--sizes 1024 4096 8192] \
        --set infer.tta=false --set infer.runtime.name=eager --set infer.overlap=0.25

The test image is a real one (``../shared/realdata`` fluorescence nuclei by default) tiled with mirrored
copies up to each size. Each ``vista2d segment`` runs in its own process; its peak RSS is the process's
``ru_maxrss`` (dask workers not included). Results print as a table and go to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

ROOT = Path(__file__).resolve().parents[1]
REALDATA = ROOT.parent / "shared" / "realdata" / "fluo_nuclei_stardist" / "img2d.tif"

# Runs vista2d segment as a child and prints the child's peak RSS (kB) on the last line.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], check=False).returncode\n"
    "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def tiled(tile: np.ndarray, size: int) -> np.ndarray:
    """``tile`` (H, W) repeated with mirrored copies (no seams in the cells) to (size, size)."""
    block = np.block([[tile, tile[:, ::-1]], [tile[::-1], tile[::-1, ::-1]]])
    reps = -(-size // block.shape[0]), -(-size // block.shape[1])
    return np.tile(block, reps)[:size, :size]


SETTINGS: list[str] = []  # --set for every run (from the command line)


def segment(image: Path, checkpoint: Path, out: Path, *sets: str) -> tuple[float, float]:
    """Run ``vista2d segment`` on ``image`` with :data:`SETTINGS` and ``sets``; (seconds, peak RSS in MB)."""
    args = [sys.executable, "-m", "vista2d_core", "segment", str(image), "-c", str(checkpoint), "-o", str(out)]
    for s in [*SETTINGS, *sets]:
        args += ["--set", s]
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _MEASURE, *args], check=False, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    code, rss = result.stdout.split()[-2:]
    if code != "0":
        raise SystemExit(f"vista2d segment failed on {image}:\n{result.stderr[-2000:]}")
    return seconds, int(rss) / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--image", type=Path, default=REALDATA, help="the tile (2-D)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192])
    parser.add_argument("--whole-up-to", type=int, default=4096, help="largest size also run whole")
    parser.add_argument("--block", type=int, default=1024, help="infer.block_size of the block-wise runs")
    parser.add_argument("--agreement-size", type=int, default=2048)
    parser.add_argument("--dask-size", type=int, default=1024)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "large_images.json")
    parser.add_argument("--set", dest="sets", action="append", metavar="KEY=VALUE",
                        help="a recipe override for every run (default: infer.tta=false, infer.runtime.name=eager)")
    args = parser.parse_args(argv)
    args.sets = args.sets or ["infer.tta=false", "infer.runtime.name=eager"]
    SETTINGS[:] = args.sets
    from vista2d_core.evaluate import average_precision

    tile = tifffile.imread(args.image)
    report: dict = {"checkpoint": str(args.checkpoint), "tile": str(args.image), "block": args.block,
                    "settings": args.sets, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in sorted({*args.sizes, args.agreement_size, args.dask_size}):
            tifffile.imwrite(tmp / f"tiled{size}.tif", tiled(tile, size), tile=(512, 512), bigtiff=True)
        for size in args.sizes:
            modes = [("blocks", f"infer.block_size={args.block}")]
            if size <= args.whole_up_to:
                modes.append(("whole", "infer.block_size=0"))
            for mode, setting in modes:
                seconds, rss = segment(tmp / f"tiled{size}.tif", args.checkpoint, tmp / f"{mode}{size}", setting)
                row = {"size": size, "mode": mode, "seconds": round(seconds, 1), "peak_rss_mb": round(rss),
                       "us_per_pixel": round(seconds / size**2 * 1e6, 2)}
                report["runs"].append(row)
                print(json.dumps(row), flush=True)
        size = args.agreement_size
        outs = {}
        for mode, setting in (("whole", "infer.block_size=0"), ("blocks", f"infer.block_size={args.block}")):
            out = tmp / f"agree-{mode}"
            segment(tmp / f"tiled{size}.tif", args.checkpoint, out, setting)
            outs[mode] = tifffile.imread(out / f"tiled{size}_masks.tif")
        ap50, ap75 = average_precision(outs["whole"], outs["blocks"], [0.5, 0.75])
        report["agreement"] = {"size": size, "block": args.block, "objects_whole": int(outs["whole"].max()),
                               "objects_blocks": int(outs["blocks"].max()), "ap50": round(ap50, 4),
                               "ap75": round(ap75, 4)}
        print(json.dumps(report["agreement"]), flush=True)
        size, block = args.dask_size, max(args.dask_size // 2, 256)
        labels = {}
        for mode, extra in (("here", []), ("dask", ["infer.dask_workers=2"])):
            out = tmp / f"dask-{mode}"
            seconds, _ = segment(tmp / f"tiled{size}.tif", args.checkpoint, out, f"infer.block_size={block}", *extra)
            labels[mode] = (tifffile.imread(out / f"tiled{size}_masks.tif"), seconds)
        report["dask"] = {"size": size, "block": block, "workers": 2,
                          "identical": bool(np.array_equal(labels["here"][0], labels["dask"][0])),
                          "seconds_in_process": round(labels["here"][1], 1),
                          "seconds_dask": round(labels["dask"][1], 1)}
        print(json.dumps(report["dask"]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
