"""Atomic writing, for the core and for plugins: write to a temporary file or folder beside the target,
then rename it into place, so a reader never sees a half-written file and a failed write leaves nothing.

    with atomic_path(out / "labels.tif") as tmp:   # the block writes tmp (same folder, same suffix)
        tifffile.imwrite(tmp, labels)             # on success tmp replaces the target; on failure it is removed
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def _beside(target: Path, tag: str) -> Path:
    """A hidden, unique name in ``target``'s folder that keeps ``target``'s suffix."""
    return target.with_name(f".{target.stem}.{secrets.token_hex(4)}.{tag}{target.suffix}")


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s folder (parents created) with ``target``'s suffix, so libraries
    that pick a format by suffix still work. When the block succeeds the temporary file replaces ``target``
    (``os.replace``); when it raises, the temporary file is removed and ``target`` is left untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(target, "tmp")
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder (an OME-Zarr): the block creates the yielded temporary folder;
    on success it is renamed to ``target``. An existing ``target`` is first renamed aside, then deleted
    once the new folder is in place (a folder cannot be replaced by one rename); on failure the temporary
    folder is removed and ``target`` is left untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _beside(target, "tmp")
    try:
        yield tmp
        if not target.exists():
            os.replace(tmp, target)
            return
        old = _beside(target, "old")
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_path`; return ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
