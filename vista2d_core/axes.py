"""Named axes of image arrays (T, Z, C, Y, X): resolved from the reader or ``data.axes``, never guessed
where the guess could be wrong, and planes read from them region by region.

A resolved axes string has one letter per array axis, each of T, Z, C, Y, X at most once (Y and X
always), plus Q for axes of size 1 that carry nothing. Planes are the (T, Z) positions; a plane is read
as (C, h, w) whatever the file's order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import UserError

NAMED = "TZCYX"
STACK = "TZ"  # axes segmented plane by plane, kept in the labels


def check_axes_text(text: str) -> None:
    """ValueError unless ``text`` is a layout such as "ZCYX": letters from T, Z, C, Y, X, each at most
    once, Y and X included, and Q for axes of size 1 (the recipe key ``data.axes``)."""
    named = text.upper().replace("Q", "")
    if set(named) - set(NAMED) or len(set(named)) != len(named) or not {"Y", "X"} <= set(named):
        raise ValueError(f"{text!r} is not a layout: one letter per array axis from T (time), Z, C "
                         f"(channels), Y, X, each at most once, Y and X included, Q for an axis of "
                         f"size 1 (e.g. \"ZCYX\")")


def resolve_axes(axes: str, shape: tuple[int, ...], override: str | None = None, source: str = "image") -> str:
    """The axes of an array of ``shape``: ``override`` (``data.axes``) when given, else the reader's
    ``axes`` with S (a pixel's samples) read as C and axes of size 1 the file does not name set aside (Q).

    An unnamed axis (Q, I, ...) of more than 1 entry is channels when it is the only one, the image has 3
    axes of more than 1 entry and it has at most 4 entries (RGB(A), a few stains), as arrays are read everywhere in the toolkit;
    otherwise it is a UserError naming ``source``, the shape and the key to set.
    """
    if override:
        key = override.upper()
        if len(key) != len(shape):
            raise UserError(f"{source}: data.axes = {override!r} names {len(key)} axes but the image has "
                            f"{len(shape)}, shape {tuple(shape)} (the file says {axes!r})")
        return key
    letters = ["C" if a == "S" else a if a in NAMED else "Q" for a in axes.upper()]
    if len(letters) != len(shape):
        raise UserError(f"{source}: the reader named {len(letters)} axes ({axes!r}) for an image of shape "
                        f"{tuple(shape)}: set data.axes")
    unknown = [i for i, (a, n) in enumerate(zip(letters, shape)) if a == "Q" and n > 1]
    wide = sum(n > 1 for n in shape)
    if len(unknown) == 1 and wide == 3 and shape[unknown[0]] <= 4 and "C" not in letters:
        letters[unknown[0]] = "C"
    elif unknown:
        i = unknown[0]
        raise UserError(
            f"{source}: cannot tell what the axis of {shape[i]} entries is (shape {tuple(shape)}, axes "
            f"{axes!r}): set data.axes, e.g. data.axes = \"{_example(letters, i, 'Z')}\" (z-stack), "
            f"\"{_example(letters, i, 'T')}\" (time series) or \"{_example(letters, i, 'C')}\" (channels)"
        )
    for letter in NAMED:
        if letters.count(letter) > 1:
            raise UserError(f"{source}: axes {axes!r} name {letter} twice: set data.axes")
    if "Y" not in letters or "X" not in letters:
        raise UserError(f"{source}: axes {axes!r} (shape {tuple(shape)}) have no Y and X: set data.axes")
    return "".join(letters)


def _example(letters: list[str], index: int, letter: str) -> str:
    return "".join(letter if i == index else a for i, a in enumerate(letters))


def stack_axes(axes: str, shape: tuple[int, ...]) -> str:
    """The leading axes of the labels: T and Z of more than one plane, in T, Z order ("", "Z", "TZ")."""
    return "".join(a for a in STACK if a in axes and shape[axes.index(a)] > 1)


def stack_shape(axes: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Sizes of :func:`stack_axes`."""
    return tuple(shape[axes.index(a)] for a in stack_axes(axes, shape))


def plane_size(axes: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """(Y, X) of the image."""
    return shape[axes.index("Y")], shape[axes.index("X")]


def planes(axes: str, shape: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    """Every plane's index into the stack axes, in order (one empty tuple for a 2-D image)."""
    return itertools.product(*(range(n) for n in stack_shape(axes, shape)))


def read_plane(
    data: Any, axes: str, plane: tuple[int, ...] = (), rows: slice = slice(None), cols: slice = slice(None)
) -> np.ndarray:
    """Rows and columns of one plane of ``data`` (numpy, zarr or dask; only that region is read) as a
    (C, h, w) numpy array; ``plane`` indexes :func:`stack_axes`."""
    stack = dict(zip(stack_axes(axes, data.shape), plane))
    index: list[Any] = []
    for a in axes:
        if a in "YX":
            index.append(rows if a == "Y" else cols)
        elif a == "C":
            index.append(slice(None))
        else:
            index.append(stack.get(a, 0))
    region = np.asarray(data[tuple(index)])
    kept = [a for a in axes if a in "CYX"]
    if "C" not in kept:
        return region[np.newaxis]
    return region.transpose([kept.index(a) for a in "CYX"])
