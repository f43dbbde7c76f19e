"""The ``vista2d`` command: a thin typer layer over the Python API.

User errors (bad recipe, missing file, unknown plugin) print one line and exit with code 2;
``--debug`` (anywhere on the command line) shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
models_app = typer.Typer(invoke_without_command=True)
app.add_typer(models_app, name="models")
synthetic_app = typer.Typer(help="The built-in synthetic training data: see what it looks like.", no_args_is_help=True)
app.add_typer(synthetic_app, name="synthetic")

_SET = typer.Option(None, "--set", help="Override a recipe value: key.path=value (TOML value), repeatable.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks of errors.")) -> None:
    """Train and run VISTA2D-style cell segmentation models from TOML recipes."""


@app.command()
def run(recipe: Path = typer.Argument(..., help="TOML recipe."), set_: list[str] | None = _SET) -> None:
    """Run a recipe: train, eval and/or infer, as the recipe's mode says."""
    from . import load_recipe
    from .runner import run as run_recipe

    status = run_recipe(load_recipe(recipe, set_ or []))
    if status:
        raise typer.Exit(status)


@app.command()
def segment(
    images: list[str] = typer.Argument(..., help="Image files, globs or folders."),
    checkpoint: str = typer.Option(
        ..., "--checkpoint", "-c", help="model.pt (official VISTA2D layout or ours), or a model name: vista2d models."
    ),
    output: Path = typer.Option(Path("segmented"), "--output", "-o", help="Folder for the outputs."),
    writers: str | None = typer.Option(
        None, "--writers", "-w", help="Comma-separated writers: tiff,flows,overlay,rois,geojson [default: tiff]."
    ),
    recipe: Path | None = typer.Option(None, "--recipe", "-r", help="Take model/infer settings from this recipe."),
    set_: list[str] | None = _SET,
) -> None:
    """Segment images with a checkpoint: the shortcut for an infer recipe."""
    from .runner import run as run_recipe
    from .segment import segment_recipe

    chosen = writers.split(",") if writers is not None else None
    status = run_recipe(segment_recipe(images, checkpoint, output, chosen, recipe, set_ or []))
    if status:
        raise typer.Exit(status)


@app.command()
def plugins(kind: str | None = typer.Argument(None, help="backbones, heads, readers, writers, ...")) -> None:
    """List installed plugins with their package, summary and, for broken ones, the reason."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .registry import describe

    rows = describe(kind)
    table = Table("kind", "name", "package", "description", box=None, pad_edge=False)
    for row in rows:
        description = f"[red]BROKEN: {escape(row.error)}[/red]" if row.error else escape(row.summary)
        table.add_row(row.kind, row.name, row.package, description)
    Console(soft_wrap=True).print(table)


@app.command()
def bench(
    recipe: Path = typer.Argument(..., help="TOML recipe (its model, sliding window, postprocessor, writers)."),
    runtimes: str = typer.Option(
        "eager,amp,compile", help="Comma-separated runtimes, with options: amp:bfloat16, eager:tf32, recipe, ..."
    ),
    batch_sizes: str = typer.Option("1,8", help="Comma-separated batch sizes for the model computation row."),
    repeats: int = typer.Option(10, min=1, help="Timed runs per measurement (medians are reported)."),
    warmup: int = typer.Option(2, min=0, help="Untimed runs before each measurement."),
    image: Path | None = typer.Option(None, help="Image for the end-to-end row (default: synthetic 512x512)."),
    end_to_end: bool = typer.Option(True, help="Measure the end-to-end row."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads for torch (default: torch's choice)."),
    output: Path = typer.Option(Path("bench.json"), "--output", "-o", help="JSON report."),
    set_: list[str] | None = _SET,
) -> None:
    """Time runtimes on a recipe's model: model computation per tile and end to end per image."""
    from rich.console import Console
    from rich.progress import Progress

    from . import load_recipe
    from .bench import Bench, parse_batch_sizes, table, write_json

    if image is not None and not image.is_file():
        raise UserError(f"--image {image}: no such file")
    spec = Bench(load_recipe(recipe, set_ or []), [r.strip() for r in runtimes.split(",") if r.strip()],
                 parse_batch_sizes(batch_sizes), repeats, warmup, image, end_to_end, threads)
    columns = spec.columns()
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("loading the model", total=len(columns) * spec.steps())
        spec.run(columns, lambda text, steps: progress.update(task, description=text, advance=steps))
    report = spec.report(columns)
    Console(soft_wrap=True).print(table(report))
    typer.echo(f"wrote {write_json(report, output)}")


@models_app.callback()
def models(ctx: typer.Context) -> None:
    """List the pretrained models that can be used by name (with their cache state), or pull them."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.console import Console
    from rich.filesize import decimal
    from rich.markup import escape
    from rich.table import Table

    from .pretrained import cache_path, model_card
    from .registry import describe

    table = Table("name", "package", "cached", "size", "description", "licence", "url", box=None, pad_edge=False)
    for row in describe("models"):
        if row.error:
            table.add_row(row.name, row.package, "", "", f"[red]BROKEN: {escape(row.error)}[/red]", "", "")
            continue
        card = model_card(row.name)
        path = cache_path(row.name, card)
        cached = path.is_file()
        table.add_row(row.name, row.package, "yes" if cached else "no", decimal(path.stat().st_size) if cached else "",
                      escape(card.description), escape(card.licence), escape(card.url))
    Console(soft_wrap=True).print(table)


@models_app.command("pull")
def models_pull(names: list[str] = typer.Argument(..., help="Model names.")) -> None:
    """Download models into the cache (verified; once, whichever process asks first) and print their paths."""
    from .pretrained import fetch

    for name in names:
        typer.echo(fetch(name))


@models_app.command("path")
def models_path(name: str = typer.Argument(..., help="Model name.")) -> None:
    """Print where a model's file is in the cache; exit 1 when it is not downloaded yet (put it there by hand,
    or vista2d models pull NAME)."""
    from .pretrained import cache_path

    path = cache_path(name)
    typer.echo(path)
    if not path.is_file():
        typer.echo(f"not downloaded yet: vista2d models pull {name}, or put the file there by hand", err=True)
        raise typer.Exit(1)


@models_app.command("convert")
def models_convert(
    source: str = typer.Argument(..., help="A checkpoint any backbone reads (a cellpose file too), or a model name."),
    output: Path = typer.Argument(..., help="The vista2d checkpoint to write."),
    set_: list[str] | None = _SET,
) -> None:
    """Write a checkpoint in vista2d's layout: its weights and the settings that go with them."""
    from .model import build_model, save_checkpoint
    from .recipe import apply_overrides, inference_settings, recipe_from_dict, recipe_to_dict

    recipe = recipe_from_dict(apply_overrides({"mode": "infer", "model": {"checkpoint": source}}, set_ or []))
    net = build_model(recipe.model)
    typer.echo(save_checkpoint(net, output, inference=inference_settings(recipe_to_dict(recipe))))


@synthetic_app.command("preview")
def synthetic_preview(
    output: Path = typer.Argument(Path("synthetic_preview.png"), help="The PNG to write."),
    count: int = typer.Option(16, min=1, help="How many images."),
    size: int = typer.Option(256, min=32, help="Image size in pixels."),
    seed: int = typer.Option(0, help="Random seed."),
    columns: int = typer.Option(4, min=1, help="Images per row."),
) -> None:
    """Draw a grid of generated images with their labels' outlines: what the quickstart trains on."""
    from .synthetic import preview

    try:
        typer.echo(preview(output, count, size, seed, columns))
    except OSError as exc:
        raise UserError(f"{output}: cannot write the preview ({exc.strerror or exc})") from None


@recipe_app.command("check")
def recipe_check(recipe: Path = typer.Argument(...), set_: list[str] | None = _SET) -> None:
    """Validate a recipe: every problem is listed with its dotted key."""
    from . import load_recipe
    from .recipe import check_stages

    loaded = load_recipe(recipe, set_ or [])
    check_stages(loaded)
    typer.echo(f"{recipe}: ok ({' -> '.join(loaded.mode)})")


@recipe_app.command("show")
def recipe_show(recipe: Path = typer.Argument(...), set_: list[str] | None = _SET) -> None:
    """Print the resolved recipe (defaults filled in, paths absolute) as TOML."""
    from . import dump_recipe, load_recipe

    typer.echo(dump_recipe(load_recipe(recipe, set_ or [])), nl=False)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if debug:  # accepted anywhere: the root callback parses it before the command
        argv = ["--debug", *(a for a in argv if a != "--debug")]
    from .progress import setup_logging

    setup_logging(debug)
    try:
        # without standalone mode, click returns the code of a typer.Exit raised by a command
        status = app(args=argv, prog_name="vista2d", standalone_mode=False)
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
    return status if isinstance(status, int) else 0

