"""Seam merge of tile parts into whole objects, the reference date's verdict, then the MMU.

Tiles cut objects at their core edges. Two parts belong to one object exactly
when they share a boundary segment (4-connectivity across the seam); parts
touching at a single corner point stay separate. Coordinates are snapped to a
grid far below the pixel size first, so tiny floating-point differences between
tile transforms cannot hide a shared edge.
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from detect.objects import ADDITIVE, sort_objects


def _snap_grid(parts):
    px = np.sqrt(np.nanmax(parts["PX_AREA"].to_numpy())) if "PX_AREA" in parts else 1.0
    return float(px) * 1e-6 if np.isfinite(px) and px > 0 else 1e-6


def merge_seams(parts: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Union parts that share an edge, summing the additive columns.

    Parameters
    ----------
    parts : geopandas.GeoDataFrame
        Concatenated output of ``tile_objects`` over all tiles (one CRS).

    Returns
    -------
    geopandas.GeoDataFrame
        One row per object: geometry = union of its parts, ``ADDITIVE`` columns
        summed, other columns from the first part; sorted by centroid y
        descending, x ascending.
    """
    if len(parts) == 0:
        return sort_objects(parts.copy())
    parts = parts.reset_index(drop=True)
    geoms = shapely.set_precision(parts.geometry.values, _snap_grid(parts))
    n = len(geoms)
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    keep = left < right
    left, right = left[keep], right[keep]
    if left.size:
        rel = shapely.relate(geoms[left], geoms[right])
        # DE-9IM: [0] interior/interior, [4] boundary/boundary dimension
        joined = np.array([r[0] != "F" or r[4] == "1" for r in rel], dtype=bool)
        left, right = left[joined], right[joined]
    graph = coo_matrix((np.ones(left.size), (left, right)), shape=(n, n))
    ncomp, comp = connected_components(graph, directed=False)
    if ncomp == n:
        out = parts.copy()
        out["geometry"] = geoms
        return sort_objects(out)
    add = [c for c in ADDITIVE if c in parts.columns]
    other = [c for c in parts.columns if c not in add and c != parts.geometry.name]
    df = parts.drop(columns=parts.geometry.name)
    df["_comp"] = comp
    grouped = df.groupby("_comp", sort=True)
    summed = grouped[add].sum()
    firsts = grouped[other].first() if other else None
    order = np.argsort(comp, kind="stable")
    bounds = np.searchsorted(comp[order], np.arange(ncomp + 1))
    merged = []
    for k in range(ncomp):
        members = order[bounds[k]:bounds[k + 1]]
        if members.size == 1:
            merged.append(geoms[members[0]])
        else:
            merged.append(shapely.union_all(geoms[members]))
    out = summed if firsts is None else summed.join(firsts)
    out = gpd.GeoDataFrame(out.reset_index(drop=True),
                           geometry=gpd.GeoSeries(merged, crs=parts.crs), crs=parts.crs)
    out = out[[c for c in parts.columns if c in out.columns]]
    return sort_objects(out)


def apply_mmu(objects: gpd.GeoDataFrame, min_area_m2: float, outline_px: float = 0.0
              ) -> gpd.GeoDataFrame:
    """Drop objects smaller than the minimum mapping unit.

    Area = NPIX * PX_AREA (planar m² of the pixels in the processing CRS), plus
    ``outline_px`` pixels along the outline: the pixels on an object's edge are mixed,
    and a mixed pixel passes the change test only when the change fills most of it, so
    pixel counts fall short of a small object's true area by about half a pixel along
    its perimeter (a 15 x 15 m house on 2 m pixels counts 36-49 pixels, 144-196 m²).
    Returns a copy with the index reset, order kept.
    """
    if len(objects) == 0:
        return objects.copy()
    px_area = objects["PX_AREA"].to_numpy(np.float64)
    area = objects["NPIX"].to_numpy(dtype=np.float64) * px_area
    if outline_px > 0.0:
        area = area + outline_px * np.sqrt(px_area) * shapely.length(objects.geometry.values)
    return objects[area >= float(min_area_m2)].reset_index(drop=True)


def _mmu_px(objects: gpd.GeoDataFrame, min_area_m2: float) -> np.ndarray:
    """The minimum mapping unit in each object's pixels (at least one)."""
    return np.maximum(float(min_area_m2) / objects["PX_AREA"].to_numpy(np.float64), 1.0)


def reference_seen(objects: gpd.GeoDataFrame, min_area_m2: float) -> np.ndarray:
    """Whether the reference date saw enough of each object to judge it: a minimum mapping unit
    of its pixels clear (N_REFSEEN), or most of a smaller object. (n,) bool."""
    npix = objects["NPIX"].to_numpy(np.float64)
    return objects["N_REFSEEN"].to_numpy(np.float64) >= np.minimum(_mmu_px(objects, min_area_m2),
                                                                   npix / 2)


def apply_reference(objects: gpd.GeoDataFrame, min_area_m2: float
                    ) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Split whole objects into those the reference date leaves and those it explains as seasonal.

    The reference is the same season a year earlier; each object counts the pixels it sees
    clear (N_REFSEEN) and the ones changed since it by a land-use change (N_REFNEW, see
    ``detect.detector.reference_masks``). The verdict is per object, not per pixel, because a
    seasonal change and a land-use change each fill a parcel: an object is dropped when the
    reference sees enough of it (:func:`reference_seen`) and finds little new there (less than
    a minimum mapping unit, and less than half of what it sees). Where the reference is clouded
    over most of an object, the two dates decide. A kept object keeps its whole two-date
    extent, so a new pond or site is not cut into fragments where last year's field looked
    like it; a dropped one goes whole, its clouded part too. Both carry REFCHK (float: 1 the
    reference saw the object, so a kept one was confirmed as new since it; 0 it could not
    see it), which ``detect.classify`` reads as a confidence signal. Call it only when a
    reference date was used (the parts always carry the counts, 0 without one); objects without
    the count columns are all kept, without REFCHK. Returns ``(kept, dropped)``, each with the
    index reset, order kept.
    """
    out = objects.reset_index(drop=True)
    if "N_REFSEEN" not in out:
        return out, out.iloc[:0]
    if len(out) == 0:
        out = out.assign(REFCHK=np.zeros(0))
        return out, out.iloc[:0]
    seen = reference_seen(out, min_area_m2)
    new = out["N_REFNEW"].to_numpy(np.float64)
    explained = seen & (new < np.minimum(_mmu_px(out, min_area_m2),
                                         out["N_REFSEEN"].to_numpy(np.float64) / 2))
    out["REFCHK"] = seen.astype(np.float64)
    return out[~explained].reset_index(drop=True), out[explained].reset_index(drop=True)
