"""Where each scene has data, as polygons in the processing-grid CRS, and the window tests on them.

A scene's footprint starts as its outline (bounds transformed to the grid CRS) and is narrowed by
the plan to the polygon of its valid pixels, measured on the decimated scene-wide sample and
grown so that it can only over-cover (see :func:`mask_polygon`). A tile window that meets no
footprint of a date is skipped without opening a file.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window
from shapely.geometry import box, shape

from tiles.grid import Grid, footprint


def outline(paths: list[str], crs: str):
    """Box (grid CRS) around the files' bounds, transformed with densified edges."""
    return box(*footprint(paths, crs))


def mask_polygon(mask: np.ndarray, transform: Affine):
    """Union of the True pixels of ``mask`` (pixel squares through ``transform``); None when none."""
    if not mask.any():
        return None
    polys = [shape(geom) for geom, _ in shapes(np.ones(mask.shape, np.uint8), mask=mask,
                                               transform=transform, connectivity=8)]
    return shapely.union_all(polys)


def grow(geom, margin: float, tolerance: float):
    """``geom`` grown by ``margin`` (square corners), simplified by ``tolerance`` without shrinking
    below the grown shape: Douglas-Peucker moves the boundary at most ``tolerance``."""
    grown = shapely.buffer(geom, margin + tolerance, join_style="mitre", cap_style="square")
    return shapely.simplify(grown, tolerance, preserve_topology=True)


@lru_cache(maxsize=8192)
def _geom(wkt: str):
    g = shapely.from_wkt(wkt)
    shapely.prepare(g)
    return g


def window_box(grid: Grid, window: Window):
    """The window's area as a box in the grid CRS."""
    left, top = grid.transform * (window.col_off, window.row_off)
    right, bottom = grid.transform * (window.col_off + window.width, window.row_off + window.height)
    return box(min(left, right), min(top, bottom), max(left, right), max(top, bottom))


def scenes_meeting(footprints: dict[str, str], files: list[str], area) -> list[int]:
    """Indexes of ``files`` whose footprint meets ``area``; a scene without one always counts."""
    return [i for i, f in enumerate(files)
            if f not in footprints or _geom(footprints[f]).intersects(area)]


def covered(footprints: dict[str, str], files: list[str], area):
    """Part of ``area`` covered by the scenes' footprints (``area`` itself if one is unknown)."""
    parts = []
    for f in files:
        if f not in footprints:
            return area
        g = _geom(footprints[f])
        if g.intersects(area):
            parts.append(shapely.intersection(g, area))
    return shapely.union_all(parts) if parts else shapely.Polygon()
