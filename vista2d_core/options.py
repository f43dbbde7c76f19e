"""Structure plain data (parsed TOML) into attrs classes, reporting every problem with its dotted path.

Supported field types: bool, int, float, str, Path, Literal[...], X | None, list[X], tuple[X, ...],
tuple[X, Y], dict[str, Any], nested attrs classes, and classes that structure themselves: a classmethod
``from_data(value, path, context, metadata)`` and a method ``to_data()`` (such as
:class:`~vista2d_core.components.Component`, a plugin chosen in a recipe). Path fields resolve against
``base_dir`` (strings typed on the command line, :class:`CommandLineText`, against the current folder)
and are normalised (no ``..``); a field with ``metadata={"must_exist": True}`` must name an existing file
or folder (with ``"model_name": True`` also a name that ``named_file`` turns into a file: models by name,
:func:`vista2d_core.pretrained.model_file`), and a str field with ``metadata={"path_pattern": True}``
(file globs) resolves like a path.
Validators declared on the fields run too, and their messages are reported with the field's path.
This module knows nothing of plugins: the registry and the components build on it.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union

import attrs

from .errors import RecipeError, UserError


class CommandLineText(str):
    """A string typed on the command line (``--set``): as a path it is relative to the current folder."""


def resolve_path(value: str | Path, base_dir: Path | None) -> Path:
    """``value`` as an absolute, normalised path: ``~`` expanded; relative to ``base_dir`` (the current
    folder for :class:`CommandLineText` or when ``base_dir`` is None)."""
    p = Path(value).expanduser()
    if not p.is_absolute():
        p = (Path.cwd() if base_dir is None or isinstance(value, CommandLineText) else base_dir) / p
    return Path(os.path.normpath(p))


def describe_value(value: Any) -> str:
    """``value`` as a message shows it: strings quoted, booleans in TOML, tables and lists by kind."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


NamedFile = Callable[[str], "Path | None"]


class Context:
    """One structuring: where relative paths start, how names become files, and every problem so far."""

    def __init__(self, base_dir: Path | None, named_file: NamedFile | None = None) -> None:
        self.base_dir = base_dir
        self.named_file = named_file
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        """Record a problem at the dotted ``path``."""
        self.problems.append(f"{path}: {message}" if path else message)

    def structure(self, cls: type, data: Any, path: str) -> Any:
        """``data`` structured into the attrs class ``cls`` (None after recording its problems)."""
        return _structure(cls, data, path, self)


_MISSING = object()


def _convert(tp: Any, value: Any, path: str, ctx: Context, meta: dict) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _convert(options[0], value, path, ctx, meta)
        for option in options:  # first that converts without problems
            trial = Context(ctx.base_dir, ctx.named_file)
            result = _convert(option, value, path, trial, meta)
            if not trial.problems:
                return result
        return _convert(options[-1], value, path, ctx, meta)
    if origin is Literal:
        if value not in args:
            ctx.fail(path, f"expected one of {', '.join(describe_value(a) for a in args)}, got {describe_value(value)}")
        return str(value) if isinstance(value, str) else value
    if isinstance(tp, type) and hasattr(tp, "from_data"):
        return tp.from_data(value, path, ctx, meta)
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            ctx.fail(path, f"expected a list, got {describe_value(value)}")
            return value
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                ctx.fail(path, f"expected a list of {len(args)} items, got {len(value)}")
                return tuple(value)
            return tuple(_convert(a, v, f"{path}[{i}]", ctx, meta) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_convert(item, v, f"{path}[{i}]", ctx, meta) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            ctx.fail(path, f"expected a table, got {describe_value(value)}")
        return value
    if isinstance(tp, type) and attrs.has(tp):
        return _structure(tp, value, path, ctx)
    if tp is bool:
        if not isinstance(value, bool):
            ctx.fail(path, f"expected true or false, got {describe_value(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            ctx.fail(path, f"expected an integer, got {describe_value(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            ctx.fail(path, f"expected a number, got {describe_value(value)}")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            ctx.fail(path, f"expected a string, got {describe_value(value)}")
            return value
        return str(resolve_path(value, ctx.base_dir)) if meta.get("path_pattern") else str(value)
    if tp is Path:
        if not isinstance(value, (str, Path)):
            ctx.fail(path, f"expected a path, got {describe_value(value)}")
            return value
        p = resolve_path(value, ctx.base_dir) if ctx.base_dir is not None or isinstance(value, CommandLineText) \
            else Path(value).expanduser()
        if meta.get("must_exist") and not p.exists():
            try:
                named = ctx.named_file(str(value)) if meta.get("model_name") and ctx.named_file else None
            except UserError as exc:
                ctx.fail(path, str(exc))
                return p
            if named is None:
                ctx.fail(path, f"no such file: {p}{meta.get('hint', '')}")
                return p
            return named
        return p
    raise TypeError(f"options.structure: unsupported field type {tp!r} at {path}")


def _structure(cls: type, data: Any, path: str, ctx: Context) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        ctx.fail(path, f"expected a table, got {describe_value(data)}")
        return None
    fields = attrs.fields_dict(cls)
    hints = typing.get_type_hints(cls)
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in fields:
            ctx.fail(f"{prefix}{key}", f"unknown option (known: {', '.join(fields) or 'none'})")
    kwargs, before = {}, len(ctx.problems)
    for name, field in fields.items():
        if name not in data:
            # Defaults that hold plugins are structured here too, so their problems carry a path.
            tp = hints[name]
            if "default_data" in field.metadata:
                kwargs[name] = _convert(tp, field.metadata["default_data"], f"{prefix}{name}", ctx, dict(field.metadata))
            elif isinstance(tp, type) and attrs.has(tp) and isinstance(field.default, attrs.Factory):
                kwargs[name] = _structure(tp, {}, f"{prefix}{name}", ctx)
            elif field.default is attrs.NOTHING:
                ctx.fail(f"{prefix}{name}", "missing (required)")
            elif field.default is not None and not isinstance(field.default, attrs.Factory):
                # plain defaults too, so a default relative path resolves against the recipe's folder
                kwargs[name] = _convert(tp, field.default, f"{prefix}{name}", ctx, dict(field.metadata))
            continue
        value, default = data[name], field.metadata.get("default_data")
        if isinstance(default, dict) and isinstance(value, dict) and "name" not in value:
            value = {**default, **value}  # options for the default plugin (e.g. --set infer.postprocessor.niter=5)
        kwargs[name] = _convert(hints[name], value, f"{prefix}{name}", ctx, dict(field.metadata))
    if len(ctx.problems) > before:
        return None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        # attrs validators say e.g. "'epochs' must be >= 1: 0": report it at the field's path.
        text = str(exc.args[0]) if exc.args else str(exc)
        match = re.match(r"'(\w+)' (.*)", text)
        if match:
            ctx.fail(f"{prefix}{match[1]}", match[2])
        else:
            ctx.fail(path, text)
        return None


def structure(
    cls: type, data: Any, path: str = "", base_dir: Path | None = None, kind: str | None = None,
    named_file: NamedFile | None = None,
) -> Any:
    """Build ``cls`` from ``data``; raise RecipeError listing every problem (dotted paths). ``kind``: for a
    class that structures itself (a Component's plugin kind); ``named_file``: see the module docstring."""
    ctx = Context(base_dir, named_file)
    if hasattr(cls, "from_data"):
        result = cls.from_data(data, path, ctx, {"kind": kind})
    else:
        result = _structure(cls, data, path, ctx)
    if ctx.problems:
        raise RecipeError(ctx.problems)
    return result


def unstructure(obj: Any) -> Any:
    """Plain TOML-ready data from attrs instances, Components, Paths and tuples (None values dropped)."""
    if hasattr(obj, "to_data"):
        return obj.to_data()
    if attrs.has(type(obj)):
        out = {}
        for field in attrs.fields(type(obj)):
            value = unstructure(getattr(obj, field.name))
            if value is not None:
                out[field.name] = value
        return out
    if isinstance(obj, (list, tuple)):
        return [unstructure(v) for v in obj]
    if isinstance(obj, dict):
        return {k: unstructure(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (Path, str)):
        return str(obj)  # plain str, also for CommandLineText (checkpoints are read with weights_only)
    return obj
