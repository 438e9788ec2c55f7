"""Batch outlines and route lines of one county, for the 批次 layers and the maps.

An outline is the convex hull of the batch's polygons grown by ``margin_m`` (measured in a
projected CRS: the polygons' own when projected, else their UTM zone); a route is the line
through the polygons' JD / WD in visiting order (PCXH), from the start point when given.
Both are returned in CGCS2000 lon/lat (EPSG:4490).
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS
from shapely.geometry import LineString

from pipeline.batches import GEOD

ISSUE_CRS = "EPSG:4490"


def batch_outlines(county: gpd.GeoDataFrame, *, margin_m: float = 100.0) -> gpd.GeoDataFrame:
    """One polygon per batch (PCBH) around its members, EPSG:4490.

    Parameters
    ----------
    county : GeoDataFrame
        Polygons with PCBH, PCXH, YXJ and JZRQ (output of ``assign_batches``), any CRS.
    margin_m : float
        Buffer around the convex hull, metres.

    Returns
    -------
    GeoDataFrame
        PCBH, TBSL (polygons in the batch), ZGYXJ (most urgent level), JZRQ (earliest due
        date), MJM (area of the batch's polygons, 亩, from JCMJ when present) + geometry.
        Empty when the polygons carry no PCBH.
    """
    cols = ["PCBH", "TBSL", "ZGYXJ", "JZRQ", "MJM"]
    if "PCBH" not in county or county["PCBH"].isna().all() or len(county) == 0:
        return gpd.GeoDataFrame({c: [] for c in cols}, geometry=[], crs=ISSUE_CRS)
    work = county.to_crs(_projected(county))
    rows, geoms = [], []
    for code, g in work.groupby("PCBH", sort=True):
        hull = shapely.convex_hull(shapely.union_all(g.geometry.to_numpy()))
        geoms.append(hull.buffer(margin_m, quad_segs=4))
        due = sorted(str(v) for v in g["JZRQ"].dropna()) if "JZRQ" in g else []
        rows.append({
            "PCBH": code,
            "TBSL": len(g),
            "ZGYXJ": int(g["YXJ"].min()),
            "JZRQ": due[0] if due else None,
            "MJM": float(pd.to_numeric(g["JCMJ"], errors="coerce").sum() / (2000 / 3))
            if "JCMJ" in g else None,
        })
    out = gpd.GeoDataFrame(rows, geometry=geoms, crs=work.crs).to_crs(ISSUE_CRS)
    return out


def batch_routes(frame: pd.DataFrame,
                 start_lonlat: tuple[float, float] | None = None) -> gpd.GeoDataFrame:
    """One route line per batch through JD / WD in PCXH order, EPSG:4490.

    Returns PCBH, TBSL, LCKM (route length on the CGCS2000 ellipsoid, km, from the start
    point when given) + geometry. A one-polygon batch without a start point is a
    zero-length line at the polygon.
    """
    if "PCBH" not in frame or frame["PCBH"].isna().all() or len(frame) == 0:
        return gpd.GeoDataFrame({"PCBH": [], "TBSL": [], "LCKM": []}, geometry=[], crs=ISSUE_CRS)
    rows, geoms = [], []
    for code, g in frame.groupby("PCBH", sort=True):
        g = g.sort_values("PCXH")
        lon = g["JD"].to_numpy(dtype=float)
        lat = g["WD"].to_numpy(dtype=float)
        if start_lonlat is not None:
            lon = np.concatenate([[start_lonlat[0]], lon])
            lat = np.concatenate([[start_lonlat[1]], lat])
        if len(lon) == 1:
            lon, lat = np.repeat(lon, 2), np.repeat(lat, 2)
        length_km = float(GEOD.line_length(lon, lat)) / 1000.0
        geoms.append(LineString(np.c_[lon, lat]))
        rows.append({"PCBH": code, "TBSL": len(g), "LCKM": round(length_km, 3)})
    return gpd.GeoDataFrame(rows, geometry=geoms, crs=ISSUE_CRS)


def _projected(g: gpd.GeoDataFrame) -> CRS:
    crs = CRS.from_user_input(g.crs)
    return crs if crs.is_projected else g.estimate_utm_crs()
