"""overlay_changes on hand-made layers whose answers are known by construction."""
import geopandas as gpd
import numpy as np
import pyproj
import pytest
import shapely

from overlay.areas import GEOD
from overlay.overlay import OUTPUT_COLUMNS, overlay_changes
from tiles.errors import ConfigError, InputError, InputFileError

X0, Y0 = 500_000.0, 3_000_000.0  # EPSG:4545, on the central meridian 108°E, ~27°N


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def geod_area(geom, crs=4545):
    """Independent ellipsoidal area: pyproj's own geometry_area_perimeter on oriented lon/lat."""
    ll = gpd.GeoSeries([geom], crs=crs).to_crs(4490).iloc[0]
    return abs(GEOD.geometry_area_perimeter(shapely.geometry.polygon.orient(ll))[0])


def write(tmp_path, name, data, geoms, crs=4545, layer=None):
    path = tmp_path / name
    gpd.GeoDataFrame(data, geometry=geoms, crs=crs).to_file(path, layer=layer)
    return path


@pytest.fixture
def counties(tmp_path):
    # two counties side by side, 2 km x 2 km each, delivered in CGCS2000 lon/lat as provinces do
    geoms = gpd.GeoSeries([box(0, 0, 2000, 2000), box(2000, 0, 4000, 2000)], crs=4545).to_crs(4490)
    path = write(tmp_path, "xzq.gpkg", {"XZQDM": ["450502", "450503"], "XZQMC": ["海城区", "银海区"]},
                 shapely.segmentize(geoms.values, 0.0005), crs=4490, layer="XZQ")
    return {"path": path, "layer": "XZQ", "code_field": "XZQDM", "name_field": "XZQMC"}


def changes(*geoms, **cols):
    return gpd.GeoDataFrame(cols, geometry=list(geoms), crs=4545)


def test_overlapping_features_not_double_counted(tmp_path, counties):
    # two farmland parcels overlapping on x 40..60 inside a 100 m change; a third one disjoint
    path = write(tmp_path, "dltb.gpkg", {"DLBM": ["0101", "0103K", "0101"]},
                 [box(0, 0, 60, 100), box(40, 0, 80, 100), box(900, 900, 950, 950)])
    layers = {"counties": counties, "farmland": {"path": path, "code_field": "DLBM", "codes": ["0101", "0103"]}}
    out, report = overlay_changes(changes(box(0, 0, 100, 100), box(10, 0, 50, 50)), layers)
    assert out["GDMJ"].iloc[0] == pytest.approx(geod_area(box(0, 0, 80, 100)), rel=1e-9)
    assert out["GDMJ"].iloc[0] == pytest.approx(0.8 * out["JCMJ"].iloc[0], rel=1e-6)
    # the second change lies inside the union: all of it is farmland, once
    assert out["GDMJ"].iloc[1] == pytest.approx(out["JCMJ"].iloc[1], rel=1e-12)
    # the disjoint parcel lies outside the changes' bbox: never read
    assert report["layers"]["farmland"]["read"] == 2
    assert report["layers"]["farmland"]["candidates"] == 2


def test_areas_columns_and_identity(tmp_path, counties):
    ch = changes(box(100, 100, 130, 120), box(500, 500, 600, 560),
                 TBLX=["20", "KT"], ZXD=[0.9, 0.4])
    ch.index = [17, 5]
    out, report = overlay_changes(ch, {"counties": counties})
    assert list(out.index) == [17, 5]
    assert list(out.columns[:3]) == ["TBLX", "ZXD", "geometry"]
    assert list(out.columns[3:]) == list(OUTPUT_COLUMNS)
    assert out.geometry.equals(ch.geometry)
    np.testing.assert_allclose(out["JCMJ"], [geod_area(g) for g in ch.geometry], rtol=1e-9)
    np.testing.assert_allclose(out["JCMJM"], out["JCMJ"] / (2000 / 3), rtol=1e-12)
    assert (out[["GDMJ", "JBNTMJ", "STHXMJ", "BHQMJ", "PZMJ", "BHQHXMJ"]] == 0).all().all()
    assert set(report["layers_missing"]) >= {"farmland", "basic_farmland", "ecological_redline",
                                             "protected_areas", "approved"}
    # centroid lon/lat computed independently with pyproj
    tr = pyproj.Transformer.from_crs(4545, 4490, always_xy=True)
    lon, lat = tr.transform(X0 + 115, Y0 + 110)
    assert out["JD"].iloc[0] == round(lon, 6) and out["WD"].iloc[0] == round(lat, 6)


def test_county_largest_share_straddle_and_outside(tmp_path, counties):
    ch = changes(
        box(100, 100, 200, 200),        # inside 450502
        box(1950, 100, 2150, 200),      # 50 m in 450502, 150 m in 450503 -> 450503, straddles
        box(1990, 300, 2000, 310),      # touches the border only along an edge -> 450502, not straddling
        box(10_000, 0, 10_100, 100),    # outside every county
        box(3950, 1000, 4050, 1100),    # half outside: still 450503
    )
    out, report = overlay_changes(ch, {"counties": counties})
    assert list(out["XZQDM"]) == ["450502", "450503", "450502", "", "450503"]
    assert list(out["XZQMC"]) == ["海城区", "银海区", "海城区", "", "银海区"]
    assert list(out["KXZQ"]) == ["", "是", "", "", ""]
    assert report["outside_counties"] == [3]
    assert report["straddling"] == [1]


def test_protected_area_zones_and_all_layers(tmp_path, counties):
    zrbhd = write(tmp_path, "zrbhd.gpkg", {"GNFQ": ["核心保护区", "一般控制区"]},
                  [box(0, 0, 100, 100), box(100, 0, 300, 100)])
    sthx = write(tmp_path, "sthx.gpkg", {"BSM": [1]}, [box(0, 0, 150, 50)])
    jbnt = write(tmp_path, "jbnt.gpkg", {"BSM": [1]}, [box(500, 500, 520, 600)])
    pzyd = write(tmp_path, "pzyd.gpkg", {"BSM": [1, 2]}, [box(500, 500, 600, 600), box(550, 500, 650, 600)])
    layers = {
        "counties": counties,
        "protected_areas": {"path": zrbhd, "zone_field": "GNFQ", "core_values": ["核心保护区"]},
        "ecological_redline": {"path": sthx},
        "basic_farmland": {"path": jbnt},
        "approved": {"path": pzyd},
    }
    ch = changes(box(50, 0, 150, 100), box(150, 0, 250, 100), box(500, 500, 600, 600), box(900, 900, 950, 950))
    out, report = overlay_changes(ch, layers)
    half = geod_area(box(50, 0, 100, 100))
    assert out["BHQMJ"].iloc[0] == pytest.approx(out["JCMJ"].iloc[0], rel=1e-12)
    assert out["BHQHXMJ"].iloc[0] == pytest.approx(half, rel=1e-9)
    assert out["STHXMJ"].iloc[0] == pytest.approx(geod_area(box(50, 0, 150, 50)), rel=1e-9)
    assert list(out["BHQFQ"]) == ["核心保护区", "一般控制区", "", ""]
    assert out["BHQHXMJ"].iloc[1] == 0
    assert out["JBNTMJ"].iloc[2] == pytest.approx(geod_area(box(500, 500, 520, 600)), rel=1e-9)
    assert out["PZMJ"].iloc[2] == pytest.approx(out["JCMJ"].iloc[2], rel=1e-12)
    assert out.loc[3, ["BHQMJ", "STHXMJ", "JBNTMJ", "PZMJ"]].sum() == 0
    assert "farmland" in report["layers_missing"] and "approved" not in report["layers_missing"]


def test_stats_accumulate_over_calls(tmp_path, counties):
    report = {}
    overlay_changes(changes(box(100, 100, 200, 200)), {"counties": counties}, stats=report)
    _, again = overlay_changes(changes(box(2100, 100, 2200, 200), box(9000, 0, 9100, 10)),
                               {"counties": counties}, stats=report)
    assert again is report
    assert report["changes"] == 3
    assert report["layers"]["counties"]["read"] == 2  # the bbox of each call meets one county
    assert report["outside_counties"] == [1]


def test_repaired_and_empty_changes(tmp_path, counties):
    bowtie = shapely.Polygon([(X0, Y0), (X0 + 10, Y0 + 10), (X0 + 10, Y0), (X0, Y0 + 10)])
    out, report = overlay_changes(changes(bowtie, None), {"counties": counties})
    assert report["changes_repaired"] == 1
    assert report["changes_empty"] == [1]
    assert out["JCMJ"].iloc[0] == pytest.approx(geod_area(shapely.make_valid(bowtie)), rel=1e-9)
    assert out["JCMJ"].iloc[1] == 0 and out["XZQDM"].iloc[1] == ""
    assert out.geometry.iloc[0].equals(bowtie)  # the row's own geometry is left as given


def test_empty_input(counties):
    out, report = overlay_changes(changes(), {"counties": counties})
    assert len(out) == 0 and set(OUTPUT_COLUMNS) <= set(out.columns)


def test_bad_calls(tmp_path, counties):
    ch = changes(box(0, 0, 10, 10))
    with pytest.raises(ConfigError, match="unknown layer"):
        overlay_changes(ch, {"counties": counties, "roads": {"path": counties["path"]}})
    with pytest.raises(ConfigError, match="counties"):
        overlay_changes(ch, {"farmland": counties})
    with pytest.raises(InputError, match="no CRS"):
        overlay_changes(gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)]), {"counties": counties})
    with pytest.raises(InputError, match="geographic"):
        overlay_changes(ch.to_crs(4490), {"counties": counties})
    with pytest.raises(InputFileError, match="no field 'DM'"):
        overlay_changes(ch, {"counties": {**counties, "code_field": "DM"}})


def test_point_for_phones_lies_on_a_concave_polygon(counties):
    u_shape = box(0, 0, 300, 300).difference(box(50, 50, 250, 300))  # centroid falls in the notch
    assert not u_shape.contains(u_shape.centroid)
    out, _ = overlay_changes(changes(u_shape, box(500, 500, 600, 600)), {"counties": counties})
    pts = gpd.GeoSeries(shapely.points(out["JD"], out["WD"]), crs=4490).to_crs(4545)
    assert u_shape.buffer(0.5).contains(pts.iloc[0])
    assert pts.iloc[1].distance(shapely.Point(X0 + 550, Y0 + 550)) < 0.2  # convex: the centroid
