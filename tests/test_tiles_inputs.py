"""Input forms of a date (issue 4): one file per band at 10 m and 20 m, a mosaic of scenes in two
CRSs with their own nodata, real Landsat ENVI files and a VRT over them, dates from a file-name
pattern, and a STAC ItemCollection. Expected values come from the fields written (linear in x, y,
so bilinear resampling must reproduce them), from pyproj, or from reading the files directly."""
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer
from rasterio.windows import Window

from tiles.bandfiles import group_band_files
from tiles.dates import compile_date_pattern, date_from_name
from tiles.errors import ConfigError, InputFileError
from tiles.grid import Grid, make_grid
from tiles.imagery import open_date
from tiles.reader import read_date

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "landsat_taizhou_nanjing"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real Landsat data not found at {DATA}")
KW = dict(quarter="2026Q3", prev_quarter="2026Q2")
X0, Y0 = 500000.0, 2400000.0     # UTM 49N origin of the band-file scenes


def write(path, data, crs, transform, nodata):
    data = np.asarray(data, dtype=np.float32)
    data = data[None] if data.ndim == 2 else data
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype="float32", crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(data)
    return str(path)


def field(k, x, y, offset=0.0):
    """Band k's value at (x, y) metres: linear, so bilinear resampling is exact."""
    return 1000.0 + 100 * k + offset + 0.3 * (x - X0) - 0.2 * (Y0 - y) * (1 + 0.1 * k)


def centres(transform, h, w):
    r, c = np.mgrid[0:h, 0:w]
    return transform * (c + 0.5, r + 0.5)


# ---------------------------------------------------------------------------------------------
# one file per band
S2_BANDS = {"blue": ("B02", 10), "green": ("B03", 10), "red": ("B04", 10), "nir": ("B08", 10),
            "swir": ("B11", 20)}


def s2_scene(root, tile, x0, offset):
    """A Sentinel-2-like scene: 10 m bands in R10m/, the 20 m SWIR in R20m/, 2 x 2 km."""
    for k, (role, (name, res)) in enumerate(S2_BANDS.items()):
        n = 2000 // res
        t = Affine(res, 0, x0, 0, -res, Y0)
        x, y = centres(t, n, n)
        write(root / f"{tile}.SAFE" / "IMG_DATA" / f"R{res}m" / f"{tile}_20260801_{name}_{res}m.tif",
              field(k, x, y, offset), "EPSG:32649", t, -9999.0)


@pytest.fixture
def s2(tmp_path):
    root = tmp_path / "s2" / "2026Q3"
    s2_scene(root, "T49QEF", X0, 0.0)
    s2_scene(root, "T49QFF", X0 + 1500, 500.0)      # overlaps the first by 500 m, values + 500
    band_files = {r: f"R{res}m/*_{name}_{res}m" for r, (name, res) in S2_BANDS.items()}
    return str(tmp_path / "s2" / "{quarter}" / "*.SAFE" / "IMG_DATA" / "{band}.tif"), band_files


def test_band_files_group_into_scenes(s2):
    pattern, band_files = s2
    filled = pattern.format(quarter="2026Q3", band="{band}")
    scenes = group_band_files(filled, band_files, list(S2_BANDS), "after")
    assert len(scenes) == 2
    for scene, tile in zip(scenes, ("T49QEF", "T49QFF")):
        assert set(scene) == set(S2_BANDS)
        assert all(f"/{tile}.SAFE/" in p for p in scene.values())
        assert scene["swir"].endswith("_B11_20m.tif") and "/R20m/" in scene["swir"]


def test_band_files_at_10_and_20_m_read_onto_one_10_m_grid(s2):
    pattern, band_files = s2
    date = open_date("after", pattern, list(S2_BANDS), band_files=band_files, date_override="2026-08-01", **KW)
    assert date.roles == tuple(S2_BANDS) and len(date.files) == 2
    grid = make_grid(date.image_files(), date.image_files())
    assert grid.res == 10.0 and (grid.left, grid.top) == (X0, Y0) and (grid.width, grid.height) == (350, 200)
    window = Window(20, 30, 300, 150)       # >= 2 px (20 m) inside every edge
    data, valid = read_date(date, grid, window)
    assert valid.all()
    x, y = centres(grid.window_transform(window), 150, 300)
    second_only = x > X0 + 2000               # east of the first scene: the second one's values
    for k in range(5):
        expected = field(k, x, y, np.where(second_only, 500.0, 0.0))
        # 10 m bands are the files' own pixels; the 20 m SWIR is resampled bilinearly, exact on
        # a linear field except in the one 20 m pixel column where the two scenes meet
        inner = np.abs(x - (X0 + 2000)) > 30
        np.testing.assert_allclose(data[k][inner], expected[inner], atol=0.02)


def test_band_file_problems_are_named(tmp_path):
    root = tmp_path / "b"
    for name in ("B02", "B03", "B04"):
        write(root / "A" / f"x_{name}.tif", np.ones((4, 4)), "EPSG:32649", Affine(10, 0, X0, 0, -10, Y0), None)
    write(root / "B" / "x_B02.tif", np.ones((4, 4)), "EPSG:32649", Affine(10, 0, X0, 0, -10, Y0), None)
    files = {"blue": "B02", "green": "B03", "red": "B04"}
    with pytest.raises(InputFileError, match=r"/B/x_B02.tif: the scene has no green, red band file"):
        group_band_files(str(root / "*" / "x_{band}.tif"), files, ["blue", "green", "red"], "after")
    with pytest.raises(ConfigError, match="band_files has no entry for band 'nir'"):
        group_band_files(str(root / "A" / "x_{band}.tif"), files, ["blue", "nir"], "after")
    with pytest.raises(InputFileError, match="two blue band files for one scene"):
        group_band_files(str(root / "{band}.tif"), {"blue": "*/x_B02"}, ["blue"], "after")


# ---------------------------------------------------------------------------------------------
# a mosaic of scenes in two CRSs, each with its own nodata
def test_mosaic_of_two_crs_with_their_own_nodata(tmp_path):
    to_utm = Transformer.from_crs("EPSG:4545", "EPSG:32649", always_xy=True)
    gk = Affine(2, 0, 600000, 0, -2, 2400000)
    x, y = centres(gk, 100, 60)                           # scene A: west 120 m, EPSG:4545
    a = np.stack([field(k, x, y) for k in range(3)])
    a[:, 40:50, 20:30] = -1                               # a hole in A, nodata -1
    write(tmp_path / "m" / "a_gk.tif", a, "EPSG:4545", gk, -1.0)
    ux0, uy0 = to_utm.transform(600000.0, 2400000.0)
    ut = Affine(2, 0, round(ux0) - 40, 0, -2, round(uy0) + 40)
    ux, uy = centres(ut, 160, 160)                        # scene B: everything, UTM 49N, + 700
    b = np.stack([field(k, ux, uy, 700.0) for k in range(3)])
    b[:, :30, :] = -9999                                  # B's nodata -9999 along its top
    write(tmp_path / "m" / "b_utm.tif", b, "EPSG:32649", ut, -9999.0)
    date = open_date("after", str(tmp_path / "m" / "*.tif"), ["green", "red", "nir"],
                     date_override="2026-08-01", **KW)
    assert date.nodata == [-1.0, -9999.0] and date.crs[1] == "EPSG:32649"
    grid = Grid("EPSG:4545", 600000.0, 2400000.0, 2.0, 120, 100)
    data, valid = read_date(date, grid, Window(0, 0, 120, 100))
    gx, gy = centres(grid.transform, 100, 120)
    ex, ey = to_utm.transform(gx, gy)
    in_a = np.zeros((100, 120), bool)
    in_a[:, :60] = True
    in_a[40:50, 20:30] = False
    # B's valid area: its rows >= 30 in UTM, away from its edges by one pixel (bilinear reach)
    bc, br = ~ut * (ex, ey)
    in_b = (br > 31) & (br < 159) & (bc > 1) & (bc < 159)
    b_only = in_b & ~in_a
    assert in_a.sum() > 0 and b_only.sum() > 1000
    for k in range(3):
        np.testing.assert_array_equal(data[k][in_a], field(k, gx, gy)[in_a].astype(np.float32))
        np.testing.assert_allclose(data[k][b_only], field(k, ex, ey, 700.0)[b_only], atol=0.05)
    assert valid[in_a].all() and valid[b_only].all()
    outside = ~in_a & ((br < 29) | (bc < -1) | (bc > 161))      # in neither scene's data
    assert outside.sum() > 100 and not valid[outside].any()


# ---------------------------------------------------------------------------------------------
# dates from file names
def test_date_patterns():
    landsat = compile_date_pattern(r"L[CETM]\d{7}(?P<year>\d{4})(?P<doy>\d{3})")
    assert date_from_name("/x/LT51200382000124BJC00_Nanjing", landsat) == "2000-05-03"
    assert date_from_name("/x/LT51200382002193BJC00_Nanjing", landsat) == "2002-07-12"
    assert date_from_name("/x/LT51200382001366BJC00", landsat) == ""          # 2001 has 365 days
    gf = compile_date_pattern(r"_(?P<day>\d{2})(?P<month>\d{2})(?P<year>\d{4})_")
    assert date_from_name("/2026/GF2_23082026_MS.tif", gf) == "2026-08-23"
    assert date_from_name("GF2_20260823_MS.tif", compile_date_pattern("")) == "2026-08-23"
    with pytest.raises(ConfigError, match="named groups"):
        compile_date_pattern(r"(\d{8})")
    with pytest.raises(ConfigError, match="not a regular expression"):
        compile_date_pattern(r"(?P<year>\d{4}")


# ---------------------------------------------------------------------------------------------
# real Landsat ENVI files and a VRT over them
LANDSAT = ["blue", "green", "red", "nir", "swir", "-"]


@needs_data
def test_envi_dates_from_the_name_pattern_and_pixels_unchanged():
    pattern = r"L[CETM]\d{7}(?P<year>\d{4})(?P<doy>\d{3})"
    before = open_date("before", str(DATA / "Nanjing" / "LT5*2000*_Nanjing"), LANDSAT,
                       date_pattern=pattern, **KW)
    after = open_date("after", str(DATA / "Nanjing" / "LT5*2002*_Nanjing"), LANDSAT,
                      date_pattern=pattern, **KW)
    assert (before.date, after.date) == ("2000-05-03", "2002-07-12")   # README's dates
    assert before.files == [str(DATA / "Nanjing" / "LT51200382000124BJC00_Nanjing")]  # no .hdr
    grid = make_grid(before.files, after.files)
    assert grid.crs == "EPSG:32650" and grid.res == 30.0 and (grid.width, grid.height) == (800, 800)
    window = Window(100, 200, 300, 250)
    data, valid = read_date(after, grid, window)
    with rasterio.open(after.files[0]) as src:
        assert src.driver == "ENVI"
        direct = src.read([1, 2, 3, 4, 5], window=window).astype(np.float32)
    assert valid.all()
    np.testing.assert_array_equal(data, direct)


@needs_data
def test_vrt_over_the_envi_file_reads_the_same_pixels(tmp_path):
    envi = DATA / "Taizhou" / "2000TM"
    with rasterio.open(envi) as src:
        wkt, gt, (h, w) = src.crs.to_wkt(), src.transform.to_gdal(), src.shape
        direct = src.read([4, 3, 2, 1]).astype(np.float32)
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{i}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{envi}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'</SimpleSource></VRTRasterBand>' for i, b in enumerate((4, 3, 2, 1), start=1))
    vrt = tmp_path / "taizhou_2000-03-17.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><SRS>{wkt}</SRS>'
                   f'<GeoTransform>{", ".join(map(repr, gt))}</GeoTransform>{bands}</VRTDataset>',
                   encoding="utf-8")
    date = open_date("before", str(tmp_path / "*.vrt"), ["nir", "red", "green", "blue"],
                     date_pattern=r"(?P<year>\d{4})-(?P<month>\d\d)-(?P<day>\d\d)", **KW)
    assert date.date == "2000-03-17"
    grid = make_grid(date.files, date.files)
    data, valid = read_date(date, grid, Window(0, 0, w, h))
    assert valid.all()
    np.testing.assert_array_equal(data, direct)


# ---------------------------------------------------------------------------------------------
# STAC ItemCollection
def test_stac_item_collection_assets_by_common_name(tmp_path):
    t = Affine(10, 0, X0, 0, -10, Y0)
    x, y = centres(t, 50, 50)
    stac = tmp_path / "stac"
    # item 1: one asset per band (STAC 1.0 eo:bands) and a visual preview listed first
    write(stac / "i1" / "vis.tif", np.zeros((3, 50, 50)), "EPSG:32649", t, None)
    assets1 = {"visual": {"href": "i1/vis.tif", "type": "image/tiff", "roles": ["visual"],
                          "eo:bands": [{"name": n, "common_name": c}
                                       for n, c in (("B04", "red"), ("B03", "green"), ("B02", "blue"))]}}
    for k, (role, name) in enumerate((("blue", "B02"), ("green", "B03"), ("red", "B04"), ("nir", "B08"))):
        write(stac / "i1" / f"{name}.tif", field(k, x, y), "EPSG:32649", t, None)
        assets1[name] = {"href": f"i1/{name}.tif", "type": "image/tiff; application=geotiff",
                         "roles": ["data"], "eo:bands": [{"name": name, "common_name": role}],
                         "raster:bands": [{"nodata": -5.0}]}
    # item 2, east of item 1: one 4-band asset in nir, red, green, blue order (STAC 1.1 bands)
    t2 = Affine(10, 0, X0 + 500, 0, -10, Y0)
    x2, y2 = centres(t2, 50, 50)
    order = ("nir", "red", "green", "blue")
    ks = {"blue": 0, "green": 1, "red": 2, "nir": 3}
    write(stac / "i2" / "all.tif", np.stack([field(ks[r], x2, y2, 300.0) for r in order]),
          "EPSG:32649", t2, None)
    assets2 = {"data": {"href": "i2/all.tif", "roles": ["data"],
                        "bands": [{"name": r, "eo:common_name": r} for r in order]}}

    def item(i, assets, when, left):
        return {"type": "Feature", "stac_version": "1.1.0", "id": f"scene{i}",
                "bbox": [0, 0, 1, 1], "geometry": {"type": "Point", "coordinates": [0, 0]},
                "properties": {"datetime": when}, "links": [], "assets": assets}

    doc = {"type": "FeatureCollection",
           "features": [item(1, assets1, "2026-08-01T03:05:41Z", X0),
                        item(2, assets2, "2026-08-04T03:10:00Z", X0 + 500)]}
    (stac / "items.json").write_text(json.dumps(doc), encoding="utf-8")
    date = open_date("after", str(stac / "items.json"), ["blue", "green", "red", "nir"], **KW)
    assert date.date == "2026-08-04"          # the median of the items' dates
    assert [s[0].rsplit("/", 2)[-2:] for s in date.sources[date.files[0]]] == \
        [["i1", "B02.tif"], ["i1", "B03.tif"], ["i1", "B04.tif"], ["i1", "B08.tif"]]
    assert [s[1] for s in date.sources[date.files[1]]] == [4, 3, 2, 1]
    assert date.sources[date.files[0]][0][2] == -5.0          # nodata from raster:bands
    grid = make_grid(date.image_files(), date.image_files())
    data, valid = read_date(date, grid, Window(0, 0, 100, 50))
    gx, gy = centres(grid.transform, 50, 100)
    assert valid.all()
    for role, k in ks.items():
        expected = field(k, gx, gy, np.where(gx > X0 + 500, 300.0, 0.0))
        np.testing.assert_allclose(data[k], expected, atol=0.01)


def test_stac_without_a_role_is_named(tmp_path):
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "stac_version": "1.0.0", "id": "only-rgb", "bbox": [0, 0, 1, 1],
         "geometry": {"type": "Point", "coordinates": [0, 0]}, "links": [],
         "properties": {"datetime": "2026-08-01T00:00:00Z"},
         "assets": {"rgb": {"href": "x.tif", "roles": ["data"],
                            "eo:bands": [{"common_name": c} for c in ("red", "green", "blue")]}}}]}
    path = tmp_path / "items.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InputFileError, match=r"items.json: item 'only-rgb' has no asset .* nir/nir08"):
        open_date("after", str(path), ["green", "red", "nir"], **KW)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputFileError, match="not a STAC ItemCollection"):
        open_date("after", str(path), ["green", "red", "nir"], **KW)


# ---------------------------------------------------------------------------------------------
# files without a nodata value
def test_untagged_zero_fill_is_not_data(tmp_path):
    """An ortho scene padded with 0 around its tilted footprint and no nodata tag: the pixels 0 in
    every band are fill; one band at 0 is data; [imagery].nodata, when given, decides alone."""
    t = Affine(2, 0, 600000, 0, -2, 2400000)
    x, y = centres(t, 60, 80)
    data = np.stack([field(k, x, y) for k in range(4)])
    r, c = np.mgrid[0:60, 0:80]
    collar = (c + r < 20) | (c - r > 60)                    # two padded corners
    data[:, collar] = 0.0
    data[2, 30, 40] = 0.0                                   # a real pixel with one band at 0
    write(tmp_path / "s" / "scene.tif", data, "EPSG:4545", t, None)
    grid = Grid("EPSG:4545", 600000.0, 2400000.0, 2.0, 80, 60)
    roles = ["blue", "green", "red", "nir"]
    date = open_date("after", str(tmp_path / "s" / "*.tif"), roles, date_override="2026-08-01", **KW)
    assert date.nodata == [None]
    _, valid = read_date(date, grid, Window(0, 0, 80, 60))
    np.testing.assert_array_equal(valid, ~collar)
    assert valid[30, 40] and collar.sum() > 300
    _, valid = read_date(date, grid, Window(0, 0, 80, 60), decimate=2)   # centres: odd pixels
    np.testing.assert_array_equal(valid, ~collar[1::2, 1::2])
    told = open_date("after", str(tmp_path / "s" / "*.tif"), roles, date_override="2026-08-01",
                     nodata_override=-9999.0, **KW)
    _, valid = read_date(told, grid, Window(0, 0, 80, 60))
    assert valid.all()


def test_stac_offset_puts_sentinel2_baseline_04_on_its_scale(tmp_path):
    """Sentinel-2 L2A since processing baseline 04.00: DN = 10000 x reflectance + 1000, which the
    assets' raster:bands say as scale 0.0001, offset -0.1. Read, the valid pixels are 10000 x
    reflectance (DN - 1000); nodata stays nodata; plain files and old plans add nothing."""
    from tiles.imagery import DateImagery

    t = Affine(10, 0, X0, 0, -10, Y0)
    x, y = centres(t, 40, 40)
    stac = tmp_path / "s2"
    assets = {}
    for k, (role, name) in enumerate((("blue", "B02"), ("green", "B03"), ("red", "B04"), ("nir", "B08"))):
        dn = field(k, x, y) + 1000.0
        dn[:5] = 0.0                                           # nodata rows along the top
        write(stac / f"{name}.tif", dn, "EPSG:32649", t, 0.0)
        assets[name] = {"href": f"{name}.tif", "roles": ["data"],
                        "eo:bands": [{"name": name, "common_name": role}],
                        "raster:bands": [{"nodata": 0, "scale": 0.0001, "offset": -0.1}]}
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "S2B_49QGE_20260801",
            "bbox": [0, 0, 1, 1], "geometry": {"type": "Point", "coordinates": [0, 0]},
            "properties": {"datetime": "2026-08-01T03:05:41Z"}, "links": [], "assets": assets}
    (stac / "items.json").write_text(json.dumps({"type": "FeatureCollection", "features": [item]}),
                                     encoding="utf-8")
    date = open_date("after", str(stac / "items.json"), ["blue", "green", "red", "nir"], **KW)
    assert date.scene_adds(date.files[0]) == pytest.approx([-1000.0] * 4)
    date = DateImagery.from_dict(json.loads(json.dumps(date.to_dict())))     # through plan.json
    grid = make_grid(date.image_files(), date.image_files())
    data, valid = read_date(date, grid, Window(0, 0, 40, 40))
    assert not valid[:5].any() and valid[5:].all()
    for k in range(4):
        np.testing.assert_allclose(data[k][5:], field(k, x, y)[5:], atol=0.01)
    old = DateImagery.from_dict({**date.to_dict(), "sources": {
        date.files[0]: [s[:3] for s in date.sources[date.files[0]]]}})
    assert old.scene_adds(date.files[0]) == [0.0] * 4
    np.testing.assert_allclose(read_date(old, grid, Window(0, 0, 40, 40))[0][0][5:],
                               field(0, x, y)[5:] + 1000.0, atol=0.01)


def test_dn_offset_from_the_config_applies_to_every_file(tmp_path):
    """[imagery].dn_offset = -1000 for files that do not say their offset (.SAFE band files of
    baseline 04.00): valid pixels lose 1000 DN, nodata stays nodata; 0 adds nothing."""
    from tiles.imagery import open_config_date

    t = Affine(10, 0, X0, 0, -10, Y0)
    x, y = centres(t, 30, 30)
    dn = np.stack([field(k, x, y) + 1000.0 for k in range(4)])
    dn[:, :4] = 0.0
    write(tmp_path / "im" / "scene.tif", dn, "EPSG:32649", t, 0.0)
    imagery = {"after": str(tmp_path / "im" / "*.tif"), "bands": ["blue", "green", "red", "nir"],
               "after_date": "2026-08-01", "dn_offset": -1000.0}
    grid = Grid("EPSG:32649", X0, Y0, 10.0, 30, 30)
    date = open_config_date("after", imagery, **KW)
    data, valid = read_date(date, grid, Window(0, 0, 30, 30))
    assert not valid[:4].any() and valid[4:].all()
    np.testing.assert_allclose(data[2][4:], field(2, x, y)[4:], atol=0.01)
    plain = open_config_date("after", {**imagery, "dn_offset": 0.0}, **KW)
    np.testing.assert_allclose(read_date(plain, grid, Window(0, 0, 30, 30))[0][2][4:],
                               dn[2][4:], atol=0.01)
