"""The optional third date through the pipeline: configuration, placeholders, validation, the
plan's second model, `tianyan run` and `tianyan detect --reference`, and the errors on bad input."""
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cli import main
from detect.detector import detect_tile
from detect.merge import apply_mmu, merge_seams
from pipeline import stages as _stages
from tiles.reader import read_tile
from pipeline.config import load_config
from pipeline.quarter import Quarter
from pipeline.validate import _check_reference_date, validate_inputs
from tiles.errors import ConfigError
from tiles.imagery import fill
from tests.test_ops_validate import variant

QUARTER = "2026Q3"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from pipeline.demo import make_demo

    out = tmp_path_factory.mktemp("reference")
    paths = make_demo(out, width=600, height=600, tile_size=256)
    return out, paths


def _config(demo_dir: Path, tmp_path: Path, replace: dict = ()) -> Path:
    return variant(demo_dir, tmp_path, replace)


def test_last_year_quarter_placeholder():
    assert fill("x/{last_year_quarter}/{quarter}/*.tif", "2026Q1", "2025Q4", "reference") \
        == "x/2025Q1/2026Q1/*.tif"
    with pytest.raises(ConfigError, match=r"\{last_year_quarter\}"):
        fill("x/{year}/*.tif", "2026Q1", "2025Q4", "reference")


def test_a_reference_cloud_mask_without_reference_imagery_is_refused(demo, tmp_path):
    out, _ = demo
    cfg = _config(out, tmp_path, {'reference = "imagery/{last_year_quarter}/*_MS.tif"\n': ""})
    with pytest.raises(ConfigError, match=r"cloud_mask_reference .*\[imagery\]\.reference"):
        load_config(cfg)


@pytest.mark.parametrize("reference, level, words", [
    ("2025-08-20", "OK", "days from one year before"),
    ("2025-06-10", "WARN", "74 days before 2025-08-23"),
    ("2026-06-01", "ERROR", "not earlier than before date 2026-05-18"),
])
def test_reference_date_against_the_pair(reference, level, words):
    (got, what, message), = _check_reference_date(reference, "2026-05-18", "2026-08-23")
    assert (got, what) == (level, "dates") and words in message, message


def test_validate_reads_the_demo_reference(demo, tmp_path):
    out, _ = demo
    found = [f for f in validate_inputs(load_config(_config(out, tmp_path)), Quarter(2026, 3))
             if f[1] == "imagery.reference"]
    assert found and found[0][0] == "OK" and "blue,green,red,nir" in found[0][2]


def test_run_fits_a_second_model_and_records_it(demo, tmp_path):
    out, paths = demo
    cfg = _config(out, tmp_path)
    result = CliRunner().invoke(main, ["run", "--config", str(cfg), "--quarter", QUARTER,
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / QUARTER
    plan = json.loads((run / "plan.json").read_text(encoding="utf-8"))
    manifest = json.loads((run / "run.json").read_text(encoding="utf-8"))
    assert plan["reference"]["files"] == [str(paths["reference"])]
    assert plan["reference"]["cloud_masks"] == [str(paths["cloud_reference"])]
    ref_model, model = plan["reference_model"], plan["model"]
    assert ref_model["converged"] and len(ref_model["gain"]) == 4
    assert ref_model["gain"] != model["gain"]          # another pair, another normalisation
    assert manifest["reference_model"] == ref_model
    assert manifest["dates"]["reference"].startswith("2025-")
    assert str(paths["reference"]) in manifest["inputs"]
    # per tile, the parts count the changed core pixels the reference sees and the ones new
    # since it: recomputed here for one tile straight from the reader and the detector
    parts = {t["id"]: gpd.read_parquet(run / "tiles" / f"{t['id']}.parquet") for t in plan["tiles"]}
    tid = max((k for k in parts if len(parts[k])), key=lambda k: parts[k].N_REFSEEN.sum())
    t = next(t for t in plan["tiles"] if t["id"] == tid)
    grid, before, after, model, params, reference = (_stages._worker_plan(str(run))[i]
                                                     for i in (1, 2, 3, 4, 5, 6))
    tile = _stages._tile_from_plan(t)
    b, a, v, r, rv = read_tile(before, after, reference.date, grid, tile.halo)
    two = detect_tile(b, a, v, before.roles, model, params)
    three = detect_tile(b, a, v, before.roles, model, params, reference=r, reference_valid=rv,
                        reference_model=reference.model)
    core = tile.core_in_halo
    assert (three.changed == two.changed).all()           # the pixels stay the two dates'
    changed = two.changed[core]
    assert parts[tid].NPIX.sum() == changed.sum()
    assert parts[tid].N_REFSEEN.sum() == (changed & rv[core]).sum() > 0
    assert parts[tid].N_REFNEW.sum() == (changed & three.reference_new[core]).sum()
    assert not (three.reference_new & ~rv).any()
    # the verdict on the merged objects, by the rule written out here: MMU 200 m² of 4 m² px
    objs = merge_seams(gpd.GeoDataFrame(pd.concat(parts.values(), ignore_index=True),
                                        crs=plan["grid"]["crs"]))
    big = apply_mmu(objs, params.min_area_m2, params.mmu_outline_px)
    seasonal = big[(big.N_REFSEEN >= np.minimum(50, big.NPIX / 2))
                   & (big.N_REFNEW < np.minimum(50, big.N_REFSEEN / 2))]
    assert manifest["reference_veto"]["polygons"] == len(seasonal) > 0
    assert manifest["reference_veto"]["area_m2"] == pytest.approx(seasonal.NPIX.sum() * 4.0)
    changes = gpd.read_file(run / "changes.gpkg", layer="changes")
    assert len(changes) == len(big) - len(seasonal)
    # confidence: the reference saw the object (>= min(50 px, half of it)) or not; with the
    # check, 高 needs chi-square, index rule and the check (no previous quarter in this run)
    kept = big.drop(seasonal.index)
    seen = kept.N_REFSEEN >= np.minimum(50, kept.NPIX / 2)
    votes = ((kept.S_P / kept.NPIX >= 0.99).astype(int) + (kept.N_STRONG / kept.NPIX >= 0.5)
             + seen.astype(int))
    expect = np.select([votes >= 3, votes == 2], ["高", "中"], "低")
    assert (sorted(zip(changes.REFCHK, changes.ZXDJ))
            == sorted(zip(seen.astype(float), expect)))
    assert (~seen).any() and seen.any()            # both kinds occur in the demo
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert summary["reference"]["vetoed_polygons"] == len(seasonal)
    assert summary["reference"]["vetoed_mu"] == pytest.approx(seasonal.NPIX.sum() * 4.0 * 3 / 2000,
                                                              abs=0.01)
    assert "参考时相（去年同季）" + manifest["dates"]["reference"] in \
        (run / "report.html").read_text(encoding="utf-8")


def test_a_reference_glob_that_finds_nothing_stops_the_run(demo, tmp_path):
    out, _ = demo
    cfg = _config(out, tmp_path, {"{last_year_quarter}/*_MS.tif": "{last_year_quarter}/*_XS.tif"})
    result = CliRunner().invoke(main, ["run", "--config", str(cfg), "--quarter", QUARTER])
    assert result.exit_code == 2, result.output
    assert "reference" in result.output and "*_XS.tif" in result.output
    assert "Traceback" not in result.output


def test_a_reference_later_than_the_before_date_stops_the_run(demo, tmp_path):
    out, _ = demo
    cfg = _config(out, tmp_path, {'[imagery]\n': '[imagery]\nreference_date = "2026-06-01"\n'})
    result = CliRunner().invoke(main, ["run", "--config", str(cfg), "--quarter", QUARTER])
    assert result.exit_code == 2, result.output
    assert "reference date 2026-06-01 is not earlier than the before date" in result.output


def test_detect_command_with_a_reference_drops_seasonal_polygons_only(demo, tmp_path):
    """`tianyan detect --reference`: the polygons kept are a subset of the two-date ones, fewer
    of them, and every true change the two dates found on a field cropped a year ago is still
    found."""
    _, paths = demo
    runner = CliRunner()
    two, three = tmp_path / "two.gpkg", tmp_path / "three.gpkg"
    for out, extra in ((two, []), (three, ["--reference", str(paths["reference"])])):
        r = runner.invoke(main, ["detect", str(paths["before"]), str(paths["after"]), "-o", str(out),
                                 "--tile-size", "256", *extra])
        assert r.exit_code == 0, r.output
    a, b = gpd.read_file(two), gpd.read_file(three)
    assert 0 < len(b) < len(a)
    assert b.union_all().difference(a.union_all().buffer(0.01)).area == pytest.approx(0, abs=1.0)
    truth = gpd.read_file(paths["truth"], layer="truth").to_crs(a.crs)
    found_two = truth[truth.intersects(a.union_all())]
    found_three = truth[truth.intersects(b.union_all())]
    assert len(found_three) >= 0.9 * len(found_two)


def test_detect_command_names_a_missing_reference(demo, tmp_path):
    _, paths = demo
    r = CliRunner().invoke(main, ["detect", str(paths["before"]), str(paths["after"]), "-o",
                                  str(tmp_path / "x.gpkg"), "--reference", str(tmp_path / "no.tif")])
    assert r.exit_code == 2 and "no.tif: file not found" in r.output


def test_a_reference_clouded_all_over_stops_the_run_naming_it(demo, tmp_path):
    """No clear pixel shared by the reference and the after date: no second model can be fitted;
    the run stops naming the reference file instead of silently running on two dates."""
    import rasterio

    out, paths = demo
    with rasterio.open(paths["cloud_reference"]) as src:
        profile, shape = src.profile, src.shape
    overcast = tmp_path / "overcast.tif"
    with rasterio.open(overcast, "w", **profile) as dst:
        dst.write(np.ones((1, *shape), dtype=profile["dtype"]))
    cfg = _config(out, tmp_path, {'"imagery/{last_year_quarter}/*_cloud.tif"': f'"{overcast}"'})
    result = CliRunner().invoke(main, ["run", "--config", str(cfg), "--quarter", QUARTER])
    assert result.exit_code == 2, result.output
    assert f"{paths['reference']}: the reference date cannot be compared with the after date" \
        in result.output
    assert "Traceback" not in result.output


def test_detect_command_warps_a_reference_in_another_crs(demo, tmp_path):
    """A reference delivered in UTM 49N at 2.5 m (last year's scene from another product line)
    is warped onto the before grid: the polygons kept are nearly those of the same-grid run."""
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    _, paths = demo
    utm = tmp_path / "reference_utm.tif"
    with rasterio.open(paths["reference"]) as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:32649", src.width, src.height, *src.bounds, resolution=2.5)
        profile = dict(src.profile, crs="EPSG:32649", transform=transform, width=width,
                       height=height)
        with rasterio.open(utm, "w", **profile) as dst:
            for b in range(1, src.count + 1):
                out = np.zeros((height, width), np.uint16)
                reproject(rasterio.band(src, b), out, dst_transform=transform,
                          dst_crs="EPSG:32649", resampling=Resampling.bilinear, src_nodata=0,
                          dst_nodata=0)
                dst.write(out, b)
    runner = CliRunner()
    same, warped = tmp_path / "same.gpkg", tmp_path / "warped.gpkg"
    for out, ref in ((same, paths["reference"]), (warped, utm)):
        r = runner.invoke(main, ["detect", str(paths["before"]), str(paths["after"]), "-o", str(out),
                                 "--tile-size", "256", "--reference", str(ref)])
        assert r.exit_code == 0, r.output
    a, b = gpd.read_file(same), gpd.read_file(warped)
    assert b.crs == a.crs and len(b) > 0
    inter = a.union_all().intersection(b.union_all()).area
    assert inter >= 0.9 * max(a.union_all().area, b.union_all().area)
