"""The registry across quarters: repeats get QQJCBH, judged repeats that did not grow are held back,
what a run issued is recorded idempotently, verdicts survive reruns, the file is replaced atomically.

Polygons are squares in EPSG:4545 whose areas, overlaps and growth factors are worked out by hand
in the comments; the real-data test checks the choice of the earlier polygon on real, dirty
parcels against a brute-force search in plain shapely.
"""
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from shapely.geometry import box

from pipeline.config import config_from_dict
from pipeline.registry import (REGISTRY_CRS, RegistryParams, STATUS_WITHDRAWN, apply_verdicts,
                               empty_registry, match_earlier, read_registry, record_issued,
                               register_issued, registry_path, write_registry)
from tiles.errors import ConfigError, InputFileError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CRS = "EPSG:4545"
X0, Y0 = 430_000.0, 2_380_000.0   # near Beihai, CGCS2000 GK CM 108E


def sq(x, y, w, h=None):
    """A w x h m rectangle with its lower-left corner x, y m from (X0, Y0)."""
    return box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + (w if h is None else h))


def earlier(rows, quarter="2026Q2"):
    """A registry holding ``rows`` = [(JCBH, geometry, HCJG)] issued in ``quarter``."""
    gdf = gpd.GeoDataFrame({"JCBH": [r[0] for r in rows], "XZQDM": ["450502"] * len(rows),
                            "XZQMC": ["海城区"] * len(rows), "JCMJ": [r[1].area for r in rows]},
                           geometry=[r[1] for r in rows], crs=CRS)
    reg = register_issued(empty_registry(), gdf, quarter=quarter, counties={"450502"}, run_id="r0",
                          issue_date="2026-07-01")
    verdicts = pd.DataFrame({"JCBH": [r[0] for r in rows], "HCJG": [r[2] for r in rows],
                             "HCRQ": ["2026-07-20"] * len(rows)})
    return apply_verdicts(reg, verdicts[verdicts["HCJG"] != ""], received="2026-07-21", source="t.zip")


def changes(*geoms):
    n = len(geoms)
    return gpd.GeoDataFrame({"XZQDM": ["450502"] * n, "JCMJ": [g.area for g in geoms], "JD": [109.1] * n,
                             "WD": [21.5] * n}, geometry=list(geoms), crs=CRS)


P = RegistryParams()   # min_overlap 0.1, max_growth 1.2, suppress 合法 / 伪变化


def test_repeat_inside_a_legal_polygon_is_suppressed_with_the_reason():
    reg = earlier([("4505022026Q200001", sq(0, 0, 100), "合法")])
    new = changes(sq(10, 10, 80))                  # inside: growth 6400 / 6400 = 1.0
    issued, suppressed = match_earlier(new, reg, "2026Q3", P)
    assert len(issued) == 0 and len(suppressed) == 1
    s = suppressed[0]
    assert s["QQJCBH"] == "4505022026Q200001" and s["HCJG"] == "合法" and s["JCJD"] == "2026Q2"
    assert s["growth"] == pytest.approx(1.0, abs=1e-6)
    assert "4505022026Q200001" in s["reason"] and "合法" in s["reason"]


@pytest.mark.parametrize("height,suppressed", [
    (118, True),    # 100 x 118 over a 100 x 100 judged polygon: growth 1.18 <= 1.2
    (120, True),    # exactly 1.2: not "beyond" the factor
    (125, False),   # 1.25 > 1.2: grew, issued again with the link
])
def test_growth_beyond_the_factor_is_issued_again(height, suppressed):
    reg = earlier([("4505022026Q200001", sq(0, 0, 100), "伪变化")])
    new = changes(sq(0, 0, 100, height))
    issued, held = match_earlier(new, reg, "2026Q3", P)
    assert (len(held) == 1) is suppressed
    if not suppressed:
        assert issued["QQJCBH"].tolist() == ["4505022026Q200001"]
    else:
        assert held[0]["growth"] == pytest.approx(height / 100, rel=1e-6)


def test_repeats_of_illegal_or_unjudged_polygons_are_issued_with_qqjcbh():
    reg = earlier([("4505022026Q200001", sq(0, 0, 100), "违法"), ("4505022026Q200002", sq(500, 0, 100), "")])
    new = changes(sq(10, 10, 50), sq(510, 10, 50), sq(1000, 0, 50))
    issued, held = match_earlier(new, reg, "2026Q3", P)
    assert held == []
    assert issued["QQJCBH"].tolist() == ["4505022026Q200001", "4505022026Q200002", ""]


def test_the_latest_quarter_decides():
    """Judged 合法 in Q1, the same ground judged 违法 in Q2: the Q2 verdict holds, no suppression."""
    reg = pd.concat([earlier([("4505022026Q100001", sq(0, 0, 100), "合法")], "2026Q1"),
                     earlier([("4505022026Q200001", sq(0, 0, 60), "违法")], "2026Q2")], ignore_index=True)
    reg = gpd.GeoDataFrame(reg, crs=REGISTRY_CRS)
    issued, held = match_earlier(changes(sq(0, 0, 100)), reg, "2026Q3", P)
    assert held == [] and issued["QQJCBH"].tolist() == ["4505022026Q200001"]


def test_small_overlaps_same_or_later_quarters_and_withdrawn_are_not_repeats():
    reg = pd.concat([earlier([("4505022026Q200001", sq(0, 0, 100), "合法")]),
                     earlier([("4505022026Q300009", sq(500, 0, 100), "合法")], "2026Q3"),
                     earlier([("4505022026Q400001", sq(1000, 0, 100), "合法")], "2026Q4"),
                     earlier([("4505022026Q200002", sq(1500, 0, 100), "合法")])], ignore_index=True)
    reg = gpd.GeoDataFrame(reg, crs=REGISTRY_CRS)
    reg.loc[reg["JCBH"] == "4505022026Q200002", "ZT"] = STATUS_WITHDRAWN
    # a 50 x 50 square overlapping the first by 4 m x 50 m = 200 m2 < 0.1 x 2500 m2
    new = changes(sq(96, 0, 50), sq(510, 10, 50), sq(1010, 10, 50), sq(1510, 10, 50))
    issued, held = match_earlier(new, reg, "2026Q3", P)
    assert held == [] and issued["QQJCBH"].tolist() == ["", "", "", ""]
    # 6 m x 50 m = 300 m2 >= 250 m2: a repeat (and inside judged ground by 300/2500: grew 8.3x)
    issued, held = match_earlier(changes(sq(94, 0, 50)), reg, "2026Q3", P)
    assert held == [] and issued["QQJCBH"].tolist() == ["4505022026Q200001"]


def test_disabled_registry_changes_nothing(tmp_path):
    from pipeline.registry import link_to_earlier

    write_registry(earlier([("4505022026Q200001", sq(0, 0, 100), "合法")]), registry_path(tmp_path))
    issued, held = link_to_earlier(tmp_path, changes(sq(10, 10, 50)), "2026Q3", {"enabled": False})
    assert held == [] and issued["QQJCBH"].tolist() == [""]
    issued, held = link_to_earlier(tmp_path, changes(sq(10, 10, 50)), "2026Q3", {})
    assert len(held) == 1 and len(issued) == 0


@pytest.mark.parametrize("settings,key", [
    ({"min_overlap": 0}, "min_overlap"), ({"max_growth": 0.9}, "max_growth"),
    ({"suppress_verdicts": ["合规"]}, "suppress_verdicts")])
def test_bad_registry_settings_name_the_key(settings, key):
    with pytest.raises(ConfigError, match=rf"\[registry\]\.{key}"):
        RegistryParams.from_dict(settings)


def test_registry_keys_are_checked_by_the_config(tmp_path):
    base = {"imagery": {"before": "a", "after": "b"}, "layers": {"counties": {"path": "x.gpkg"}}}
    cfg = config_from_dict({**base, "registry": {"max_growth": 2}}, tmp_path / "c.toml")
    assert cfg.registry["max_growth"] == 2.0 and cfg.registry["suppress_verdicts"] == ["合法", "伪变化"]
    with pytest.raises(ConfigError, match=r"\[registry\]\.max_grow"):
        config_from_dict({**base, "registry": {"max_grow": 2}}, tmp_path / "c.toml")


# ---------------------------------------------------------------------------------------------
def _issued(n=3, quarter_code="2026Q3"):
    geoms = [sq(200 * i, 0, 100) for i in range(n)]
    return gpd.GeoDataFrame({"JCBH": [f"450502{quarter_code}{i + 1:05d}" for i in range(n)], "XZQDM": "450502",
                             "XZQMC": "海城区", "JCMJ": [g.area for g in geoms], "GDMJ": 5000.0, "YXJ": 1,
                             "TBLX": "20", "PCBH": "P01"}, geometry=geoms, crs=CRS)


def test_registering_is_idempotent_and_keeps_verdicts(tmp_path):
    path = registry_path(tmp_path)
    kw = dict(quarter="2026Q3", counties={"450502"}, run_id="r1", issue_date="2026-10-10")
    once = register_issued(empty_registry(), _issued(), **kw)
    twice = register_issued(once, _issued(), **kw)
    pd.testing.assert_frame_equal(once.drop(columns="geometry"), twice.drop(columns="geometry"))
    assert set(once["ZT"]) == {"已下发"} and set(once["JCJD"]) == {"2026Q3"}
    judged = apply_verdicts(twice, pd.DataFrame({"JCBH": ["4505022026Q300002"], "HCJG": ["违法"],
                                                 "HCRQ": ["2026-10-20"], "ZGZT": ["拆除"]}),
                            received="2026-10-21T08:00:00", source="r.zip")
    write_registry(judged, path)
    again = register_issued(read_registry(path), _issued(), **kw)   # e.g. `tianyan export` again
    row = again.set_index("JCBH").loc["4505022026Q300002"]
    assert (row["HCJG"], row["ZGZT"], row["ZT"], row["HSWJ"]) == ("违法", "拆除", "已核查", "r.zip")
    # geometry stored in CGCS2000 lon/lat, the same place
    back = read_registry(path).to_crs(CRS)
    assert back.geometry.iloc[0].symmetric_difference(sq(0, 0, 100)).area < 1e-3
    assert read_registry(path).crs.to_epsg() == 4490


def test_a_rerun_that_drops_a_judged_polygon_withdraws_it():
    kw = dict(quarter="2026Q3", counties={"450502"}, run_id="r1", issue_date="2026-10-10")
    reg = register_issued(empty_registry(), _issued(3), **kw)
    reg = apply_verdicts(reg, pd.DataFrame({"JCBH": ["4505022026Q300003"], "HCJG": ["合法"],
                                            "HCRQ": ["2026-10-20"]}), received="t", source="s")
    reg = register_issued(reg, _issued(2), **kw)       # the quarter rerun gives two polygons
    by = reg.set_index("JCBH")
    assert by.loc["4505022026Q300003", "ZT"] == STATUS_WITHDRAWN and by.loc["4505022026Q300003", "HCJG"] == "合法"
    assert len(reg) == 3
    # another county's and another quarter's rows are untouched
    other = _issued(1, "2026Q2")
    reg2 = register_issued(reg, other, quarter="2026Q2", counties={"450502"}, run_id="r0", issue_date="")
    assert len(reg2) == 4 and set(reg2["JCJD"]) == {"2026Q2", "2026Q3"}


def test_a_failed_write_leaves_the_old_registry(tmp_path, monkeypatch):
    path = registry_path(tmp_path)
    write_registry(register_issued(empty_registry(), _issued(2), quarter="2026Q3", counties={"450502"},
                                   run_id="r", issue_date=""), path)
    before = path.read_bytes()

    def crash(df, tmp, **kw):
        Path(tmp).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pyogrio, "write_dataframe", crash)
    with pytest.raises(OSError):
        write_registry(register_issued(empty_registry(), _issued(3), quarter="2026Q3", counties={"450502"},
                                       run_id="r", issue_date=""), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["registry.gpkg"]


def test_an_unreadable_registry_is_named(tmp_path):
    path = registry_path(tmp_path)
    path.write_bytes(b"not a geopackage")
    with pytest.raises(InputFileError, match="registry.gpkg"):
        read_registry(path)


def test_record_issued_waits_for_the_registry_lock(tmp_path):
    """An ingest holding the registry lock: the export's update waits, then writes."""
    import threading
    import time

    from pipeline.registry import LOCK_NAME
    from pipeline.rundir import WorkdirLock

    done = []
    lock = WorkdirLock(tmp_path, name=LOCK_NAME)
    lock.acquire()
    worker = threading.Thread(target=lambda: done.append(record_issued(
        tmp_path, _issued(), quarter="2026Q3", counties=["450502"], run_id="r", issue_date="2026-10-10",
        settings={})))
    worker.start()
    time.sleep(0.6)
    assert not done and not registry_path(tmp_path).exists()
    lock.release()
    worker.join(timeout=60)
    assert len(read_registry(done[0])) == 3 and not (tmp_path / LOCK_NAME).exists()


# ---------------------------------------------------------------------------------------------
def test_overlay_stage_links_suppresses_and_scores_repeats(tmp_path):
    """stage_overlay with the registry: one suppressed, one linked (+ repeat bonus), one new."""
    from pipeline.rundir import RunDir
    from pipeline.stages import Outcome, read_changes, stage_overlay

    county = gpd.GeoDataFrame({"XZQDM": ["450502"], "XZQMC": ["海城区"]},
                              geometry=[sq(-1000, -1000, 5000)], crs=CRS).to_crs(4490)
    county.to_file(tmp_path / "xzq.gpkg", layer="XZQ", driver="GPKG")
    raw = {"imagery": {"before": "a", "after": "b"}, "run": {"workdir": "runs"},
           "layers": {"counties": {"path": "xzq.gpkg", "layer": "XZQ"}}}
    objects = gpd.GeoDataFrame({"TBLX": ["20"] * 3, "ZXD": [0.9] * 3, "ZXDJ": ["高"] * 3},
                               geometry=[sq(10, 10, 80), sq(510, 10, 60), sq(1500, 1500, 40)], crs=CRS)
    results = {}
    for enabled in (True, False):
        cfg = config_from_dict({**raw, "registry": {"enabled": enabled}}, tmp_path / "c.toml")
        rd = RunDir(cfg.workdir, "2026Q3")
        rd.create()
        objects.to_parquet(rd.path / "objects.parquet")
        write_registry(earlier([("4505022026Q200001", sq(0, 0, 100), "合法"),
                                ("4505022026Q200002", sq(500, 0, 100), "违法")]), registry_path(cfg.workdir))
        stage_overlay(cfg, __import__("pipeline.quarter", fromlist=["Quarter"]).Quarter(2026, 3), rd,
                      {"dates": {"before": "2026-05-01", "after": "2026-08-01"}}, Outcome())
        results[enabled] = (read_changes(rd.path / "changes.gpkg"),
                            json.loads((rd.path / "overlay_report.json").read_text(encoding="utf-8")))
    on, report = results[True]
    off, _ = results[False]
    assert len(on) == 2 and len(off) == 3
    assert [s["QQJCBH"] for s in report["suppressed"]] == ["4505022026Q200001"]
    linked = on[on["QQJCBH"] == "4505022026Q200002"]
    assert len(linked) == 1
    same = off[np.isclose(off["JCMJ"], linked["JCMJ"].iloc[0])]
    assert linked["YXJF"].iloc[0] == pytest.approx(same["YXJF"].iloc[0] + 10.0)   # repeat_bonus
    assert sorted(on["JCBH"]) == ["4505022026Q300001", "4505022026Q300002"]       # no gap for it


@pytest.mark.parametrize("p_mean, evidf, persistent, level", [
    (0.995, 0.6, None, "高"), (0.995, 0.2, None, "中"), (0.5, 0.2, None, "低"),
    (0.995, 0.2, True, "高"), (0.5, 0.6, True, "高"), (0.5, 0.2, True, "中"), (0.995, 0.2, False, "中")])
def test_confidence_level_counts_independent_signals(p_mean, evidf, persistent, level):
    from detect.classify import confidence_level

    got = confidence_level([p_mean], [evidf], None if persistent is None else [persistent])
    assert got.tolist() == [level]


@pytest.mark.parametrize("p_mean, evidf, persistent, check, level", [
    (0.995, 0.6, None, 1.0, "高"),            # chi-square, index rule, confirmed by the reference
    (0.995, 0.6, None, 0.0, "中"),            # the reference could not see it: one short
    (0.995, 0.6, True, 0.0, "高"),            # ... but it persists from the previous quarter
    (0.995, 0.2, None, 1.0, "中"), (0.5, 0.2, None, 1.0, "低"), (0.5, 0.2, True, 1.0, "中"),
    (0.995, 0.6, None, np.nan, "高")])        # no reference date for this object: two suffice
def test_confidence_level_with_a_reference_check_needs_one_signal_more(p_mean, evidf, persistent,
                                                                       check, level):
    from detect.classify import confidence_level

    got = confidence_level([p_mean], [evidf], None if persistent is None else [persistent], [check])
    assert got.tolist() == [level]


def test_persistence_with_the_previous_quarter_raises_zxdj(tmp_path):
    """Chi-square alone gives 中; covering a 2026Q2 polygon gives 高 in 2026Q3, a 2026Q1 one not."""
    from pipeline.quarter import Quarter
    from pipeline.rundir import RunDir
    from pipeline.stages import Outcome, read_changes, stage_overlay

    county = gpd.GeoDataFrame({"XZQDM": ["450502"], "XZQMC": ["海城区"]},
                              geometry=[sq(-1000, -1000, 5000)], crs=CRS).to_crs(4490)
    county.to_file(tmp_path / "xzq.gpkg", layer="XZQ", driver="GPKG")
    cfg = config_from_dict({"imagery": {"before": "a", "after": "b"}, "run": {"workdir": "runs"},
                            "layers": {"counties": {"path": "xzq.gpkg", "layer": "XZQ"}}},
                           tmp_path / "c.toml")
    geoms = [sq(10, 10, 80), sq(510, 10, 60), sq(1500, 1500, 40)]
    objects = gpd.GeoDataFrame({"TBLX": ["20"] * 3, "P_MEAN": [0.999] * 3, "EVIDF": [0.1] * 3,
                                "ZXD": [0.55] * 3, "ZXDJ": ["中"] * 3}, geometry=geoms, crs=CRS)
    reg = pd.concat([earlier([("4505022026Q200001", sq(0, 0, 100), "")], quarter="2026Q2"),
                     earlier([("4505022026Q100001", sq(500, 0, 100), "")], quarter="2026Q1")])
    write_registry(gpd.GeoDataFrame(reg, crs=REGISTRY_CRS), registry_path(cfg.workdir))
    rd = RunDir(cfg.workdir, "2026Q3")
    rd.create()
    objects.to_parquet(rd.path / "objects.parquet")
    stage_overlay(cfg, Quarter(2026, 3), rd, {"dates": {"before": "2026-05-01", "after": "2026-08-01"}},
                  Outcome())
    got = read_changes(rd.path / "changes.gpkg").set_index("QQJCBH")["ZXDJ"].to_dict()
    assert got == {"4505022026Q200001": "高", "4505022026Q100001": "中", "": "中"}


# ---------------------------------------------------------------------------------------------
PARCELS = DATA / "parcels_france" / "import-gpkg-test.gpkg"


@pytest.mark.skipif(not PARCELS.exists(), reason=f"real test data absent: {PARCELS}")
def test_partner_choice_on_real_dirty_parcels_matches_brute_force():
    """193 real parcels (shared edges, 4 overlaps > 1 m2) as last quarter; each parcel shrunk by
    2 m as this quarter. The chosen partner must be the one a plain double loop finds."""
    import shapely

    parcels = gpd.read_file(PARCELS, layer="lpis_iacs")
    parcels["geometry"] = shapely.make_valid(parcels.geometry.to_numpy())
    old = gpd.GeoDataFrame({"JCBH": [f"4505022026Q2{i + 1:05d}" for i in range(len(parcels))],
                            "XZQDM": "450502", "JCMJ": parcels.area}, geometry=parcels.geometry, crs=parcels.crs)
    reg = register_issued(empty_registry(), old, quarter="2026Q2", counties={"450502"}, run_id="", issue_date="")
    new = gpd.GeoDataFrame({"XZQDM": ["450502"] * len(parcels)}, geometry=parcels.geometry.buffer(-2.0).to_numpy(),
                           crs=parcels.crs)
    new = new[~new.geometry.is_empty].reset_index(drop=True)
    issued, held = match_earlier(new, reg, "2026Q3", RegistryParams())
    assert held == []                                   # nothing judged yet
    olds = reg.to_crs(parcels.crs)
    expected = []
    for g in new.geometry:
        best, best_area = "", 0.0
        for jcbh, h in zip(olds["JCBH"], olds.geometry):
            a = g.intersection(h).area
            if a >= 0.1 * min(g.area, h.area) and a > best_area + 1e-6:
                best, best_area = jcbh, a
        expected.append(best)
    assert issued["QQJCBH"].tolist() == expected
    assert sum(e == "" for e in expected) == 0


def test_a_killed_writer_s_temp_file_is_removed_under_the_lock(tmp_path):
    stale = tmp_path / ".registry.k3j2.tmp.gpkg"
    stale.write_bytes(b"half")
    keep = tmp_path / ".lock"
    keep.write_text("")
    record_issued(tmp_path, _issued(), quarter="2026Q3", counties=["450502"], run_id="r",
                  issue_date="2026-10-10", settings={})
    assert not stale.exists() and keep.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "registry.gpkg"]
