"""The documentation runs: every ```bash and ```python block of README.md and docs/*.md, as written, on tiny data.

A block is run unless the line before its fence says ``<!-- not run: <reason> -->``. Everything runs in one
sandbox folder shaped like the repository (``recipes/``, ``docs/examples/``, ``benchmarks/``, ``images/``
with two small cell images and a label file, ``../shared/realdata`` when present), after the README's
quickstart command has trained the quickstart model there once. Commands run as typed, with three
rewrites that keep them small and side-effect free, each stated here:

- ``vista2d run|bench`` and ``torchrun ... run`` of a shipped recipe get :data:`TINY` ``--set`` overrides
  appended (1 epoch on 64 px images, eager; the reference recipe's ViT-B becomes the small vit_t; the
  real-data evaluation uses large windows without flips);
- ``pip install -e .`` / ``".[dev]"`` are dropped (the suite runs in that install) and so is ``pytest``
  (this is the suite); ``pip install -e PLUGIN`` installs into a folder of the sandbox instead of the
  environment, and later blocks of the page see it on ``PYTHONPATH``;
- the model named ``vista2d`` (the official checkpoint, not downloadable here) is, in the sandbox's model
  cache (``VISTA2D_HOME``, with ``VISTA2D_OFFLINE=1``: nothing downloads), a vit_t checkpoint that carries
  its settings.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
REALDATA = ROOT.parent / "shared" / "realdata"

_QUICK = ["train.epochs=1", "data.synthetic.train_images=6", "data.synthetic.test_images=2",
          "data.synthetic.size=64", "train.batch_size=2", "train.augment.roi_size=[64,64]",
          "infer.roi_size=[64,64]", "train.samples_per_epoch=6"]
TINY = {
    "quickstart.toml": _QUICK,
    "vista2d.toml": ["model.backbone.variant=vit_t", "model.backbone.resize_to=0", "infer.roi_size=[64,64]"],
    # eight real images up to 720x576: large windows, no flips, no flow check for the 1-epoch model
    "eval_realdata.toml": ["infer.tta=false", "infer.roi_size=[256,256]", "infer.overlap=0.25",
                           "infer.postprocessor.flow_threshold=0.0", "infer.runtime.name=eager"],
}
_FENCE = re.compile(r"(?:<!-- not run: (?P<reason>.*?) -->\n)?```(?P<lang>bash|python)\n(?P<body>.*?)```", re.DOTALL)


def blocks(page: Path) -> list[tuple[str, str, str | None, int]]:
    """(language, body, reason not run or None, line number) of each bash/python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [(m["lang"], m["body"], m["reason"], text.count("\n", 0, m.start("body")))
            for m in _FENCE.finditer(text)]


def commands(body: str) -> list[str]:
    """The command lines of a bash block (continuations joined, comment lines dropped)."""
    joined = body.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def rewrite(command: str, site: Path) -> str | None:
    """The command as the sandbox runs it (see the module docstring), or None when nothing is left."""
    parts = []
    for part in (p.strip() for p in command.split("&&")):
        words = shlex.split(part, comments=True)
        if words[:3] == ["pip", "install", "-e"] and words[3] in (".", ".[dev]"):
            continue
        if words[:1] == ["pytest"]:
            continue
        if words[:3] == ["pip", "install", "-e"]:
            part = (f"{shlex.quote(sys.executable)} -m pip install --quiet --no-deps --no-build-isolation "
                    f"--target {shlex.quote(str(site))} {shlex.quote(words[3])}")
        recipe = next((w for w in words if w.endswith(".toml")), "")
        if words[:1] in (["vista2d"], ["torchrun"]) and ("run" in words or "bench" in words):
            part = part.split("#")[0].rstrip() + "".join(f" --set '{o}'" for o in TINY.get(Path(recipe).name, []))
        parts.append(part)
    return " && ".join(parts) or None


def _run(args: list[str] | str, cwd: Path, env: dict[str, str], what: str) -> None:
    result = subprocess.run(args, check=False, cwd=cwd, env=env, shell=isinstance(args, str),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{what}\nexit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _env(site: Path) -> dict[str, str]:
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    pythonpath = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PATH": path, "PYTHONPATH": pythonpath, "COLUMNS": "200", "OMP_NUM_THREADS": "2",
            "VISTA2D_HOME": str(site.parent / "home"), "VISTA2D_OFFLINE": "1"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository-shaped folder where the README's quickstart has run once (tiny)."""
    import tifffile
    import torch

    from vista2d_core.model import build_model, save_checkpoint
    from vista2d_core.recipe import recipe_from_dict, recipe_to_dict

    top = tmp_path_factory.mktemp("docs")
    box = top / "repo"
    for folder in ("recipes", "benchmarks", "docs/examples"):
        shutil.copytree(ROOT / folder, box / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    if REALDATA.is_dir():
        (top / "shared").mkdir()
        (top / "shared" / "realdata").symlink_to(REALDATA)
    env = _env(top / "site")
    _run(rewrite("vista2d run recipes/quickstart.toml", top / "site"), box, env, "the README's quickstart")
    assert (box / "runs/quickstart/model.pt").is_file()
    images = sorted((box / "data/synthetic/images").glob("test_*"))
    (box / "images").mkdir()
    for i, path in enumerate(images[:2], start=1):
        from vista2d_core.imageio import read_image

        tifffile.imwrite(box / "images" / f"cells_{i}.tif", read_image(path).data[0])
    shutil.copy(min((box / "data/synthetic/labels").glob("test_*")), box / "images/cells_1_masks.tif")
    torch.manual_seed(0)
    tiny = recipe_from_dict({"mode": "infer", "model": {"backbone": {"name": "sam", "variant": "vit_t",
                                                                       "resize_to": 0}},
                             "infer": {"roi_size": [64, 64]}})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VISTA2D_HOME", env["VISTA2D_HOME"])
        from vista2d_core.pretrained import cache_path

        save_checkpoint(build_model(tiny.model), cache_path("vista2d"), config=recipe_to_dict(tiny))
    return box


def test_every_block_is_found_and_every_skip_says_why():
    found = {page.name: blocks(page) for page in PAGES}
    assert sum(len(b) for b in found.values()) >= 20, found
    skipped = [(name, line) for name, page in found.items() for _, _, reason, line in page if reason is not None]
    assert all(reason.strip() for page in found.values() for _, _, reason, _ in page if reason is not None)
    assert len(skipped) <= 12, skipped  # benchmarks, GPUs, downloads, a display: few, each with its reason


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_runs_as_written(page: Path, sandbox: Path) -> None:
    site = sandbox.parent / "site"
    env = _env(site)
    for lang, body, reason, line in blocks(page):
        if reason is not None:
            continue
        where = f"{page.relative_to(ROOT)}:{line}"
        if lang == "python":
            _run([sys.executable, "-c", body], sandbox, env, f"{where}\n{body}")
            continue
        for command in commands(body):
            shell = rewrite(command, site)
            if shell is not None:
                _run(shell, sandbox, env, f"{where}: {command}\nran: {shell}")


def test_rewrites_keep_the_command_and_only_add_tiny_settings(tmp_path):
    assert rewrite('pip install -e ".[dev]" && pytest -q', tmp_path) is None
    assert rewrite("pip install -e . && vista2d run recipes/quickstart.toml", tmp_path) == (
        "vista2d run recipes/quickstart.toml" + "".join(f" --set '{o}'" for o in _QUICK))
    assert rewrite("vista2d segment images/ -c runs/quickstart/model.pt", tmp_path) == (
        "vista2d segment images/ -c runs/quickstart/model.pt")
    plugin = rewrite("pip install -e docs/examples/vista2d-example-plugin", tmp_path)
    assert f"--target {tmp_path}" in plugin and plugin.endswith("docs/examples/vista2d-example-plugin")
    assert np.all([c.startswith("vista2d") for c in commands("# comment\nvista2d a \\\n  --b\n\nvista2d c\n")])
