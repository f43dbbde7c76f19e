"""Deterministic synthetic cell microscopy images with exact instance labels.

Every image has one of five looks: ``fluorescence`` (bright cells on dark, or inverted: dark on bright),
``phase_dark`` (dark cells with a bright halo on a bright background), ``phase_bright`` (bright cells with
a dark halo on grey), ``he`` (RGB: haematoxylin nuclei with chromatin on eosin, stain vectors varying
from slide to slide) and ``tissue`` (RGB: crowded cells with green membranes, blue nuclei, membranes
missing in places; half of them epithelia, polygonal cells tiling a region); some fluorescence images are
RGB composites of one colour. Cells are round, rod-like (bent, up to 10:1) or spindle-shaped, 6 to ~80 px
long, with smooth random radial perturbation; images are sparse, crowded or dense colonies; touching cells
split along a weighted-Voronoi line that shows only as slight dimming. Images carry out-of-focus cells,
unlabelled debris, blur, Poisson and Gaussian noise, uneven illumination, sometimes a tiling seam or
saturation, and come in uint8, uint16 (small and large ranges) and float32, as TIFF or PNG.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage

from .files import atomic_path, atomic_write_text

VERSION = 4  # bump whenever the images change, so that existing datasets regenerate
MIN_SIZE = 20  # pixels; smaller objects are removed (cellpose drops objects under 15)
STYLES = ("fluorescence", "phase_dark", "phase_bright", "he", "tissue")
# the training set's cycle of looks: the hard ones (H&E, rods in phase contrast, tissue) twice
MIX = ("fluorescence", "he", "phase_dark", "tissue", "phase_bright", "he", "phase_dark", "tissue")
_SHAPES = {
    "fluorescence": ("round", "round", "spindle", "rod"),
    "phase_dark": ("rod", "rod", "round", "spindle"),
    "phase_bright": ("spindle", "spindle", "round", "rod"),
    "he": ("round",),
    "tissue": ("round",),
}
_HAEMATOXYLIN = np.array([0.65, 0.70, 0.29])  # optical density per unit stain (Ruifrok & Johnston)
_EOSIN = np.array([0.07, 0.99, 0.11])


class _Cell(NamedTuple):
    """One cell outline: centre, semi-axes, angle, superellipse exponent, bend and radial harmonics."""

    cy: float
    cx: float
    a: float
    b: float
    angle: float
    p: float
    bend: float
    amps: np.ndarray  # amplitudes of harmonics 2..5 of the radius
    phases: np.ndarray


def generate(
    folder: Path, train_images: int = 48, test_images: int = 8, size: int = 256, seed: int = 0
) -> Path:
    """Write images + labels + datalist.json into folder (if datalist.json with the same settings already
    exists, reuse it: return at once); return the datalist path.

    Files are written under temporary names and renamed; datalist.json comes last and carries the
    settings under ``"synthetic"``, so an interrupted run never looks complete.
    """
    folder = Path(folder)
    datalist = folder / "datalist.json"
    settings = {
        "version": VERSION,
        "train_images": train_images,
        "test_images": test_images,
        "size": size,
        "seed": seed,
    }
    if _is_complete(datalist, settings):
        return datalist
    datalist.unlink(missing_ok=True)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    train_seeds, test_seeds = np.random.SeedSequence(seed).spawn(2)
    # looks cycle through MIX; 8 and 5 are coprime, so every fold (index % 5) gets every look
    training = [
        {**_write_pair(folder, f"train_{i:03d}", s, size, MIX[i % len(MIX)]), "fold": i % 5}
        for i, s in enumerate(train_seeds.spawn(train_images))
    ]
    testing = [
        _write_pair(folder, f"test_{i:03d}", s, size, STYLES[i % len(STYLES)])
        for i, s in enumerate(test_seeds.spawn(test_images))
    ]
    text = json.dumps({"training": training, "testing": testing, "synthetic": settings}, indent=1)
    atomic_write_text(datalist, text)
    return datalist


def make_image(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic (image, labels) pair: image (C,H,W) or (H,W) in some dtype; labels (H,W) uint16,
    0 = background, 1..N, every object at least MIN_SIZE pixels."""
    return _make_pair(rng, size, STYLES[rng.integers(len(STYLES))])


def _make_pair(rng: np.random.Generator, size: int, style: str) -> tuple[np.ndarray, np.ndarray]:
    """make_image with a given look (one of STYLES)."""
    if style == "tissue" and rng.random() < 0.5:
        labels, dist = _mosaic(rng, size)
    else:
        dense = style == "tissue" or rng.random() < 0.6
        labels, dist = _rasterise(_place_cells(rng, size, style, dense), size)
    image = _RENDER[style](rng, labels, dist)
    return image, labels.astype(np.uint16)


def preview(
    path: Path, count: int = 16, size: int = 256, seed: int = 0, columns: int = 4
) -> Path:
    """Write a PNG grid of ``count`` generated images (looks in the training set's order, MIX), each
    shown plain and with its labels' outlines in yellow; return the path. Grey images are shown with
    1-99.5 percentile contrast, RGB ones as they are."""
    if count < 1 or columns < 1:
        raise ValueError(f"count and columns must be >= 1 (got {count}, {columns})")
    tiles = []
    for i, child in enumerate(np.random.SeedSequence(seed).spawn(count)):
        image, labels = _make_pair(np.random.default_rng(child), size, MIX[i % len(MIX)])
        if image.ndim == 2:
            low, high = np.percentile(image, (1, 99.5))
            grey = np.clip((image - low) / max(high - low, 1e-12), 0, 1)
            rgb = np.repeat(np.rint(grey * 255).astype(np.uint8)[..., None], 3, axis=2)
        else:
            rgb = np.moveaxis(image, 0, -1)
        outlined = rgb.copy()
        outlined[_edges(labels, between_cells=False) & (labels > 0)] = (255, 255, 0)
        gap = np.full((size, 4, 3), 255, np.uint8)
        tiles.append(np.concatenate([rgb, gap, outlined, np.full((size, 12, 3), 255, np.uint8)], axis=1))
    columns = min(columns, count)
    tiles += [np.full_like(tiles[0], 255)] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[r : r + columns], axis=1) for r in range(0, len(tiles), columns)]
    spacer = np.full((12, rows[0].shape[1], 3), 255, np.uint8)
    grid = np.concatenate([part for row in rows for part in (row, spacer)][:-1], axis=0)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path


def _is_complete(datalist: Path, settings: dict) -> bool:
    """Whether datalist exists, was made with these settings and all its files exist."""
    try:
        data = json.loads(datalist.read_text())
    except (OSError, ValueError):
        return False
    items = data.get("training", []) + data.get("testing", [])
    return data.get("synthetic") == settings and all(
        (datalist.parent / item[key]).is_file() for item in items for key in ("image", "label")
    )


def _write_pair(
    folder: Path, name: str, seed: np.random.SeedSequence, size: int, style: str
) -> dict[str, str]:
    """Generate one pair from seed, write it atomically; return its datalist item (relative paths)."""
    rng = np.random.default_rng(seed)
    image, labels = _make_pair(rng, size, style)
    hwc = np.moveaxis(image, 0, -1) if image.ndim == 3 else image
    buf = io.BytesIO()
    if image.dtype == np.uint8 and rng.random() < 0.5:
        image_path = f"images/{name}.png"
        Image.fromarray(hwc).save(buf, format="PNG")
    else:
        image_path = f"images/{name}.tif"
        tifffile.imwrite(buf, hwc, photometric="rgb" if image.ndim == 3 else "minisblack", compression="zlib")
    with atomic_path(folder / image_path) as tmp:
        tmp.write_bytes(buf.getvalue())
    label_path = f"labels/{name}_masks.tif"
    buf = io.BytesIO()
    tifffile.imwrite(buf, labels, compression="zlib")
    with atomic_path(folder / label_path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return {"image": image_path, "label": label_path}


# --- geometry -------------------------------------------------------------------------------------


def _draw_cell(rng: np.random.Generator, size: int, shape: str, scale: float) -> _Cell:
    """Random outline of the given shape family; scale is the image's typical cell radius in pixels."""
    r = scale * rng.lognormal(0.0, 0.2)
    if shape == "rod":  # capsules 2:1 to 10:1, 2.6 to 10 px wide, at most 70 px long, bent up to crescents
        b = float(np.clip(r / 2, 1.3, 5.0))
        a = min(b * np.exp(rng.uniform(np.log(2.0), np.log(10.0))), 35.0)
        p, bend, wobble = rng.uniform(2.0, 3.5), rng.uniform(-0.45, 0.45) / a, 0.03
    elif shape == "spindle":
        aspect = rng.uniform(2.0, 6.0)
        a, b = r * np.sqrt(aspect), max(r / np.sqrt(aspect), 2.0)
        p, bend, wobble = rng.uniform(1.1, 1.6), rng.uniform(-0.2, 0.2) / a, 0.1
    else:
        aspect = rng.uniform(1.0, 2.2)
        a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
        p, bend, wobble = 2.0, 0.0, 0.18
    amps = rng.dirichlet(np.ones(4)) * rng.uniform(0.0, wobble)
    margin = 0.5 * a
    cy, cx = rng.uniform(-margin, size + margin, 2)
    return _Cell(cy, cx, a, b, rng.uniform(0, np.pi), p, bend, amps, rng.uniform(0, 2 * np.pi, 4))


def _place_cells(rng: np.random.Generator, size: int, style: str, dense: bool) -> list[_Cell]:
    """Cells covering a random fraction of the image; dense images let neighbours overlap (and so touch).

    Typical radii are log-uniform in 3 to 25 px (cells ~6 to ~80 px long with the spread within an
    image), 8 to 18 px for tissue; crowded images cover 30 to 75 %, sparse ones 4 to 15 %."""
    shape = _SHAPES[style][rng.integers(len(_SHAPES[style]))]
    if style == "tissue":
        scale, coverage, spacing = rng.uniform(8.0, 18.0), rng.uniform(0.6, 0.9), 0.6
    else:
        high = 25.0 if style in ("fluorescence", "phase_bright") else 18.0
        scale = np.exp(rng.uniform(np.log(3.0), np.log(high)))
        coverage, spacing = (
            (rng.uniform(0.3, 0.75), rng.uniform(0.5, 0.85)) if dense else (rng.uniform(0.04, 0.15), 1.2)
        )
    cells: list[_Cell] = []
    centres, radii = np.empty((0, 2)), np.empty(0)
    area, target = 0.0, coverage * size * size
    for _ in range(int(40 * target / (np.pi * scale * scale)) + 20):
        if area >= target:
            break
        cell = _draw_cell(rng, size, shape, scale)
        radius = np.sqrt(cell.a * cell.b)
        gap = np.hypot(centres[:, 0] - cell.cy, centres[:, 1] - cell.cx) - spacing * (radii + radius)
        if np.all(gap > 0):
            cells.append(cell)
            centres, radii = np.vstack([centres, [cell.cy, cell.cx]]), np.append(radii, radius)
            area += np.pi * cell.a * cell.b
    return cells


def _rasterise(cells: list[_Cell], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels 1..N (consecutive, one connected piece each, >= MIN_SIZE px) and each pixel's normalised
    distance to its cell's centre (0 at the centre, 1 at the outline, inf on background).

    A pixel covered by several cells goes to the one whose outline it lies deepest inside."""
    labels = np.zeros((size, size), np.int32)
    dist = np.full((size, size), np.inf)
    for i, c in enumerate(cells, 1):
        reach = max(c.a, c.b + abs(c.bend) * c.a * c.a) * (1 + c.amps.sum()) + 2
        y0, y1 = max(int(c.cy - reach), 0), min(int(c.cy + reach) + 1, size)
        x0, x1 = max(int(c.cx - reach), 0), min(int(c.cx + reach) + 1, size)
        if y0 >= y1 or x0 >= x1:
            continue
        dy, dx = np.arange(y0, y1)[:, None] - c.cy, np.arange(x0, x1)[None, :] - c.cx
        u = dx * np.cos(c.angle) + dy * np.sin(c.angle)
        v = -dx * np.sin(c.angle) + dy * np.cos(c.angle) - c.bend * u * u
        theta = np.arctan2(v / c.b, u / c.a)
        radius = 1 + sum(amp * np.cos(k * theta + ph) for k, amp, ph in zip(range(2, 6), c.amps, c.phases))
        d = ((np.abs(u) / c.a) ** c.p + (np.abs(v) / c.b) ** c.p) ** (1 / c.p) / radius
        win = (d < 1) & (d < dist[y0:y1, x0:x1])
        labels[y0:y1, x0:x1][win] = i
        dist[y0:y1, x0:x1][win] = d[win]
    return _tidy(labels, dist)


def _mosaic(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Epithelium: polygonal cells that tile a region of the image without gaps (the Voronoi cells of a
    jittered grid, radius 9 to 18 px), as _rasterise returns them; dist runs from 0 at the cell's seed
    to 1 at its outline."""
    spacing = 1.8 * rng.uniform(9.0, 18.0)
    grid = np.arange(-spacing / 2, size + spacing, spacing)
    cy, cx = (a.ravel() + rng.uniform(-0.35, 0.35, a.size) * spacing for a in np.meshgrid(grid, grid))
    inside = (cy >= 0) & (cy < size) & (cx >= 0) & (cx < size)
    seeds = np.zeros((size, size), np.int32)
    seeds[cy[inside].astype(int), cx[inside].astype(int)] = np.arange(1, inside.sum() + 1)
    to_seed, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
    labels = seeds[iy, ix]
    region = _smooth(rng, (size, size), size / 5) > rng.uniform(-2.0, 0.3)  # 40 % to all of the image
    labels[~region] = 0
    to_edge = ndimage.distance_transform_edt(~_edges(labels, between_cells=False))
    dist = to_seed / (to_seed + to_edge + 1e-6)
    return _tidy(labels, dist)


def _tidy(labels: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep each label's largest connected piece, drop those under MIN_SIZE, number them 1..N; dist inf
    on background."""
    dist = np.where(labels > 0, dist, np.inf)
    for i, box in enumerate(ndimage.find_objects(labels), 1):
        if box is None:
            continue
        parts, n = ndimage.label(labels[box] == i)
        if n > 1:
            stray = (parts > 0) & (parts != np.argmax(np.bincount(parts.ravel())[1:]) + 1)
            labels[box][stray] = 0
    keep = np.bincount(labels.ravel()) >= MIN_SIZE
    keep[0] = False
    lut = np.zeros(len(keep), np.int32)
    lut[keep] = np.arange(1, keep.sum() + 1)
    labels = lut[labels]
    dist[labels == 0] = np.inf
    return labels, dist


# --- appearance -----------------------------------------------------------------------------------


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], sigma: float | tuple[float, ...]) -> np.ndarray:
    """Gaussian-smoothed white noise with zero mean and unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-12)


def _illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """Uneven illumination around 1: a linear gradient plus a low-frequency field."""
    ramp = np.linspace(-0.5, 0.5, size)
    gy, gx = rng.uniform(-0.3, 0.3, 2)
    field = (
        1
        + gy * ramp[:, None]
        + gx * ramp[None, :]
        + rng.uniform(0.0, 0.15) * _smooth(rng, (size, size), size / 6)
    )
    return np.clip(field, 0.3, None)


def _edges(labels: np.ndarray, between_cells: bool) -> np.ndarray:
    """Pixels with a 4-neighbour of another label (only neighbours that are both cells if between_cells)."""
    edges = np.zeros(labels.shape, bool)
    for a, b, ea, eb in (
        (labels[1:], labels[:-1], edges[1:], edges[:-1]),
        (labels[:, 1:], labels[:, :-1], edges[:, 1:], edges[:, :-1]),
    ):
        diff = (a != b) & (a > 0) & (b > 0) if between_cells else a != b
        ea |= diff
        eb |= diff
    return edges


def _cell_signal(rng: np.random.Generator, labels: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Per-pixel stain amount of the cells: per-cell brightness (from 0.15-0.5 to 1: dim and bright
    cells), a radial profile (bright centre or bright rim), internal texture, slight dimming where cells
    touch; in a quarter of the images some cells out of focus (blurred, dimmer, still labelled); ~0
    outside."""
    n = int(labels.max())
    bright = np.concatenate([[0.0], rng.uniform(rng.uniform(0.15, 0.5), 1.0, n)])
    shade = np.concatenate([[0.0], rng.uniform(-0.3, 0.5, n)])
    d = np.where(labels > 0, dist, 0.0)
    texture = 1 + rng.uniform(0.05, 0.3) * _smooth(rng, labels.shape, rng.uniform(0.7, 2.0))
    signal = bright[labels] * (1 - shade[labels] * d * d) * np.clip(texture, 0.2, None)
    signal *= 1 - rng.uniform(0.1, 0.4) * _edges(labels, between_cells=True)
    if rng.random() < 0.25:
        blurred = np.concatenate([[False], rng.random(n) < rng.uniform(0.1, 0.3)])[labels]
        far = ndimage.gaussian_filter(np.where(blurred, signal, 0.0), rng.uniform(1.5, 3.0))
        signal = np.where(blurred, 0.0, signal) + rng.uniform(0.5, 0.9) * far
    return signal


def _debris(rng: np.random.Generator, size: int) -> np.ndarray:
    """Unlabelled debris: specks far below MIN_SIZE and a few small fuzzy blobs."""
    specks = np.zeros((size, size))
    y, x = rng.integers(0, size, (2, rng.integers(0, 24)))
    specks[y, x] = rng.uniform(0.5, 2.0, len(y))
    blobs = np.zeros((size, size))
    y, x = rng.integers(0, size, (2, rng.integers(0, 4)))
    blobs[y, x] = rng.uniform(20, 60, len(y))
    return ndimage.gaussian_filter(specks, 0.8) * 3 + ndimage.gaussian_filter(blobs, 2.5)


def _camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Sometimes a tiling seam (one side of a line brighter: stitched fields) and sometimes saturation
    (the brightest pixels clipped); image (..., H, W) in [0, ~1]."""
    if rng.random() < 0.15:
        size = image.shape[-1]
        at = rng.integers(size // 4, 3 * size // 4)
        step = np.ones(size)
        step[at:] = rng.uniform(0.75, 1.3)
        image = image * (step[:, None] if rng.random() < 0.5 else step[None, :])
    if rng.random() < 0.15:
        image = np.minimum(image, np.percentile(image, rng.uniform(93, 99.5)))
    return image


def _noisy(rng: np.random.Generator, image: np.ndarray, min_photons: float = 80) -> np.ndarray:
    """Gaussian PSF blur, then Poisson (shot, at least min_photons at intensity 1) and Gaussian (read)
    noise; image in [0, ~1]."""
    sigma = (0,) * (image.ndim - 2) + (rng.uniform(0.5, 2.0),) * 2
    image = np.clip(ndimage.gaussian_filter(image, sigma), 0, None)
    photons = np.exp(rng.uniform(np.log(min_photons), np.log(3000)))
    return rng.poisson(image * photons) / photons + rng.normal(0, rng.uniform(0.002, 0.02), image.shape)


def _grey_dtype(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Store a grey float image as uint8, uint16 (12-bit or offset full range) or float32."""
    image = image / np.percentile(image, 99.9)
    kind = rng.integers(4)
    if kind == 0:
        return np.clip(np.rint(image * rng.uniform(150, 250)), 0, 255).astype(np.uint8)
    if kind == 1:
        return np.clip(np.rint(rng.uniform(0, 200) + image * rng.uniform(300, 3800)), 0, 4095).astype(
            np.uint16
        )
    if kind == 2:
        offset = rng.uniform(0, 30000)
        return np.clip(np.rint(offset + image * rng.uniform(0.3, 0.95) * (65535 - offset)), 0, 65535).astype(
            np.uint16
        )
    return (image * np.exp(rng.uniform(np.log(0.5), np.log(1000)))).astype(np.float32)


def _rgb_uint8(image: np.ndarray) -> np.ndarray:
    """(C,H,W) float in [0, 1] -> uint8."""
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def _fluorescence(rng: np.random.Generator, labels: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Bright cells on a dark, unevenly lit background; a quarter inverted (dark cells on bright); a fifth
    of the others saved as an RGB composite with the stain in one colour (mostly blue, as DAPI) and the
    other channels empty."""
    size = labels.shape[0]
    signal = _cell_signal(rng, labels, dist) + 0.3 * _debris(rng, size)
    image = _camera(rng, (rng.uniform(0.0, 0.15) + signal) * _illumination(rng, size))
    if rng.random() < 0.25:
        return _grey_dtype(rng, _noisy(rng, image.max() * 1.1 - image))
    if rng.random() < 0.2:
        composite = np.zeros((3, size, size))
        composite[rng.choice(3, p=[0.2, 0.3, 0.5])] = _noisy(rng, image)
        return _rgb_uint8(composite / np.percentile(composite.max(0), 99.9) * rng.uniform(0.6, 1.0))
    return _grey_dtype(rng, _noisy(rng, image))


def _halo(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Phase-contrast halo: a ring just outside each cell."""
    cells = (labels > 0).astype(float)
    return np.clip(ndimage.gaussian_filter(cells, rng.uniform(1.5, 3.0)) - cells, 0, None)


def _phase_dark(rng: np.random.Generator, labels: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Dark cells with a bright halo on a bright background."""
    size = labels.shape[0]
    signal = _cell_signal(rng, labels, dist) + 0.3 * _debris(rng, size)
    image = 0.7 - rng.uniform(0.45, 0.7) * signal + rng.uniform(0.2, 0.6) * _halo(rng, labels)
    return _grey_dtype(rng, _noisy(rng, _camera(rng, image * _illumination(rng, size))))


def _phase_bright(rng: np.random.Generator, labels: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Bright cells with a dark halo on a grey background."""
    size = labels.shape[0]
    signal = _cell_signal(rng, labels, dist) + 0.2 * _debris(rng, size)
    image = 0.35 + rng.uniform(0.4, 0.7) * signal - rng.uniform(0.1, 0.25) * _halo(rng, labels)
    return _grey_dtype(rng, _noisy(rng, _camera(rng, image * _illumination(rng, size))))


def _stain(rng: np.random.Generator, vector: np.ndarray) -> np.ndarray:
    """A stain's optical-density vector varied as between slides and scanners (unit length)."""
    v = np.clip(vector * rng.lognormal(0.0, 0.15, 3), 0.01, None)
    return v / np.linalg.norm(v)


def _he(rng: np.random.Generator, labels: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """RGB H&E: haematoxylin nuclei with chromatin texture (pale to dark) on eosin-stained, fibrous
    tissue with haematoxylin-tinted cytoplasm and some empty (white) areas; stain vectors and amounts
    vary from image to image."""
    size = labels.shape[0]
    fibres = _smooth(rng, (size, size), (1.0, 4.0) if rng.random() < 0.5 else (4.0, 1.0))
    tissue = 1 / (1 + np.exp(-4 * (_smooth(rng, (size, size), size / 8) + rng.uniform(0.5, 2.0))))
    cells = labels > 0
    eosin = rng.uniform(0.08, 0.5) * np.clip(1 + 0.25 * fibres, 0, None) * tissue * (1 - 0.5 * cells)
    grain = _smooth(rng, (size, size), rng.uniform(0.6, 1.5))
    chromatin = np.clip(1 + rng.uniform(0.1, 0.4) * grain, 0.3, None)
    nuclei = rng.uniform(0.8, 2.5) * _cell_signal(rng, labels, dist) * chromatin
    haem = rng.uniform(0.05, 0.7) * tissue * np.clip(1 + 0.3 * fibres, 0, None) + nuclei
    h, e = _stain(rng, _HAEMATOXYLIN), _stain(rng, _EOSIN)
    density = haem[None] * h[:, None, None] + eosin[None] * e[:, None, None]
    return _rgb_uint8(_noisy(rng, np.exp(-density) * rng.uniform(0.85, 1.0), min_photons=300))


def _tissue(rng: np.random.Generator, labels: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """RGB multiplexed tissue: green speckled membranes around tiled cells (faint or missing in places),
    blue nuclei, the red channel faint or (in half the images) empty: all zeros, as in many composites."""
    size = labels.shape[0]
    speckle = rng.gamma(1.5, 1 / 1.5, (size, size))
    stained = 1 / (1 + np.exp(-3 * (_smooth(rng, (size, size), size / 6) + rng.uniform(-0.5, 2.5))))
    edges = _edges(labels, between_cells=False).astype(float)
    membrane = ndimage.gaussian_filter(edges, rng.uniform(0.5, 1.0)) * speckle
    nuclei = _cell_signal(rng, labels, dist) * (dist < rng.uniform(0.45, 0.85))
    green = (rng.uniform(0.6, 1.6) * membrane + 0.05 * speckle * (labels > 0)) * stained
    image = np.stack([0.02 * speckle, green, rng.uniform(0.6, 1.0) * nuclei]) * _illumination(rng, size)
    image = _rgb_uint8(_noisy(rng, _camera(rng, image)))
    if rng.random() < 0.5:
        image[0] = 0
    return image


_RENDER = {
    "fluorescence": _fluorescence,
    "phase_dark": _phase_dark,
    "phase_bright": _phase_bright,
    "he": _he,
    "tissue": _tissue,
}
