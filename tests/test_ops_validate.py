"""`tianyan validate` before a long run: overlap of the dates, dates against the quarter, layers that
miss the imagery, registry and statistics settings, writable workdir and Numba cache, free disk.
Each blocking finding makes the command exit 2."""
import re
import shutil
from collections import namedtuple
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.windows import Window

from cli import main
from pipeline.config import load_config
from pipeline.quarter import Quarter
from pipeline.validate import validate_inputs

Q = Quarter(2026, 3)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from pipeline.demo import make_demo

    out = tmp_path_factory.mktemp("validate")
    make_demo(out, width=400, height=400, tile_size=200)
    return out


def variant(demo: Path, tmp_path: Path, replace: dict = (), append: str = "") -> Path:
    text = (demo / "demo.toml").read_text(encoding="utf-8")
    for old, new in dict(replace).items():
        assert old in text, old
        text = text.replace(old, new)
    text = re.sub(r'path = "layers/', f'path = "{demo}/layers/', text)
    text = re.sub(r'"imagery/', f'"{demo}/imagery/', text)
    text = text.replace('workdir = "runs"', f'workdir = "{tmp_path / "runs"}"')
    cfg = tmp_path / "v.toml"
    cfg.write_text(text + append, encoding="utf-8")
    return cfg


def findings(cfg: Path, quarter: Quarter = Q) -> dict:
    out = {}
    for level, what, message in validate_inputs(load_config(cfg), quarter):
        out.setdefault(what, []).append((level, message))
    return out


def test_the_demo_passes_with_every_new_check(demo, tmp_path, monkeypatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    f = findings(variant(demo, tmp_path))
    assert f["overlap"] == [("OK", "the before date covers 100% of the after date's extent")]
    # the pair's dates, and the reference date a year earlier (the demo has one)
    assert [level for level, _ in f["dates"]] == ["OK", "OK"], f["dates"]
    assert f["dates"][1][1].startswith("reference 2025-")
    for what in ("registry", "workdir", "numba cache", "disk"):
        assert f[what][0][0] == "OK", (what, f[what])


def test_partial_overlap_of_the_dates_is_a_warning(demo, tmp_path):
    src_path = next((demo / "imagery" / "2026Q2").glob("*_MS.tif"))
    dst = tmp_path / "imagery" / "2026Q2" / src_path.name
    dst.parent.mkdir(parents=True)
    with rasterio.open(src_path) as src:          # keep the western 30 % of the before scene
        win = Window(0, 0, 120, src.height)
        profile = dict(src.profile, width=120, transform=src.window_transform(win))
        profile.pop("blockxsize", None), profile.pop("blockysize", None), profile.pop("tiled", None)
        with rasterio.open(dst, "w", **profile) as out:
            out.write(src.read(window=win))
            out.update_tags(**src.tags())
    cfg = variant(demo, tmp_path, {'before = "imagery/{prev_quarter}/*_MS.tif"':
                                   f'before = "{tmp_path}/imagery/{{prev_quarter}}/*_MS.tif"'})
    f = findings(cfg)
    level, message = f["overlap"][0]
    assert level == "WARN" and "covers 30%" in message


def test_scene_cloud_masks_are_counted_and_a_stray_mask_blocks(demo, tmp_path):
    after = next((demo / "imagery" / "2026Q3").glob("*_MS.tif"))
    cloud = next((demo / "imagery" / "2026Q3").glob("*_cloud.tif"))
    own = variant(demo, tmp_path, {'after = "imagery/{quarter}/*_MS.tif"':
                                   'after = "imagery/{quarter}/{scene}_MS.tif"',
                                   'cloud_mask_after = "imagery/{quarter}/*_cloud.tif"':
                                   'cloud_mask_after = "imagery/{quarter}/{scene}_cloud.tif"'})
    assert findings(own)["imagery.cloud_mask_after"][0] == (
        "OK", "every scene (1) has its own cloud mask")
    # two scenes, one mask: a warning naming the bare scene; a mask of no scene: blocking
    d = tmp_path / "two" / "2026Q3"
    d.mkdir(parents=True)
    for name in ("s1_MS.tif", "s2_MS.tif"):
        shutil.copy(after, d / name)
    shutil.copy(cloud, d / "s1_cloud.tif")
    two = variant(demo, tmp_path, {'after = "imagery/{quarter}/*_MS.tif"':
                                   f'after = "{tmp_path}/two/{{quarter}}/{{scene}}_MS.tif"',
                                   'cloud_mask_after = "imagery/{quarter}/*_cloud.tif"':
                                   f'cloud_mask_after = "{tmp_path}/two/{{quarter}}/{{scene}}_cloud.tif"'})
    level, message = findings(two)["imagery.cloud_mask_after"][0]
    assert level == "WARN" and message.startswith("1 of 2 scenes have no cloud mask of their own")
    assert message.split("e.g. ")[1].startswith(str(d / "s2_MS.tif"))
    shutil.copy(cloud, d / "s3_cloud.tif")
    (level, message), = findings(two)["imagery.after"]
    assert level == "ERROR" and message.startswith(f"{d / 's3_cloud.tif'}: [imagery].cloud_mask_after "
                                                   "names scene 's3'")
    result = CliRunner().invoke(main, ["validate", "--config", str(two), "--quarter", "2026Q3"])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_the_share_under_cloud_is_printed_and_a_class_raster_without_values_warns(demo, tmp_path):
    f = findings(variant(demo, tmp_path))
    with rasterio.open(next((demo / "imagery" / "2026Q3").glob("*_cloud.tif"))) as src:
        share = (src.read(1) > 0).mean()       # the demo's mask covers the grid exactly
    (level, message), = f["imagery.cloud_mask_after"]
    assert level == "OK" and message == f"{share:.0%} of the grid masked as cloud or shadow"
    # an SCL-like class raster (4 = vegetation, 9 = cloud) read as 'any value above 0'
    cloud = next((demo / "imagery" / "2026Q3").glob("*_cloud.tif"))
    scl = tmp_path / "scl.tif"
    with rasterio.open(cloud) as src:
        profile = dict(src.profile, nodata=0)
        classes = np.where(src.read(1) > 0, 9, 4).astype(src.dtypes[0])
    with rasterio.open(scl, "w", **profile) as dst:
        dst.write(classes, 1)
    key = 'cloud_mask_after = "imagery/{quarter}/*_cloud.tif"'
    (level, message), = findings(variant(demo, tmp_path, {key: f'cloud_mask_after = "{scl}"'}))[
        "imagery.cloud_mask_after"]
    assert level == "WARN" and message.startswith("100% of the grid masked")
    assert "cloud_mask_values" in message
    fixed = variant(demo, tmp_path, {key: f'cloud_mask_after = "{scl}"\ncloud_mask_values = [9]'})
    assert findings(fixed)["imagery.cloud_mask_after"] == [("OK", message.split(":")[0].replace(
        "100%", f"{share:.0%}"))]


def test_dates_outside_the_quarter_warn_and_reversed_dates_block(demo, tmp_path):
    cfg = variant(demo, tmp_path, append='')
    text = cfg.read_text(encoding="utf-8").replace("[imagery]\n", '[imagery]\nafter_date = "2026-10-05"\n')
    cfg.write_text(text, encoding="utf-8")
    f = findings(cfg)
    assert ("WARN", "after date 2026-10-05 is outside 2026Q3 (2026-07-01 to 2026-09-30); "
                    "is [imagery].after the right quarter?") in f["dates"]
    cfg.write_text(text.replace('after_date = "2026-10-05"', 'before_date = "2026-07-20"\n'
                                                            'after_date = "2026-07-10"'), encoding="utf-8")
    f = findings(cfg)
    assert f["dates"][0][0] == "ERROR" and "not later than before date 2026-07-20" in f["dates"][0][1]


def test_a_county_layer_that_misses_the_imagery_blocks(demo, tmp_path):
    far = gpd.read_file(demo / "layers" / "counties.gpkg", layer="XZQ")
    far["geometry"] = far.translate(xoff=5.0)     # 5 degrees east: another province
    far.to_file(tmp_path / "far.gpkg", layer="XZQ", driver="GPKG")
    cfg = variant(demo, tmp_path)
    text = cfg.read_text(encoding="utf-8").replace(f'path = "{demo}/layers/counties.gpkg"',
                                                   f'path = "{tmp_path}/far.gpkg"')
    text = text.replace(f'path = "{demo}/layers/pzyd.gpkg"', f'path = "{tmp_path}/far.gpkg"\nlayer = "XZQ"')
    cfg.write_text(text, encoding="utf-8")
    f = findings(cfg)
    assert [lvl for lvl, _ in f["layers.counties"]] == ["OK", "ERROR"]
    assert "does not reach the imagery" in f["layers.counties"][1][1]
    assert [lvl for lvl, _ in f["layers.approved"]] == ["OK", "WARN"]
    r = CliRunner().invoke(main, ["validate", "--config", str(cfg), "--quarter", "2026Q3"])
    assert r.exit_code == 2


def test_registry_and_stats_settings_and_a_broken_registry(demo, tmp_path):
    cfg = variant(demo, tmp_path, append="\n[registry]\nmax_growth = 0.5\n")
    f = findings(cfg)
    assert f["config"][0][0] == "ERROR" and "[registry].max_growth" in f["config"][0][1]
    cfg = variant(demo, tmp_path, append="\n[stats]\nillegal_ratio = 15.0\n")
    assert "[stats].illegal_ratio" in findings(cfg)["config"][0][1]
    cfg = variant(demo, tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "registry.gpkg").write_bytes(b"garbage")
    f = findings(cfg)
    assert f["registry"][0][0] == "ERROR" and "registry.gpkg" in f["registry"][0][1]


def test_numba_cache_and_disk(demo, tmp_path, monkeypatch):
    cfg = variant(demo, tmp_path)
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    assert findings(cfg)["numba cache"][0][0] == "WARN"
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(blocker / "numba"))
    level, message = findings(cfg)["numba cache"][0]
    assert level == "ERROR" and "cannot be created" in message
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 30, (10 << 30) - (100 << 20), 100 << 20))
    level, message = findings(cfg)["disk"][0]
    assert level == "ERROR" and "100 MB free" in message
    r = CliRunner().invoke(main, ["validate", "--config", str(cfg), "--quarter", "2026Q3"])
    assert r.exit_code == 2 and re.search(r"^ERROR\s+disk", r.output, re.M)


def test_a_quarter_without_any_change_polygon_finishes_cleanly(demo, tmp_path):
    """An MMU larger than the scene leaves no polygon: the run still writes an empty changes
    layer, packages and a report, and says 0 polygons (it once failed numbering no rows)."""
    cfg = variant(demo, tmp_path, {"min_area_m2 = 200": "min_area_m2 = 1e12"})
    result = CliRunner().invoke(main, ["run", "--config", str(cfg), "--quarter", str(Q),
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / str(Q)
    assert len(gpd.read_file(run / "changes.gpkg", layer="changes")) == 0
    summary = (run / "summary.json").read_text(encoding="utf-8")
    assert '"polygons": 0' in summary
    assert (run / "report.html").exists()


def test_units_are_read_from_at_most_16_scenes_of_a_date(tmp_path, monkeypatch):
    """A province date of many scenes: validate reads the units from 16 of them, spread over the
    list (a product's units are its own), and reads them right."""
    from affine import Affine

    from pipeline import validate
    from tiles.grid import make_grid
    from tiles.imagery import open_date

    for k in range(40):                                      # 40 scenes side by side, 20 x 20 px
        t = Affine(2, 0, 500000 + 40 * k, 0, -2, 2400000)
        data = np.full((4, 20, 20), 800 + 10 * k, dtype=np.uint16)
        with rasterio.open(tmp_path / f"s{k:02d}.tif", "w", driver="GTiff", width=20, height=20,
                           count=4, dtype="uint16", crs="EPSG:4545", transform=t, nodata=0) as dst:
            dst.write(data)
    date = open_date("after", str(tmp_path / "s*.tif"), ["blue", "green", "red", "nir"],
                     date_override="2026-08-01", quarter="2026Q3", prev_quarter="2026Q2")
    grid = make_grid(date.image_files(), date.image_files())
    seen = []
    real = validate.read_date

    def spy(*args, **kwargs):
        seen.append(kwargs["scenes"])
        return real(*args, **kwargs)

    monkeypatch.setattr(validate, "read_date", spy)
    level, what, text = validate._check_reflectance(date, grid, 1e-4)
    assert level == "OK" and what == "imagery.after units"
    assert seen == [list(range(0, 40, 3))] and len(seen[0]) <= 16   # 0, 3, ..., 39
    level, _, text = validate._check_reflectance(date, grid, 1.0)
    assert level == "WARN" and "s00.tif" in text and "reflectance_scale" in text
