"""Reading reference layers: code selection, encodings, CRS, fields, bbox push-down, hygiene."""
import os

import geopandas as gpd
import pyogrio
import pytest
import shapely

from overlay.layers import guess_dbf_encoding, layer_fields, read_layer
from tiles.errors import ConfigError, InputFileError

NAMES = ["水田", "旱地", "有林地"]


def _dltb(tmp_path, name="dltb.gpkg", crs=4545):
    codes = ["0101", "0102", "0103K", "0103", "01", "0201", "1001", None]
    geoms = [shapely.box(500_000 + 100 * i, 3_000_000, 500_090 + 100 * i, 3_000_090) for i in range(len(codes))]
    gdf = gpd.GeoDataFrame({"DLBM": codes, "BSM": range(len(codes))}, geometry=geoms, crs=crs)
    path = tmp_path / name
    gdf.to_file(path, layer="DLTB")
    return path


def test_dlbm_prefix_match_includes_suffixed_codes(tmp_path):
    path = _dltb(tmp_path)
    gdf = read_layer({"path": path, "code_field": "DLBM", "codes": ["0101", "0102", "0103"]})
    assert sorted(gdf["DLBM"]) == ["0101", "0102", "0103", "0103K"]
    assert gdf.attrs["read_stats"]["read"] == 8
    assert gdf.attrs["read_stats"]["selected"] == 4
    assert gdf.crs.to_epsg() == 4545
    assert list(gdf.columns) == ["DLBM", "geometry"]


def test_integer_codes_match_as_text(tmp_path):
    gdf = gpd.GeoDataFrame({"XZQDM": [450512, 450521]},
                           geometry=[shapely.box(0, 0, 1, 1), shapely.box(1, 0, 2, 1)], crs=4490)
    gdf.to_file(tmp_path / "x.gpkg")
    out = read_layer({"path": tmp_path / "x.gpkg", "code_field": "XZQDM", "codes": ["45051"]})
    assert list(out["XZQDM"]) == [450512]


def _shapefile(tmp_path, encoding, keep_cpg):
    gdf = gpd.GeoDataFrame({"MC": NAMES}, geometry=[shapely.box(i, 0, i + 1, 1) for i in range(3)], crs=4545)
    path = tmp_path / "sthx.shp"
    pyogrio.write_dataframe(gdf, path, encoding=encoding)
    raw = open(path.with_suffix(".dbf"), "rb").read()
    assert "水田".encode(encoding) in raw  # really these bytes on disk
    if not keep_cpg:
        # As Chinese tools write them: no .cpg and no language driver id in the DBF header.
        os.remove(path.with_suffix(".cpg"))
        with open(path.with_suffix(".dbf"), "r+b") as f:
            f.seek(29)
            f.write(b"\x00")
    return path


def test_gbk_shapefile_with_cpg(tmp_path):
    path = _shapefile(tmp_path, "GBK", keep_cpg=True)
    gdf = read_layer({"path": path, "name_field": "MC"})
    assert list(gdf["MC"]) == NAMES
    assert gdf.attrs["encoding_guessed"] is None


def test_gbk_shapefile_without_cpg_with_encoding_key(tmp_path):
    path = _shapefile(tmp_path, "GBK", keep_cpg=False)
    assert pyogrio.read_info(path)["encoding"] == "ISO-8859-1"  # what GDAL would assume
    gdf = read_layer({"path": path, "name_field": "MC", "encoding": "GBK"})
    assert list(gdf["MC"]) == NAMES
    assert gdf.attrs["encoding_guessed"] is None


@pytest.mark.parametrize("encoding", ["GBK", "UTF-8"])
def test_undeclared_shapefile_encoding_is_guessed(tmp_path, encoding):
    path = _shapefile(tmp_path, encoding, keep_cpg=False)
    assert guess_dbf_encoding(path) == encoding
    gdf = read_layer({"path": path, "name_field": "MC"})
    assert list(gdf["MC"]) == NAMES
    assert gdf.attrs["encoding_guessed"] == encoding


def test_layer_without_crs_is_refused(tmp_path):
    gdf = gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4545)
    path = tmp_path / "nocrs.shp"
    gdf.to_file(path)
    os.remove(path.with_suffix(".prj"))
    with pytest.raises(InputFileError, match=r"nocrs\.shp.*no CRS.*-a_srs"):
        read_layer({"path": path})
    with pytest.raises(InputFileError, match="no CRS"):
        layer_fields({"path": path})


def test_missing_file_layer_and_field(tmp_path):
    path = _dltb(tmp_path)
    with pytest.raises(InputFileError, match="does not exist"):
        read_layer({"path": tmp_path / "absent.gpkg"})
    with pytest.raises(InputFileError, match=r"no layer 'TB'.*\['DLTB'\]"):
        read_layer({"path": path, "layer": "TB"})
    with pytest.raises(InputFileError, match=r"no field 'DLBM2' \(code_field\)"):
        layer_fields({"path": path, "code_field": "DLBM2"})
    with pytest.raises(ConfigError, match="code_field"):
        read_layer({"path": path, "codes": ["0101"]})
    with pytest.raises(ConfigError, match="list of non-empty strings"):
        read_layer({"path": path, "code_field": "DLBM", "codes": "0101"})
    assert layer_fields({"path": path, "code_field": "DLBM"}) == ["DLBM", "BSM"]


def test_several_layers_need_a_name(tmp_path):
    path = _dltb(tmp_path)
    gpd.GeoDataFrame({"x": [1]}, geometry=[shapely.box(0, 0, 1, 1)], crs=4545).to_file(path, layer="OTHER")
    with pytest.raises(InputFileError, match="holds 2 layers"):
        read_layer({"path": path})
    assert len(read_layer({"path": path, "layer": "OTHER"})) == 1


def test_point_layer_is_refused(tmp_path):
    gpd.GeoDataFrame({"x": [1]}, geometry=[shapely.Point(0, 0)], crs=4545).to_file(tmp_path / "p.gpkg")
    with pytest.raises(InputFileError, match="must be polygons"):
        read_layer({"path": tmp_path / "p.gpkg"})


def test_bbox_is_transformed_into_the_layer_crs(tmp_path):
    # Layer in CGCS2000 lon/lat, bbox given in EPSG:4545 around one of three far-apart squares.
    lonlat = [(108.0, 27.0), (108.5, 27.0), (108.0, 27.5)]
    layer = gpd.GeoDataFrame({"id": [1, 2, 3]},
                             geometry=[shapely.box(x, y, x + 0.001, y + 0.001) for x, y in lonlat], crs=4490)
    layer.to_file(tmp_path / "l.gpkg")
    centre = gpd.GeoSeries([shapely.Point(108.0005, 27.0005)], crs=4490).to_crs(4545).iloc[0]
    bbox = (centre.x - 500, centre.y - 500, centre.x + 500, centre.y + 500)
    gdf = read_layer({"path": tmp_path / "l.gpkg"}, bbox=bbox, bbox_crs="EPSG:4545", columns=["id"])
    assert list(gdf["id"]) == [1]
    assert gdf.attrs["read_stats"]["read"] == 1
    assert gdf.crs.to_epsg() == 4490


def test_invalid_repaired_and_empty_skipped(tmp_path):
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])
    geoms = [bowtie, shapely.box(20, 0, 30, 10), None, shapely.Polygon()]
    gpd.GeoDataFrame({"k": [1, 2, 3, 4]}, geometry=geoms, crs=4545).to_file(tmp_path / "dirty.gpkg")
    gdf = read_layer({"path": tmp_path / "dirty.gpkg"}, columns=["k"])
    st = gdf.attrs["read_stats"]
    assert (st["read"], st["repaired"], st["empty"], st["kept"]) == (4, 1, 2, 2)
    assert shapely.is_valid(gdf.geometry.values).all()
    assert gdf.geometry.iloc[0].area == pytest.approx(50.0)  # two triangles of the bowtie
    assert list(gdf["k"]) == [1, 2]


def test_plain_reader_matches_arrow_reader(tmp_path, monkeypatch):
    import overlay.layers as layers
    path = _dltb(tmp_path)
    spec = {"path": path, "code_field": "DLBM", "codes": ["0101", "0102", "0103"]}
    near = gpd.GeoSeries([shapely.box(500_000, 3_000_000, 500_250, 3_000_050)], crs=4545)
    fast = read_layer(spec, near=near)
    monkeypatch.setattr(layers, "_USE_ARROW", False)
    plain = read_layer(spec, near=near)
    assert list(plain["DLBM"]) == list(fast["DLBM"]) == ["0101", "0102", "0103K"]
    assert plain.attrs["read_stats"] == fast.attrs["read_stats"]
    assert plain.geometry.geom_equals(fast.geometry).all()
    shp = _shapefile(tmp_path, "GBK", keep_cpg=False)
    assert list(read_layer({"path": shp, "name_field": "MC"})["MC"]) == NAMES
