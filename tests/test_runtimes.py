"""Runtime plugins: eager, amp, compile agree with eager within stated tolerances; tensorrt's guard and cache key.

Masks are only worth comparing when the model's output means something, so the module fixture fits
the small vit_t model's head (encoder frozen, random) to one synthetic image for a few seconds: its
eager masks then match the image's true labels (checked), and a runtime's masks are compared against
eager's with cellpose's AP at IoU 0.5.

Tolerances, per channel, relative to the largest |eager logit| of that channel:
  amp (bfloat16, 8-bit mantissa, through 6 transformer blocks): max |diff| <= 0.1, mean |diff| <= 0.01;
  compile (float32, only reassociated arithmetic): max |diff| <= 1e-4.
Masks: AP@0.5 against eager's masks >= 0.95 and foreground agreement >= 99% of pixels.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cellpose.metrics import average_precision
from conftest import tiny_model_table, write_recipe
from torch._dynamo.eval_frame import OptimizedModule
from torch._dynamo.utils import counters
from vista2d_runtimes.amp import AmpOptions, AmpRuntime
from vista2d_runtimes.compile import CompileOptions, CompileRuntime
from vista2d_runtimes.tensorrt import (
    TensorRTOptions,
    TensorRTRuntime,
    cache_key,
    file_sha256,
    weights_sha256,
)

from vista2d_core import UserError, components, load_recipe, registry
from vista2d_core.model import build_model, save_checkpoint
from vista2d_core.segmenter import Segmenter
from vista2d_core.synthetic import make_image

AMP_MAX, AMP_MEAN, COMPILE_MAX = 0.1, 0.01, 1e-4
MIN_AP, MIN_FOREGROUND = 0.95, 0.99


def _trt_skip_reason() -> str | None:
    try:
        import torch_tensorrt  # noqa: F401
    except ImportError as exc:
        return f"torch_tensorrt does not import here ({exc}); install vista2d[tensorrt] on a CUDA machine"
    if not torch.cuda.is_available():
        return "torch_tensorrt imports but there is no CUDA GPU here"
    return None


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A vit_t model whose head is fitted to one synthetic image, the image, its labels and a recipe."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("runtimes")
    recipe_path = write_recipe(folder / "recipe.toml", "infer")
    recipe = load_recipe(recipe_path)
    model = build_model(recipe.model).eval()
    image, labels = make_image(np.random.default_rng(3), 256)
    x = Segmenter(recipe, model=model).preprocess(image)
    loss = components.create("losses", "cellpose")
    with torch.no_grad():
        features = model.model.image_encoder(x)
        target = loss.targets(torch.from_numpy(labels.astype(np.int64))[None])
    head = model.model.mask_decoder.train()
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(200):
        value = loss(F.interpolate(head(features), size=labels.shape, mode="bilinear"), target)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    model.eval().requires_grad_(False)
    return {"model": model, "image": image, "labels": labels, "recipe_path": recipe_path}


def _segmenter(fitted: dict, runtime: str, *more: str) -> Segmenter:
    """A Segmenter of the fitted model with the recipe's runtime changed by one ``--set``."""
    recipe = load_recipe(fitted["recipe_path"], [f"infer.runtime.name={runtime}", *more])
    return Segmenter(recipe, model=fitted["model"])


def _segment(fitted: dict, runtime: str, *more: str) -> tuple[torch.Tensor, np.ndarray]:
    """Logits and labels of the fitted model with the recipe's runtime changed by one ``--set``."""
    segmenter = _segmenter(fitted, runtime, *more)
    logits = segmenter.logits(fitted["image"])
    return logits, segmenter.postprocessor(logits)


@pytest.fixture(scope="module")
def eager(fitted: dict) -> tuple[torch.Tensor, np.ndarray]:
    logits, labels = _segment(fitted, "eager")
    ap = average_precision([fitted["labels"]], [labels], threshold=[0.5])[0][0, 0]
    assert ap >= 0.9, f"the fitted model should segment its image (AP@0.5 {ap:.2f}): mask checks would be void"
    return logits, labels


def _relative_diff(reference: torch.Tensor, other: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = reference.abs().amax(dim=(1, 2))
    diff = (reference - other).abs()
    return diff.amax(dim=(1, 2)) / scale, diff.mean(dim=(1, 2)) / scale


def _assert_same_masks(reference: np.ndarray, other: np.ndarray) -> None:
    ap = average_precision([reference], [other], threshold=[0.5])[0][0, 0]
    foreground = np.mean((reference > 0) == (other > 0))
    assert ap >= MIN_AP and foreground >= MIN_FOREGROUND, (ap, foreground)


def test_every_runtime_declares_its_contract() -> None:
    expected = {"eager": True, "amp": True, "compile": True, "tensorrt": False}
    assert set(registry.available("runtimes")) >= set(expected)
    for name, can_train in expected.items():
        plugin = registry.load("runtimes", name)
        assert plugin.can_train is can_train
        assert plugin.__doc__ and len(plugin.__doc__.strip().splitlines()) == 1


def test_eager_runs_the_model_itself(fitted: dict) -> None:
    model = fitted["model"]
    assert components.create("runtimes", "eager").prepare(model, torch.zeros(1, 3, 256, 256)) is model


def test_amp_bfloat16_matches_eager(fitted: dict, eager: tuple) -> None:
    logits, labels = _segment(fitted, "amp", "infer.runtime.dtype=bfloat16")
    assert logits.dtype == torch.float32
    worst, mean = _relative_diff(eager[0], logits)
    assert worst.max() <= AMP_MAX and mean.max() <= AMP_MEAN, (worst, mean)
    assert worst.max() > 0  # it really ran in bfloat16
    _assert_same_masks(eager[1], labels)


def test_amp_float16_on_the_cpu_runs_as_bfloat16_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    runtime = AmpRuntime(AmpOptions(dtype="float16"))
    cpu = torch.device("cpu")
    with caplog.at_level("WARNING", logger="vista2d"):
        assert runtime.dtype(cpu) == torch.bfloat16
        with runtime.autocast(cpu):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert "bfloat16" in caplog.text
    assert runtime.grad_scaler(cpu) is None  # bfloat16 needs no loss scaling
    assert runtime.dtype(torch.device("cuda")) == torch.float16


def test_amp_float16_trains_with_a_grad_scaler() -> None:
    with pytest.warns(UserWarning):  # no CUDA here: torch warns that the scaler is disabled
        scaler = AmpRuntime(AmpOptions(dtype="float16")).grad_scaler(torch.device("cuda"))
    assert isinstance(scaler, torch.amp.GradScaler)
    assert AmpRuntime(AmpOptions(dtype="bfloat16")).grad_scaler(torch.device("cuda")) is None


@pytest.mark.slow
def test_compile_matches_eager_after_a_one_line_runtime_change(fitted: dict, eager: tuple) -> None:
    counters.clear()
    segmenter = _segmenter(fitted, "compile")
    # it really compiled: dynamo captured a graph, and the segmenter runs the compiled module
    assert counters["stats"]["unique_graphs"] >= 1
    assert isinstance(segmenter._predict, OptimizedModule) and segmenter._predict._orig_mod is fitted["model"]
    logits = segmenter.logits(fitted["image"])
    labels = segmenter.postprocessor(logits)
    worst, _ = _relative_diff(eager[0], logits)
    assert worst.max() <= COMPILE_MAX, worst
    _assert_same_masks(eager[1], labels)


def test_compile_rejects_an_unknown_backend_in_one_line() -> None:
    runtime = CompileRuntime(CompileOptions(backend="no-such-backend"))
    with pytest.raises(UserError, match="unknown backend 'no-such-backend'") as info:
        runtime.prepare(torch.nn.Identity(), torch.zeros(1, 3, 8, 8))
    assert "\n" not in str(info.value)


def test_runtime_options_are_validated_with_their_path(tmp_path: Path) -> None:
    path = write_recipe(tmp_path / "r.toml", "infer")
    with pytest.raises(UserError, match=r"infer\.runtime\.dtype: expected one of"):
        load_recipe(path, ["infer.runtime.name=amp", "infer.runtime.dtype=float8"])
    with pytest.raises(UserError, match=r"infer\.runtime\.mode: expected one of"):
        load_recipe(path, ["infer.runtime.name=compile", "infer.runtime.mode=fastest"])


# --- tensorrt ---------------------------------------------------------------------------------------


def test_tensorrt_without_torch_tensorrt_fails_in_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_tensorrt", None)  # makes `import torch_tensorrt` fail
    with pytest.raises(UserError) as info:
        TensorRTRuntime(TensorRTOptions()).prepare(torch.nn.Identity(), torch.zeros(1, 3, 8, 8))
    message = str(info.value)
    assert "\n" not in message and 'pip install "vista2d[tensorrt]"' in message and "CUDA" in message


def test_tensorrt_without_cuda_fails_in_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_tensorrt", types.ModuleType("torch_tensorrt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match="needs a CUDA GPU") as info:
        TensorRTRuntime(TensorRTOptions()).prepare(torch.nn.Identity(), torch.zeros(1, 3, 8, 8))
    assert "\n" not in str(info.value)


def test_tensorrt_is_imported_by_nothing_else() -> None:
    root = Path(__file__).resolve().parents[1]
    importers = [
        p.relative_to(root).as_posix()
        for folder in ("vista2d_core", "plugins")
        for p in (root / folder).rglob("*.py")
        if "import torch_tensorrt" in p.read_text()
    ]
    assert importers == ["plugins/vista2d_runtimes/tensorrt.py"]


def test_tensorrt_cache_key_changes_with_each_input() -> None:
    base = {"weights_hash": "a" * 64, "shape": (3, 256, 256), "batch_range": (1, 1, 8), "precision": "fp16",
            "versions": {"torch": "2.4", "torch-tensorrt": "2.4", "tensorrt": "10.3"}, "device_name": "A100"}
    key = cache_key(**base)
    assert cache_key(**base) == key and len(key) == 64
    changes = [
        {"weights_hash": "b" * 64},
        {"shape": (3, 512, 512)},
        {"batch_range": (1, 8, 8)},
        {"precision": "fp32"},
        {"versions": {**base["versions"], "tensorrt": "10.4"}},
        {"versions": {**base["versions"], "torch": "2.5"}},
        {"device_name": "H100"},
    ]
    keys = {cache_key(**{**base, **change}) for change in changes}
    assert key not in keys and len(keys) == len(changes)


def test_checkpoint_hash_follows_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"one")
    first = file_sha256(path)
    assert first == file_sha256(path)
    path.write_bytes(b"two, longer")  # new size (and mtime): hashed again
    assert file_sha256(path) != first


def test_weights_hash_follows_the_parameters() -> None:
    net = torch.nn.Conv2d(3, 3, 1)
    before = weights_sha256(net)
    with torch.no_grad():
        net.bias.add_(1)
    assert weights_sha256(net) != before


def test_tensorrt_engine_lives_beside_the_checkpoint_or_in_the_cache(tmp_path: Path) -> None:
    runtime = TensorRTRuntime(TensorRTOptions(cache_dir=tmp_path / "cache"))
    checkpoint = tmp_path / "models" / "model.pt"
    checkpoint.parent.mkdir()
    assert runtime.engine_path("f" * 64, checkpoint) == checkpoint.parent / f"model.trt-{'f' * 16}.ep"
    assert runtime.engine_path("f" * 64, None).parent == tmp_path / "cache"


@pytest.mark.skipif(_trt_skip_reason() is not None, reason=_trt_skip_reason() or "")
def test_tensorrt_engine_matches_eager_and_is_cached(tmp_path: Path) -> None:
    torch.manual_seed(0)
    from vista2d_core.recipe import recipe_from_dict

    recipe = recipe_from_dict({"mode": "infer", "model": tiny_model_table()})
    model = build_model(recipe.model).cuda().eval()
    checkpoint = save_checkpoint(model, tmp_path / "model.pt")
    example = torch.rand(2, 3, 256, 256, device="cuda")
    runtime = TensorRTRuntime(TensorRTOptions(precision="fp32", max_batch=4))
    with torch.inference_mode():
        predict = runtime.prepare(model, example, checkpoint)
        engines = list(tmp_path.glob("model.trt-*.ep"))
        assert len(engines) == 1
        reference = model(example)
        torch.testing.assert_close(predict(example), reference, rtol=1e-2, atol=1e-2)
        stamp = engines[0].stat().st_mtime_ns
        again = runtime.prepare(model, example, checkpoint)  # loaded, not rebuilt
        assert engines[0].stat().st_mtime_ns == stamp
        torch.testing.assert_close(again(example[:1]), reference[:1], rtol=1e-2, atol=1e-2)
