"""The overlay stage: county, official area and legal-layer overlap areas of change polygons.

For the change polygons of a quarter (or of one county / tile group) in the processing CRS,
each reference layer is read only inside the changes' bounding box, cut down to candidate
features in its own CRS, transformed to the processing CRS, intersected in bulk and measured
on the CGCS2000 ellipsoid. See ``overlay.layers`` for the layer specs.
"""
from __future__ import annotations

import geopandas as gpd
import numpy as np
import pyproj
import shapely

from overlay.areas import AREA_METHOD, CGCS2000, MU_M2, lonlat_area
from overlay.counties import assign_counties
from overlay.hygiene import clean_polygons
from overlay.layers import LAYER_NAMES, code_text, read_layer
from overlay.overlap import intersecting_pairs, union_by_target
from tiles.errors import ConfigError, InputError

#: Overlap-area column (m²) written for each optional layer.
AREA_COLUMNS = {
    "farmland": "GDMJ",
    "basic_farmland": "JBNTMJ",
    "ecological_redline": "STHXMJ",
    "protected_areas": "BHQMJ",
    "approved": "PZMJ",
    "facility_farmland": "SSNYDMJ",
}
#: Overlap with the core zone (核心保护区) of protected areas, m².
CORE_COLUMN = "BHQHXMJ"
ZONE_CORE, ZONE_GENERAL = "核心保护区", "一般控制区"
#: Overlaps smaller than this (m²) are shared-edge noise: they do not set BHQFQ.
MIN_ZONE_M2 = 0.01
#: Margin (m, processing CRS) around each change when picking candidate features in a layer's CRS.
_CANDIDATE_MARGIN_M = 1.0

OUTPUT_COLUMNS = ("XZQDM", "XZQMC", "KXZQ", "JCMJ", "JCMJM", *AREA_COLUMNS.values(), CORE_COLUMN,
                  "BHQFQ", "JD", "WD")


def _new_report(report: dict | None) -> dict:
    report = {} if report is None else report
    report.setdefault("area_method", AREA_METHOD)
    report.setdefault("changes", 0)
    report.setdefault("changes_repaired", 0)
    report.setdefault("changes_empty", [])
    report.setdefault("layers", {})
    report.setdefault("layers_missing", [])
    report.setdefault("outside_counties", [])
    report.setdefault("straddling", [])
    return report


def _count(report: dict, name: str, spec: dict, feats: gpd.GeoDataFrame) -> None:
    entry = report["layers"].setdefault(name, {"path": str(spec["path"])})
    for key, value in feats.attrs["read_stats"].items():
        entry[key] = entry.get(key, 0) + int(value)
    if feats.attrs.get("encoding_guessed"):
        entry["encoding_guessed"] = feats.attrs["encoding_guessed"]


def _candidates(spec: dict, targets: np.ndarray, crs, columns=None) -> gpd.GeoDataFrame:
    """Features of a layer near the targets, transformed to the processing ``crs``.

    The targets' bbox is pushed down into the read; then only features whose envelope meets a
    target's envelope (grown by ``_CANDIDATE_MARGIN_M``) are cleaned and reprojected.
    """
    near = gpd.GeoSeries(targets, crs=crs)
    feats = read_layer(spec, columns=columns, near=near, near_margin=_CANDIDATE_MARGIN_M)
    if len(feats) and not feats.crs.equals(crs):
        attrs = dict(feats.attrs)
        feats = feats.to_crs(crs)
        feats.attrs.update(attrs)
    return feats


def _ellipsoidal(geoms: np.ndarray, crs, targets: np.ndarray, target_area: np.ndarray) -> np.ndarray:
    """Ellipsoidal area (m²) of overlap geometries; an overlap that is the whole target reuses its area."""
    area = np.zeros(len(geoms))
    present = ~shapely.is_missing(geoms)
    if not present.any():
        return area
    planar_g = shapely.area(geoms[present])
    planar_t = shapely.area(targets[present])
    # The overlap lies inside its target: equal planar areas mean equal polygons.
    whole = np.abs(planar_g - planar_t) <= 1e-9 * planar_t
    idx = np.flatnonzero(present)
    area[idx[whole]] = target_area[idx[whole]]
    part = idx[~whole]
    if len(part):
        lonlat = gpd.GeoSeries(geoms[part], crs=crs).to_crs(CGCS2000).values
        area[part] = lonlat_area(np.asarray(lonlat, dtype=object))
    return area


def _centroids_lonlat(geoms: np.ndarray, crs) -> tuple[np.ndarray, np.ndarray]:
    """Centroid lon/lat (EPSG:4490, degrees, 6 decimals ≈ 0.1 m); a point on the surface when
    the centroid of a concave polygon falls outside it, so field staff navigate onto the polygon."""
    pts = shapely.centroid(geoms)
    outside = ~shapely.is_missing(geoms) & ~shapely.intersects(geoms, pts)
    pts[outside] = shapely.point_on_surface(geoms[outside])
    ll = gpd.GeoSeries(pts, crs=crs).to_crs(CGCS2000)
    lon = np.round(ll.x.to_numpy(dtype=float), 6)
    lat = np.round(ll.y.to_numpy(dtype=float), 6)
    return lon, lat


def overlay_changes(changes: gpd.GeoDataFrame, layers: dict, *, stats: dict | None = None
                    ) -> tuple[gpd.GeoDataFrame, dict]:
    """Assign counties and measure every change polygon against the reference layers.

    Parameters
    ----------
    changes : geopandas.GeoDataFrame
        Change polygons in a projected processing CRS in metres (e.g. EPSG:4545), with the
        detector's columns (kept unchanged).
    layers : dict
        Layer name -> spec (see ``overlay.layers``). Names from ``LAYER_NAMES``; "counties" is
        required (with ``code_field``); a missing optional layer gives 0 in its column and is
        listed in ``report["layers_missing"]``.
    stats : dict, optional
        A report from an earlier call to accumulate into (e.g. one call per county); it is
        updated in place and returned.

    Returns
    -------
    gdf : geopandas.GeoDataFrame
        Same rows, order, index and geometry as ``changes``, plus: XZQDM, XZQMC (largest
        county share; "" outside every county), KXZQ ("是" when straddling counties, else ""),
        JCMJ (ellipsoidal m² on CGCS2000), JCMJM (亩), GDMJ, JBNTMJ, STHXMJ, BHQMJ, PZMJ,
        SSNYDMJ (ellipsoidal m² of the overlap with each layer, overlapping features unioned
        first), BHQHXMJ (overlap with the protected areas' core zone), BHQFQ ("核心保护区",
        "一般控制区" or ""), JD, WD (centroid, EPSG:4490 degrees, 6 decimals).
    report : dict
        ``layers``: per layer path, ``read`` / ``selected`` / ``repaired`` / ``empty`` / ``kept``
        / ``candidates`` feature counts; ``layers_missing``; ``outside_counties`` and
        ``straddling``: index labels of rows; ``changes``, ``changes_repaired``,
        ``changes_empty`` (labels of rows with no areal geometry); ``area_method``.

    Raises
    ------
    ConfigError
        Unknown layer name, no "counties" layer or no code field for it.
    InputError
        ``changes`` has no CRS or a geographic one.
    InputFileError
        A layer file, layer, field or CRS is missing (see ``overlay.layers``).
    """
    report = _new_report(stats)
    unknown = set(layers) - set(LAYER_NAMES)
    if unknown:
        raise ConfigError(f"[layers] unknown layer name(s) {sorted(unknown)}; known: {list(LAYER_NAMES)}")
    if "counties" not in layers or not layers["counties"].get("code_field"):
        raise ConfigError("[layers.counties] is required with path and code_field (e.g. code_field = \"XZQDM\")")
    crs = changes.crs
    if crs is None:
        raise InputError("overlay: change polygons have no CRS; the detector output must carry the processing CRS")
    crs = pyproj.CRS.from_user_input(crs)
    if not crs.is_projected:
        raise InputError(f"overlay: change polygons are in geographic {crs.name}; give them in the projected processing CRS ([run] crs, e.g. EPSG:4545)")

    out = changes.copy()
    n = len(out)
    targets, counts = clean_polygons(changes.geometry.to_numpy())
    missing = shapely.is_missing(targets)
    report["changes"] += n
    report["changes_repaired"] += counts["repaired"]
    report["changes_empty"].extend(out.index[missing].tolist())
    for name in AREA_COLUMNS:
        if name not in layers and name not in report["layers_missing"]:
            report["layers_missing"].append(name)
    for col in OUTPUT_COLUMNS:
        out[col] = "" if col in ("XZQDM", "XZQMC", "KXZQ", "BHQFQ") else 0.0
    out["JD"] = out["WD"] = np.nan
    ordered = [c for c in changes.columns if c not in OUTPUT_COLUMNS] + list(OUTPUT_COLUMNS)
    if missing.all():
        return out[ordered], report

    lonlat = gpd.GeoSeries(targets, crs=crs).to_crs(CGCS2000).values
    jcmj = lonlat_area(np.asarray(lonlat, dtype=object))

    spec = layers["counties"]
    counties = _candidates(spec, targets, crs)
    _count(report, "counties", spec, counties)
    codes = code_text(counties[spec["code_field"]])
    names = (counties[spec["name_field"]].fillna("").astype(str).to_numpy()
             if spec.get("name_field") else np.full(len(counties), "", dtype=object))
    county = assign_counties(targets, counties.geometry.values, codes, names)
    out["XZQDM"] = county["code"]
    out["XZQMC"] = county["name"]
    out["KXZQ"] = np.where(county["straddles"], "是", "")
    outside = county["outside"] & ~missing
    report["outside_counties"].extend(out.index[outside].tolist())
    report["straddling"].extend(out.index[county["straddles"]].tolist())

    out["JCMJ"] = jcmj
    out["JCMJM"] = jcmj / MU_M2

    for name, col in AREA_COLUMNS.items():
        spec = layers.get(name)
        if spec is None:
            continue
        columns = [spec["zone_field"]] if name == "protected_areas" and spec.get("zone_field") else []
        feats = _candidates(spec, targets, crs, columns=columns)
        _count(report, name, spec, feats)
        ti, fi, pieces = intersecting_pairs(targets, feats.geometry.values)
        union = union_by_target(pieces, ti, n)
        out[col] = _ellipsoidal(union, crs, targets, jcmj)
        if name == "protected_areas":
            core_area = np.zeros(n)
            if spec.get("zone_field"):
                core_values = tuple(spec.get("core_values") or (ZONE_CORE,))
                zone = feats[spec["zone_field"]].fillna("").astype(str).str.strip().to_numpy()
                is_core = np.isin(zone[fi], core_values)
                core = union_by_target(pieces[is_core], ti[is_core], n)
                core_area = _ellipsoidal(core, crs, targets, jcmj)
            else:
                report["layers"][name]["unzoned"] = True
            out[CORE_COLUMN] = core_area
            zone_label = np.where(core_area >= MIN_ZONE_M2, ZONE_CORE,
                                  np.where(out[col].to_numpy() >= MIN_ZONE_M2, ZONE_GENERAL, ""))
            if not spec.get("zone_field"):
                zone_label = np.full(n, "", dtype=object)
            out["BHQFQ"] = zone_label

    jd, wd = _centroids_lonlat(targets, crs)
    out["JD"], out["WD"] = jd, wd
    return out[ordered], report
