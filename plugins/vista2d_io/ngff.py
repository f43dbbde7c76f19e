"""OME-NGFF (OME-Zarr) metadata: read the level-0 array and axes of a multiscale image (NGFF 0.4, zarr v2
``.zattrs``; NGFF 0.5, zarr v3 ``zarr.json`` under "ome"), write NGFF 0.4 ``multiscales`` for labels.

Units: NGFF names them ("micrometer"), TIFF and ``Image.metadata`` use symbols ("µm").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_LETTERS = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}
_TYPES = {"T": "time", "C": "channel"}  # the others: space
_NAMES = {
    "Å": "angstrom",
    "nm": "nanometer",
    "µm": "micrometer",
    "mm": "millimeter",
    "cm": "centimeter",
    "m": "meter",
}
_SYMBOLS = {name: symbol for symbol, name in _NAMES.items()} | {
    "um": "µm",
    "\u03bcm": "µm",  # Greek mu
    "micron": "µm",
    "microns": "µm",
}


def unit_symbol(unit: str) -> str:
    """The symbol of ``unit``: "µm" for "micrometer", "um", "micron", ...; other units as given."""
    return _SYMBOLS.get(unit, unit)


def level0(attrs: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]] | None:
    """From a zarr group's attributes: the level-0 array's path, its axes (T, C, Z, Y, X; Q for other
    names) and ``pixel_size``/``unit`` when the x axis has a unit; None without ``multiscales``."""
    multiscales = attrs.get("ome", attrs).get("multiscales")
    if not multiscales:
        return None
    image = multiscales[0]
    axes = [{"name": a} if isinstance(a, str) else a for a in image["axes"]]  # NGFF 0.3: names only
    names = [a["name"].lower() for a in axes]
    dataset = image["datasets"][0]
    metadata: dict[str, Any] = {}
    if "x" in names and (unit := axes[names.index("x")].get("unit")):
        size = 1.0
        for transform in dataset.get("coordinateTransformations", []) + image.get(
            "coordinateTransformations", []
        ):
            if transform.get("type") == "scale":
                size *= float(transform["scale"][names.index("x")])
        metadata.update(pixel_size=size, unit=unit_symbol(unit))
    return dataset["path"], "".join(_LETTERS.get(n, "Q") for n in names), metadata


def multiscales(axes: str, levels: int, pixel_size: float | None, unit: str | None, name: str) -> list[dict]:
    """NGFF 0.4 ``multiscales`` of an image with ``axes`` (T, C, Z, Y, X) stored as arrays "0", "1", ...
    each halving Y and X; Y and X scaled by ``pixel_size`` in ``unit`` (when NGFF names the unit)."""
    unit_name = _NAMES.get(unit_symbol(unit or ""))
    entries = []
    for letter in axes:
        entry = {"name": letter.lower(), "type": _TYPES.get(letter, "space")}
        if letter in "YX" and unit_name and pixel_size:
            entry["unit"] = unit_name
        entries.append(entry)
    size = pixel_size if unit_name and pixel_size else 1.0
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [
                {"type": "scale", "scale": [size * 2**level if a in "YX" else 1.0 for a in axes]}
            ],
        }
        for level in range(levels)
    ]
    return [{"version": "0.4", "name": name, "axes": entries, "datasets": datasets}]
