"""Models by name: model cards (entry-point group ``vista2d.models``) and their files in the cache.

A name such as ``"vista2d"`` works wherever a recipe takes a model file (``model.checkpoint``, the ``sam``
backbone's ``weights``: Path fields with ``metadata={"model_name": True}``) when no file of that name
exists: it stands for the card's file in the cache, ``$VISTA2D_HOME/models/<name>/<file name of the URL>``
(``VISTA2D_HOME`` defaults to ``~/.cache/vista2d``), downloaded on first use with its licence shown
(:func:`vista2d_core.download.download`: resumed, verified, once across processes). With
``VISTA2D_OFFLINE=1`` nothing is downloaded: a name whose file is not in the cache is an error.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from pathlib import Path, PurePosixPath

from . import registry
from .errors import UserError
from .interfaces import ModelCard

log = logging.getLogger("vista2d")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def home() -> Path:
    """The cache folder: ``$VISTA2D_HOME``, default ``~/.cache/vista2d``."""
    return Path(os.environ.get("VISTA2D_HOME") or "~/.cache/vista2d").expanduser()


def offline() -> bool:
    """Whether ``VISTA2D_OFFLINE`` forbids downloads (set to anything but "", "0", "false", "no")."""
    return os.environ.get("VISTA2D_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def is_model_name(text: str) -> bool:
    """Whether ``text`` can only be a model name, not a path: letters, digits, ``_`` and ``-`` (no folder,
    no suffix) naming an installed model card."""
    return bool(_NAME.fullmatch(text)) and text in registry.available("models")


def model_card(name: str) -> ModelCard:
    """The validated card of model ``name`` (UserError naming the package and key when it is invalid)."""
    return registry.load("models", name)


def cache_path(name: str, card: ModelCard | None = None) -> Path:
    """Where model ``name``'s file is (or will be, once downloaded) in the cache."""
    card = card or model_card(name)
    return home() / "models" / name / (PurePosixPath(urllib.parse.urlparse(card.url).path).name or name)


def fetch(name: str) -> Path:
    """The file of model ``name`` in the cache, downloaded first when missing (its licence is shown);
    UserError, in one line naming the model, the URL and the cache path, when that fails."""
    card = model_card(name)
    path = cache_path(name, card)
    if path.is_file():
        return path
    if offline():
        raise UserError(f"model '{name}' is not in the cache and VISTA2D_OFFLINE is set: download {card.url} "
                        f"(or run `vista2d models pull {name}` where there is a network) to {path}")
    licence = f" (licence: {card.licence})" if card.licence else ""
    log.info(f"downloading model '{name}'{licence} from {card.url}")
    from .download import download

    try:
        return download(card.url, path, card.sha256)
    except UserError as exc:
        raise UserError(f"model '{name}': {exc}") from None


def model_file(text: str) -> Path | None:
    """The cached file of model ``text`` (downloaded when missing), or None when ``text`` is no model name:
    how recipe fields with ``metadata={"model_name": True}`` accept names (see :mod:`vista2d_core.options`)."""
    return fetch(text) if is_model_name(text) else None
