"""Mutation check: do the tests catch a broken feature, not only a crash?

Each entry of :data:`MUTANTS` is a small bad change (a file, an exact piece of text and what replaces it)
with the test(s) that must fail because of it. For every mutant this script copies the project (the files
git tracks, plus untracked ones it does not ignore) into a temporary folder, applies the change there,
runs those tests against the copy (``PYTHONPATH`` puts the copy's packages before the editable install)
and reports it *caught* (a test failed), *missed* (the tests passed) or *error* (the change does not apply,
or pytest could not run the tests). The work tree itself is never modified.

    python benchmarks/mutants.py                 # every mutant (about 10 minutes on 2 cores)
    python benchmarks/mutants.py --list          # names, what each breaks, the tests that must fail
    python benchmarks/mutants.py ddp-no-wrapper eval-overall-of-images   # some of them
    python benchmarks/mutants.py --head          # the last commit instead of the work tree
    python benchmarks/mutants.py --baseline      # first check that those tests pass unmutated

Exit status: 0 when every mutant run was caught, 1 otherwise. See docs/contributing.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    """A named bad change: replace ``old`` (which must occur exactly once) by ``new`` in ``path``;
    one of ``tests`` (pytest node ids) must then fail."""

    name: str
    breaks: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = [
    # 1. DDP
    Mutant("ddp-no-wrapper", "DDP: no DistributedDataParallel wrapper, no gradient sync",
           "vista2d_core/train.py",
           "net = torch.nn.parallel.DistributedDataParallel(net, device_ids=ids)", "net = net",
           ("tests/test_ddp.py",)),
    Mutant("ddp-rank-buffers", "DDP: each rank keeps its own BatchNorm running statistics",
           "vista2d_core/train.py",
           "        distributed.broadcast_buffers(self.net)\n", "",
           ("tests/test_ddp.py",)),
    # 2. compile runtime
    Mutant("compile-returns-model", "compile: prepare compiles but returns the eager model",
           "plugins/vista2d_runtimes/compile.py",
           "        return compiled\n", "        return model\n",
           ("tests/test_runtimes.py::test_compile_matches_eager_after_a_one_line_runtime_change",
            "tests/test_bench.py::test_bench_eager_amp_compile_on_the_cpu")),
    Mutant("compile-skipped", "compile: torch.compile never called",
           "plugins/vista2d_runtimes/compile.py",
           "return torch.compile(model, mode=o.mode, dynamic=o.dynamic, fullgraph=o.fullgraph, backend=o.backend)",
           "return model",
           ("tests/test_runtimes.py::test_compile_matches_eager_after_a_one_line_runtime_change",
            "tests/test_bench.py::test_bench_eager_amp_compile_on_the_cpu",
            "tests/test_train.py::test_compile_runtime_trains_the_compiled_module")),
    # 3. MLflow
    Mutant("mlflow-constant-loss", "MLflow: train/loss logged as a constant",
           "plugins/vista2d_hooks/tracking.py",
           '{"train/loss": metrics["train_loss"],', '{"train/loss": 0.5,',
           ("tests/test_mlflow.py",)),
    Mutant("mlflow-new-run-on-resume", "MLflow: a resumed run starts a new MLflow run",
           "plugins/vista2d_hooks/tracking.py",
           "mlflow.start_run(run_id=self.run_id,", "mlflow.start_run(run_id=None,",
           ("tests/test_mlflow.py",)),
    # 4. AMP training
    Mutant("amp-no-autocast-in-training", "AMP: the training step runs without the runtime's autocast",
           "vista2d_core/train.py",
           "with self.runtime.autocast(self.device):", "with contextlib.nullcontext():",
           ("tests/test_train.py::test_adamw_accumulation_and_mixed_precision_train",)),
    Mutant("train-runtime-module-ignored", "compile: training steps run the eager network, not the runtime's module",
           "vista2d_core/train.py",
           "self.model = self.runtime.train_module(net)", "self.model = net",
           ("tests/test_train.py::test_compile_runtime_trains_the_compiled_module",)),
    # 5. native-resolution SAM, checkpoint loading
    Mutant("sam-drops-pos-embed", "SAM: positional embeddings dropped when the token grid differs",
           "plugins/vista2d_sam/backbone.py",
           "            x = x + pos\n", "            x = x + pos if pos.shape == self.pos_embed.shape else x\n",
           ("tests/test_model.py",)),
    Mutant("sam-nearest-pos-embed", "SAM: positional embeddings resized with nearest, not bicubic",
           "plugins/vista2d_sam/backbone.py",
           'size=x.shape[1:3], mode="bicubic")', 'size=x.shape[1:3], mode="nearest")',
           ("tests/test_model.py",)),
    Mutant("checkpoint-prefixes-not-loaded", "checkpoint: DDP/compile-prefixed keys silently not loaded",
           "vista2d_core/model.py",
           "    net.load_state_dict(state)\n", '    net.load_state_dict(data["state_dict"], strict=False)\n',
           ("tests/test_model.py",)),
    # 6. parity at a size where the head's final resize runs
    Mutant("head-resize-nearest", "model: the final resize of the logits is nearest, not bilinear",
           "vista2d_core/model.py",
           'logits = F.interpolate(logits, size=size, mode="bilinear")',
           'logits = F.interpolate(logits, size=size, mode="nearest")',
           ("tests/test_parity.py::test_same_logits_as_cellsamwrapper",)),
    # 7. eval
    Mutant("eval-overall-of-images", "eval: overall AP is the mean over images, not over datalists",
           "vista2d_core/evaluate.py",
           'overall = np.mean([r["ap"] for r in rows], axis=0).tolist() if rows else []',
           "overall = np.mean([s.ap for s in scores], axis=0).tolist() if rows else []",
           ("tests/test_evaluate.py",)),
    Mutant("eval-first-threshold-only", "eval: every threshold scored at the first IoU threshold",
           "vista2d_core/evaluate.py",
           "ap = average_precision(true, pred, thresholds)",
           "ap = average_precision(true, pred, [thresholds[0]] * len(thresholds))",
           ("tests/test_evaluate.py",)),
    # 8. bench
    Mutant("bench-amp-crashes", "bench: the amp runtime crashes (tensorrt is unavailable anyway)",
           "plugins/vista2d_runtimes/amp.py",
           '        """``x -> model(x)`` under autocast, cast to float32."""\n',
           '        """``x -> model(x)`` under autocast, cast to float32."""\n        raise RuntimeError("amp broke")\n',
           ("tests/test_bench.py::test_bench_writes_its_table_and_json",)),
    # 9. infer failures, writers
    Mutant("infer-failure-without-reason", "infer: a failed file is reported without its reason",
           "vista2d_core/infer.py",
           'log.error("error: %s: %s", path, reason)', 'log.error("error: %s: failed", path)',
           ("tests/test_infer.py::test_folder_of_mixed_files_with_one_corrupt",)),
    Mutant("geojson-not-atomic", "writers: geojson written straight to its target",
           "plugins/vista2d_io/writers.py",
           '        with atomic_path(target) as tmp, tmp.open("w") as out:\n',
           '        with target.open("w") as out:\n',
           ("tests/test_writers.py",)),
    Mutant("overlay-not-atomic", "writers: overlay PNG written straight to its target",
           "plugins/vista2d_io/writers.py",
           "        with atomic_path(target) as tmp:\n"
           '            PILImage.fromarray(rgb).save(tmp, format="PNG", compress_level=1)\n',
           '        target.parent.mkdir(parents=True, exist_ok=True)\n'
           '        PILImage.fromarray(rgb).save(target, format="PNG", compress_level=1)\n',
           ("tests/test_writers.py",)),
    # 10. readers
    Mutant("reader-grey-alpha-returns-alpha", "readers: grey+alpha PNG returns the alpha channel",
           "plugins/vista2d_io/readers.py",
           "                img = img.convert(_PILLOW_CONVERT[img.mode])\n",
           '                img = img.getchannel("A") if img.mode == "LA" else img.convert(_PILLOW_CONVERT[img.mode])\n',
           ("tests/test_readers.py",)),
    Mutant("reader-jpeg-ycbcr", "readers: JPEG colour returned as YCbCr, not RGB",
           "plugins/vista2d_io/readers.py",
           "            data = np.array(img)\n",
           '            data = np.array(img.convert("YCbCr") if img.format == "JPEG" and img.mode == "RGB" else img)\n',
           ("tests/test_readers.py",)),
    # 11. resume: global RNG states
    Mutant("resume-without-rng", "resume: the global RNG states are saved but not restored",
           "vista2d_core/train.py",
           "        _set_rng_state(state", "        (lambda _: None)(state",
           ("tests/test_resume.py::test_resume_restores_the_global_rngs",)),
    # 12. .ci/run
    Mutant("ci-skips-install", ".ci/run: runs pytest without the README's install step",
           ".ci/run", 'bash -euo pipefail -c "$command"', 'bash -euo pipefail -c "pytest -q"',
           ("tests/test_cli.py::test_ci_script_runs_the_readme_command_and_passes_its_status_on",)),
    Mutant("ci-swallows-failures", ".ci/run: exits 0 whatever pytest returns",
           ".ci/run", 'exit "$status"', "exit 0",
           ("tests/test_cli.py::test_ci_script_runs_the_readme_command_and_passes_its_status_on",)),
    # the first hour (issue 15)
    Mutant("checkpoint-settings-ignored", "recipes: a checkpoint's own settings do not fill in the recipe",
           "vista2d_core/recipe.py", "        data = with_checkpoint_settings(data, base_dir)\n", "",
           ("tests/test_first_hour.py::test_a_recipe_that_names_only_the_checkpoint_takes_its_settings",)),
    Mutant("channels-last-misread", "arrays: (H, W, 3) read as (C, H, W)",
           "vista2d_core/preprocess.py", "            return data.transpose(2, 0, 1)\n", "            return data\n",
           ("tests/test_first_hour.py::test_channels_last_arrays_and_lists",)),
    Mutant("set-name-keeps-options", "--set NAME: the old plugin's options stay",
           "vista2d_core/recipe.py", "                del node[option]\n", "                pass\n",
           ("tests/test_first_hour.py::test_set_name_starts_from_the_new_plugins_defaults",)),
    Mutant("check-ignores-stages", "recipe check: ok for a train recipe without data",
           "vista2d_core/cli.py", "    check_stages(loaded)\n", "",
           ("tests/test_first_hour.py::test_check_rejects_recipes_that_would_fail_at_once",)),
    Mutant("globs-take-labels", "inputs: globs and folders take label images and outputs",
           "vista2d_core/infer.py", "kept = [p for p in found if not is_output_or_label(p)]", "kept = found",
           ("tests/test_first_hour.py::test_globs_and_folders_skip_label_images_and_outputs",)),
    Mutant("set-paths-from-recipe-folder", "--set paths resolve against the recipe's folder",
           "vista2d_core/options.py", "base_dir is None or isinstance(value, CommandLineText)", "base_dir is None",
           ("tests/test_first_hour.py::test_set_paths_are_relative_to_the_current_folder",)),
    Mutant("scale-ignored", "infer.scale: images not resampled",
           "vista2d_core/segmenter.py", "        if scale != 1.0:\n", "        if False:\n",
           ("tests/test_first_hour.py::test_scale_resamples_the_image_and_returns_labels_at_its_size",)),
    Mutant("auto-diameter-ignored", "infer.auto_diameter: no second pass at the measured scale",
           "vista2d_core/segmenter.py", "        if not self.auto:\n", "        if True:\n",
           ("tests/test_first_hour.py::test_auto_diameter_measures_each_image_and_resamples_it",)),
    Mutant("auto-diameter-measured-only", "infer.auto_diameter: the measured factor, its neighbours never win",
           "vista2d_core/segmenter.py", "for step in (1.0, AUTO_STEP, 1 / AUTO_STEP)]",
           "for step in (1.0,)]",
           ("tests/test_first_hour.py::test_auto_diameter_measures_each_image_and_resamples_it",)),
]


def project_files(head: bool) -> list[str]:
    """Relative paths to copy: git's tracked + untracked-not-ignored files (or HEAD's tracked files)."""
    if head:
        args = ["git", "ls-tree", "-r", "-z", "--name-only", "HEAD"]
    else:
        args = ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, check=True).stdout.decode()
    return [p for p in out.split("\0") if p]


def copy_project(dest: Path, head: bool) -> None:
    """The project's files into ``dest``: the work tree's content, or with ``head`` the last commit's."""
    if head:
        archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return
    for rel in project_files(head=False):
        source = ROOT / rel
        if source.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / rel)


def environment(copy: Path) -> dict[str, str]:
    """The copy's packages first on the path (before the editable install's finder), quiet threads."""
    paths = [str(copy), str(copy / "plugins"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "PYTHONDONTWRITEBYTECODE": "1"}


def check_imports(copy: Path) -> None:
    """Fail unless the copy's vista2d_core and plugins are the ones imported there."""
    code = "import vista2d_core, vista2d_io, vista2d_sam, vista2d_runtimes; " \
           "print('\\n'.join(m.__file__ for m in (vista2d_core, vista2d_io, vista2d_sam, vista2d_runtimes)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=copy, env=environment(copy), capture_output=True,
                         text=True, check=True).stdout.split()
    wrong = [f for f in out if not Path(f).resolve().is_relative_to(copy.resolve())]
    if wrong:
        raise SystemExit(f"mutants: the copy is not what gets imported: {wrong}")


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, list[str], str]:
    """pytest on ``tests`` in ``copy`` -> (exit status, failed node ids, last lines of output)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", "--rootdir", str(copy),
               *tests]
    try:
        result = subprocess.run(command, cwd=copy, env=environment(copy), capture_output=True, text=True,
                                timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return -1, [], f"timed out after {timeout:.0f} s"
    lines = result.stdout.splitlines()
    summary = next((i for i, line in enumerate(lines) if "short test summary info" in line), len(lines))
    failed = [line.split()[1] for line in lines[summary:] if line.startswith(("FAILED ", "ERROR "))]
    return result.returncode, failed, "\n".join(lines[-15:])


def apply(copy: Path, mutant: Mutant) -> str:
    """Apply ``mutant`` in ``copy``; return the file's original text (to restore)."""
    path = copy / mutant.path
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise ValueError(f"{mutant.path}: the text to change occurs {count} times (expected once)")
    path.write_text(text.replace(mutant.old, mutant.new))
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--head", action="store_true", help="copy the last commit, not the work tree")
    parser.add_argument("--baseline", action="store_true", help="run each mutant's tests unmutated first")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest run")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        parser.error(f"unknown mutant(s) {', '.join(unknown)} (see --list)")
    chosen = [known[n] for n in args.names] if args.names else MUTANTS
    if args.list:
        for m in chosen:
            print(f"{m.name:34} {m.breaks}\n{'':34} {m.path}; must fail: {' '.join(m.tests)}")
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="vista2d-mutants-"))
    copy = tmp / "project"
    copy.mkdir()
    copy_project(copy, args.head)
    check_imports(copy)
    print(f"copy of {'HEAD' if args.head else 'the work tree'} in {copy}", flush=True)
    results = []
    try:
        for m in chosen:
            start = time.perf_counter()
            if args.baseline:
                code, failed, tail = run_tests(copy, m.tests, args.timeout)
                if code != 0:
                    results.append((m, "error", f"fails unmutated ({', '.join(failed) or tail})"))
                    print(f"{m.name}: error: its tests fail without the change\n{tail}", flush=True)
                    continue
            try:
                original = apply(copy, m)
            except ValueError as exc:
                results.append((m, "error", str(exc)))
                print(f"{m.name}: error: {exc}", flush=True)
                continue
            try:
                code, failed, tail = run_tests(copy, m.tests, args.timeout)
            finally:
                (copy / m.path).write_text(original)
            seconds = time.perf_counter() - start
            if code == 1:
                verdict, detail = "caught", ", ".join(failed)
            elif code == 0:
                verdict, detail = "missed", "every test passed"
            else:
                verdict, detail = "error", f"pytest exit status {code}: {tail.splitlines()[-1] if tail else ''}"
            results.append((m, verdict, detail))
            print(f"{m.name}: {verdict} ({seconds:.0f} s) {detail}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    caught = sum(v == "caught" for _, v, _ in results)
    print(f"\n{caught} of {len(results)} mutants caught")
    for m, verdict, detail in results:
        if verdict != "caught":
            print(f"  {verdict}: {m.name} ({m.breaks}): {detail}")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
