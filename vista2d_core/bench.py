"""``vista2d bench``: the reference's speed table for any recipe, one column per runtime.

Row "model computation": a random (B, 3, roi, roi) batch through each runtime's prepared callable,
after warm-up, synchronised on CUDA; the median over repeats of (batch time / B), in ms per tile.
Row "end to end": read, preprocess, sliding window, postprocess and write (into a temporary folder)
one image; the median over repeats, in ms per image. Speedups are against eager float32.

A runtime is named as in a recipe, optionally with options: ``amp:bfloat16``, ``eager:tf32``,
``compile:max-autotune:fullgraph``, ``tensorrt:precision=fp32`` (a bare word sets the option whose
choices include it, or a true/false option of that name); ``recipe`` is the recipe's ``infer.runtime``.
A runtime that cannot run here is reported with its reason and the others still run.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import torch

from . import components, registry
from .components import Component
from .distributed import resolve_device
from .errors import UserError
from .files import atomic_write_text
from .options import structure
from .recipe import Recipe, parse_override, recipe_to_dict

BASELINE = "eager"
STAGES = ("read", "preprocess_and_sliding_window", "postprocess", "write")


@attrs.define
class Column:
    """One runtime's timings: ``model_ms[batch]`` per-batch times (ms) and ``end_to_end_ms`` per image."""

    label: str
    component: Component
    model_ms: dict[int, list[float]] = attrs.Factory(dict)
    end_to_end_ms: list[float] = attrs.Factory(list)
    stages_ms: dict[str, list[float]] = attrs.Factory(dict)
    objects: int | None = None
    unavailable: str = ""

    def model_median(self, batch: int) -> float | None:
        """Median ms per tile at ``batch``, None when not measured."""
        times = self.model_ms.get(batch)
        return statistics.median(times) / batch if times else None

    def end_to_end_median(self) -> float | None:
        """Median ms per image, None when not measured."""
        return statistics.median(self.end_to_end_ms) if self.end_to_end_ms else None

    def is_baseline(self) -> bool:
        """Eager in strict float32 (TF32 off)."""
        return self.component.name == BASELINE and not getattr(self.component.options, "tf32", False)


def _choices(tp: Any) -> tuple[Any, ...]:
    """The values a Literal field (or an optional one) accepts; () for other types."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    return tuple(c for arg in typing.get_args(tp) for c in _choices(arg))


def parse_runtime(spec: str, recipe: Recipe) -> Component:
    """``name[:word|key=value]...`` (or ``recipe``) -> a validated runtime Component."""
    if spec == "recipe":
        return recipe.infer.runtime
    name, *words = spec.split(":")
    plugin = registry.load("runtimes", name)
    hints = typing.get_type_hints(plugin.Options)
    options: dict[str, Any] = {}
    for word in words:
        if "=" in word:
            keys, value = parse_override(word)
            options[".".join(keys)] = value
            continue
        matches = [f for f, tp in hints.items() if word in _choices(tp)]
        if word in hints and bool in (hints[word], *typing.get_args(hints[word])):
            options[word] = True
        elif len(matches) == 1:
            options[matches[0]] = word
        else:
            raise UserError(
                f"--runtimes {spec}: '{word}' is no option value of runtime {name} "
                f"(options: {', '.join(hints) or 'none'}; write key=value)"
            )
    return structure(Component, {"name": name, **options}, path=f"--runtimes {spec}", kind="runtimes")


def parse_batch_sizes(text: str) -> list[int]:
    """``"1,8"`` -> [1, 8]; UserError naming ``--batch-sizes`` otherwise."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise UserError(f"--batch-sizes: expected positive integers separated by commas, got '{text}'")
    return sizes


def synthetic_image(size: int = 512, seed: int = 0) -> np.ndarray:
    """A (size, size) uint16 fluorescence-like image: bright round cells on a dark, noisy background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size))
    for cy, cx, r in zip(*rng.uniform(0, size, (2, size // 4)), rng.uniform(5, 12, size // 4)):
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r * 4)
    image = 200 + 3000 * image + rng.normal(0, 50, image.shape)
    return np.clip(image, 0, 65535).astype(np.uint16)


def environment(device: torch.device) -> dict[str, Any]:
    """Python, torch, CUDA, cuDNN, GPU and CPU versions/models of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cuda = device.type == "cuda"
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, warmup: int, repeats: int, tick: Callable[[], None]) -> list[float]:
    """Milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
        tick()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1000)
        tick()
    return times


@attrs.define
class Bench:
    """Benchmark settings; :meth:`run` fills one :class:`Column` per runtime (eager float32 first)."""

    recipe: Recipe
    runtimes: list[str]
    batch_sizes: list[int] = attrs.Factory(lambda: [1, 8])
    repeats: int = 10
    warmup: int = 2
    image: Path | None = None
    end_to_end: bool = True
    threads: int | None = None

    def columns(self) -> list[Column]:
        """A column per runtime spec, with eager float32 added first when missing (the baseline)."""
        columns = [Column(spec, parse_runtime(spec, self.recipe)) for spec in self.runtimes]
        if not any(c.is_baseline() for c in columns):
            columns.insert(0, Column(BASELINE, parse_runtime(BASELINE, self.recipe)))
        return columns

    def steps(self) -> int:
        """Calls per runtime (warm-ups included): the progress total of one column."""
        rows = len(self.batch_sizes) + int(self.end_to_end)
        return rows * (self.warmup + self.repeats)

    def run(self, columns: list[Column], progress: Callable[[str, int], None] = lambda text, n: None) -> None:
        """Measure every column in place; ``progress(text, steps)`` reports each finished call."""
        from .model import build_model

        if self.threads:  # on a busy machine, fewer OpenMP threads than cores avoid stalls at every barrier
            torch.set_num_threads(self.threads)
        device = resolve_device(self.recipe.device)
        model = build_model(self.recipe.model).to(device).eval()
        with tempfile.TemporaryDirectory(prefix="vista2d-bench-") as tmp:
            image = self.image or self._write_synthetic(Path(tmp))
            for column in columns:
                done = 0

                def tick(text: str, steps: int) -> None:
                    nonlocal done
                    done += steps
                    progress(text, steps)

                try:
                    self._measure(column, model, device, image, Path(tmp) / column.label.replace(":", "_"), tick)
                except UserError as exc:
                    column.unavailable = str(exc).splitlines()[0]
                except Exception as exc:  # noqa: BLE001 (a runtime that crashes must not stop the others)
                    column.unavailable = f"failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
                if column.unavailable:
                    progress(f"{column.label}: unavailable", self.steps() - done)

    def _write_synthetic(self, folder: Path) -> Path:
        import tifffile

        path = folder / "synthetic_512.tif"
        tifffile.imwrite(path, synthetic_image())
        return path

    def _reset(self, model: torch.nn.Module, example: torch.Tensor) -> None:
        """Every column starts from eager float32's process-wide settings (TF32 off)."""
        components.create("runtimes", BASELINE).prepare(model, example)

    def _measure(self, column: Column, model: torch.nn.Module, device: torch.device, image: Path,
                 out_dir: Path, progress: Callable[[str, int], None]) -> None:
        runtime = column.component.create()
        roi = tuple(self.recipe.infer.roi_size)
        checkpoint = self.recipe.model.checkpoint
        for batch in self.batch_sizes:
            example = torch.rand((batch, 3, *roi), device=device)
            self._reset(model, example)
            progress(f"{column.label}: preparing for batch {batch}", 0)
            with torch.inference_mode():
                predict = runtime.prepare(model, example, checkpoint)
                text = f"{column.label}: model computation, batch {batch}"
                column.model_ms[batch] = _time(
                    functools.partial(predict, example), device, self.warmup, self.repeats,
                    functools.partial(progress, text, 1),
                )
        if self.end_to_end:
            self._end_to_end(column, model, device, image, out_dir, progress)

    def _end_to_end(self, column: Column, model: torch.nn.Module, device: torch.device, image: Path,
                    out_dir: Path, progress: Callable[[str, int], None]) -> None:
        from .imageio import read_image
        from .interfaces import Prediction
        from .segmenter import Segmenter

        recipe = attrs.evolve(self.recipe, infer=attrs.evolve(self.recipe.infer, runtime=column.component))
        self._reset(model, torch.zeros((1, 3, 8, 8), device=device))
        progress(f"{column.label}: preparing end to end", 0)
        segmenter = Segmenter(recipe, model=model, device=device)
        writers = [w.create() for w in recipe.infer.writers]
        keep_logits = any(w.needs_logits for w in writers)
        out_dir.mkdir(parents=True, exist_ok=True)
        for i in range(self.warmup + self.repeats):
            marks = [time.perf_counter()]
            source = read_image(image)
            marks.append(time.perf_counter())
            logits = segmenter.logits(source.data, axes="CYX")
            _sync(device)
            marks.append(time.perf_counter())
            labels = segmenter.postprocessor(logits)
            marks.append(time.perf_counter())
            prediction = Prediction(labels, source, logits.cpu().numpy() if keep_logits else None)
            for writer in writers:
                writer.write(prediction, out_dir, image.stem)
            marks.append(time.perf_counter())
            if i >= self.warmup:
                for stage, start, end in zip(STAGES, marks, marks[1:]):
                    column.stages_ms.setdefault(stage, []).append((end - start) * 1000)
                column.end_to_end_ms.append((marks[-1] - marks[0]) * 1000)
                column.objects = int(labels.max())
            progress(f"{column.label}: end to end", 1)

    def report(self, columns: list[Column]) -> dict[str, Any]:
        """Everything as JSON-ready data: environment, settings, recipe, medians, speedups, raw times."""
        device = resolve_device(self.recipe.device)
        base = next((c for c in columns if c.is_baseline() and not c.unavailable), None)
        results = []
        for c in columns:
            row: dict[str, Any] = {"runtime": c.label, "options": c.component.to_data()}
            if c.unavailable:
                row["unavailable"] = c.unavailable
            row["model_computation"] = {
                str(b): {"ms_per_tile": c.model_median(b), "speedup": _ratio(base and base.model_median(b), c.model_median(b)),
                         "batch_ms": times}
                for b, times in c.model_ms.items()
            }
            if self.end_to_end:
                row["end_to_end"] = {
                    "ms_per_image": c.end_to_end_median(),
                    "speedup": _ratio(base and base.end_to_end_median(), c.end_to_end_median()),
                    "image_ms": c.end_to_end_ms,
                    "stage_median_ms": {k: statistics.median(v) for k, v in c.stages_ms.items()},
                    "stage_ms": c.stages_ms,
                    "objects": c.objects,
                }
            results.append(row)
        return {
            "environment": environment(device),
            "settings": {"batch_sizes": self.batch_sizes, "repeats": self.repeats, "warmup": self.warmup,
                         "image": str(self.image) if self.image else "synthetic 512x512 uint16",
                         "roi_size": list(self.recipe.infer.roi_size), "baseline": base.label if base else None},
            "recipe": recipe_to_dict(self.recipe),
            "results": results,
        }


def _ratio(base: float | None, value: float | None) -> float | None:
    return base / value if base and value else None


def table(report: dict[str, Any]) -> Any:
    """A rich Table of a :meth:`Bench.report`: rows model computation per batch and end to end."""
    from rich.markup import escape
    from rich.table import Table

    results = report["results"]
    env = report["environment"]
    where = env["gpu"] or f"{env['cpu']}, torch threads: {env['torch_threads']}"
    out = Table(title=f"vista2d bench on {where}, medians (speedup vs {report['settings']['baseline']})")
    out.add_column("")
    for r in results:
        out.add_column(r["runtime"], justify="right")

    def cell(r: dict[str, Any], entry: dict[str, Any] | None, key: str) -> str:
        if r.get("unavailable"):
            return "[red]unavailable[/red]"
        if not entry or entry[key] is None:
            return "-"
        speed = f" ({entry['speedup']:.2f}x)" if entry["speedup"] is not None else ""
        return f"{entry[key]:.1f}{speed}"

    for b in report["settings"]["batch_sizes"]:
        out.add_row(f"model computation, batch {b} (ms/tile)",
                    *(cell(r, r["model_computation"].get(str(b)), "ms_per_tile") for r in results))
    if results and "end_to_end" in results[0]:
        out.add_row("end to end (ms/image)", *(cell(r, r.get("end_to_end"), "ms_per_image") for r in results))
        for stage in STAGES:
            out.add_row(f"  {stage.replace('_', ' ')} (ms)", *(_stage(r, stage) for r in results))
        out.add_row("  objects found", *(str(r["end_to_end"]["objects"]) if not r.get("unavailable") else "-"
                                         for r in results))
    notes = [f"{r['runtime']}: {r['unavailable']}" for r in results if r.get("unavailable")]
    if notes:
        out.caption = escape("\n".join(notes))
    return out


def _stage(row: dict[str, Any], stage: str) -> str:
    value = row.get("end_to_end", {}).get("stage_median_ms", {}).get(stage)
    return "-" if value is None else f"{value:.1f}"


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Write ``report`` to ``path`` atomically; return ``path``."""
    return atomic_write_text(path, json.dumps(report, indent=1))
