"""Writing the demo's reference layers (EPSG:4490) and its ground truth (EPSG:4545).

The layers are drawn in EPSG:4545 with the landscape and transformed to CGCS2000 lon/lat on
writing, as provinces deliver them. Areas (TBMJ, JBNTMJ) are ellipsoidal areas on the CGCS2000
ellipsoid, as in 三调. Dirt that real layers carry is kept on purpose: one self-intersecting
(bow-tie) DLTB polygon, two overlapping YJJBNTTB polygons, and a GBK Shapefile. Every file is
written under a temporary name beside its target and renamed into place.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from pyproj import Geod

from pipeline.atomic import atomic_path
from pipeline.demo.landscape import DLMC, Landscape
from pipeline.demo.scene import CRS_GEO

#: The CGCS2000 ellipsoid (same a and f as GRS80).
CGCS2000 = Geod(a=6378137.0, f=1 / 298.257222101)

LAYER_FILES = {
    "counties": ("layers/counties.gpkg", "XZQ"),
    "dltb": ("layers/dltb.gpkg", "DLTB"),
    "yjjbnt": ("layers/yjjbnt.gpkg", "YJJBNTTB"),
    "sthx": ("layers/sthx.shp", "sthx"),
    "zrbhd": ("layers/zrbhd.gpkg", "ZRBHD"),
    "pzyd": ("layers/pzyd.gpkg", "PZYD"),
}


def to_geographic(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``gdf`` in EPSG:4490; polygons that re-projection made invalid (micro-slivers) are repaired."""
    out = gdf.to_crs(CRS_GEO)
    geoms = out.geometry.to_numpy().copy()
    bad = np.flatnonzero(~shapely.is_valid(geoms))
    for i in bad:
        parts = shapely.get_parts(shapely.make_valid(geoms[i]))
        geoms[i] = shapely.union_all(parts[shapely.get_type_id(parts) == 3])
    return out.set_geometry(geoms)


def ellipsoidal_area(geoms_4490) -> np.ndarray:
    """Area (m^2) of each lon/lat polygon on the CGCS2000 ellipsoid."""
    return np.array([abs(CGCS2000.geometry_area_perimeter(g)[0]) for g in geoms_4490])


def write_gpkg_layers(layers: list[tuple[gpd.GeoDataFrame, str]], path: Path) -> None:
    """Write several layers into one new GeoPackage, atomically."""
    with atomic_path(path) as tmp:
        for gdf, name in layers:
            pyogrio.write_dataframe(gdf, tmp, layer=name, driver="GPKG")


def write_shapefile_gbk(gdf: gpd.GeoDataFrame, path: Path) -> None:
    """Write a GBK-encoded Shapefile with a ``.cpg`` saying GBK; each member file is renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    try:
        tmp = tmpdir / path.name
        pyogrio.write_dataframe(gdf, tmp, driver="ESRI Shapefile", encoding="GBK")
        tmp.with_suffix(".cpg").write_text("GBK", encoding="ascii")
        for member in sorted(tmpdir.iterdir()):
            os.replace(member, path.with_suffix(member.suffix))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _zldwdm(points, counties) -> list[str]:
    """19-digit 坐落单位代码: county code + township + village (from a 3 km / 1 km grid) + zeros."""
    idx = counties.sindex.nearest(points, return_all=False)[1]
    codes = counties.XZQDM.to_numpy()[idx]
    x, y = shapely.get_x(points), shapely.get_y(points)
    town = (np.floor(x / 3000) + 7 * np.floor(y / 3000)).astype(np.int64) % 20 + 100
    vill = (np.floor(x / 1000) + 11 * np.floor(y / 1000)).astype(np.int64) % 40 + 200
    return [f"{c}{t:03d}{v:03d}0000000" for c, t, v in zip(codes, town, vill)]


def _bow_tie(geoms: np.ndarray, candidates: np.ndarray, rng: np.random.Generator) -> int | None:
    """Turn one four-cornered polygon into a self-intersecting bow-tie; return its position."""
    simple = [i for i in candidates
              if geoms[i].geom_type == "Polygon" and shapely.get_num_interior_rings(geoms[i]) == 0
              and len(geoms[i].exterior.coords) == 5]
    if not simple:
        return None
    i = simple[int(rng.integers(len(simple)))]
    p = np.asarray(geoms[i].exterior.coords)[:4]
    geoms[i] = shapely.Polygon(p[[0, 1, 3, 2]])
    return i


def write_layers(land: Landscape, out_dir: Path, rng: np.random.Generator) -> dict[str, Path]:
    """Write all six reference layers under ``out_dir/layers``; returns {name: path}."""
    out_dir = Path(out_dir)
    paths = {k: out_dir / rel for k, (rel, _) in LAYER_FILES.items()}

    counties = to_geographic(land.counties)
    write_gpkg_layers([(counties, "XZQ")], paths["counties"])

    dltb = land.land[land.land.IN_DLTB]
    geo = to_geographic(dltb).geometry.to_numpy().copy()
    in_jbnt = np.isin(dltb.index.to_numpy(), land.jbnt.LAND.to_numpy())
    farm = np.flatnonzero(dltb.DLBM.isin(["0101", "0102", "0103"]).to_numpy() & ~in_jbnt
                          & (dltb.area.to_numpy() > 2000))
    area = np.round(ellipsoidal_area(geo), 2)
    _bow_tie(geo, farm, rng)
    dltb_out = gpd.GeoDataFrame(
        {"BSM": np.arange(1, len(dltb) + 1, dtype=np.int64) + 450500000000,
         "DLBM": dltb.DLBM.to_numpy(), "DLMC": [DLMC[c] for c in dltb.DLBM],
         "ZLDWDM": _zldwdm(shapely.point_on_surface(dltb.geometry.to_numpy()), land.counties),
         "TBMJ": area},
        geometry=geo, crs=CRS_GEO)
    write_gpkg_layers([(dltb_out, "DLTB")], paths["dltb"])

    jb = to_geographic(land.jbnt)
    jb_out = gpd.GeoDataFrame(
        {"BSM": np.arange(1, len(jb) + 1, dtype=np.int64) + 450600000000,
         "JBNTTBBH": [f"{k:05d}" for k in range(1, len(jb) + 1)], "DLBM": jb.DLBM.to_numpy(),
         "JBNTMJ": np.round(ellipsoidal_area(jb.geometry.to_numpy()), 2)},
        geometry=jb.geometry.to_numpy(), crs=CRS_GEO)
    write_gpkg_layers([(jb_out, "YJJBNTTB")], paths["yjjbnt"])

    rl = to_geographic(land.redline)
    rl_out = gpd.GeoDataFrame(
        {"BSM": np.arange(1, len(rl) + 1, dtype=np.int64), "HXMC": rl.HXMC.to_numpy(),
         "HXLX": rl.HXLX.to_numpy(), "MJ": np.round(ellipsoidal_area(rl.geometry.to_numpy()), 2)},
        geometry=rl.geometry.to_numpy(), crs=CRS_GEO)
    write_shapefile_gbk(rl_out, paths["sthx"])

    pa = gpd.GeoDataFrame({"BSM": [1, 2], "ZRBHDMC": ["北海冠岭森林自然公园"] * 2,
                           "GNFQ": ["核心保护区", "一般控制区"]},
                          geometry=[land.core, land.general], crs=land.land.crs)
    pa = to_geographic(pa)
    write_gpkg_layers([(pa, "ZRBHD")], paths["zrbhd"])

    ap = to_geographic(land.approved)
    ap.insert(0, "BSM", np.arange(1, len(ap) + 1, dtype=np.int64))
    write_gpkg_layers([(ap, "PZYD")], paths["pzyd"])
    return paths


def write_truth(truth: gpd.GeoDataFrame, seasonal: gpd.GeoDataFrame, path: Path) -> None:
    """``truth.gpkg``: layer ``truth`` (true changes) and layer ``seasonal`` (crop changes), EPSG:4545."""
    write_gpkg_layers([(truth, "truth"), (seasonal, "seasonal")], path)
