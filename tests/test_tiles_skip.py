"""Tiles without valid data are skipped without reading (issue 4): the scene-wide sample measures
each scene's footprint, which must hold every valid pixel; a tile outside the footprints opens no
file, and skipping changes no result."""
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.windows import Window

import tiles.reader
from detect.detector import HALO_PX, DetectParams
from pipeline.stages import fit_scene_model, process_tile
from tiles.grid import make_grid, make_tiles
from tiles.imagery import open_files
from tiles.sample import sample_pair

T = Affine(2, 0, 600000, 0, -2, 2400000)
N = 384


def write(path, data, nodata=0):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs="EPSG:4545", transform=T,
                       nodata=nodata, tiled=True, blockxsize=128, blockysize=128) as dst:
        dst.write(data)
    return str(path)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """Two dates of 4-band imagery; the before date has a diagonal nodata collar (like a rotated
    scene in a north-up file) and holes; the after date has changed rectangles."""
    tmp = tmp_path_factory.mktemp("skip")
    rng = np.random.default_rng(7)
    r, c = np.mgrid[0:N, 0:N]
    base = 2000 + 300 * np.sin(r / 17.0) * np.cos(c / 23.0)
    img = np.stack([base * f + rng.normal(0, 10, (N, N)) for f in (0.5, 0.7, 0.6, 1.4)])
    before = np.clip(img, 1, 60000).astype("uint16")
    collar = c + r < 200                     # nodata north-west of a diagonal
    holes = ((r - 300) ** 2 + (c - 80) ** 2 < 15 ** 2) | ((r > 150) & (r < 160) & (c > 250))
    before[:, collar | holes] = 0
    after = img.copy()
    for r0, c0 in ((220, 220), (300, 330), (120, 300), (40, 250)):
        after[:, r0:r0 + 12, c0:c0 + 16] *= np.array([1.8, 1.7, 1.6, 0.6])[:, None, None]
    after = np.clip(after + rng.normal(0, 10, after.shape), 1, 60000).astype("uint16")
    b = open_files("before", [write(tmp / "b.tif", before)], ["blue", "green", "red", "nir"],
                   date_override="2026-05-01")
    a = open_files("after", [write(tmp / "a.tif", after)], ["blue", "green", "red", "nir"],
                   date_override="2026-08-01")
    return b, a, make_grid(b.files, a.files), ~(collar | holes)


@pytest.mark.parametrize("decimate", [1, 3, 8])
def test_footprint_holds_every_valid_pixel(pair, decimate):
    before, after, grid, valid = pair
    sample = sample_pair(before, after, grid, decimate, chunk=50)    # many chunks: seams inside
    fp = shapely.from_wkt(sample.footprints["before"][before.files[0]])
    rows, cols = np.nonzero(valid)
    x, y = grid.transform * (cols + 0.5, rows + 0.5)
    assert shapely.contains_xy(fp, x, y).all()
    # ... and leaves out at least half the collar (the triangle of 200 px legs = 20,000 px)
    collar = shapely.Polygon([(600000, 2400000), (600400, 2400000), (600000, 2399600)])
    assert fp.intersection(collar).area < 0.5 * collar.area
    assert not sample.failed


def test_tile_without_data_opens_no_file(pair, monkeypatch):
    before, after, grid, valid = pair
    params = DetectParams()
    fit_scene_model(before, after, grid, params)           # sets the footprints
    assert before.footprints and after.footprints
    cut = make_tiles(grid, 32, HALO_PX)
    cores_valid = {t.id: valid[t.core.row_off:t.core.row_off + t.core.height,
                               t.core.col_off:t.core.col_off + t.core.width].any() for t in cut}
    empty = [t for t in cut if not cores_valid[t.id]]
    assert len(empty) >= 8                  # tiles wholly in the collar

    def no_open(*args, **kwargs):
        raise AssertionError("a file was opened for a tile without data")

    monkeypatch.setattr(tiles.reader.rasterio, "open", no_open)
    for tile in empty[:4] + empty[-4:]:
        parts, layers, valid_px, seconds = process_tile(grid, before, after, None, params, tile)
        assert seconds is None and layers is None and len(parts) == 0 and not valid_px.any()


def test_skipping_changes_no_result(pair):
    before, after, grid, _ = pair
    params = DetectParams(min_area_m2=50, landuse_rules=False)
    model, _, _ = fit_scene_model(before, after, grid, params)
    blind_b = open_files("before", before.files, ["blue", "green", "red", "nir"], date_override="2026-05-01")
    blind_a = open_files("after", after.files, ["blue", "green", "red", "nir"], date_override="2026-08-01")
    assert not blind_b.footprints                  # no footprints: every tile is read
    skipped = found = 0
    # the collar, its edge and the change at rows 40.., cols 250..: tiles north-west of r + c = 320
    near = [t for t in make_tiles(grid, 64, HALO_PX) if t.core.row_off + t.core.col_off < 320]
    for tile in near:
        parts, _, valid, seconds = process_tile(grid, before, after, model, params, tile)
        ref, _, ref_valid, _ = process_tile(grid, blind_b, blind_a, model, params, tile)
        skipped += seconds is None
        found += len(parts)
        assert len(parts) == len(ref)
        assert valid[tile.core_in_halo].sum() == ref_valid[tile.core_in_halo].sum()
        for g, h in zip(parts.geometry, ref.geometry):
            assert g.equals(h)
    assert skipped == 3 and found >= 1       # tiles 0_0, 0_1, 1_0 lie wholly in the collar
