"""Layer formats as provinces deliver them: gzipped GeoJSON, FileGDB, zipped Shapefile;
facility-farmland filings; schema cache noticing a replaced file."""
import gzip
import os
import zipfile
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
import shapely

from overlay.layers import layer_fields, read_layer
from overlay.overlay import overlay_changes
from overlay.priority import prioritize

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHINA_GZ = DATA / "counties_tianditu" / "tianditu_counties_china.geojson.gz"
X0, Y0 = 500_000.0, 3_000_000.0


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def dltb():
    return gpd.GeoDataFrame({"DLBM": ["0101", "0103K", "0201"], "ZLDWMC": ["甲村", "乙村", "丙村"]},
                            geometry=[box(0, 0, 100, 100), box(100, 0, 200, 100), box(200, 0, 300, 100)],
                            crs=4545)


@pytest.mark.skipif(not CHINA_GZ.exists(), reason=f"real test data {CHINA_GZ} absent")
def test_gzipped_geojson_counties_via_vsigzip():
    # label point of 海城区 (Beihai) from cn_district.csv, as a 100 m square in EPSG:4545
    pt = gpd.GeoSeries([shapely.Point(109.18, 21.521)], crs=4490).to_crs(4545)
    ch = gpd.GeoDataFrame({"k": [1]}, geometry=pt.buffer(50, cap_style="square").values, crs=4545)
    spec = {"path": CHINA_GZ, "code_field": "district_adcode", "name_field": "district_name"}
    out, report = overlay_changes(ch, {"counties": spec})
    assert (out["XZQDM"].iloc[0], out["XZQMC"].iloc[0]) == ("450502", "海城区")
    assert report["layers"]["counties"]["read"] == 1  # bbox filter applied inside the gzip stream
    assert "district_adcode" in layer_fields(spec)


def test_small_gzipped_geojson(tmp_path):
    plain = tmp_path / "dltb.geojson"
    dltb().to_crs(4490).to_file(plain, driver="GeoJSON")
    gz = tmp_path / "dltb.geojson.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    gdf = read_layer({"path": gz, "code_field": "DLBM", "codes": ["0101", "0103"]})
    assert sorted(gdf["DLBM"]) == ["0101", "0103K"]


def test_filegdb_layers_and_zipped_gdb(tmp_path):
    if "w" not in pyogrio.list_drivers().get("OpenFileGDB", ""):
        pytest.skip("GDAL OpenFileGDB driver cannot write here")
    gdb = tmp_path / "sandiao.gdb"
    pyogrio.write_dataframe(dltb(), gdb, layer="DLTB", driver="OpenFileGDB")
    pyogrio.write_dataframe(dltb().iloc[:1], gdb, layer="YJJBNTTB", driver="OpenFileGDB")
    spec = {"path": gdb, "layer": "DLTB", "code_field": "DLBM", "codes": ["0101", "0102", "0103"],
            "name_field": "ZLDWMC"}
    gdf = read_layer(spec)
    assert list(gdf["ZLDWMC"]) == ["甲村", "乙村"] and gdf.crs.to_epsg() == 4545
    zipped = tmp_path / "sandiao.gdb.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for f in gdb.iterdir():
            z.write(f, f"sandiao.gdb/{f.name}")
    assert len(read_layer({**spec, "path": zipped})) == 2
    ch = gpd.GeoDataFrame({"k": [1]}, geometry=[box(50, 0, 150, 100)], crs=4545)
    county = tmp_path / "xzq.gpkg"
    gpd.GeoDataFrame({"XZQDM": ["450502"]}, geometry=[box(-100, -100, 400, 400)], crs=4545).to_file(county)
    out, _ = overlay_changes(ch, {"counties": {"path": county, "code_field": "XZQDM"}, "farmland": spec,
                                  "basic_farmland": {"path": gdb, "layer": "YJJBNTTB"}})
    assert out["GDMJ"].iloc[0] == pytest.approx(out["JCMJ"].iloc[0], rel=1e-12)
    assert out["JBNTMJ"].iloc[0] == pytest.approx(out["JCMJ"].iloc[0] / 2, rel=1e-6)


def test_zipped_shapefile(tmp_path):
    shp = tmp_path / "sthx.shp"
    dltb().to_file(shp, encoding="UTF-8")
    zipped = tmp_path / "sthx.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for f in tmp_path.glob("sthx.*"):
            if f.suffix != ".zip":
                z.write(f, f.name)
    gdf = read_layer({"path": zipped, "name_field": "ZLDWMC"})
    assert list(gdf["ZLDWMC"]) == ["甲村", "乙村", "丙村"]


def test_facility_farmland_lowers_priority(tmp_path):
    county = tmp_path / "xzq.gpkg"
    gpd.GeoDataFrame({"XZQDM": ["450502"]}, geometry=[box(-100, -100, 1000, 1000)], crs=4545).to_file(county)
    farm = tmp_path / "gd.gpkg"
    gpd.GeoDataFrame({"DLBM": ["0101"]}, geometry=[box(0, 0, 500, 100)], crs=4545).to_file(farm)
    ssnyd = tmp_path / "ssnyd.gpkg"
    gpd.GeoDataFrame({"BAH": ["2026-001"]}, geometry=[box(200, 0, 300, 100)], crs=4545).to_file(ssnyd)
    ch = gpd.GeoDataFrame({"TBLX": ["20", "20"], "ZXDJ": ["高", "高"]},
                          geometry=[box(0, 0, 40, 40), box(200, 0, 240, 40)], crs=4545)
    layers = {"counties": {"path": county, "code_field": "XZQDM"}, "farmland": {"path": farm},
              "facility_farmland": {"path": ssnyd}}
    out, report = overlay_changes(ch, layers)
    assert out["SSNYDMJ"].iloc[0] == 0
    assert out["SSNYDMJ"].iloc[1] == pytest.approx(out["JCMJ"].iloc[1], rel=1e-12)
    assert "facility_farmland" not in report["layers_missing"]
    ranked = prioritize(out)
    assert ranked["YXJF"].iloc[1] == pytest.approx(ranked["YXJF"].iloc[0] * 0.7, abs=0.01)
    assert ranked["YXJLY"].iloc[1].endswith("位于设施农用地备案范围内")


def test_replaced_file_is_noticed(tmp_path):
    path = tmp_path / "x.gpkg"
    dltb().to_file(path)
    assert layer_fields({"path": path}) == ["DLBM", "ZLDWMC"]
    tmp = tmp_path / "new.gpkg"
    dltb().rename(columns={"DLBM": "DLBM2"}).to_file(tmp)
    os.replace(tmp, path)
    assert layer_fields({"path": path}) == ["DLBM2", "ZLDWMC"]
