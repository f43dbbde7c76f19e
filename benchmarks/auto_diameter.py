"""How well ``infer.auto_diameter`` finds each image's scale: a checkpoint's AP@0.5 on labelled images zoomed by
known factors, with the factor chosen three ways: the measured one alone (one pass at scale 1 measures the
objects' median diameter, then ``model.diameter / measured``), the measured one and its neighbours x1.4 and
/1.4 with the winner by the share of the foreground its masks take in (what ``infer.auto_diameter`` does),
and the best by AP of all the passes made (an oracle: what a perfect choice among them would reach).

    python benchmarks/auto_diameter.py --checkpoint runs/quickstart/model.pt
        [--datalist data/synthetic/datalist.json] [--zooms 0.5 0.7 1.4 2.0] [--tta]

Images are the datalist's testing items (the quickstart's synthetic test split by default; real images:
``--datalist ../shared/realdata/datalist.json --zooms 1``), each resampled by every zoom (bilinear; labels
nearest), so the right factor is known to move by 1 / zoom.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from cellpose.metrics import average_precision

    from vista2d_core import segmenter as segmenter_module
    from vista2d_core.imageio import read_image, read_labels
    from vista2d_core.preprocess import channels_first
    from vista2d_core.segmenter import Segmenter

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "runs/quickstart/model.pt")
    parser.add_argument("--datalist", type=Path, default=ROOT / "data/synthetic/datalist.json")
    parser.add_argument("--zooms", type=float, nargs="+", default=[0.5, 0.7, 1.4, 2.0])
    parser.add_argument("--tta", action="store_true", help="test-time augmentation on the final pass")
    args = parser.parse_args(argv)
    if not args.checkpoint.is_file() or not args.datalist.is_file():
        print(f"error: {args.checkpoint if not args.checkpoint.is_file() else args.datalist}: not found "
              "(run the quickstart first: vista2d run recipes/quickstart.toml)", file=sys.stderr)
        return 2
    seg = Segmenter.from_checkpoint(args.checkpoint, ["infer.auto_diameter=true", f"infer.tta={str(args.tta).lower()}"])
    step, logits_at = segmenter_module.AUTO_STEP, seg._logits
    passes: dict[float, object] = {}

    def recorded(data, ranges, scale, predict=None):  # every pass of auto_scale, kept for the oracle
        passes[scale] = logits_at(data, ranges, scale, predict)
        return passes[scale]

    seg._logits = recorded
    rows = []
    for item in json.loads(args.datalist.read_text())["testing"]:
        image = channels_first(np.asarray(read_image(args.datalist.parent / item["image"]).data))
        truth = read_labels(args.datalist.parent / item["label"])
        for zoom in args.zooms:
            zoomed = ndimage.zoom(image.astype(np.float32), (1,) * (image.ndim - 2) + (zoom, zoom), order=1)
            true = ndimage.zoom(truth, zoom, order=0).astype(np.int32)

            def ap(labels: np.ndarray, true: np.ndarray = true) -> float:
                return float(average_precision(true, labels.astype(np.int32), threshold=[0.5])[0][0])

            chosen, aps = [], []
            passes.clear()
            for trial_step in (1.0, step):  # 1.0: the measured factor alone
                segmenter_module.AUTO_STEP = trial_step
                with torch.inference_mode():
                    scale, _, labels = seg.auto_scale(zoomed)
                    if args.tta:
                        labels = seg.postprocessor(logits_at(zoomed, None, scale))
                chosen.append(scale)
                aps.append(ap(labels))
            with torch.inference_mode():
                oracle = max(ap(seg.postprocessor(logits_at(zoomed, None, s) if args.tta else passes[s])) for s in passes)
            rows.append([*aps, max(oracle, *aps)])
            print(f"{Path(item['image']).name:>16s} x{zoom:<4} measured x{chosen[0]:.2f} AP {aps[0]:.2f} | "
                  f"trials x{chosen[1]:.2f} AP {aps[1]:.2f} | best pass {rows[-1][2]:.2f}", flush=True)
    segmenter_module.AUTO_STEP = step
    mean = np.mean(rows, axis=0)
    print(f"mean AP@0.5 over {len(rows)} images: measured {mean[0]:.3f}, trials {mean[1]:.3f}, best pass {mean[2]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
