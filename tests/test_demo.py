"""The demo region generator: files, formats, layer hygiene, truth flags, spectra, determinism.

One 600 x 600 px demo (tile_size 256, so tile lines fall inside) is generated per module; every
expectation is recomputed here from the written files with rasterio / shapely / pyogrio, never
taken from the generator's own bookkeeping.
"""
from __future__ import annotations

import datetime as dt
import sys

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.features import rasterize

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from pipeline.demo import make_demo
from pipeline.demo.scene import quarter_dates
from tiles.errors import ConfigError

SIZE, TILE, SEED = 600, 256, 20260930
FLAGS = ["ON_JBNT", "IN_STHX", "IN_CORE", "IN_PZYD", "ON_EDGE", "ON_BORDER", "OUTSIDE"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return make_demo(out, width=SIZE, height=SIZE, tile_size=TILE, seed=SEED)


@pytest.fixture(scope="module")
def images(demo):
    with rasterio.open(demo["before"]) as b, rasterio.open(demo["after"]) as a, \
            rasterio.open(demo["cloud_after"]) as m:
        return b.read().astype(np.float64), a.read().astype(np.float64), m.read(1), a.transform


@pytest.fixture(scope="module")
def truth(demo):
    return gpd.read_file(demo["truth"], layer="truth")


def _in_4545(path, **kw):
    return gpd.read_file(path, **kw).to_crs("EPSG:4545")


def _mask(geoms, transform, shape=(SIZE, SIZE), **kw):
    geoms = [g for g in geoms if not g.is_empty]
    if not geoms:
        return np.zeros(shape, bool)
    return rasterize(((g, 1) for g in geoms), out_shape=shape, transform=transform, **kw) > 0


def _ndvi(x):
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x[3] - x[2]) / (x[3] + x[2])


def _ndwi(x):
    with np.errstate(invalid="ignore", divide="ignore"):
        return (x[1] - x[3]) / (x[1] + x[3])


# --- files, configuration, formats -----------------------------------------------------------

def test_files_are_where_the_brief_puts_them(demo):
    root = demo["config"].parent
    rel = {k: p.relative_to(root).as_posix() for k, p in demo.items()}
    assert rel["before"] == "imagery/2026Q2/GF2_20260518_MS.tif"
    assert rel["after"] == "imagery/2026Q3/GF2_20260823_MS.tif"
    assert rel["cloud_after"] == "imagery/2026Q3/GF2_20260823_cloud.tif"
    assert rel["truth"] == "truth.gpkg" and rel["config"] == "demo.toml"
    for name in ("counties", "dltb", "yjjbnt", "zrbhd", "pzyd"):
        assert rel[name] == f"layers/{name}.gpkg"
    assert rel["sthx"] == "layers/sthx.shp"
    assert all(p.is_file() for p in demo.values())
    assert not [p for p in root.rglob(".*") if p.is_file()], "temporary files left behind"


def test_config_is_the_agreed_toml_and_its_globs_find_the_files(demo):
    cfg = tomllib.loads(demo["config"].read_text(encoding="utf-8"))
    assert cfg == {
        "run": {"name": "北海示范区 2026 年第三季度卫片", "workdir": "runs", "crs": "EPSG:4545",
                "resolution": 2.0, "tile_size": TILE, "workers": 2},
        "imagery": {"before": "imagery/{prev_quarter}/*_MS.tif", "after": "imagery/{quarter}/*_MS.tif",
                    "bands": ["blue", "green", "red", "nir"],
                    "cloud_mask_after": "imagery/{quarter}/*_cloud.tif",
                    "reference": "imagery/{last_year_quarter}/*_MS.tif",
                    "cloud_mask_reference": "imagery/{last_year_quarter}/*_cloud.tif"},
        "detect": {"min_area_m2": 200, "significance": 0.01},
        "layers": {
            "counties": {"path": "layers/counties.gpkg", "layer": "XZQ", "code_field": "XZQDM",
                         "name_field": "XZQMC"},
            "farmland": {"path": "layers/dltb.gpkg", "layer": "DLTB", "code_field": "DLBM",
                         "codes": ["0101", "0102", "0103"]},
            "basic_farmland": {"path": "layers/yjjbnt.gpkg", "layer": "YJJBNTTB"},
            "ecological_redline": {"path": "layers/sthx.shp", "encoding": "GBK"},
            "protected_areas": {"path": "layers/zrbhd.gpkg", "zone_field": "GNFQ",
                                "core_values": ["核心保护区"]},
            "approved": {"path": "layers/pzyd.gpkg"},
        },
        "batches": {"max_per_batch": 25, "max_span_km": 20},
        "export": {"formats": ["gpkg", "shp", "kmz", "xlsx", "chips", "html", "qgis"]},
    }
    root = demo["config"].parent
    fmt = {"quarter": "2026Q3", "prev_quarter": "2026Q2", "last_year_quarter": "2025Q3"}
    for key, want in (("before", "before"), ("after", "after"), ("cloud_mask_after", "cloud_after"),
                      ("reference", "reference"), ("cloud_mask_reference", "cloud_reference")):
        assert sorted(root.glob(cfg["imagery"][key].format(**fmt))) == [demo[want]]
    for spec in cfg["layers"].values():
        assert (root / spec["path"]).is_file()


def test_config_loads_with_the_pipeline_reader(demo):
    config = pytest.importorskip("pipeline.config")
    cfg = config.load_config(demo["config"])
    assert cfg.run["tile_size"] == TILE


@pytest.mark.parametrize("key,date", [("before", "2026-05-18"), ("after", "2026-08-23")])
def test_imagery_format_and_dates(demo, key, date):
    with rasterio.open(demo[key]) as src:
        assert src.crs.to_epsg() == 4545
        assert src.count == 4 and set(src.dtypes) == {"uint16"}
        assert src.res == (2.0, 2.0) and (src.width, src.height) == (SIZE, SIZE)
        assert src.block_shapes == [(256, 256)] * 4
        assert src.compression.name.lower() == "deflate"
        assert src.nodata == 0
        assert src.descriptions == ("blue", "green", "red", "nir")
        tags = src.tags()
        assert tags["ACQUISITION_DATE"] == date
        assert tags["TIFFTAG_DATETIME"] == date.replace("-", ":") + " 10:30:00"
        # Upper-left corner near lon 109.05E, lat 21.65N, on the 2 m grid.
        x, y = src.transform.c, src.transform.f
        assert x % 2 == 0 and y % 2 == 0
        lon, lat = Transformer.from_crs(4545, 4490, always_xy=True).transform(x, y)
        assert abs(lon - 109.05) < 3e-5 and abs(lat - 21.65) < 3e-5


def test_cloud_mask_is_binary_on_the_after_grid(demo):
    with rasterio.open(demo["cloud_after"]) as m, rasterio.open(demo["after"]) as a:
        assert m.dtypes == ("uint8",) and m.crs == a.crs and m.transform == a.transform
        assert m.shape == a.shape and m.block_shapes == [(256, 256)]
        assert m.tags()["ACQUISITION_DATE"] == "2026-08-23"
        values = np.unique(m.read(1))
    assert set(values.tolist()) == {0, 1}


def test_before_has_a_slanted_nodata_edge_of_about_3_percent(images):
    before, after, _, _ = images
    empty = (before == 0).all(axis=0)
    assert ((before == 0).any(axis=0) == empty).all(), "nodata must be 0 in all bands at once"
    assert 0.02 < empty.mean() < 0.04
    width = empty.sum(axis=1)   # nodata pixels per row, all on the west edge
    assert all(not row[w:].any() for row, w in zip(empty, width))
    assert width[-1] > width[0] + 0.02 * SIZE   # slanted: wider at the bottom
    assert not (after == 0).any()


# --- reference layers -----------------------------------------------------------------------

def test_layers_are_cgcs2000_with_the_agreed_fields(demo):
    expected = {"counties": ("XZQ", {"XZQDM", "XZQMC"}),
                "dltb": ("DLTB", {"BSM", "DLBM", "DLMC", "ZLDWDM", "TBMJ"}),
                "yjjbnt": ("YJJBNTTB", {"BSM", "JBNTTBBH", "DLBM", "JBNTMJ"}),
                "zrbhd": (None, {"GNFQ"}), "pzyd": (None, {"PZWH"}), "sthx": (None, {"HXMC"})}
    for key, (layer, fields) in expected.items():
        info = pyogrio.read_info(demo[key], layer=layer)
        assert info["crs"] == "EPSG:4490", key
        assert fields <= set(info["fields"]), key
    counties = gpd.read_file(demo["counties"], layer="XZQ")
    assert dict(zip(counties.XZQDM, counties.XZQMC)) == {
        "450502": "海城区", "450503": "银海区", "450512": "铁山港区"}
    zones = gpd.read_file(demo["zrbhd"])
    assert set(zones.GNFQ) == {"核心保护区", "一般控制区"}


def test_counties_split_the_scene_and_leave_a_strip_outside(demo):
    counties = _in_4545(demo["counties"], layer="XZQ")
    with rasterio.open(demo["after"]) as src:
        scene = shapely.box(*src.bounds)
    assert counties.geometry.is_valid.all()
    parts = [g.intersection(scene).area / scene.area for g in counties.geometry]
    assert all(p > 0.1 for p in parts)
    assert counties.union_all().contains(scene) is False
    outside = scene.difference(counties.union_all()).area / scene.area
    assert 0.01 < outside < 0.15
    # Counties reach beyond the scene on the land side.
    assert counties.total_bounds[3] > scene.bounds[3] and counties.total_bounds[0] < scene.bounds[0]
    # No gaps or overlaps between counties.
    assert abs(sum(g.area for g in counties.geometry) - counties.union_all().area) < 1.0


def test_dltb_codes_areas_and_one_bow_tie(demo):
    dltb = gpd.read_file(demo["dltb"], layer="DLTB")
    codes = set(dltb.DLBM)
    assert {"0101", "0102", "0103", "0103K", "0201", "0301", "0404", "0702", "1003", "1006",
            "1101", "1104"} <= codes
    assert dict(zip(dltb.DLBM, dltb.DLMC))["0101"] == "水田"
    assert dltb.ZLDWDM.str.fullmatch(r"4505(02|03|12)\d{13}").all()
    invalid = dltb[~dltb.geometry.is_valid]
    assert len(invalid) == 1
    assert "Self-intersection" in shapely.is_valid_reason(invalid.geometry.iloc[0])
    # TBMJ is the ellipsoidal area: within 0.5 % of the planar EPSG:4545 area near the CM.
    valid = dltb[dltb.geometry.is_valid]
    planar = valid.to_crs("EPSG:4545").area.to_numpy()
    big = planar > 500
    assert np.allclose(valid.TBMJ.to_numpy()[big], planar[big], rtol=5e-3)


def test_basic_farmland_is_most_of_the_farmland_and_has_an_overlap(demo):
    jb = _in_4545(demo["yjjbnt"], layer="YJJBNTTB")
    dltb = _in_4545(demo["dltb"], layer="DLTB")
    dltb = dltb[dltb.is_valid]          # the one bow-tie is there on purpose
    farm = dltb[dltb.DLBM.isin(["0101", "0102", "0103"])]
    share = jb.geometry.intersection(farm.union_all()).area.sum() / farm.area.sum()
    assert 0.4 < share < 0.8
    assert set(jb.DLBM) <= {"0101", "0102", "0103"}
    left, right = jb.sindex.query(jb.geometry, predicate="intersects")
    pairs = [(i, j) for i, j in zip(left, right) if i < j
             and jb.geometry.iloc[i].intersection(jb.geometry.iloc[j]).area > 10.0]
    assert len(pairs) >= 1


def test_redline_shapefile_is_gbk_and_reads_back_in_chinese(demo):
    shp = demo["sthx"]
    assert shp.with_suffix(".cpg").read_text().strip().upper() == "GBK"
    raw = shp.with_suffix(".dbf").read_bytes()
    assert "北海市生态保护红线".encode("gbk") in raw
    assert "北海市生态保护红线".encode("utf-8") not in raw
    df = pyogrio.read_dataframe(shp, encoding="GBK")
    assert set(df.HXMC) == {"北海市生态保护红线"}
    assert df.crs.to_epsg() == 4490


# --- truth ----------------------------------------------------------------------------------

def test_truth_table(truth):
    assert truth.crs.to_epsg() == 4545
    assert len(truth) >= 12 and truth.ID.is_unique
    assert set(truth.TBLX) == {"20", "YH", "TD", "DL", "GF", "KT"}
    assert np.allclose(truth.AREA_M2, truth.area)
    assert truth.area.between(150, 5000).all()
    assert (truth.area < 200).sum() >= 1
    assert truth.geometry.is_valid.all()
    for flag in FLAGS:
        assert truth[flag].dtype == bool


def test_truth_flags_hold_against_the_written_layers(demo, truth):
    """Recompute every flag with shapely from the EPSG:4490 layers brought back to EPSG:4545."""
    jb = _in_4545(demo["yjjbnt"], layer="YJJBNTTB").union_all()
    red = pyogrio.read_dataframe(demo["sthx"], encoding="GBK").to_crs("EPSG:4545").union_all()
    zones = _in_4545(demo["zrbhd"])
    core = zones[zones.GNFQ == "核心保护区"].union_all()
    approved = _in_4545(demo["pzyd"]).union_all()
    counties = _in_4545(demo["counties"], layer="XZQ")
    with rasterio.open(demo["after"]) as src:
        x0, y0 = src.transform.c, src.transform.f
    step = TILE * 2.0
    lines = ([shapely.LineString([(x0 + k * step, y0), (x0 + k * step, y0 - SIZE * 2)]) for k in (1, 2)]
             + [shapely.LineString([(x0, y0 - k * step), (x0 + SIZE * 2, y0 - k * step)]) for k in (1, 2)])
    for row in truth.itertuples():
        g = row.geometry

        def share(z):
            return z.intersection(g).area / g.area
        county_shares = np.array([share(c) for c in counties.geometry])
        assert row.ON_JBNT == (share(jb) > 0.02), row.ID
        assert row.IN_STHX == (share(red) > 0.02), row.ID
        assert row.IN_CORE == (share(core) > 0.02), row.ID
        assert row.IN_PZYD == (share(approved) > 0.02), row.ID
        assert row.ON_BORDER == ((county_shares > 0.02).sum() >= 2), row.ID
        assert row.OUTSIDE == (county_shares.sum() < 0.5), row.ID
        assert row.ON_EDGE == any(g.intersects(line) for line in lines), row.ID


def test_truth_covers_every_hard_case(demo, truth):
    n = truth[FLAGS].sum()
    assert n.ON_JBNT >= 4 and n.IN_STHX >= 3 and n.IN_CORE >= 3 and n.IN_PZYD >= 3
    assert n.ON_EDGE >= 4 and n.ON_BORDER >= 3 and n.OUTSIDE >= 1
    # One change spans a four-tile corner: it touches four tiles of the 256 px grid.
    with rasterio.open(demo["after"]) as src:
        x0, y0 = src.transform.c, src.transform.f
    step = TILE * 2.0
    tiles = [shapely.box(x0 + c * step, y0 - (r + 1) * step, x0 + (c + 1) * step, y0 - r * step)
             for r in range(3) for c in range(3)]
    n_tiles = [sum(g.intersection(t).area > 1.0 for t in tiles) for g in truth.geometry]
    assert max(n_tiles) == 4


def test_no_true_change_under_cloud_or_in_nodata(images, truth):
    before, _, cloud, transform = images
    footprint = _mask(truth.geometry, transform, all_touched=True)
    assert footprint.any()
    assert not (footprint & (cloud == 1)).any()
    assert not (footprint & (before == 0).all(axis=0)).any()


# --- spectra --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clear(images, truth):
    """Pixels valid on both dates, cloud-free, and at least 6 m from any true change."""
    before, _, cloud, transform = images
    near_change = _mask([g.buffer(6.0) for g in truth.geometry], transform)
    return (before > 0).all(axis=0) & (cloud == 0) & ~near_change


def _parcel_means(demo, images, clear, kind, index):
    before, after, _, transform = images
    seasonal = gpd.read_file(demo["truth"], layer="seasonal")
    parcels = seasonal[seasonal.KIND == kind]
    assert len(parcels) >= 5, kind
    inner = _mask([g.buffer(-4.0) for g in parcels.geometry], transform) & clear
    assert inner.sum() > 1000
    return index(before)[inner].mean(), index(after)[inner].mean()


def test_seasonal_change_is_large_and_common(demo, images, clear):
    seasonal = gpd.read_file(demo["truth"], layer="seasonal")
    dltb = _in_4545(demo["dltb"], layer="DLTB")
    dltb = dltb[dltb.is_valid]
    assert set(seasonal.DLBM) <= {"0101", "0102", "0103", "0103K"}
    # Every parcel is a DLTB polygon of the same code (but the bow-tie, dropped above).
    pts = seasonal.geometry.representative_point()
    i_pt, i_dltb = dltb.sindex.query(pts, predicate="within")
    same = {i for i, j in zip(i_pt, i_dltb) if seasonal.DLBM.iloc[i] == dltb.DLBM.iloc[j]}
    assert len(same) >= len(seasonal) - 1
    assert 0.3 < (seasonal.KIND != "none").mean() < 0.55
    b, a = _parcel_means(demo, images, clear, "harvest", _ndvi)
    assert b - a > 0.3
    b, a = _parcel_means(demo, images, clear, "green_up", _ndvi)
    assert a - b > 0.3
    b, a = _parcel_means(demo, images, clear, "flood", _ndwi)
    assert b < 0 < a


def test_change_types_look_like_what_they_are(images, truth, clear, demo):
    before, after, _, transform = images

    def interior(tblx, inset=4.0):
        m = _mask([g.buffer(-inset) for g in truth.geometry[truth.TBLX == tblx]], transform)
        assert m.sum() > 20, tblx
        return m
    kt = interior("KT")
    assert (_ndwi(after)[kt] > 0).all()          # new ponds are water after
    assert (_ndwi(before)[kt] < 0).mean() > 0.9  # and were land before
    gf = interior("GF")
    typical = np.median(after[:, clear], axis=1)
    assert (after[:, gf].mean(axis=1) < typical).all()        # solar panels: dark in every band
    td = interior("TD")
    _, stubble = _parcel_means(demo, images, clear, "harvest", lambda x: x[2])
    assert after[2][td].mean() > stubble                       # fresh earth redder than stubble
    assert after[:3, td].mean() > after[:3, clear].mean()      # and brighter than the scene
    roofs = interior("20", inset=3.0)
    assert after[:3, roofs].mean() > 1.5 * before[:3, roofs].mean()


def test_cloud_mask_covers_every_extreme_bright_pixel(images):
    _, after, cloud, _ = images
    visible = after[:3].mean(axis=0)
    bright = visible > 5500
    assert bright.sum() > 100
    assert (cloud[bright] == 1).all()
    assert 0.04 < cloud.mean() < 0.25


# --- determinism and arguments --------------------------------------------------------------

def test_same_seed_gives_identical_data(demo, tmp_path):
    again = make_demo(tmp_path / "again", width=SIZE, height=SIZE, tile_size=TILE, seed=SEED)
    for key in ("before", "after", "cloud_after"):
        with rasterio.open(demo[key]) as a, rasterio.open(again[key]) as b:
            assert a.transform == b.transform
            assert np.array_equal(a.read(), b.read()), key
    for key, layer in (("truth", "truth"), ("truth", "seasonal"), ("dltb", "DLTB"), ("yjjbnt", "YJJBNTTB")):
        a = gpd.read_file(demo[key], layer=layer)
        b = gpd.read_file(again[key], layer=layer)
        assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
        assert (shapely.to_wkb(a.geometry.to_numpy()) == shapely.to_wkb(b.geometry.to_numpy())).all()
    assert demo["config"].read_bytes() == again["config"].read_bytes()


def test_another_seed_gives_another_scene(demo, tmp_path):
    other = make_demo(tmp_path / "other", width=SIZE, height=SIZE, tile_size=TILE, seed=SEED + 1)
    with rasterio.open(demo["after"]) as a, rasterio.open(other["after"]) as b:
        assert not np.array_equal(a.read(1), b.read(1))


@pytest.mark.parametrize("kwargs", [{"width": 100}, {"height": 0}, {"tile_size": 8},
                                    {"quarter": "2026Q5"}, {"width": 600.5}])
def test_bad_arguments_raise_config_error(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        make_demo(tmp_path, **kwargs)


@pytest.mark.parametrize("quarter,before,after,prev", [
    ("2026Q3", dt.date(2026, 5, 18), dt.date(2026, 8, 23), "2026Q2"),
    ("2027Q1", dt.date(2026, 11, 18), dt.date(2027, 2, 23), "2026Q4"),
])
def test_dates_lie_inside_their_quarters(quarter, before, after, prev):
    q, p, b, a = quarter_dates(quarter)
    assert (str(q), str(p), b, a) == (quarter, prev, before, after)
    assert p.first_day <= b <= p.last_day and q.first_day <= a <= q.last_day
