"""Bulk intersection of change polygons with a reference layer, without double counting.

One spatial-index query for all changes, one vectorised shapely intersection on the candidate
pairs, then the pieces that fall in the same change are unioned so that two overlapping
features of one layer (real DLTB and parcel layers have them) never count twice.
"""
from __future__ import annotations

import numpy as np
import shapely

from overlay.hygiene import polygon_parts

#: Targets with more pieces than this are unioned one at a time (bounds the padded array).
_PAD_MAX = 64


def intersecting_pairs(targets: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (target, feature) pair whose interiors may share area, with the shared polygon part.

    Parameters
    ----------
    targets, features : numpy.ndarray of shapely polygons (None allowed), same CRS

    Returns
    -------
    target_idx, feature_idx : numpy.ndarray of int64
        Positions of the pair members, sorted by target.
    pieces : numpy.ndarray of shapely geometries
        The areal intersection of each pair (Polygon / MultiPolygon; None when the pair only
        touches along an edge or at a point).
    """
    targets = np.asarray(targets, dtype=object)
    features = np.asarray(features, dtype=object)
    empty = np.zeros(0, dtype=np.int64)
    if len(targets) == 0 or len(features) == 0:
        return empty, empty, np.zeros(0, dtype=object)
    tree = shapely.STRtree(features)
    ti, fi = tree.query(targets, predicate="intersects")
    # A target wholly inside a feature (the usual case for counties, red lines, large parcels)
    # is its own piece: a prepared point-in-polygon test instead of a full overlay.
    shapely.prepare(features)
    inside = shapely.contains_properly(features[fi], targets[ti])
    pieces = targets[ti].copy()
    cut = ~inside
    pieces[cut] = shapely.intersection(targets[ti[cut]], features[fi[cut]])
    parts, of = polygon_parts(pieces)
    areal = np.full(len(ti), None, dtype=object)
    if len(parts):
        areal = shapely.multipolygons(parts, indices=of, out=areal)
    return ti.astype(np.int64), fi.astype(np.int64), areal


def union_by_target(pieces: np.ndarray, target_idx: np.ndarray, n: int) -> np.ndarray:
    """Union of the pieces that belong to each target.

    Parameters
    ----------
    pieces : numpy.ndarray of Polygon / MultiPolygon / None
    target_idx : numpy.ndarray of int
        Target position of each piece.
    n : int
        Number of targets.

    Returns
    -------
    numpy.ndarray of shapely geometries, length ``n``
        Valid (Multi)Polygon per target, None where it has no areal piece.
    """
    out = np.full(n, None, dtype=object)
    parts, of = polygon_parts(pieces)
    if len(parts) == 0:
        return out
    owner = np.asarray(target_idx)[of]
    order = np.argsort(owner, kind="stable")
    parts, owner = parts[order], owner[order]
    count = np.bincount(owner, minlength=n)
    one = count == 1
    first = np.searchsorted(owner, np.arange(n))
    out[one] = parts[first[one]]
    # Pieces of overlapping or edge-sharing features must be unioned, not summed. Rows of a
    # padded (targets x pieces) array are unioned element-wise in C; the few targets with very
    # many pieces are done one by one to bound the padding.
    several = np.flatnonzero((count > 1) & (count <= _PAD_MAX))
    if len(several):
        k = int(count[several].max())
        grid = np.full((len(several), k), None, dtype=object)
        row = np.full(n, -1)
        row[several] = np.arange(len(several))
        sel = row[owner] >= 0
        col = np.arange(len(owner)) - first[owner]
        grid[row[owner[sel]], col[sel]] = parts[sel]
        out[several] = shapely.union_all(grid, axis=1)
    for t in np.flatnonzero(count > _PAD_MAX):
        out[t] = shapely.union_all(parts[first[t]:first[t] + count[t]])
    return out
