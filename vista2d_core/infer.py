"""``mode = "infer"``: segment files, globs, folders (or the datalists' testing items) and write outputs.

One image at a time (large ones block by block, :mod:`vista2d_core.segment_file`); a file that fails is
reported with its name and reason and the rest still run; under torchrun the inputs are sharded across
ranks and each rank writes its own outputs. With ``infer.resume`` an image whose outputs a previous run
completed (recorded in ``<output>/.vista2d/<stem>.done.json``) is skipped.
"""

from __future__ import annotations

import glob
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np

from . import distributed
from .context import RunContext, start_run
from .errors import UserError
from .executor import open_executor
from .files import atomic_write_text
from .imageio import is_image_file
from .interfaces import Prediction, Writer
from .progress import progress_bar
from .recipe import Recipe

log = logging.getLogger("vista2d")


@attrs.define
class InferSummary:
    """What an infer run did: images done, objects found, seconds, and ``failures`` (path, reason)."""

    done: int = 0
    skipped: int = 0
    objects: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = attrs.Factory(list)


# Name endings of label images and of outputs (ours and cellpose's): never inputs found by a glob or folder.
OUTPUT_ENDINGS = ("_masks", "_cp_masks", "_cp_output", "_flows", "_cellprob", "_overlay", "_rois", "_labels")


def is_output_or_label(path: Path) -> bool:
    """Whether ``path``'s name marks a label image or a segmentation output (``t000_masks.tif``,
    ``t000_masks.ome.zarr``, ...)."""
    stem = path.stem.lower().removesuffix(".ome")
    return stem.endswith(OUTPUT_ENDINGS) or path.suffix.lower() in (".geojson", ".zip")


def expand_inputs(patterns: list[str], base_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, globs (``**`` recursive) and folders (their readable images) -> (sorted unique paths,
    problems). Relative patterns resolve against ``base_dir``. Globs and folders skip label images and
    outputs (:data:`OUTPUT_ENDINGS`, as cellpose does); a file named on its own is always taken."""
    paths: list[Path] = []
    problems: list[tuple[str, str]] = []
    skipped = 0
    for pattern in patterns:
        full = Path(pattern).expanduser()
        full = full if full.is_absolute() else base_dir / full
        if glob.has_magic(str(full)) or (full.is_dir() and not is_image_file(full)):
            if glob.has_magic(str(full)):
                found = [Path(p) for p in sorted(glob.glob(str(full), recursive=True)) if _is_image(Path(p))]
                empty = "no file matches this pattern"
            else:
                found = sorted(p for p in full.iterdir() if _is_image(p) and is_image_file(p))
                empty = "no readable image in this folder"
            kept = [p for p in found if not is_output_or_label(p)]
            skipped += len(found) - len(kept)
            paths += kept
            if not kept:
                problems.append((pattern, empty + (" (only label images or outputs)" if found else "")))
        elif full.exists():
            paths.append(full)
        else:
            problems.append((pattern, "no such file or folder"))
    if skipped:
        log.info("skipped %d label or output file(s) (names ending in _masks, _flows, ...)", skipped)
    return list(dict.fromkeys(paths)), problems


def _is_image(path: Path) -> bool:
    """A file, or a folder that is an image (an OME-Zarr ``.zarr``)."""
    return path.is_file() or (path.is_dir() and is_image_file(path))


def output_stems(paths: list[Path]) -> list[str]:
    """Output name stems: the file stem (``a.ome.tif``, ``a.ome.zarr`` -> ``a``), prefixed by its folder's
    name where stems would collide."""
    stems = [p.stem.removesuffix(".ome") for p in paths]
    return [f"{p.parent.name}_{s}" if stems.count(s) > 1 else s for p, s in zip(paths, stems)]


def infer_inputs(recipe: Recipe, context: RunContext) -> tuple[list[Path], list[tuple[str, str]]]:
    """The images a recipe's infer stage segments: ``infer.inputs`` or, when empty, the datalists'
    testing items."""
    if recipe.infer.inputs:
        return expand_inputs(recipe.infer.inputs, recipe.source.parent if recipe.source else Path.cwd())
    items = context.split.test
    if not items:
        raise UserError("infer.inputs is empty and the datalists have no testing items: nothing to segment")
    return [item.image for item in items], []


def infer(
    recipe: Recipe, context: RunContext | None = None, score: Callable[[Path, np.ndarray], None] | None = None
) -> int:
    """Run the infer stage; return 1 when any input failed (each reported), else 0. ``context``: the run's
    (:func:`~vista2d_core.context.start_run`), set up from ``recipe`` when not given. ``score``: called with
    each image's path and labels once its outputs are written (the eval stage's
    :class:`~vista2d_core.evaluate.Scorer`); an error it raises fails that image."""
    from .segment_file import file_key, segment_file, settings_key
    from .segmenter import Segmenter

    if context is None:
        context = start_run(attrs.evolve(recipe, mode=["infer"]))
    device = context.device
    paths, problems = infer_inputs(recipe, context)
    summary = InferSummary(failures=list(problems))
    for name, reason in problems:
        log.error("error: %s: %s", name, reason)
    pairs = distributed.shard(list(zip(paths, output_stems(paths))))
    out_dir = recipe.output_dir / recipe.infer.output_subdir
    out_dir.mkdir(parents=True, exist_ok=True)
    segmenter = Segmenter(recipe, device=device)
    writers = [(w.name, w.create()) for w in recipe.infer.writers]
    keep_logits = any(w.needs_logits for _, w in writers)
    settings = settings_key(recipe)
    start = time.perf_counter()
    infer = recipe.infer
    with progress_bar() as bar, open_executor(infer.dask_workers, infer.dask_address, bar) as executor:
        for path, stem in bar.track(pairs, description="segmenting"):
            done = out_dir / ".vista2d" / f"{stem}.done.json"
            record = {"image": str(path), "settings": file_key(path, settings),
                      "writers": [name for name, _ in writers]}
            if infer.resume and _completed(done, record):
                summary.skipped += 1
                continue
            try:
                work = out_dir / ".vista2d" / f"{stem}.zarr"
                prediction, objects, cleanup = segment_file(path, segmenter, executor, work, keep_logits)
                written = _write(prediction, writers, out_dir, stem)
                labels = np.asarray(prediction.labels) if score is not None else None  # before the work store goes
                cleanup()
                atomic_write_text(done, json.dumps({**record, "outputs": [str(p) for p in written]}))
                if score is not None:
                    score(path, labels)
            except Exception as exc:  # one broken image must not stop the others
                if isinstance(exc, UserError):
                    reason = str(exc).removeprefix(f"{path}: ")
                else:
                    log.debug("failure on %s", path, exc_info=True)
                    reason = f"{type(exc).__name__}: {exc}"
                summary.failures.append((str(path), reason))
                log.error("error: %s: %s", path, reason)
            else:
                summary.done += 1
                summary.objects += objects
    summary.seconds = time.perf_counter() - start
    report(summary, out_dir)
    distributed.barrier()
    return 1 if summary.failures else 0


def _completed(done: Path, record: dict) -> bool:
    """Whether ``done`` records a run with the same image (file and its size and time), settings and writers
    whose outputs all exist."""
    try:
        previous = json.loads(done.read_text())
    except (OSError, ValueError):
        return False
    outputs = previous.pop("outputs", [])
    return previous == record and all(Path(p).exists() for p in outputs)


def _write(prediction: Prediction, writers: list[tuple[str, Writer]], out_dir: Path, stem: str) -> list[Path]:
    """Run every writer (each one's failure reported, the others still run); the paths written. A UserError
    naming the writers that failed when any did."""
    written, failed = [], []
    for name, writer in writers:
        try:
            written += writer.write(prediction, out_dir, stem)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            log.debug("writer %s failed", name, exc_info=True)
            failed.append(f"writer {name}: {reason}")
    if failed:
        raise UserError("; ".join(failed))
    return written


def report(summary: InferSummary, out_dir: Path) -> None:
    """Log the end-of-run summary (images, objects, seconds per image, failures)."""
    per_image = summary.seconds / summary.done if summary.done else 0.0
    rank = f"[rank {distributed.rank()}] " if distributed.world_size() > 1 else ""
    log.info(
        "%ssegmented %d images, %d objects, %.2f s/image -> %s",
        rank, summary.done, summary.objects, per_image, out_dir,
    )
    if summary.skipped:
        log.info("%sskipped %d image(s) whose outputs are complete (infer.resume)", rank, summary.skipped)
    if summary.failures:
        log.error("%s%d input(s) failed: %s", rank, len(summary.failures), ", ".join(f for f, _ in summary.failures))
