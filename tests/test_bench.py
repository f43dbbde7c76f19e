"""``vista2d bench``: runtime specs, the table and the JSON report, on the CPU with the small vit_t model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from conftest import write_recipe
from torch._dynamo.eval_frame import OptimizedModule
from torch._dynamo.utils import counters
from vista2d_runtimes.compile import CompileRuntime

from vista2d_core import UserError, load_recipe
from vista2d_core.bench import Bench, parse_batch_sizes, parse_runtime, synthetic_image
from vista2d_core.cli import main


@pytest.fixture
def recipe_path(tmp_path: Path) -> Path:
    """A quickstart-like CPU recipe: vit_t, random weights, cellpose postprocessing, TIFF labels."""
    postprocessor = {"name": "cellpose", "flow_threshold": 0.0}
    return write_recipe(tmp_path / "recipe.toml", "infer", infer={"postprocessor": postprocessor})


@pytest.fixture
def small_image(tmp_path: Path) -> Path:
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, synthetic_image(128))
    return path


def test_runtime_specs_carry_options(recipe_path: Path) -> None:
    recipe = load_recipe(recipe_path, ["infer.runtime.name=amp"])
    assert parse_runtime("amp:bfloat16", recipe).options.dtype == "bfloat16"
    assert parse_runtime("eager:tf32", recipe).options.tf32 is True
    compiled = parse_runtime("compile:max-autotune:fullgraph", recipe).options
    assert (compiled.mode, compiled.fullgraph) == ("max-autotune", True)
    trt = parse_runtime("tensorrt:precision=fp32:max_batch=8", recipe).options
    assert (trt.precision, trt.max_batch) == ("fp32", 8)
    assert parse_runtime("recipe", recipe).name == "amp"


@pytest.mark.parametrize(
    ("spec", "message"),
    [("amp:float8", "'float8' is no option value of runtime amp"), ("ampp", "did you mean 'amp'"),
     ("amp:dtype=float8", "dtype: expected one of")],
)
def test_bad_runtime_specs_say_what_is_wrong(recipe_path: Path, spec: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_runtime(spec, load_recipe(recipe_path))


def test_batch_sizes() -> None:
    assert parse_batch_sizes("1,8") == [1, 8]
    for bad in ("", "0", "1,x"):
        with pytest.raises(UserError, match="--batch-sizes"):
            parse_batch_sizes(bad)


def test_eager_float32_is_always_the_first_column(recipe_path: Path) -> None:
    recipe = load_recipe(recipe_path)
    assert [c.label for c in Bench(recipe, ["amp", "eager:tf32"]).columns()] == ["eager", "amp", "eager:tf32"]
    assert [c.label for c in Bench(recipe, ["amp", "eager"]).columns()] == ["amp", "eager"]


def test_synthetic_image_is_a_512_pixel_uint16_image() -> None:
    image = synthetic_image()
    assert image.shape == (512, 512) and image.dtype == np.uint16 and image.std() > 0


def _check_report(path: Path, runtimes: list[str], batch_sizes: list[int]) -> dict:
    report = json.loads(path.read_text())
    assert {"python", "torch", "cuda", "gpu", "cpu"} <= set(report["environment"])
    assert report["recipe"]["model"]["backbone"]["variant"] == "vit_t"
    results = {r["runtime"]: r for r in report["results"]}
    assert list(results) == runtimes
    for name in runtimes:
        row = results[name]
        if row.get("unavailable"):
            continue
        for b in batch_sizes:
            entry = row["model_computation"][str(b)]
            assert entry["ms_per_tile"] > 0 and len(entry["batch_ms"]) == report["settings"]["repeats"]
            assert entry["speedup"] > 0
        stages = row["end_to_end"]["stage_median_ms"]
        assert set(stages) == {"read", "preprocess_and_sliding_window", "postprocess", "write"}
        assert row["end_to_end"]["ms_per_image"] >= sum(stages.values()) * 0.99
    assert results["eager"]["model_computation"][str(batch_sizes[0])]["speedup"] == 1.0
    return results


def test_bench_writes_its_table_and_json(recipe_path: Path, small_image: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    code = main(["bench", str(recipe_path), "--runtimes", "eager,amp:bfloat16,tensorrt", "--batch-sizes", "1,2",
                 "--repeats", "1", "--warmup", "0", "--image", str(small_image), "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "model computation, batch 2" in printed and "end to end" in printed and "unavailable" in printed
    results = _check_report(out, ["eager", "amp:bfloat16", "tensorrt"], [1, 2])
    # only tensorrt is unavailable (device = "cpu"), and for that reason: a crash elsewhere must not hide here
    assert [name for name, row in results.items() if "unavailable" in row] == ["tensorrt"]
    reason = results["tensorrt"]["unavailable"]
    assert reason.startswith("runtime tensorrt needs") and 'pip install "vista2d[tensorrt]"' in reason


@pytest.mark.slow
def test_bench_eager_amp_compile_on_the_cpu(recipe_path: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's acceptance check, with the default synthetic 512x512 image and tiny repeats; the compile
    column really ran a compiled module."""
    prepared = []

    def prepare(self: CompileRuntime, *args: Any, **kwargs: Any) -> Any:
        prepared.append(real_prepare(self, *args, **kwargs))
        return prepared[-1]

    real_prepare = CompileRuntime.prepare
    monkeypatch.setattr(CompileRuntime, "prepare", prepare)
    counters.clear()
    out = tmp_path / "bench.json"
    code = main(["bench", str(recipe_path), "--runtimes", "eager,amp,compile", "--batch-sizes", "1",
                 "--repeats", "1", "--warmup", "1", "--output", str(out)])
    assert code == 0
    results = _check_report(out, ["eager", "amp", "compile"], [1])
    assert not any(r.get("unavailable") for r in results.values())
    assert counters["stats"]["unique_graphs"] >= 1
    assert prepared and all(isinstance(p, OptimizedModule) for p in prepared)


def test_bench_reports_a_missing_image_in_one_line(recipe_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", str(recipe_path), "--image", "missing.tif"]) == 2
    assert capsys.readouterr().err.strip() == "error: --image missing.tif: no such file"
