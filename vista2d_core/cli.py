"""The ``vista2d`` command: a thin typer layer over the Python API.

User errors (bad recipe, missing file, unknown plugin) print one line and exit with code 2;
``--debug`` (anywhere on the command line) shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import UserError

try:  # typer >= 0.29 vendors click: its usage errors derive from TyperException
    from typer.exceptions import TyperException as _UsageError
except ImportError:  # older typer raises click's own
    from click import ClickException as _UsageError

app = typer.Typer(
    name="vista2d",
    help="Train and run VISTA2D-style cell segmentation models from TOML recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
recipe_app = typer.Typer(help="Check or show a recipe.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")

_SET = typer.Option(None, "--set", help="Override a recipe value: key.path=value (TOML value), repeatable.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors.")) -> None:
    """Train and run VISTA2D-style cell segmentation models from TOML recipes."""


@app.command()
def run(recipe: Path = typer.Argument(..., help="TOML recipe."), set_: Optional[list[str]] = _SET) -> None:
    """Run a recipe: train, eval and/or infer, as its ``mode`` says."""
    from . import load_recipe
    from .runner import run as run_recipe

    status = run_recipe(load_recipe(recipe, set_ or []))
    if status:
        raise typer.Exit(status)


@app.command()
def plugins(kind: Optional[str] = typer.Argument(None, help="backbones, heads, readers, writers, ...")) -> None:
    """List installed plugins with their package, summary and, for broken ones, the reason."""
    from rich.console import Console
    from rich.table import Table

    from .registry import describe

    rows = describe(kind)
    table = Table("kind", "name", "package", "description", box=None, pad_edge=False)
    for row in rows:
        description = f"[red]BROKEN: {row.error}[/red]" if row.error else row.summary
        table.add_row(row.kind, row.name, row.package, description)
    Console(soft_wrap=True).print(table)


@recipe_app.command("check")
def recipe_check(recipe: Path = typer.Argument(...), set_: Optional[list[str]] = _SET) -> None:
    """Validate a recipe: every problem is listed with its dotted key."""
    from . import load_recipe

    loaded = load_recipe(recipe, set_ or [])
    typer.echo(f"{recipe}: ok ({' -> '.join(loaded.mode)})")


@recipe_app.command("show")
def recipe_show(recipe: Path = typer.Argument(...), set_: Optional[list[str]] = _SET) -> None:
    """Print the resolved recipe (defaults filled in, paths absolute) as TOML."""
    from . import dump_recipe, load_recipe

    typer.echo(dump_recipe(load_recipe(recipe, set_ or [])), nl=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:  # accepted anywhere: the root callback parses it before the command
        argv = ["--debug", *(a for a in argv if a != "--debug")]
    try:
        app(args=argv, prog_name="vista2d", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except _UsageError as exc:
        exc.show()
        return exc.exit_code
    except UserError as exc:
        if debug:
            raise
        for line in str(exc).splitlines():
            typer.echo(f"error: {line}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return 0

