"""Ellipsoidal (official) areas on the CGCS2000 ellipsoid.

Chinese land administration reports polygon areas as 椭球面积: the area on the CGCS2000
ellipsoid, never a planar area in some projection (planar Gauss-Krüger areas drift by up to
~0.1 % at the edge of a 3-degree zone). CGCS2000 uses a = 6 378 137 m and 1/f = 298.257222101,
exactly the GRS80 parameters, so ``pyproj.Geod(ellps="GRS80")`` *is* the CGCS2000 ellipsoid
(its semi-minor axes differ from WGS84 by 0.1 mm, not from GRS80 at all).

Edges are taken as geodesics between consecutive vertices (Karney's algorithm in
GeographicLib, via pyproj); for change polygons with vertices a few metres apart the difference
to any other edge convention is far below a square centimetre.
"""
from __future__ import annotations

import numpy as np
import pyproj
import shapely

from overlay.hygiene import polygon_parts
from tiles.errors import InputError

#: The CGCS2000 ellipsoid (identical a and 1/f to GRS80).
GEOD = pyproj.Geod(ellps="GRS80")

#: One 亩 in square metres.
MU_M2 = 2000.0 / 3.0

#: Geographic CRS on which areas and centroids are computed (CGCS2000 lon/lat).
CGCS2000 = pyproj.CRS.from_epsg(4490)

#: Description stored with every run so users know how areas were obtained.
AREA_METHOD = "ellipsoidal, CGCS2000 ellipsoid (GRS80 a/f), geodesic edges, pyproj.Geod"


def ellipsoidal_area(geoms) -> np.ndarray:
    """Ellipsoidal area of polygons on the CGCS2000 ellipsoid.

    Parameters
    ----------
    geoms : geopandas.GeoSeries
        Polygons or MultiPolygons in any CRS (``geoms.crs`` must be set); they are transformed
        to EPSG:4490 first. Null, empty and non-areal geometries measure 0.

    Returns
    -------
    numpy.ndarray
        float64 areas in m², one per geometry, in input order. Holes are subtracted; ring
        orientation does not matter.

    Examples
    --------
    >>> import geopandas as gpd, shapely
    >>> sq = gpd.GeoSeries([shapely.box(500_000, 3_000_000, 501_000, 3_001_000)], crs=4545)
    >>> round(float(ellipsoidal_area(sq)[0]))  # 1 km square on the central meridian
    1000000
    """
    if geoms.crs is None:
        raise InputError("ellipsoidal_area: geometries have no CRS; set one (e.g. gdf.set_crs('EPSG:4545')) before measuring")
    lonlat = geoms.to_crs(CGCS2000) if not geoms.crs.equals(CGCS2000) else geoms
    return lonlat_area(np.asarray(lonlat.values, dtype=object))


def lonlat_area(geoms: np.ndarray) -> np.ndarray:
    """Ellipsoidal area (m²) of an array of shapely polygons given in lon/lat degrees (x = lon)."""
    n = len(geoms)
    out = np.zeros(n, dtype=np.float64)
    if n == 0:
        return out
    parts, part_of = polygon_parts(geoms)
    if len(parts) == 0:
        return out
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    # get_rings lists the exterior first, then the holes of each polygon.
    first = np.ones(len(rings), dtype=bool)
    first[1:] = ring_of[1:] != ring_of[:-1]
    sign = np.where(first, 1.0, -1.0)
    coords, coord_of = shapely.get_coordinates(rings, return_index=True)
    bounds = np.searchsorted(coord_of, np.arange(len(rings) + 1))
    ring_area = np.empty(len(rings), dtype=np.float64)
    lon, lat = np.ascontiguousarray(coords[:, 0]), np.ascontiguousarray(coords[:, 1])
    for i in range(len(rings)):
        a, b = bounds[i], bounds[i + 1]
        # The closing vertex repeats the first one: a zero-length edge that adds nothing.
        ring_area[i] = abs(GEOD.polygon_area_perimeter(lon[a:b], lat[a:b])[0])
    per_part = np.bincount(ring_of, weights=sign * ring_area, minlength=len(parts))
    return np.bincount(part_of, weights=per_part, minlength=n)
