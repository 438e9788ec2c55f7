"""The run's chip reader on real Landsat data (Taizhou, 2000 / 2003, UTM 51N)."""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window
from shapely.geometry import box

from pipeline.package.chip_reader import grid_chip_reader
from pipeline.package.chips import write_chips
from tiles.errors import ConfigError, TileError
from tiles.grid import Grid
from tiles.imagery import open_files

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TAIZHOU = DATA / "landsat_taizhou_nanjing" / "Taizhou"
ROLES = ["blue", "green", "red", "nir", "swir1", "swir2"]

pytestmark = pytest.mark.skipif(not (TAIZHOU / "2000TM").exists(),
                                reason=f"Landsat test data not found at {TAIZHOU}")


@pytest.fixture(scope="module")
def dates():
    before = open_files("before", [str(TAIZHOU / "2000TM")], ROLES, date_override="2000-03-17")
    after = open_files("after", [str(TAIZHOU / "2003TM")], ROLES, date_override="2003-02-06")
    with rasterio.open(TAIZHOU / "2000TM") as src:
        t = src.transform
        # the grid of the files themselves: the warp is the identity, values must be equal
        grid = Grid(crs=src.crs.to_string(), left=t.c, top=t.f, res=t.a,
                    width=src.width, height=src.height)
    return before, after, grid


def test_chip_equals_direct_read(dates):
    before, after, grid = dates
    read_chip = grid_chip_reader(before, after, grid)
    minx, maxy = grid.left + 3000, grid.top - 4500        # col 100, row 150
    b, a, transform = read_chip((minx, maxy - 600, minx + 600, maxy))
    assert b.shape == a.shape == (3, 20, 20)
    assert (transform.c, transform.f) == (minx, maxy)
    with rasterio.open(TAIZHOU / "2000TM") as s0, rasterio.open(TAIZHOU / "2003TM") as s1:
        win = Window(100, 150, 20, 20)
        np.testing.assert_array_equal(np.ma.getdata(b), s0.read([3, 2, 1], window=win))
        np.testing.assert_array_equal(np.ma.getdata(a), s1.read([3, 2, 1], window=win))
    assert not np.ma.getmaskarray(b).any()


def test_chip_clipped_at_edge_and_outside(dates):
    before, after, grid = dates
    read_chip = grid_chip_reader(before, after, grid)
    b, _, transform = read_chip((grid.left - 300, grid.top - 300, grid.left + 300, grid.top + 300))
    assert b.shape == (3, 10, 10) and (transform.c, transform.f) == (grid.left, grid.top)
    with pytest.raises(TileError, match="outside"):
        read_chip((grid.left - 9000, grid.top + 100, grid.left - 8000, grid.top + 900))


def test_png_chips_from_real_imagery(dates, tmp_path):
    before, after, grid = dates
    # a labelled change area of the Taizhou pair: 900 m square around col 200, row 200
    x, y = grid.left + 200 * 30, grid.top - 200 * 30
    county = gpd.GeoDataFrame({"JCBH": ["3212022026Q300001"], "QSX": ["2000-03-17"],
                               "HSX": ["2003-02-06"]},
                              geometry=[box(x - 450, y - 450, x + 450, y + 450)], crs=grid.crs)
    links, problems = write_chips(county, tmp_path, grid_chip_reader(before, after, grid))
    assert problems == []
    for name in links["3212022026Q300001"]:
        with Image.open(tmp_path / name) as im:
            assert im.format == "PNG" and im.size == (320, 320)
            px = np.asarray(im)
        assert px.std() > 10  # real texture, not a flat fill


def test_needs_rgb_roles(dates):
    before, after, grid = dates
    nir_only = open_files("before", [str(TAIZHOU / "2000TM")], ["-", "-", "-", "nir"],
                          date_override="2000-03-17")
    with pytest.raises(ConfigError, match="red"):
        grid_chip_reader(nir_only, after, grid)
