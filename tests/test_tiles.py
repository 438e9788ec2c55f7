"""Grid, tiles and aligned reads (tiles/)."""
import numpy as np
import pytest
import rasterio
from affine import Affine
from hypothesis import given, settings, strategies as st
from pyproj import Transformer
from rasterio.windows import Window

from tiles.errors import InputFileError
from tiles.grid import Grid, make_grid, make_tiles
from tiles.imagery import open_date, open_files
from tiles.reader import read_cloud, read_date, read_pair


def write_raster(path, data, crs, transform, nodata=0, tags=None):
    data = np.asarray(data)
    if data.ndim == 2:
        data = data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(data)
        if tags:
            dst.update_tags(**tags)
    return str(path)


@settings(max_examples=60, deadline=None)
@given(w=st.integers(1, 700), h=st.integers(1, 700), ts=st.integers(64, 300), halo=st.integers(0, 40))
def test_tiles_partition_the_grid(w, h, ts, halo):
    grid = Grid("EPSG:4545", 600000.0, 2400000.0, 2.0, w, h)
    tiles = make_tiles(grid, ts, halo)
    cover = np.zeros((h, w), dtype=np.int32)
    for t in tiles:
        c = t.core
        cover[c.row_off:c.row_off + c.height, c.col_off:c.col_off + c.width] += 1
        # the halo holds the core and stays on the grid
        assert t.halo.col_off <= c.col_off and t.halo.row_off <= c.row_off
        assert t.halo.col_off + t.halo.width >= c.col_off + c.width
        assert t.halo.col_off >= 0 and t.halo.row_off >= 0
        assert t.halo.col_off + t.halo.width <= w and t.halo.row_off + t.halo.height <= h
        rs, cs = t.core_in_halo
        assert rs.stop - rs.start == c.height and cs.stop - cs.start == c.width
        # the halo is `halo` px wide wherever the grid allows
        assert c.col_off - t.halo.col_off == min(halo, c.col_off)
        # the window transform puts the core's corner where the grid says
        x, y = grid.window_transform(t.halo) @ (cs.start, rs.start)
        assert (x, y) == grid.transform @ (c.col_off, c.row_off)
    assert (cover == 1).all()


def test_grid_is_the_snapped_overlap(tmp_path):
    t1 = Affine(2, 0, 600001.0, 0, -2, 2400000.0)   # 100 x 80 px
    t2 = Affine(2, 0, 600051.0, 0, -2, 2399990.0)
    b = write_raster(tmp_path / "b.tif", np.ones((1, 80, 100), "uint16"), "EPSG:4545", t1)
    a = write_raster(tmp_path / "a.tif", np.ones((1, 80, 100), "uint16"), "EPSG:4545", t2)
    g = make_grid([b], [a])
    # overlap x 600051..600201, y 2399840..2399990, on the after file's own pixel corners
    assert (g.left, g.top, g.res) == (600051.0, 2399990.0, 2.0)
    assert g.width == 75 and g.height == 75
    # at another resolution the after file's corners are no grid corners: multiples of 5 m,
    # snapped outward: x 600050..600205, y 2399840..2399990
    g5 = make_grid([b], [a], resolution=5.0)
    assert (g5.left, g5.top, g5.res, g5.width, g5.height) == (600050.0, 2399990.0, 5.0, 31, 30)


def test_dates_that_do_not_overlap_are_refused(tmp_path):
    b = write_raster(tmp_path / "b.tif", np.ones((1, 10, 10), "uint16"), "EPSG:4545",
                     Affine(2, 0, 600000, 0, -2, 2400000))
    a = write_raster(tmp_path / "a.tif", np.ones((1, 10, 10), "uint16"), "EPSG:4545",
                     Affine(2, 0, 700000, 0, -2, 2400000))
    with pytest.raises(InputFileError, match="do not overlap"):
        make_grid([b], [a])


def test_warped_read_from_another_crs_matches_the_function(tmp_path):
    """A linear field written in UTM 49N reads back onto a EPSG:4545 grid with bilinear resampling:
    the expected value at each grid pixel is the field at that point, computed with pyproj."""
    to_utm = Transformer.from_crs("EPSG:4545", "EPSG:32649", always_xy=True)
    ux0, uy0 = to_utm.transform(600000.0, 2400000.0)
    utm_t = Affine(2, 0, round(ux0) - 100, 0, -2, round(uy0) + 100)
    rows, cols = np.mgrid[0:300, 0:300]
    ux, uy = utm_t @ (cols + 0.5, rows + 0.5)
    field = lambda x, y: 1000 + 0.5 * (x - ux0) - 0.25 * (y - uy0)  # noqa: E731
    a = write_raster(tmp_path / "utm.tif", field(ux, uy).astype("float32"), "EPSG:32649", utm_t, nodata=-9999)
    date = open_date("after", str(tmp_path / "utm.tif"), ["-", "-", "nir"][2:], quarter="2026Q3",
                     prev_quarter="2026Q2", date_override="2026-08-01")
    grid = Grid("EPSG:4545", 600000.0, 2400000.0, 2.0, 200, 200)
    data, valid = read_date(date, grid, Window(20, 30, 100, 90))
    r, c = np.mgrid[30:120, 20:120]
    gx, gy = grid.transform @ (c + 0.5, r + 0.5)
    ex, ey = to_utm.transform(gx, gy)
    expected = field(ex, ey)
    assert valid.all()
    np.testing.assert_allclose(data[0], expected, atol=0.05)


def test_mosaic_first_valid_wins_and_nodata_is_invalid(tmp_path):
    t = Affine(2, 0, 600000, 0, -2, 2400000)
    one = np.full((2, 20, 20), 100, "uint16"); one[:, :, 10:] = 0     # right half nodata
    two = np.full((2, 20, 20), 200, "uint16"); two[:, 15:, :] = 0     # bottom rows nodata
    write_raster(tmp_path / "s" / "a1.tif", one, "EPSG:4545", t)
    write_raster(tmp_path / "s" / "a2.tif", two, "EPSG:4545", t)
    date = open_date("after", str(tmp_path / "s" / "*.tif"), ["red", "nir"], quarter="2026Q3",
                     prev_quarter="2026Q2", date_override="2026-08-01")
    grid = Grid("EPSG:4545", 600000.0, 2400000.0, 2.0, 20, 20)
    data, valid = read_date(date, grid, Window(0, 0, 20, 20))
    assert (data[:, :, :10] == 100).all()
    assert (data[:, :15, 10:] == 200).all()
    assert not valid[15:, 10:].any() and valid[:15].all() and valid[:, :10].all()


def test_cloud_mask_removes_pixels_from_the_pair(tmp_path):
    t = Affine(2, 0, 600000, 0, -2, 2400000)
    img = np.full((3, 16, 16), 500, "uint16")
    write_raster(tmp_path / "b.tif", img, "EPSG:4545", t, tags={"ACQUISITION_DATE": "2026-05-01"})
    write_raster(tmp_path / "a.tif", img, "EPSG:4545", t, tags={"TIFFTAG_DATETIME": "2026:08:02 10:00:00"})
    cloud = np.zeros((16, 16), "uint8"); cloud[2:5, 3:9] = 1
    write_raster(tmp_path / "a_cloud.tif", cloud, "EPSG:4545", t, nodata=255)
    kw = dict(quarter="2026Q3", prev_quarter="2026Q2")
    before = open_date("before", str(tmp_path / "b.tif"), ["green", "red", "nir"], **kw)
    after = open_date("after", str(tmp_path / "a.tif"), ["green", "red", "nir"],
                      cloud_pattern=str(tmp_path / "a_cloud.tif"), **kw)
    assert (before.date, after.date) == ("2026-05-01", "2026-08-02")
    grid = make_grid(before.files, after.files)
    _, _, valid = read_pair(before, after, grid, Window(0, 0, 16, 16))
    assert (~valid).sum() == 18 and not valid[2:5, 3:9].any()
    assert read_cloud(after.cloud_masks, grid, Window(0, 0, 16, 16), decimate=2).sum() > 0


def test_band_count_and_missing_files_are_named(tmp_path):
    t = Affine(2, 0, 600000, 0, -2, 2400000)
    write_raster(tmp_path / "x_20260801.tif", np.ones((2, 4, 4), "uint16"), "EPSG:4545", t)
    with pytest.raises(InputFileError, match="has 2 bands"):
        open_date("after", str(tmp_path / "x_*.tif"), ["blue", "green", "red", "nir"],
                  quarter="2026Q3", prev_quarter="2026Q2")
    with pytest.raises(InputFileError, match="no file matches"):
        open_date("after", str(tmp_path / "{quarter}/*.tif"), ["red", "nir"],
                  quarter="2026Q3", prev_quarter="2026Q2")
    # the date comes from the file name when the metadata has none
    d = open_date("after", str(tmp_path / "x_*.tif"), ["red", "nir"], quarter="2026Q3", prev_quarter="2026Q2")
    assert d.date == "2026-08-01"


def test_decimated_read_samples_the_grid(tmp_path):
    t = Affine(2, 0, 600000, 0, -2, 2400000)
    rows, cols = np.mgrid[0:40, 0:40]
    img = (rows * 100 + cols + 1).astype("uint16")[None]
    write_raster(tmp_path / "a_20260801.tif", img, "EPSG:4545", t)
    date = open_date("after", str(tmp_path / "a_*.tif"), ["nir"], quarter="2026Q3", prev_quarter="2026Q2")
    grid = Grid("EPSG:4545", 600000.0, 2400000.0, 2.0, 40, 40)
    data, valid = read_date(date, grid, Window(0, 0, 40, 40), decimate=4)
    assert data.shape == (1, 10, 10) and valid.all()
    # each decimated pixel is one of the 4x4 source pixels it covers
    blocks = img[0].reshape(10, 4, 10, 4).transpose(0, 2, 1, 3).reshape(10, 10, 16)
    assert all(data[0, i, j] in blocks[i, j] for i in range(10) for j in range(10))


@pytest.fixture(scope="module")
def on_grid_files(tmp_path_factory):
    """Three files on one 2 m lattice, at different pixel offsets from the grid (one sticks out
    beyond the grid's top-left corner), with nodata holes."""
    tmp = tmp_path_factory.mktemp("ongrid")
    rng = np.random.default_rng(3)
    files = []
    for k, (dc, dr, w, h) in enumerate(((0, 0, 90, 70), (13, 7, 60, 80), (-9, -5, 50, 40))):
        data = rng.integers(1, 4000, (2, h, w)).astype("uint16")
        data[:, h // 3:h // 2, w // 4:w // 2] = 0
        t = Affine(2, 0, 600000 + 2 * dc, 0, -2, 2400000 - 2 * dr)
        files.append(write_raster(tmp / f"f{k}.tif", data, "EPSG:4545", t))
    return files


@settings(max_examples=40, deadline=None)
@given(k=st.integers(0, 2), c=st.integers(0, 79), r=st.integers(0, 79), w=st.integers(1, 80),
       h=st.integers(1, 80), d=st.integers(1, 9))
def test_direct_read_equals_the_warped_read(on_grid_files, k, c, r, w, h, d):
    """A file on the grid is read without the warper; the window, clipping and decimation
    arithmetic must give exactly what GDAL's warper gives (nearest when decimated)."""
    import tiles.reader as reader

    date = open_files("after", [on_grid_files[k]], ["red", "nir"], require_date=False)
    grid = Grid("EPSG:4545", 600000.0, 2400000.0, 2.0, 100, 100)
    window = Window(c, r, min(w, 100 - c), min(h, 100 - r))
    direct = read_date(date, grid, window, decimate=d)
    original = reader._on_grid
    reader._on_grid = lambda src, g: False        # force the WarpedVRT path
    try:
        warped = read_date(date, grid, window, decimate=d)
    finally:
        reader._on_grid = original
    np.testing.assert_array_equal(direct[1], warped[1])
    np.testing.assert_array_equal(direct[0][:, direct[1]], warped[0][:, warped[1]])
