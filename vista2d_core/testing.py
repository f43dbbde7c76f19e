"""Contract checks for plugins, for this project's tests and for plugin authors' own.

    from vista2d_core.testing import check_plugin, installed_plugins

    def test_my_postprocessor_keeps_its_contract():
        check_plugin("postprocessors", "threshold")

    @pytest.mark.parametrize(("kind", "name"), installed_plugins())   # every plugin in this environment
    def test_every_installed_plugin(kind, name):
        check_plugin(kind, name)

:func:`check_plugin` raises :class:`ContractError` (an ``AssertionError``) naming the plugin and what it breaks. It checks what can be
checked cheaply for every plugin of a kind: that it loads and has every member of its interface
(:func:`vista2d_core.interfaces.missing_members`), that its ``Options`` build from their defaults (a recipe
may name the plugin alone), the types of its declared attributes, and by kind: a postprocessor's labels for
small logits with one cell, a hook's state surviving a checkpoint's save and load. Networks (backbones,
heads) are not built: their own tests do that.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from . import registry
from .errors import RecipeError, UserError
from .interfaces import KINDS
from .options import structure


class ContractError(AssertionError):
    """A plugin breaks its kind's contract (an ``AssertionError``, so pytest shows it as a failed check)."""


def installed_plugins(kinds: list[str] | None = None) -> list[tuple[str, str]]:
    """Every installed (kind, name), of ``kinds`` or all kinds, from metadata (nothing is imported)."""
    return [(kind, name) for kind in kinds or list(KINDS) for name in registry.available(kind)]


def check_plugin(kind: str, name: str) -> None:
    """Check plugin ``name`` of ``kind`` against its kind's contract (see the module docstring)."""
    where = f"plugin '{name}' in {registry.group(kind)}"
    try:
        plugin = registry.load(kind, name)
    except UserError as exc:
        raise ContractError(str(exc)) from None
    kind = registry.canonical_kind(kind)
    if kind == "models":
        return  # a card is checked by loading it (structured into ModelCard)
    try:
        options = structure(plugin.Options, {}, path=name)
    except RecipeError as exc:
        raise ContractError(f"{where}: its Options do not build from their defaults: {'; '.join(exc.problems)}") from None
    _CHECKS.get(kind, _nothing)(plugin, options, where)


def _nothing(plugin: Any, options: Any, where: str) -> None:
    pass


def _backbone(plugin: Any, options: Any, where: str) -> None:
    channels = plugin.out_channels
    if not (isinstance(channels, int) and channels > 0) and not isinstance(channels, property):
        raise ContractError(f"{where}: out_channels must be a positive int, got {channels!r}")


def _reader(plugin: Any, options: Any, where: str) -> None:
    bad = [s for s in plugin.suffixes if not (isinstance(s, str) and s.startswith(".") and s == s.lower())]
    if bad:
        raise ContractError(f"{where}: suffixes must be lower-case and start with '.': {bad}")


def _flag(attribute: str) -> Any:
    def check(plugin: Any, options: Any, where: str) -> None:
        if not isinstance(getattr(plugin, attribute), bool):
            raise ContractError(f"{where}: {attribute} must be True or False")

    return check


def _postprocessor(plugin: Any, options: Any, where: str) -> None:
    logits = np.full((3, 48, 48), -8.0, dtype=np.float32)
    logits[1:] = 0.0
    yy, xx = np.mgrid[:48, :48]
    disk = (yy - 24) ** 2 + (xx - 24) ** 2 < 10**2
    logits[0][disk] = 8.0
    logits[1][disk] = -5.0 * (yy - 24)[disk] / 10  # flows x5 towards the centre, as the network gives them
    logits[2][disk] = -5.0 * (xx - 24)[disk] / 10
    labels = plugin(options)(logits)
    if not (isinstance(labels, np.ndarray) and labels.shape == (48, 48) and labels.dtype in (np.uint16, np.uint32)):
        shape, dtype = getattr(labels, "shape", None), getattr(labels, "dtype", type(labels).__name__)
        raise ContractError(f"{where}: expected (48, 48) uint16 labels for (3, 48, 48) logits, got {shape} {dtype}")
    found = np.unique(labels)
    if found[0] != 0 or list(found[1:]) != list(range(1, len(found))):
        raise ContractError(f"{where}: labels must be 0 (background) and objects 1..N, got {found.tolist()}")
    if not labels[24, 24] or labels[0, 0]:
        raise ContractError(f"{where}: one bright disk of cell probability should give one object at its centre")


def _hook(plugin: Any, options: Any, where: str) -> None:
    if not hasattr(plugin, "state_dict"):
        return
    import torch

    hook = plugin(options)
    buffer = io.BytesIO()
    torch.save({"hooks": [[where, hook.state_dict()]]}, buffer)
    buffer.seek(0)
    try:
        state = torch.load(buffer, weights_only=True)["hooks"][0][1]
    except Exception as exc:  # noqa: BLE001 (torch raises many types for what it refuses to load)
        raise ContractError(f"{where}: state_dict() must be plain data that checkpoints load back "
                             f"(weights_only): {type(exc).__name__}: {exc}") from None
    plugin(options).load_state_dict(state)


_CHECKS = {
    "backbones": _backbone,
    "readers": _reader,
    "writers": _flag("needs_logits"),
    "runtimes": _flag("can_train"),
    "postprocessors": _postprocessor,
    "hooks": _hook,
}
