"""The ``vista2d`` command: exit codes, error lines, listings; the docs generated from the code; CI script."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_recipe import use_stand_ins
from test_registry import declared_plugins, make_distribution, site  # noqa: F401  (site: fixture)

from vista2d_core import UserError, available, load_recipe
from vista2d_core.cli import main
from vista2d_core.recipe import recipe_to_dict

ROOT = Path(__file__).resolve().parents[1]
TYPO = 'mode = "train"\n[train]\nepoch = 3\n'


@pytest.fixture
def fake_plugins(monkeypatch):
    """Built-in plugins as stand-ins (see test_recipe), for in-process recipe commands."""
    use_stand_ins(monkeypatch)


def vista2d(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m vista2d_core ARGS`` in a fresh interpreter, wide enough for tables not to wrap."""
    env = {**os.environ, "COLUMNS": "200"}
    command = [sys.executable, "-m", "vista2d_core", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, check=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.usefixtures("fake_plugins")
def test_check_reports_a_typo_in_one_line_with_exit_2(tmp_path, capsys):
    recipe = write(tmp_path / "r.toml", TYPO)
    assert main(["recipe", "check", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {recipe}: train.epoch: unknown option (known: epochs,")
    assert len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.usefixtures("fake_plugins")
def test_check_accepts_a_good_recipe_with_overrides(tmp_path, capsys):
    recipe = write(tmp_path / "r.toml", 'mode = ["train", "infer"]\n[data.synthetic]\n')
    assert main(["recipe", "check", str(recipe), "--set", "train.epochs=2"]) == 0
    assert capsys.readouterr().out == f"{recipe}: ok (train -> infer)\n"
    assert main(["recipe", "check", str(recipe), "--set", "train.epochs=two"]) == 2
    assert 'train.epochs: expected an integer, got "two"' in capsys.readouterr().err


@pytest.mark.usefixtures("fake_plugins")
def test_debug_anywhere_raises_the_error_with_its_traceback(tmp_path):
    recipe = write(tmp_path / "r.toml", TYPO)
    for argv in (["--debug", "recipe", "check", str(recipe)], ["recipe", "check", str(recipe), "--debug"]):
        with pytest.raises(UserError, match="train.epoch: unknown option"):
            main(argv)


@pytest.mark.usefixtures("fake_plugins")
def test_show_prints_a_recipe_that_reloads_equal(tmp_path, capsys):
    recipe = write(tmp_path / "r.toml", 'mode = "infer"\noutput_dir = "out"\n[infer]\ninputs = ["*.tif"]\n')
    assert main(["recipe", "show", str(recipe), "--set", "seed=4"]) == 0
    (tmp_path / "sub").mkdir()
    shown = write(tmp_path / "sub/shown.toml", capsys.readouterr().out)
    assert f'output_dir = "{tmp_path / "out"}"' in shown.read_text()
    assert recipe_to_dict(load_recipe(shown)) == recipe_to_dict(load_recipe(recipe, ["seed=4"]))


def test_usage_errors_exit_2_without_traceback(capsys):
    assert main(["run"]) == 2
    assert "Missing argument" in capsys.readouterr().err
    assert main(["plugins", "gizmo"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown plugin kind 'gizmo' (kinds: backbones,")
    assert main(["recipe", "check", "no/such/recipe.toml"]) == 2
    assert capsys.readouterr().err == "error: no/such/recipe.toml: no such recipe file\n"


def test_plugins_prints_summaries_and_errors_verbatim(site, capsys):  # noqa: F811
    """Brackets in a docstring or an error are text, not console markup."""
    plugin = (
        "import attrs\n"
        "class Post:\n"
        "    '''Logits [cellprob, dY, dX] -> labels.'''\n"
        "    Options = attrs.make_class('O', [])\n"
        "    def __call__(self, logits):\n"
        "        return logits\n"
    )
    broken = "raise ImportError('needs [bold]libfoo[/bold]')"
    entry_points = {"vista2d.postprocessors": {"bracket": "v2dtest_b:Post", "broken": "v2dtest_broken:P"}}
    make_distribution(site, "v2dtest-b", entry_points, {"v2dtest_b.py": plugin, "v2dtest_broken.py": broken})
    assert main(["plugins", "postprocessors"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "bracket v2dtest-b Logits [cellprob, dY, dX] -> labels." in out
    assert "(v2dtest_broken:P) is broken: ImportError: needs [bold]libfoo[/bold]" in out


def test_help_as_a_module():
    result = vista2d("--help")
    assert result.returncode == 0, result.stderr
    for command in ("run", "plugins", "recipe"):
        assert f" {command} " in result.stdout


def test_console_script_check_names_the_typo_key(tmp_path):
    script = Path(sys.executable).with_name("vista2d")
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    recipe = write(tmp_path / "r.toml", TYPO)
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(
        [script, "recipe", "check", recipe], capture_output=True, text=True, env=env, check=False
    )
    assert result.returncode == 2
    assert f"error: {recipe}: train.epoch: unknown option" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = vista2d("recipe", "check", str(tmp_path / "none.toml"), "--debug")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "UserError: " in result.stderr and "none.toml: no such recipe file" in result.stderr


def test_plugins_lists_every_builtin_name():
    """Every name pyproject.toml declares is listed, whether or not its plugin imports."""
    result = vista2d("plugins")
    assert result.returncode == 0, result.stderr
    rows = {tuple(line.split()[:2]) for line in result.stdout.splitlines()[1:] if line.strip()}
    for kind, names in declared_plugins().items():
        for name in names:
            assert (kind, name) in rows, f"{kind} {name} missing from:\n{result.stdout}"


def test_unknown_plugin_name_lists_installed_ones(tmp_path):
    recipe = write(tmp_path / "r.toml", 'mode = "infer"\n[infer]\npostprocessor = "cellpse"\n')
    result = vista2d("recipe", "check", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    installed = ", ".join(available("postprocessors"))
    expected = (
        "infer.postprocessor.name: no plugin 'cellpse' in vista2d.postprocessors: "
        "did you mean 'cellpose' or 'cellpose_fast'? "
    )
    assert f"{expected}installed: {installed}\n" in result.stderr


def test_generated_docs_are_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs/gen_reference.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    for path, text in gen.expected().items():
        assert path.read_text() == text, f"{path.name} is out of date: run python docs/gen_reference.py"


README_TEST_COMMAND = 'pip install -e ".[dev]" && pytest -q'

# Stand-ins for .ci/run's tools: `python3 -m venv DIR` makes a venv whose pip and pytest only log their
# arguments (pytest then exits with $FAKE_PYTEST_EXIT), so the script runs for real in a second.
FAKE_PYTHON3 = r"""#!/usr/bin/env bash
[[ "$1 $2" == "-m venv" ]] || exit 99
mkdir -p "$3/bin"
echo "export PATH=\"$3/bin:\$PATH\"" > "$3/bin/activate"
printf '#!/usr/bin/env bash\necho "pip $*" >> "$FAKE_LOG"\n' > "$3/bin/pip"
printf '#!/usr/bin/env bash\necho "pytest $*" >> "$FAKE_LOG"\nexit "$FAKE_PYTEST_EXIT"\n' > "$3/bin/pytest"
chmod +x "$3/bin/pip" "$3/bin/pytest"
"""


def test_readme_has_the_test_command():
    assert f"\n{README_TEST_COMMAND}\n" in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("pytest_exit", [0, 1, 5])
def test_ci_script_runs_the_readme_command_and_passes_its_status_on(tmp_path, pytest_exit):
    """.ci/run executes (not only prints) the README's install and test command in a fresh venv, and fails
    exactly when pytest fails or collects nothing (exit 5)."""
    ci = ROOT / ".ci/run"
    assert os.access(ci, os.X_OK)
    printed = subprocess.run([ci, "--print-command"], capture_output=True, text=True, check=True).stdout
    assert printed.strip() == README_TEST_COMMAND
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write(bin_dir / "python3", FAKE_PYTHON3).chmod(0o755)
    log = tmp_path / "calls.log"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp_path),
           "FAKE_LOG": str(log), "FAKE_PYTEST_EXIT": str(pytest_exit)}
    result = subprocess.run([ci], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == pytest_exit, result.stderr
    assert log.read_text().splitlines() == ["pip install -e .[dev]", "pytest -q"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("vista2d-ci")] == []  # venv removed
