"""Overlay on real public data (../shared/data): Tianditu counties, French parcels, GCJ-02 counties.

Expected values come from the data's own attributes (label points and codes) or from an
independent computation (geopandas.overlay / dissolve, pyproj's geometry_area_perimeter).
"""
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely

from overlay.areas import GEOD
from overlay.layers import read_layer
from overlay.overlay import overlay_changes

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TIANDITU = DATA / "counties_tianditu" / "tianditu_counties_jiangsu_guangxi.geojson"
DISTRICTS = DATA / "counties_tianditu" / "cn_district.csv"
PARCELS = DATA / "parcels_france" / "import-gpkg-test.gpkg"
GCJ_NANJING = DATA / "counties_datav_gcj02" / "citys_320100.json"

needs = lambda path: pytest.mark.skipif(not path.exists(), reason=f"real test data {path} absent (see /work/shared/data/README.md)")  # noqa: E731

COUNTIES = {"path": TIANDITU, "code_field": "district_adcode", "name_field": "district_name"}
# 3-degree Gauss-Krüger zones (CGCS2000, 500 km false easting): Beihai on 108°E, Nanjing/Taizhou on 120°E
ZONES = {"4505": 4545, "3201": 4549, "3212": 4549}


def geod_area(geom_lonlat):
    return abs(GEOD.geometry_area_perimeter(shapely.geometry.polygon.orient(geom_lonlat))[0])


@needs(TIANDITU)
@pytest.mark.parametrize("city", sorted(ZONES))
def test_label_points_land_in_their_county(city):
    table = pd.read_csv(DISTRICTS, dtype={"district_adcode": str})
    rows = table[table["district_adcode"].str.startswith(city)]
    layer = gpd.read_file(TIANDITU)
    layer["code"] = layer["district_adcode"].astype(str)
    # keep label points that lie well inside their own simplified polygon (~500 m)
    own = layer.set_index("code").geometry
    pts = gpd.GeoSeries(shapely.points(rows["lon"], rows["lat"]), crs=4490)
    inside = [own[c].contains(p.buffer(0.005)) for c, p in zip(rows["district_adcode"], pts)]
    rows, pts = rows[inside], pts[inside]
    assert len(rows) >= 3
    crs = ZONES[city]
    squares = shapely.buffer(pts.to_crs(crs).values, 50.0, cap_style="square")
    ch = gpd.GeoDataFrame({"TBLX": ["20"] * len(squares)}, geometry=squares, crs=crs)
    out, report = overlay_changes(ch, {"counties": COUNTIES})
    assert list(out["XZQDM"]) == list(rows["district_adcode"])
    assert list(out["XZQMC"]) == list(rows["district_name"])
    assert (out["KXZQ"] == "").all() and report["outside_counties"] == []


@needs(TIANDITU)
def test_straddling_rectangles_match_geopandas_overlay():
    layer = gpd.read_file(TIANDITU)
    layer = layer[layer["district_adcode"].astype(str).str.startswith("3201")].to_crs(4549)
    # 1.5 km x 0.8 km rectangles centred on boundary vertices of 玄武区 (320102)
    ring = shapely.get_exterior_ring(shapely.get_parts(layer[layer["district_adcode"] == 320102].geometry.iloc[0])[0])
    centres = shapely.get_coordinates(ring)[:-1:2][:12]
    rects = [shapely.box(x - 900, y - 300, x + 600, y + 500) for x, y in centres]
    ch = gpd.GeoDataFrame({"k": range(len(rects))}, geometry=rects, crs=4549)
    out, _ = overlay_changes(ch, {"counties": COUNTIES})
    ov = gpd.overlay(ch, layer[["district_adcode", "geometry"]], how="intersection")
    ov["a"] = ov.to_crs(4490).geometry.map(geod_area)
    ov = ov[ov["a"] > 1.0]
    best = ov.sort_values("a", ascending=False).groupby("k").first()["district_adcode"].astype(str)
    n_counties = ov.groupby("k").size()
    assert list(out["XZQDM"]) == [best.get(k, "") for k in range(len(rects))]
    assert list(out["KXZQ"]) == ["是" if n_counties.get(k, 0) > 1 else "" for k in range(len(rects))]
    assert len(rects) >= 8 and (out["KXZQ"] == "是").sum() >= len(rects) // 2


@needs(PARCELS)
def test_french_parcels_overlaps_not_double_counted(tmp_path):
    parcels = gpd.read_file(PARCELS)
    xmin, ymin, xmax, ymax = parcels.total_bounds
    county = tmp_path / "county.gpkg"
    gpd.GeoDataFrame({"code": ["999999"]}, geometry=[shapely.box(xmin - 10, ymin - 10, xmax + 10, ymax + 10)],
                     crs=parcels.crs).to_file(county)
    xs, ys = np.arange(xmin, xmax, 200.0), np.arange(ymin, ymax, 200.0)
    cells = [shapely.box(x, y, x + 200, y + 200) for x in xs for y in ys]
    ch = gpd.GeoDataFrame({"i": range(len(cells))}, geometry=cells, crs=parcels.crs)
    layers = {"counties": {"path": county, "code_field": "code"},
              "farmland": {"path": PARCELS, "code_field": "code_group"}}
    out, report = overlay_changes(ch, layers)

    dissolved = parcels.geometry.union_all()  # independent: one dissolve, then per-cell clip
    clipped = gpd.GeoSeries(shapely.intersection(np.array(cells, dtype=object), dissolved), crs=parcels.crs)
    expected = [geod_area(g) if not g.is_empty else 0.0 for g in clipped.to_crs(4490)]
    np.testing.assert_allclose(out["GDMJ"], expected, rtol=1e-7, atol=0.01)

    pairs = gpd.overlay(ch, parcels[["id", "geometry"]], how="intersection")
    pairs["a"] = pairs.to_crs(4490).geometry.map(geod_area)
    naive = pairs.groupby("i")["a"].sum().reindex(range(len(cells)), fill_value=0.0).to_numpy()
    assert (naive - out["GDMJ"].to_numpy()).max() > 1.0  # the overlaps are real and were removed once
    assert report["layers"]["farmland"]["read"] == 193


@needs(GCJ_NANJING)
def test_gcj02_invalid_geometries_repaired_and_counted():
    features = json.loads(GCJ_NANJING.read_text(encoding="utf-8"))["features"]
    invalid = [f["properties"]["adcode"] for f in features
               if not shapely.geometry.shape(f["geometry"]).is_valid]
    assert len(invalid) >= 1
    gdf = read_layer({"path": GCJ_NANJING, "code_field": "adcode", "name_field": "name"})
    st = gdf.attrs["read_stats"]
    assert st["repaired"] == len(invalid)
    assert st["kept"] == len(features) and st["empty"] == 0
    assert shapely.is_valid(gdf.geometry.values).all()
    # repair keeps the county: areas of the repaired ones stay within 1 % of the raw polygons
    for code in invalid:
        raw = shapely.geometry.shape(next(f["geometry"] for f in features if f["properties"]["adcode"] == code))
        fixed = gdf.loc[gdf["adcode"] == code].geometry.iloc[0]
        assert fixed.area == pytest.approx(abs(raw.area), rel=0.01)


@needs(GCJ_NANJING)
def test_gcj02_layer_is_offset_from_true_positions():
    """The GCJ-02 layer claims EPSG:4326; its polygons sit hundreds of metres off (README)."""
    gcj = read_layer({"path": GCJ_NANJING, "code_field": "adcode"})
    true = gpd.read_file(TIANDITU)
    a = gcj.loc[gcj["adcode"] == 320102].to_crs(4549).geometry.iloc[0].centroid
    b = true.loc[true["district_adcode"] == 320102].to_crs(4549).geometry.iloc[0].centroid
    assert 200 < a.distance(b) < 1500
    assert pyproj.CRS(gcj.crs).to_epsg() == 4326
