"""A whole quarter on a small demo region, tiles small enough that objects cross seams.

Asserted against values computed here, independently of the pipeline's own code:
- conservation: every change polygon is in exactly one county package, or in the report's list of
  polygons outside every county;
- object recall of the truth computed with plain shapely, not with pipeline.evaluate;
- identity: JCBH format, uniqueness, county prefix, and the same JCBH after a resumed rerun;
- official area: JCMJ equals the planar Gauss-Kruger area divided by the projection's areal scale
  factor (pyproj Factors), an independent route to the ellipsoidal area.
"""
import json
import re
import zipfile

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
from click.testing import CliRunner
from pyproj import CRS, Proj

from cli import main
from pipeline.demo import make_demo

QUARTER = "2026Q3"
# Recall bound: the detector issue requires >= 0.95 on the full demo. This small scene has ~16
# truth objects >= 200 m2 (one miss costs ~6 %); solar panels (GF) are the hardest type (dark
# panels over dark fields), so up to 3 misses are tolerated here: 0.80.
RECALL_BOUND = 0.80


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    make_demo(out, width=600, height=600, tile_size=256)
    runner = CliRunner()
    args = ["run", "--config", str(out / "demo.toml"), "--quarter", QUARTER, "--workers", "2"]
    first = runner.invoke(main, args)
    return out, first, runner, args


def test_run_finishes_with_every_stage_done(demo_run):
    out, first, _, _ = demo_run
    assert first.exit_code == 0, first.output
    manifest = json.loads((out / "runs" / QUARTER / "run.json").read_text(encoding="utf-8"))
    assert all(s["status"] == "done" for s in manifest["stages"].values())
    assert list(manifest["stages"]) == ["plan", "detect", "merge", "overlay", "batches", "export"]
    plan = json.loads((out / "runs" / QUARTER / "plan.json").read_text(encoding="utf-8"))
    assert len(plan["tiles"]) == 9          # 600 px in tiles of 256: 3 x 3, seams inside objects
    assert len(list((out / "runs" / QUARTER / "tiles").glob("*.parquet"))) == 9


def test_every_polygon_lands_in_exactly_one_package_or_the_outside_list(demo_run):
    out, _, _, _ = demo_run
    run = out / "runs" / QUARTER
    changes = gpd.read_file(run / "changes.gpkg", layer="changes")
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    seen: dict[str, str] = {}
    for package in sorted((run / "packages").glob("*.zip")):
        with zipfile.ZipFile(package) as zf:
            gpkg = next(n for n in zf.namelist() if n.endswith(".gpkg"))
            data = zf.read(gpkg)
        local = run / f"_{package.stem}.gpkg"
        local.write_bytes(data)
        layer = [l for l, _ in pyogrio.list_layers(local) if l == "变化图斑"][0]
        for jcbh in pyogrio.read_dataframe(local, layer=layer, read_geometry=False)["JCBH"]:
            assert jcbh not in seen, f"{jcbh} in {package.name} and {seen[jcbh]}"
            seen[jcbh] = package.name
        local.unlink()
    outside = set(summary["outside_counties"])
    assert not outside & set(seen)
    assert set(seen) | outside == set(changes["JCBH"])
    # every package is named for the county of every polygon in it
    for jcbh, package in seen.items():
        assert package.startswith(jcbh[:6] + "_")
    truth = gpd.read_file(out / "truth.gpkg", layer="truth")
    if truth["OUTSIDE"].astype(bool).any():
        assert outside, "the demo has a true change outside every county; it must be listed"


def test_object_recall_against_the_truth(demo_run):
    out, _, _, _ = demo_run
    changes = gpd.read_file(out / "runs" / QUARTER / "changes.gpkg", layer="changes")
    truth = gpd.read_file(out / "truth.gpkg", layer="truth").to_crs(changes.crs)
    truth = truth[truth.geometry.area >= 200]
    union = changes.geometry.union_all()
    hit = np.array([g.intersection(union).area >= 0.25 * g.area for g in truth.geometry])
    recall = hit.mean()
    assert len(truth) >= 12
    assert recall >= RECALL_BOUND, f"recall {recall:.2f}; missed {truth.loc[~hit, 'TBLX'].tolist()}"


def test_jcbh_identity_and_resume_gives_the_same_result(demo_run):
    out, _, runner, args = demo_run
    run = out / "runs" / QUARTER
    before = gpd.read_file(run / "changes.gpkg", layer="changes")
    assert before["JCBH"].is_unique
    pattern = re.compile(r"^\d{6}2026Q3\d{5}$")
    assert all(pattern.match(j) for j in before["JCBH"])
    inside = before[before["XZQDM"].fillna("") != ""]
    assert (inside["JCBH"].str[:6] == inside["XZQDM"]).all()
    # rerun: every stage is already done, nothing changes
    again = runner.invoke(main, args)
    assert again.exit_code == 0, again.output
    after = gpd.read_file(run / "changes.gpkg", layer="changes")
    assert list(after["JCBH"]) == list(before["JCBH"])
    # rerun from merge: the same polygons get the same JCBH
    redo = runner.invoke(main, args + ["--from", "merge"])
    assert redo.exit_code == 0, redo.output
    redone = gpd.read_file(run / "changes.gpkg", layer="changes")
    assert list(redone["JCBH"]) == list(before["JCBH"])
    np.testing.assert_allclose(redone["JCMJ"], before["JCMJ"])


def test_official_area_is_ellipsoidal(demo_run):
    out, _, _, _ = demo_run
    changes = gpd.read_file(out / "runs" / QUARTER / "changes.gpkg", layer="changes")
    assert len(changes)
    proj = Proj(CRS.from_user_input(changes.crs))
    cent = changes.to_crs(4490).geometry.representative_point()
    scale = np.array(proj.get_factors(cent.x.to_numpy(), cent.y.to_numpy()).areal_scale)
    expected = changes.geometry.area.to_numpy() / scale
    np.testing.assert_allclose(changes["JCMJ"], expected, rtol=2e-4)
    np.testing.assert_allclose(changes["JCMJM"], changes["JCMJ"] * 3 / 2000, rtol=1e-9)


def test_export_rebuilds_packages_and_one_failing_county_does_not_stop_the_others(demo_run):
    """`tianyan export` on the finished run, 2 worker processes: a county whose zip cannot be
    written (a folder stands where the zip goes) is listed as failed, exit 3; the others are rebuilt."""
    out, _, runner, _ = demo_run
    run = out / "runs" / QUARTER
    zips = sorted((run / "packages").glob("*.zip"))
    assert len(zips) >= 2
    blocked = zips[0]
    blocked.unlink()
    blocked.mkdir()
    stamps = {z.name: z.stat().st_mtime_ns for z in zips[1:]}
    r = runner.invoke(main, ["export", "--run", str(run)])
    assert r.exit_code == 3, r.output
    assert f"failed county {blocked.name[:6]}" in r.output
    for z in zips[1:]:
        assert z.stat().st_mtime_ns > stamps[z.name]       # rebuilt
        with zipfile.ZipFile(z) as zf:
            assert "manifest.json" in zf.namelist()
    blocked.rmdir()
    r = runner.invoke(main, ["export", "--run", str(run), "--county", blocked.name[:6]])
    assert r.exit_code == 0, r.output
    assert blocked.is_file()
