"""From a change mask to change objects: morphology, components, polygons, per-object sums.

Morphology runs on the halo arrays (so core pixels see their true neighbours);
components and polygons are built on the core only and cut at its edge. Every
statistic is carried as an additive sum (``ADDITIVE``) so that the parts of an
object cut by tile edges merge exactly in ``detect.merge``. Polygons are in the
processing CRS, traced by ``detect.polygonize`` along the edges of the 4-connected
regions, holes kept. The per-object sums read only the changed pixels' layers, computed
from the image pair (``ChangeLayers.object_sums``).
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine

from detect import kernels
from detect.components import label4
from detect.polygonize import polygons

ADDITIVE = ("NPIX", "S_P", "S_DNDVI", "S_DNDWI", "S_DBRI", "S_NDVIA", "S_NDWIA", "S_BRIA",
            "S_BRIA2", "S_SOILA", "N_EVID", "N_STRONG", "N_REFSEEN", "N_REFNEW")
"""Columns of a part that sum when parts merge: pixel count and sums over its pixels
(N_REFSEEN / N_REFNEW: pixels the reference date sees clear / sees changed since; 0 without
one)."""

_SUM_COLUMNS = ("NPIX", "S_P", "S_DNDVI", "S_DNDWI", "S_DBRI", "S_NDVIA", "S_NDWIA", "S_BRIA",
                "S_BRIA2", "S_SOILA", "N_EVID", "N_STRONG")
"""The columns of ``kernels.object_sums``: pixel count, sums of the layers (S_BRIA2: squares)."""


def empty_parts(crs) -> gpd.GeoDataFrame:
    """A parts frame with no rows and the columns of :func:`tile_objects`."""
    cols = {c: np.array([], dtype=np.int64 if c.startswith("N") else np.float64)
            for c in ADDITIVE}
    cols["PX_AREA"] = np.array([], dtype=np.float64)
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries([], crs=crs), crs=crs)


def tile_objects(layers, valid, core, transform, crs) -> gpd.GeoDataFrame:
    """One row per 4-connected changed region inside the tile's core.

    Parameters
    ----------
    layers : detect.detector.ChangeLayers
        Output of ``detect_tile`` on the halo arrays.
    valid : (h, w) bool
        Valid mask of the halo arrays (changed pixels are always valid).
    core : (slice, slice)
        Rows and columns of the tile's own pixels in the halo arrays.
    transform : affine.Affine
        Transform of pixel (0, 0) of the halo arrays, in ``crs``.
    crs : anything pyproj accepts
        Processing CRS.

    Returns
    -------
    geopandas.GeoDataFrame
        Polygons (holes kept) cut at the core edge, with ``ADDITIVE`` columns
        (NPIX pixels, S_* sums, N_* counts, N_REF* with a reference date) and PX_AREA
        (planar m² per pixel);
        sorted by centroid y descending, x ascending.
    """
    rs, cs = core
    rows = range(*rs.indices(layers.changed.shape[0]))
    cols = range(*cs.indices(layers.changed.shape[1]))
    if rows.step != 1 or cols.step != 1:
        raise ValueError("core slices must have step 1")
    m = np.ascontiguousarray(layers.changed[rs, cs] & np.asarray(valid, bool)[rs, cs])
    if not m.any():
        return empty_parts(crs)
    core_transform = Affine(*transform[:6]) * Affine.translation(cols.start, rows.start)
    lab, n = label4(m)
    sums = layers.object_sums(lab, n, rows.start, cols.start)
    geoms = polygons(lab, n, core_transform)
    cols_out = {name: sums[:, k].astype(np.int64) if name.startswith("N") else sums[:, k]
                for k, name in enumerate(_SUM_COLUMNS)}
    if layers.reference_seen is None:
        cols_out["N_REFSEEN"] = cols_out["N_REFNEW"] = np.zeros(n, np.int64)
    else:
        ref = kernels.label_counts(lab, n, rows.start, cols.start, layers.reference_seen,
                                   layers.reference_new)
        cols_out["N_REFSEEN"], cols_out["N_REFNEW"] = ref[:, 0], ref[:, 1]
    px_area = abs(core_transform.a * core_transform.e - core_transform.b * core_transform.d)
    cols_out["PX_AREA"] = np.full(n, px_area)
    order = _order(geoms)  # built sorted: as sort_objects, without reordering a frame
    cols_out = {c: cols_out[c][order] for c in (*ADDITIVE, "PX_AREA")}
    return gpd.GeoDataFrame(cols_out, geometry=gpd.GeoSeries(geoms[order], crs=crs), crs=crs)


def sort_objects(gdf) -> gpd.GeoDataFrame:
    """Deterministic order: centroid y descending, then x ascending; index reset."""
    if len(gdf) == 0:
        return gdf.reset_index(drop=True)
    return gdf.iloc[_order(gdf.geometry.values)].reset_index(drop=True)


def _order(geoms):
    """Indices sorting geometries by centroid y descending, then x ascending."""
    c = shapely.centroid(geoms)
    return np.lexsort((shapely.get_x(c), -shapely.get_y(c)))
