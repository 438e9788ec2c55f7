"""The table a county is issued: DESIGN.md schema, typed, in CGCS2000 lon/lat (EPSG:4490).

Every writer of the county package starts from :func:`issue_frame`, so the GeoPackage,
Shapefile, ledger, KMZ and report show the same values in the same order.
"""
from __future__ import annotations

import datetime as dt

import geopandas as gpd
import numpy as np
import pandas as pd

from pipeline.package.fields import FIELDS, SCHEMA, VERDICT_FIELDS
from tiles.errors import InputError

MU_M2 = 2000.0 / 3.0
"""1 亩 in m²."""

REQUIRED: tuple[str, ...] = ("JCBH", "JCMJ", "YXJ")
"""Fields a polygon must carry to be issued; the others may be blank."""

ISSUE_CRS = "EPSG:4490"


def issue_frame(county: gpd.GeoDataFrame, *, xzqdm: str, xzqmc: str) -> gpd.GeoDataFrame:
    """Schema-conforming copy of one county's polygons in EPSG:4490.

    Parameters
    ----------
    county : GeoDataFrame
        Change polygons of one county in any CRS (usually the processing CRS, e.g.
        EPSG:4545). Must carry JCBH, JCMJ and YXJ; other schema fields missing from it
        are written blank, except XZQDM / XZQMC (from the arguments), JCMJM (JCMJ / 666.67)
        and JD / WD (centroid in the source CRS, transformed to lon / lat).
    xzqdm, xzqmc : str
        County code and name.

    Returns
    -------
    GeoDataFrame
        Columns FIELDS (pipeline.package.fields order) + geometry, EPSG:4490, text as ``str`` or
        None, floats as float64, YXJ / PCXH as nullable Int64, dates as ISO text; the
        verdict fields (HCJG ...) blank. Rows keep the input order; the index is reset.
    """
    if county.crs is None:
        raise InputError(f"county {xzqdm}: the change polygons have no CRS; "
                         "set it to the processing CRS (e.g. EPSG:4545)")
    missing = [f for f in REQUIRED if f not in county]
    if missing:
        raise InputError(f"county {xzqdm}: change polygons lack {', '.join(missing)}; "
                         "run the overlay stage before export")
    src = county.reset_index(drop=True)
    if "XZQDM" in src and len(src):
        other = set(src["XZQDM"].dropna().astype(str)) - {str(xzqdm)}
        if other:
            raise InputError(f"county {xzqdm}: rows carry XZQDM {sorted(other)[:3]}; "
                             "pass the polygons of one county at a time")
    geom = src.geometry
    if (geom.isna() | geom.is_empty).any():
        bad = src.loc[geom.isna() | geom.is_empty, "JCBH"].astype(str).tolist()[:3]
        raise InputError(f"county {xzqdm}: polygons {bad} have no geometry; fix changes.gpkg")
    out = pd.DataFrame(index=src.index)
    for name in FIELDS:
        kind = SCHEMA[name][1]
        col = src[name] if name in src else None
        if name in VERDICT_FIELDS:
            col = None
        elif name == "XZQDM":
            col = pd.Series(str(xzqdm), index=src.index)
        elif name == "XZQMC" and (col is None or col.isna().all()):
            col = pd.Series(str(xzqmc), index=src.index)
        elif name == "JCMJM" and col is None:
            col = pd.to_numeric(src["JCMJ"], errors="coerce") / MU_M2
        out[name] = _typed(col, kind, len(src), src.index)

    need_ll = out["JD"].isna() | out["WD"].isna()
    if need_ll.any():
        cen = gpd.GeoSeries(geom[need_ll].centroid, crs=src.crs).to_crs(ISSUE_CRS)
        out.loc[need_ll, "JD"] = cen.x.to_numpy()
        out.loc[need_ll, "WD"] = cen.y.to_numpy()
    frame = gpd.GeoDataFrame(out, geometry=geom.to_crs(ISSUE_CRS).to_numpy(), crs=ISSUE_CRS)
    return frame


def center_points(frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Point layer at each polygon's JD / WD (EPSG:4490) with the same attributes."""
    pts = gpd.points_from_xy(frame["JD"], frame["WD"], crs=frame.crs)
    return gpd.GeoDataFrame(frame.drop(columns=frame.geometry.name), geometry=pts, crs=frame.crs)


def _typed(col: pd.Series | None, kind: str, n: int, index: pd.Index) -> pd.Series:
    if col is None:
        col = pd.Series([None] * n, index=index, dtype=object)
    if kind == "float":
        return pd.to_numeric(col, errors="coerce").astype("float64")
    if kind == "int":
        num = pd.to_numeric(col, errors="coerce")
        if num.notna().any() and not np.allclose(num.dropna() % 1, 0):
            raise InputError(f"field {col.name} holds non-integer values; it must be whole numbers")
        return num.round().astype("Int64")
    if kind == "date":
        return pd.Series([_iso_date(v) for v in col], index=index, dtype=object)
    return pd.Series([None if _blank(v) else str(v) for v in col], index=index, dtype=object)


def _blank(v: object) -> bool:
    if v is None:
        return True
    if isinstance(v, str):
        return not v.strip()  # the run's changes.gpkg stores blank text as ""
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _iso_date(v: object) -> str | None:
    if _blank(v):
        return None
    if isinstance(v, (dt.date, pd.Timestamp, np.datetime64)):
        return pd.Timestamp(v).date().isoformat()
    return str(v)
