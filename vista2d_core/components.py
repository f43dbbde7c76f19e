"""Components: the plugins a recipe names (``infer.postprocessor = { name = "cellpose", niter = 200 }``).

A :class:`Component` is a plugin's name and its options structured into the plugin's own ``Options``; it
structures itself (:mod:`~vista2d_core.options`) by loading the plugin from the registry, so a misspelt
option is reported at its dotted path. :func:`create` builds a plugin from keyword options. This module
sits above both :mod:`~vista2d_core.options` (plain data -> attrs) and :mod:`~vista2d_core.registry`
(discovering and checking plugins), which know nothing of each other.
"""

from __future__ import annotations

from typing import Any

import attrs

from . import registry
from .errors import UserError
from .options import Context, describe_value, structure, unstructure
from .pretrained import model_file


@attrs.define
class Component:
    """A plugin chosen in a recipe: its ``kind``, ``name`` and structured ``options`` (the plugin's Options)."""

    kind: str
    name: str
    options: Any = None

    def to_data(self) -> dict[str, Any]:
        """The recipe table for this component, defaults filled in."""
        return {"name": self.name, **unstructure(self.options)}

    def create(self, *args: Any) -> Any:
        """Instantiate the plugin with these options (``args`` go to its constructor after them)."""
        return registry.load(self.kind, self.name)(self.options, *args)

    @classmethod
    def from_data(cls, value: Any, path: str, ctx: Context, meta: dict[str, Any]) -> Any:
        """A plugin name, or a table with ``name`` and the plugin's options, at ``path`` (problems into
        ``ctx``); ``meta["kind"]`` is the plugin kind."""
        kind = meta["kind"]
        if isinstance(value, Component):
            return value
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            ctx.fail(path, f"expected a plugin name or a table with 'name', got {describe_value(value)}")
            return value
        value = dict(value)
        name = value.pop("name", None)
        if not isinstance(name, str):
            installed = ", ".join(registry.available(kind))
            ctx.fail(path, f"missing 'name' (installed {registry.group(kind)}: {installed})")
            return value
        try:
            plugin = registry.load(kind, name)
        except UserError as exc:
            ctx.fail(f"{path}.name", str(exc))
            return value
        return cls(registry.canonical_kind(kind), str(name), ctx.structure(plugin.Options, value, path))


def component(kind: str, name: str, inference: bool = False, **options: Any) -> Any:
    """An attrs field holding a Component of ``kind``; default plugin ``name`` with ``options``.
    ``inference``: the choice goes with a model's weights (:func:`vista2d_core.recipe.inference_settings`)."""
    default = {"name": name, **options}
    return attrs.field(
        factory=lambda: structure(Component, default, kind=kind, named_file=model_file),
        metadata={"kind": kind, "default_data": default, "inference": inference},
    )


def create(kind: str, name: str, /, **options: Any) -> Any:
    """Build plugin ``name`` of ``kind`` from keyword options (validated into its ``Options`` class)."""
    plugin = registry.load(kind, name)
    opts = structure(plugin.Options, options, path=f"{registry.canonical_kind(kind)}.{name}", named_file=model_file)
    return plugin(opts)
