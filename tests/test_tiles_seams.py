"""Seams (issue 4): one scene run as one tile and in tiles of 256 px whose edges cut objects, a
four-tile corner included, gives the same objects, the same areas to pixel precision and the
same JCBH, through run_quarter. The reference is the one-tile run, which has no seam at all."""
import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.config import load_config
from pipeline.demo import make_demo
from pipeline.quarter import Quarter
from pipeline.run import run_quarter

QUARTER = "2026Q3"
SIZE, TILE = 600, 256


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("seams")
    make_demo(out, width=SIZE, height=SIZE, tile_size=TILE)   # changes placed across 256 px lines
    text = (out / "demo.toml").read_text(encoding="utf-8")
    assert f"tile_size = {TILE}" in text
    results = {}
    for tile_size in (1024, TILE):
        cfg = out / f"tiles{tile_size}.toml"
        cfg.write_text(text.replace(f"tile_size = {TILE}", f"tile_size = {tile_size}")
                       .replace('formats = ["gpkg", "xlsx"]', 'formats = ["gpkg"]'), encoding="utf-8")
        rd, outcome = run_quarter(load_config(cfg), Quarter.parse(QUARTER), workers=1,
                                  workdir=str(out / f"runs{tile_size}"))
        assert outcome.exit_code == 0, outcome
        changes = gpd.read_file(rd.path / "changes.gpkg", layer="changes")
        results[tile_size] = (changes.set_index("JCBH").sort_index(), rd)
    return results


def test_tiles_cut_objects_including_a_four_tile_corner(runs):
    changes, rd = runs[TILE]
    plan = __import__("json").loads((rd.path / "plan.json").read_text(encoding="utf-8"))
    assert len(plan["tiles"]) == 9
    g = plan["grid"]
    xs = [g["left"] + k * TILE * g["res"] for k in (1, 2)]
    ys = [g["top"] - k * TILE * g["res"] for k in (1, 2)]
    lines = [shapely.LineString([(x, g["top"]), (x, g["top"] - SIZE * g["res"])]) for x in xs] + \
            [shapely.LineString([(g["left"], y), (g["left"] + SIZE * g["res"], y)]) for y in ys]
    crossing = [j for j, geom in changes.geometry.items() if any(geom.crosses(line) for line in lines)]
    corners = [shapely.Point(x, y) for x in xs for y in ys]
    at_corner = [j for j, geom in changes.geometry.items() if any(geom.contains(p) for p in corners)]
    assert len(crossing) >= 3, crossing
    assert at_corner, "no object over a four-tile corner"


def test_same_objects_areas_and_jcbh_as_one_tile(runs):
    one, _ = runs[1024]
    cut, _ = runs[TILE]
    assert len(one) >= 10
    assert list(cut.index) == list(one.index)                 # same JCBH, hence same order
    px = 2.0 * 2.0
    # the same pixels: symmetric difference below one pixel, areas within half a pixel
    diff = [a.symmetric_difference(b).area for a, b in zip(cut.geometry, one.geometry)]
    assert max(diff) < px, dict(zip(one.index, diff))
    np.testing.assert_allclose(cut.geometry.area, one.geometry.area, atol=px / 2)
    np.testing.assert_allclose(cut["JCMJ"], one["JCMJ"], atol=px / 2)
    for name in ("XZQDM", "TBLX", "ZXDJ", "YXJ"):
        assert list(cut[name]) == list(one[name]), name
    np.testing.assert_allclose(cut["ZXD"], one["ZXD"], atol=1e-6)
