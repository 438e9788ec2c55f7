"""Before/after image chips (PNG) of every polygon: what the county looks at first.

Each chip is true colour with ONE stretch shared by both dates (2nd-98th percentile per
band over the valid pixels of both), so a change in brightness is a change on the ground,
not in the stretch. Drawn on top: the polygon outline, a scale bar, a north arrow (grid
north of the processing CRS, within ~1.5 degrees of true north in a 3-degree zone), the
JCBH and the date. Text is ASCII so no CJK font is needed on the server.

The imagery comes from the caller: ``read_chip(bounds) -> (before_rgb, after_rgb,
transform)`` with ``bounds = (minx, miny, maxx, maxy)`` in the processing CRS (metres),
arrays band-first ``(3, rows, cols)`` (or ``(rows, cols, 3)``) in red, green, blue order,
any numeric dtype, NaN or a numpy mask for no data; ``transform`` an affine.Affine from
(col, row) to processing-CRS coordinates of the arrays.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
from affine import Affine
from PIL import Image, ImageDraw, ImageFont

ChipReader = Callable[[tuple[float, float, float, float]], tuple[np.ndarray, np.ndarray, Affine]]

OUTLINE = (255, 235, 0)
CHIP_PX = 320
CHIP_PNG_LEVEL = 1  # zlib level: photographic PNGs barely shrink at higher levels, and cost 4x the time


def chip_bounds(geom, *, min_size_m: float = 200.0, pad: float = 0.6) -> tuple[float, float, float, float]:
    """Square window around a polygon: its larger side x (1 + pad), at least ``min_size_m``."""
    minx, miny, maxx, maxy = geom.bounds
    side = max(maxx - minx, maxy - miny) * (1 + pad)
    side = max(side, min_size_m)
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def joint_stretch(before: np.ndarray, after: np.ndarray,
                  lo: float = 2.0, hi: float = 98.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-band low / high values over the valid pixels of both dates (band-first arrays)."""
    low = np.zeros(3)
    high = np.ones(3)
    for b in range(3):
        vals = np.concatenate([_valid_values(before[b]), _valid_values(after[b])])
        if len(vals):
            low[b], high[b] = np.percentile(vals, [lo, hi])
            if high[b] <= low[b]:
                high[b] = low[b] + 1.0
    return low, high


def to_rgb8(arr: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Band-first array -> (rows, cols, 3) uint8 with the given stretch; no data black."""
    data = np.ma.getdata(arr).astype(np.float64)
    invalid = np.ma.getmaskarray(arr) | ~np.isfinite(data)
    out = (data - low[:, None, None]) / (high - low)[:, None, None]
    out = np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0) * 255.0 + 0.5
    out = out.astype(np.uint8)
    out[invalid] = 0
    return np.moveaxis(out, 0, -1)


def render_chip(rgb8: np.ndarray, geom, transform: Affine, *, jcbh: str, label: str,
                size: int = CHIP_PX) -> Image.Image:
    """Draw outline, scale bar, north arrow, JCBH and ``label`` on a stretched chip."""
    rows, cols = rgb8.shape[:2]
    width = size
    height = max(1, round(size * rows / cols))
    img = Image.fromarray(rgb8, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    sx, sy = width / cols, height / rows
    inv = ~transform
    for ring in _rings(geom):
        px = [((c * sx), (r * sy)) for c, r in (inv * (x, y) for x, y in ring)]
        draw.line(px + px[:1], fill=OUTLINE, width=2)
    font = label_font(13)
    _text_box(draw, (4, 4), jcbh, font)
    tw = draw.textlength(label, font=font)
    _text_box(draw, (width - tw - 10, height - 22), label, font)
    m_per_px = abs(transform.a) * cols / width
    _scale_bar(draw, m_per_px, width, height, font)
    _north_arrow(draw, width, font)
    return img


def write_chips(county: gpd.GeoDataFrame, folder: Path, read_chip: ChipReader, *,
                size: int = CHIP_PX) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Render and save both chips of every polygon.

    Parameters
    ----------
    county : GeoDataFrame
        Polygons in the processing CRS with JCBH, QSX, HSX.
    folder : Path
        Where the PNGs go (created).
    read_chip : callable
        See the module docstring.

    Returns
    -------
    links : dict
        JCBH -> (before file name, after file name) for the polygons that got chips.
    problems : list of str
        One line per polygon whose imagery could not be read or drawn.
    """
    folder.mkdir(parents=True, exist_ok=True)
    links: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    geoms = county.geometry.to_numpy()
    for jcbh, qsx, hsx, geom in zip(county["JCBH"].astype(str), county.get("QSX", [None] * len(county)),
                                    county.get("HSX", [None] * len(county)), geoms):
        try:
            before, after, transform = read_chip(chip_bounds(geom))
            before, after = _band_first(before), _band_first(after)
            low, high = joint_stretch(before, after)
            names = []
            for arr, tag, date in ((before, "before", qsx), (after, "after", hsx)):
                img = render_chip(to_rgb8(arr, low, high), geom, transform, jcbh=jcbh,
                                  label=f"{tag.upper()} {date or ''}".strip(), size=size)
                name = f"{_file_part(jcbh)}_{tag}.png"
                img.save(folder / name, format="PNG", compress_level=CHIP_PNG_LEVEL)
                names.append(name)
            links[jcbh] = (names[0], names[1])
        except Exception as e:  # one polygon's imagery never stops the package
            problems.append(f"{jcbh}: no image chips ({type(e).__name__}: {e})")
    return links, problems


def nice_length(target: float) -> float:
    """Largest 1 / 2 / 5 x 10^k not above ``target`` (> 0)."""
    k = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10 ** k <= target:
            return m * 10 ** k
    return 10 ** k


def _scale_bar(draw: ImageDraw.ImageDraw, m_per_px: float, width: int, height: int, font) -> None:
    metres = nice_length(width * 0.25 * m_per_px)
    px = metres / m_per_px
    x0, y0 = 8, height - 12
    draw.rectangle([x0 - 3, y0 - 19, x0 + px + 3, y0 + 6], fill=(0, 0, 0))
    draw.rectangle([x0, y0 - 2, x0 + px, y0 + 2], fill=(255, 255, 255))
    text = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
    draw.text((x0, y0 - 17), text, fill=(255, 255, 255), font=font)


def _north_arrow(draw: ImageDraw.ImageDraw, width: int, font) -> None:
    cx, top = width - 16, 8
    draw.polygon([(cx, top), (cx - 7, top + 18), (cx, top + 13), (cx + 7, top + 18)],
                 fill=(255, 255, 255), outline=(0, 0, 0))
    draw.text((cx - 4, top + 19), "N", fill=(255, 255, 255), font=font,
              stroke_width=2, stroke_fill=(0, 0, 0))


def _text_box(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font) -> None:
    x, y = xy
    w = draw.textlength(text, font=font)
    draw.rectangle([x - 2, y - 1, x + w + 3, y + 16], fill=(0, 0, 0))
    draw.text((x, y), text, fill=(255, 255, 255), font=font)


_FONTS: dict[int, object] = {}


def label_font(size: int):
    """Pillow's built-in scalable font (ASCII) at ``size`` px, cached."""
    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow without FreeType: fixed bitmap font
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


def _rings(geom):
    polys = getattr(geom, "geoms", [geom])
    for p in polys:
        yield list(p.exterior.coords)
        for hole in p.interiors:
            yield list(hole.coords)


def _band_first(arr: np.ndarray) -> np.ndarray:
    if arr.ndim != 3:
        raise ValueError(f"chip array has shape {arr.shape}; expected (3, rows, cols)")
    if arr.shape[0] != 3 and arr.shape[-1] == 3:
        arr = np.moveaxis(arr, -1, 0)
    if arr.shape[0] != 3:
        raise ValueError(f"chip array has shape {arr.shape}; expected 3 bands (red, green, blue)")
    return arr


def _valid_values(band: np.ndarray) -> np.ndarray:
    data = np.ma.getdata(band).astype(np.float64).ravel()
    ok = ~np.ma.getmaskarray(band).ravel() & np.isfinite(data)
    return data[ok]


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)
