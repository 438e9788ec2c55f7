"""Geometry hygiene for polygon layers: flatten to polygons, repair, drop empties.

Reference layers from counties are dirty: self-intersecting rings, duplicated vertices,
null geometries, collections mixing slivers and lines. Everything downstream wants plain
valid polygons, so every layer and every set of change polygons passes through here first.
"""
from __future__ import annotations

import numpy as np
import shapely

_POLYGON, _MULTIPOLYGON, _COLLECTION = 3, 6, 7


def polygon_parts(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Single Polygons contained in each geometry (recursing into collections).

    Parameters
    ----------
    geoms : numpy.ndarray of shapely geometries (None allowed)

    Returns
    -------
    parts : numpy.ndarray of Polygon
        Non-empty polygons, grouped by source geometry in input order.
    index : numpy.ndarray of int64
        Position in ``geoms`` of the geometry each part came from (non-decreasing).
    """
    geoms = np.asarray(geoms, dtype=object)
    index = np.arange(len(geoms), dtype=np.int64)
    parts = geoms
    while True:
        kind = shapely.get_type_id(parts)
        multi = np.isin(kind, (_MULTIPOLYGON, _COLLECTION, 4, 5))
        if not multi.any():
            break
        sub, sub_of = shapely.get_parts(parts, return_index=True)
        # get_parts returns single geometries unchanged, so this keeps the order.
        parts, index = sub, index[sub_of]
    keep = (shapely.get_type_id(parts) == _POLYGON) & ~shapely.is_empty(parts)
    return parts[keep], index[keep]


def polygonal(geoms: np.ndarray) -> np.ndarray:
    """Keep only the areal part of each geometry: Polygon, MultiPolygon or None when nothing areal."""
    geoms = np.asarray(geoms, dtype=object)
    out = np.full(len(geoms), None, dtype=object)
    kind = shapely.get_type_id(geoms)
    simple = np.isin(kind, (_POLYGON, _MULTIPOLYGON)) & ~shapely.is_empty(geoms)
    out[simple] = geoms[simple]
    rest = np.flatnonzero(~simple & (kind >= 0))
    if len(rest):
        parts, of = polygon_parts(geoms[rest])
        if len(parts):
            merged = shapely.multipolygons(parts, indices=of, out=np.full(len(rest), None, dtype=object))
            # A collection with a single polygon becomes a one-part MultiPolygon; keep it simple.
            one = shapely.get_num_geometries(merged) == 1
            merged[one] = shapely.get_geometry(merged[one], 0)
            out[rest] = merged
    return out


def clean_polygons(geoms: np.ndarray) -> tuple[np.ndarray, dict]:
    """Force 2D, repair invalid polygons and blank out null / empty / non-areal ones.

    Parameters
    ----------
    geoms : numpy.ndarray of shapely geometries

    Returns
    -------
    cleaned : numpy.ndarray
        Valid Polygon / MultiPolygon, or None where nothing areal remains.
    counts : dict
        ``repaired`` (invalid geometries passed through ``make_valid``) and ``empty``
        (null, empty or non-areal geometries, before or after repair).
    """
    geoms = np.asarray(geoms, dtype=object)
    has_z = shapely.has_z(geoms)
    if has_z.any():
        geoms = geoms.copy()
        geoms[has_z] = shapely.force_2d(geoms[has_z])
    present = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    invalid = present & ~shapely.is_valid(geoms)
    if invalid.any():
        # "structure" rebuilds polygons from their rings (GEOS GeometryFixer): areas stay
        # areas, unlike "linework" which may leave collapsed lines behind.
        geoms = geoms.copy()
        geoms[invalid] = shapely.make_valid(geoms[invalid], method="structure", keep_collapsed=False)
    cleaned = polygonal(geoms)
    counts = {
        "repaired": int(invalid.sum()),
        "empty": int(shapely.is_missing(cleaned).sum()),
    }
    return cleaned, counts
