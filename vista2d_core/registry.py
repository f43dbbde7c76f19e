"""Plugin registries: one stevedore entry-point group per kind (``vista2d.<kind>``).

``available(kind)`` and ``describe()`` read entry-point metadata only, so listing is instant and a broken
plugin cannot break a listing. ``load(kind, name)`` imports one plugin and checks it against its kind's
interface (a model card, kind ``models``, is structured into :class:`~vista2d_core.interfaces.ModelCard`
instead). Building a plugin from options is :mod:`~vista2d_core.components`'. Every failure is a :class:`UserError` whose message names the group and the plugin.
The same name registered twice with different targets is an error, never a silent override.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
from typing import Any

import attrs
from stevedore import ExtensionManager, NamedExtensionManager

from .errors import RecipeError, UserError
from .interfaces import KINDS, ModelCard, missing_members
from .options import structure


def group(kind: str) -> str:
    """Entry-point group of ``kind``; accepts singular ("reader") and plural ("readers")."""
    return f"vista2d.{canonical_kind(kind)}"


def canonical_kind(kind: str) -> str:
    """The plural kind name; raises UserError for an unknown kind."""
    for candidate in (kind, kind + "s", kind + "es"):
        if candidate in KINDS:
            return candidate
    raise UserError(f"unknown plugin kind '{kind}' (kinds: {', '.join(KINDS)})")


def _entry_points(kind: str) -> list[importlib.metadata.EntryPoint]:
    # ExtensionManager.list_entry_points reads (cached) metadata without importing any plugin.
    manager = ExtensionManager.__new__(ExtensionManager)
    manager.namespace = group(kind)
    seen: dict[tuple[str, str], importlib.metadata.EntryPoint] = {}
    for ep in manager.list_entry_points():
        seen.setdefault((ep.name, ep.value), ep)
    return list(seen.values())


def available(kind: str) -> list[str]:
    """Sorted names installed for ``kind``, read from metadata without importing any plugin."""
    return sorted({ep.name for ep in _entry_points(kind)})


@attrs.frozen
class PluginInfo:
    """One row of ``vista2d plugins``: where a plugin comes from and whether it loads."""

    kind: str
    name: str
    target: str
    package: str
    summary: str = ""
    error: str = ""


@functools.cache
def _module_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _package_of(target: str) -> str:
    top = target.split(":")[0].split(".")[0]
    return ", ".join(dict.fromkeys(_module_distributions().get(top, [top])))  # an egg-info may list it twice


def describe(kind: str | None = None, *, load_plugins: bool = True) -> list[PluginInfo]:
    """Every installed plugin (of ``kind``, or all kinds) with its package, summary and load error."""
    rows = []
    for k in [canonical_kind(kind)] if kind else list(KINDS):
        for ep in sorted(_entry_points(k), key=lambda e: e.name):
            summary, error = "", ""
            if load_plugins:
                try:
                    plugin = load(k, ep.name)
                    doc = plugin.description if isinstance(plugin, ModelCard) else plugin.__doc__ or ""
                    summary = (doc.strip().splitlines() or [""])[0]
                except UserError as exc:
                    error = str(exc)
            rows.append(PluginInfo(k, ep.name, ep.value, _package_of(ep.value), summary, error))
    return rows


def unknown_name_message(kind: str, name: str) -> str:
    """The message for a plugin name that is not installed: close matches and every installed name."""
    names = available(kind)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return f"no plugin '{name}' in {group(kind)}: {hint}installed: {', '.join(names) or 'none'}"


def load(kind: str, name: str) -> Any:
    """Import plugin ``name`` of ``kind`` and check it against the kind's interface; for ``models``, the
    validated :class:`~vista2d_core.interfaces.ModelCard`."""
    kind = canonical_kind(kind)
    targets = sorted({ep.value for ep in _entry_points(kind) if ep.name == name})
    if not targets:
        raise UserError(unknown_name_message(kind, name))
    if len(targets) > 1:
        packages = [f"{t} ({_package_of(t)})" for t in targets]
        raise UserError(
            f"plugin '{name}' in {group(kind)} is registered more than once: {'; '.join(packages)}; "
            "uninstall one of these packages"
        )
    failures: list[BaseException] = []
    manager = NamedExtensionManager(
        group(kind),
        names=[name],
        on_load_failure_callback=lambda _m, _ep, exc: failures.append(exc),
        on_missing_entrypoints_callback=None,
    )
    if failures or name not in manager.names():
        reason = f"{type(failures[0]).__name__}: {failures[0]}" if failures else "it did not load"
        raise UserError(f"plugin '{name}' in {group(kind)} ({targets[0]}) is broken: {reason}")
    plugin = manager[name].plugin
    if kind == "models":
        return _model_card(plugin, name, targets[0])
    missing = missing_members(plugin, kind)
    if missing:
        interface = KINDS[kind].__name__
        raise UserError(
            f"plugin '{name}' in {group(kind)} ({targets[0]}) does not satisfy {interface}: "
            f"missing {', '.join(missing)}"
        )
    return plugin


def _model_card(value: Any, name: str, target: str) -> ModelCard:
    """The card an entry point names (a dict, or a callable returning one), structured and validated."""
    where = f"model card '{name}' in {group('models')} ({target}, package {_package_of(target)})"
    try:
        data = value() if callable(value) else value
    except Exception as exc:  # noqa: BLE001 (a third party's function: report whatever it raises)
        raise UserError(f"{where} is broken: {type(exc).__name__}: {exc}") from None
    try:
        return structure(ModelCard, data)
    except RecipeError as exc:
        raise UserError(f"{where}: {'; '.join(exc.problems)}") from None
