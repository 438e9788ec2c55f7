"""Change type (TBLX) and confidence (ZXD, ZXDJ) of merged change objects.

Types follow DOMAIN.md: 20 building, YH hardened ground, TD earth moving / bare
soil, DL road (linear), GF solar panels, KT new pond / water, QT other. The rules
read the object means of the normalised after date and of the index changes,
and the object's shape, in this order (the first that holds wins):

KT  water appears: NDWI after > WATER_NDWI and NDWI rose by > KT_DNDWI.
GF  a dark, dry, non-canopy surface appears: visible brightness after <
    GF_BRIGHT (panels reflect a few % of visible light), NDWI after <=
    WATER_NDWI (not water), NDVI after < GF_NDVI (panel rows with ground between,
    not a canopy), and vegetation lost (NDVI fell by > GF_DNDVI) or the surface
    darkened (by > GF_DARK).
DL  linear: min-rotated-rectangle elongation >= DL_ELONG, or P²/(4A) >= DL_THIN
    (a bent road).
TD  strongly soil-red bare ground: NDVI after < BARE_NDVI and (red - blue) /
    (red + blue) after > TD_SOIL_STRONG (iron oxides and organic matter redden
    soil; concrete, asphalt and steel roofs are spectrally flat or bluish).
20  a building: a compact block (fill of the min rotated rectangle >= B_FILL)
    with brightening, either house-sized (<= B_MAX_M2) or textured (standard
    deviation of the after brightness within the object >= ROOF_TEXTURE: roofs,
    yards and shadows alternate, while hardened ground is uniform).
TD  other bare soil: NDVI after < BARE_NDVI and soil redness > TD_SOIL.
YH  any other brightening to a non-vegetated surface (hardened ground).
QT  everything else.

Confidence: two independent signals per object, the statistical one P_MEAN
(mean chi-square probability of change) and the physical one EVIDF (fraction of
pixels with a strong land-use index signature). ZXD = P_MEAN * (0.5 + 0.5
EVIDF); ZXDJ 高 when both agree (P_MEAN >= HIGH_P and EVIDF >= HIGH_EVID),
中 when one of them does, else 低. A third signal comes later, in the overlay stage, when the
registry has the previous quarter: the same ground was issued as changed then too (persistence,
:func:`with_persistence`); any two of the three give 高.

With a reference date (the same season a year earlier) the check against it is one more
signal, and 高 needs one more: REFCHK = 1 when the reference saw the object and, since it was
kept, found it new (``detect.merge.apply_reference``); 0 when clouds hid it. Both signals of the
pair are what every detected pixel passed already, while the seasonal crop cycle that the check
tells apart is the main source of false alarms; an object it could not check is therefore one
level lower (中) unless it persists from the previous quarter. One signal short of 高 is 中,
two or more short is 低.
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

WATER_NDWI = 0.1
KT_DNDWI = 0.1
GF_BRIGHT = 0.08
GF_NDVI = 0.4
GF_DNDVI = 0.2
GF_DARK = 0.02
BARE_NDVI = 0.2
DL_ELONG = 4.0
DL_THIN = 16.0
TD_SOIL = 0.1
TD_SOIL_STRONG = 0.2
B_FILL = 0.75
B_MAX_M2 = 1000.0
ROOF_TEXTURE = 0.03
HIGH_P = 0.99
HIGH_EVID = 0.5

TYPES = ("20", "YH", "TD", "DL", "GF", "KT", "QT")


def shape_metrics(geoms):
    """Elongation (long / short side of the minimum rotated rectangle), compactness
    4 pi A / P² (1 for a disc), fill A / rectangle area, and thinness P² / (4 A).

    Returns four float64 arrays; lengths in the CRS units.
    """
    geoms = np.asarray(geoms)
    area = shapely.area(geoms)
    perim = shapely.length(geoms)
    rect = shapely.minimum_rotated_rectangle(geoms)
    coords = [np.asarray(r.exterior.coords) if r.geom_type == "Polygon" else None for r in rect]
    elong = np.ones(len(geoms))
    for i, c in enumerate(coords):
        if c is None or len(c) < 4:
            continue
        s1 = np.hypot(*(c[1] - c[0]))
        s2 = np.hypot(*(c[2] - c[1]))
        lo, hi = min(s1, s2), max(s1, s2)
        elong[i] = hi / lo if lo > 0 else np.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        compact = np.where(perim > 0, 4.0 * np.pi * area / perim ** 2, 0.0)
        rect_area = shapely.area(rect)
        fill = np.where(rect_area > 0, area / rect_area, 0.0)
        thin = np.where(area > 0, perim ** 2 / (4.0 * area), np.inf)
    return elong, compact, fill, thin


def classify(objects: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Add object means, shape, TBLX, ZXD and ZXDJ to merged change objects.

    Parameters
    ----------
    objects : geopandas.GeoDataFrame
        Output of ``merge_seams`` / ``apply_mmu`` (columns NPIX, S_*, N_*).

    Returns
    -------
    geopandas.GeoDataFrame
        A copy with P_MEAN, DNDVI, DNDWI, DBRI, NDVIA, NDWIA, BRIA, SOILA, EVIDF
        (means over pixels), BRISD (brightness spread), ELONG, COMPACT, TBLX (text), ZXD (float 0-1) and
        ZXDJ (低 / 中 / 高).
    """
    out = objects.copy()
    n = out["NPIX"].to_numpy(dtype=np.float64)
    if len(out) == 0:
        for c in ("P_MEAN", "DNDVI", "DNDWI", "DBRI", "NDVIA", "NDWIA", "BRIA", "SOILA", "BRISD",
                  "EVIDF", "ELONG", "COMPACT", "ZXD"):
            out[c] = np.array([], dtype=np.float64)
        for c in ("TBLX", "ZXDJ"):
            out[c] = np.array([], dtype=object)
        return out
    mean = {}
    for col, src in (("P_MEAN", "S_P"), ("DNDVI", "S_DNDVI"), ("DNDWI", "S_DNDWI"),
                     ("DBRI", "S_DBRI"), ("NDVIA", "S_NDVIA"), ("NDWIA", "S_NDWIA"),
                     ("BRIA", "S_BRIA"), ("SOILA", "S_SOILA"), ("EVIDF", "N_STRONG")):
        mean[col] = out[src].to_numpy(dtype=np.float64) / n
        out[col] = mean[col]
    out["BRISD"] = np.sqrt(np.maximum(out["S_BRIA2"].to_numpy(np.float64) / n
                                      - mean["BRIA"] ** 2, 0.0))
    elong, compact, fill, thin = shape_metrics(out.geometry.values)
    out["ELONG"] = elong
    out["COMPACT"] = compact
    area = n * out["PX_AREA"].to_numpy(dtype=np.float64)

    water = (mean["NDWIA"] > WATER_NDWI) & (mean["DNDWI"] > KT_DNDWI)
    panels = ((mean["BRIA"] < GF_BRIGHT) & (mean["NDWIA"] <= WATER_NDWI)
              & (mean["NDVIA"] < GF_NDVI)
              & ((mean["DNDVI"] < -GF_DNDVI) | (mean["DBRI"] < -GF_DARK)))
    linear = (elong >= DL_ELONG) | (thin >= DL_THIN)
    bare = mean["NDVIA"] < BARE_NDVI
    red_soil = bare & (mean["SOILA"] > TD_SOIL_STRONG)
    bright = mean["DBRI"] > 0
    block = bright & (fill >= B_FILL) & ((area <= B_MAX_M2) | (out["BRISD"].to_numpy() >= ROOF_TEXTURE))
    soil = bare & (mean["SOILA"] > TD_SOIL)
    tblx = np.select([water, panels, linear, red_soil, block, soil, bright],
                     ["KT", "GF", "DL", "TD", "20", "TD", "YH"], default="QT")
    out["TBLX"] = tblx.astype(object)

    out["ZXD"] = np.clip(mean["P_MEAN"] * (0.5 + 0.5 * mean["EVIDF"]), 0.0, 1.0)
    out["ZXDJ"] = confidence_level(mean["P_MEAN"], mean["EVIDF"],
                                   reference_check=_reference_check(out))
    return out


def confidence_level(p_mean, evidf, persistent=None, reference_check=None) -> np.ndarray:
    """ZXDJ from the independent signals that hold: 高 for two or more, 中 for one, 低 for none;
    with a reference check, 高 for three or more, 中 for two, 低 for fewer.

    The signals: the chi-square test (P_MEAN >= HIGH_P), the index rule (EVIDF >= HIGH_EVID) and,
    when given, ``persistent`` (bool per object: the previous quarter's change polygons cover it)
    and ``reference_check`` (float per object: REFCHK, 1 confirmed new since the reference date,
    0 not seen by it; NaN where the object had no reference date, which then needs one signal
    less).
    """
    votes = ((np.asarray(p_mean, dtype=np.float64) >= HIGH_P).astype(int)
             + (np.asarray(evidf, dtype=np.float64) >= HIGH_EVID).astype(int))
    if persistent is not None:
        votes = votes + np.asarray(persistent, dtype=bool).astype(int)
    need = np.full(votes.shape, 2)
    if reference_check is not None:
        check = np.asarray(reference_check, dtype=np.float64)
        asked = ~np.isnan(check)
        votes = votes + (asked & (check > 0.5)).astype(int)
        need = need + asked.astype(int)
    return np.select([votes >= need, votes == need - 1], ["高", "中"], default="低").astype(object)


def _reference_check(objects) -> np.ndarray | None:
    """REFCHK per object (see :func:`confidence_level`), or None without the column."""
    if "REFCHK" not in objects:
        return None
    return pd.to_numeric(objects["REFCHK"], errors="coerce").to_numpy(dtype=np.float64)


def with_persistence(changes: gpd.GeoDataFrame, previous_quarter: str) -> gpd.GeoDataFrame:
    """ZXDJ again, with persistence as a third signal: QQJCBH (set by the registry match) names a
    polygon of ``previous_quarter`` (e.g. "2026Q2"; JCBH = XZQDM + quarter + sequence).

    A change seen at the same place in two successive quarters is ongoing work on the ground
    (earth moving, then a building), which neither of this quarter's spectral signals knows.
    Rows without P_MEAN / EVIDF (objects from elsewhere) keep their ZXDJ.
    """
    if not len(changes) or not {"P_MEAN", "EVIDF", "QQJCBH"} <= set(changes.columns):
        return changes
    out = changes.copy()
    qq = out["QQJCBH"].fillna("").astype(str)
    persistent = (qq.str.len() == 17) & (qq.str.slice(6, 12) == previous_quarter)
    known = out["P_MEAN"].notna() & out["EVIDF"].notna()
    level = confidence_level(out["P_MEAN"].fillna(0.0), out["EVIDF"].fillna(0.0), persistent.to_numpy(),
                             _reference_check(out))
    out["ZXDJ"] = np.where(known.to_numpy(), level, out["ZXDJ"].to_numpy(dtype=object))
    return out
