"""Bad input (issue 4): a corrupt block fails one tile and the run goes on (exit 3, a rerun redoes only
the failed tiles); an unreadable file, a missing band, a missing CRS, dates that do not overlap and
band counts that differ between dates stop the run before it starts (exit 2), naming the file."""
import json
import os
import shutil

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from cli import main
from pipeline.demo import make_demo

QUARTER = "2026Q3"


def _events(run, name):
    lines = [json.loads(x) for x in (run / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    starts = [i for i, e in enumerate(lines) if e["event"] == "run_start"]
    return [[e for e in lines[a:b] if e["event"] == name]
            for a, b in zip(starts, starts[1:] + [len(lines)])]


@pytest.fixture(scope="module")
def corrupt_run(tmp_path_factory):
    """A 600 px demo in tiles of 256 whose after image has one corrupt 256 px block (the last one,
    rows and columns 512..599), run through the CLI; then the file is repaired and run again."""
    out = tmp_path_factory.mktemp("corrupt")
    paths = make_demo(out, width=600, height=600, tile_size=256)
    cfg = out / "demo.toml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('formats = ["gpkg", "xlsx"]', 'formats = ["gpkg"]'),
                   encoding="utf-8")
    after = paths["after"]
    good = out / "after.good"
    shutil.copy2(after, good)
    with rasterio.open(after) as src:
        assert src.block_shapes[0] == (256, 256) and src.interleaving.value == "PIXEL"
        offset = int(src.get_tag_item("BLOCK_OFFSET_2_2", "TIFF", bidx=1))
    stat = os.stat(after)
    with open(after, "r+b") as fh:          # overwrite the DEFLATE stream's header: undecodable
        fh.seek(offset)
        fh.write(b"\xff" * 64)
    os.utime(after, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    runner = CliRunner()
    args = ["run", "--config", str(cfg), "--quarter", QUARTER, "--workers", "1"]
    first = runner.invoke(main, args)
    first.manifest = json.loads((out / "runs" / QUARTER / "run.json").read_text(encoding="utf-8"))
    shutil.copy2(good, after)               # repaired: same bytes and times as written
    second = runner.invoke(main, args)
    return out, str(after), first, second


def test_corrupt_block_fails_only_the_tiles_that_read_it(corrupt_run):
    out, after, first, _ = corrupt_run
    assert first.exit_code == 3, first.output
    run = out / "runs" / QUARTER
    plan = json.loads((run / "plan.json").read_text(encoding="utf-8"))
    # tiles whose halo window meets the block rows/cols 512..599, from the plan's own windows
    expected = {t["id"] for t in plan["tiles"]
                if t["halo"][0] + t["halo"][2] > 512 and t["halo"][1] + t["halo"][3] > 512}
    assert expected == {"1_1", "1_2", "2_1", "2_2"}
    failed = {e["tile"]: e["error"] for e in _events(run, "tile_failed")[0]}
    assert set(failed) == expected
    for tile, msg in failed.items():
        halo = next(t["halo"] for t in plan["tiles"] if t["id"] == tile)
        assert msg.startswith(after + ": read failed in window")
        assert f"col {halo[0]} row {halo[1]} {halo[2]}x{halo[3]}" in msg
        assert f"failed tile {tile}: {after}" in first.output
    done = {e["tile"] for e in _events(run, "tile")[0]}
    assert done == {t["id"] for t in plan["tiles"]} - expected
    assert set(first.manifest["failed_tiles"]) == expected
    assert first.manifest["stages"]["detect"]["status"] == "failed"
    assert "Traceback" not in first.output


def test_rerun_redoes_only_the_failed_tiles(corrupt_run):
    out, _, first, second = corrupt_run
    assert second.exit_code == 0, second.output
    run = out / "runs" / QUARTER
    assert {e["tile"] for e in _events(run, "tile")[1]} == {"1_1", "1_2", "2_1", "2_2"}
    assert not _events(run, "tile_failed")[1]
    manifest = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    assert len(list((run / "tiles").glob("*.parquet"))) == 9


# ---------------------------------------------------------------------------------------------
# errors before the run starts: exit 2, one line naming the file
T = Affine(2, 0, 600000, 0, -2, 2400000)


def _raster(path, bands=4, crs="EPSG:4545", transform=T, tags=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).integers(100, 3000, (bands, 32, 32)).astype("uint16")
    with rasterio.open(path, "w", driver="GTiff", width=32, height=32, count=bands, dtype="uint16",
                       crs=crs, transform=transform, nodata=0) as dst:
        dst.write(data)
        dst.update_tags(**(tags or {}))
    return str(path)


def _config(tmp_path, extra=""):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[imagery]\nbefore = "img/{prev_quarter}/*.tif"\nafter = "img/{quarter}/*.tif"\n'
                   f'{extra}\n[layers.counties]\npath = "counties.gpkg"\n', encoding="utf-8")
    return ["run", "--config", str(cfg), "--quarter", QUARTER, "--workdir", str(tmp_path / "w")]


def _invoke(args):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    return r.output


def test_unreadable_file_is_exit_2(tmp_path):
    _raster(tmp_path / "img" / "2026Q2" / "b_20260501.tif")
    bad = tmp_path / "img" / "2026Q3" / "a_20260801.tif"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"II*\x00 this is not a GeoTIFF " * 10)
    out = _invoke(_config(tmp_path))
    assert str(bad) in out and "cannot be read as a raster" in out


def test_missing_band_is_exit_2(tmp_path):
    _raster(tmp_path / "img" / "2026Q2" / "b_20260501.tif")
    a = _raster(tmp_path / "img" / "2026Q3" / "a_20260801.tif", bands=3)
    out = _invoke(_config(tmp_path))
    assert a in out and "has 3 bands" in out and "blue, green, red, nir" in out


def test_missing_band_file_is_exit_2(tmp_path):
    for band in ("B02", "B03", "B04", "B08"):
        _raster(tmp_path / "img" / "2026Q2" / f"S_20260501_{band}.tif", bands=1)
    for band in ("B02", "B03", "B04"):   # no B08 (nir) for the after date
        _raster(tmp_path / "img" / "2026Q3" / f"S_20260801_{band}.tif", bands=1)
    args = _config(tmp_path, 'band_files = { blue = "B02", green = "B03", red = "B04", nir = "B08" }')
    cfg = tmp_path / "c.toml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("/*.tif", "/S_*_{band}.tif"), encoding="utf-8")
    out = _invoke(args)
    assert "no nir band file" in out and str(tmp_path / "img" / "2026Q3") in out


def test_missing_crs_is_exit_2(tmp_path):
    _raster(tmp_path / "img" / "2026Q2" / "b_20260501.tif")
    a = _raster(tmp_path / "img" / "2026Q3" / "a_20260801.tif", crs=None)
    out = _invoke(_config(tmp_path))
    assert a in out and "has no CRS" in out


def test_dates_that_do_not_overlap_are_exit_2(tmp_path):
    b = _raster(tmp_path / "img" / "2026Q2" / "b_20260501.tif")
    a = _raster(tmp_path / "img" / "2026Q3" / "a_20260801.tif",
                transform=Affine(2, 0, 650000, 0, -2, 2400000))
    out = _invoke(_config(tmp_path))
    assert b in out and a in out and "do not overlap" in out


def test_band_counts_that_differ_between_dates_are_exit_2(tmp_path):
    b = _raster(tmp_path / "img" / "2026Q2" / "b_20260501.tif", bands=4)
    a = _raster(tmp_path / "img" / "2026Q3" / "a_20260801.tif", bands=5)
    out = _invoke(_config(tmp_path))
    assert a in out and b in out and "has 5 bands" in out and "has 4" in out


def test_band_counts_that_differ_within_a_date_are_exit_2(tmp_path):
    _raster(tmp_path / "img" / "2026Q2" / "b_20260501.tif", bands=4)
    _raster(tmp_path / "img" / "2026Q3" / "a1_20260801.tif", bands=4)
    a2 = _raster(tmp_path / "img" / "2026Q3" / "a2_20260801.tif", bands=5)
    out = _invoke(_config(tmp_path))
    assert a2 in out and "has 5 bands" in out


def test_a_run_whose_every_tile_fails_ends_cleanly(tmp_path, monkeypatch):
    """Every tile's read fails (here: an injected TileError): the run still merges, writes an
    empty changes layer with the whole schema and a report, and exits 3 naming the tiles; it
    once stopped with a KeyError traceback building the report from a frame without TBLX."""
    from pipeline import stages
    from tiles.errors import TileError

    out = tmp_path / "demo"
    make_demo(out, width=400, height=400, tile_size=200)

    def broken(*args, **kwargs):
        raise TileError("synthetic read failure")

    monkeypatch.setattr(stages, "read_tile", broken)
    result = CliRunner().invoke(main, ["run", "--config", str(out / "demo.toml"), "--quarter",
                                       QUARTER, "--workers", "1"])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    run = out / "runs" / QUARTER
    manifest = json.loads((run / "run.json").read_text(encoding="utf-8"))
    plan = json.loads((run / "plan.json").read_text(encoding="utf-8"))
    assert set(manifest["failed_tiles"]) == {t["id"] for t in plan["tiles"]} and len(plan["tiles"]) == 4
    changes = gpd.read_file(run / "changes.gpkg", layer="changes")
    assert len(changes) == 0 and {"JCBH", "TBLX", "ZXDJ", "YXJ"} <= set(changes.columns)
    assert (run / "report.html").exists()
