"""Evaluation on hand-made polygons with recall / precision worked out by hand."""
from __future__ import annotations

import json

import geopandas as gpd
import pytest
from shapely.geometry import box

from pipeline.evaluate import evaluate, format_evaluation
from tiles.errors import InputError

X0, Y0 = 500000.0, 2500000.0  # EPSG:4545 metres, near 108E 22.6N


def b(x, y, w, h):
    return box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)


@pytest.fixture
def case():
    """Four truth polygons, six detections; expected outcome written beside each."""
    truth = gpd.GeoDataFrame({
        "TID": ["T1", "T2", "T3", "T4"],
        "TBLX": ["20", "20", "TD", "20"],
        "AREA_M2": [400.0, 10000.0, 400.0, 100.0],  # T4 below 200 m²: not in recall
        "OUTSIDE": [0, 1, 0, 0],                    # ignored
    }, geometry=[
        b(0, 0, 20, 20),        # T1
        b(100, 0, 100, 100),    # T2
        b(300, 0, 20, 20),      # T3
        b(400, 0, 10, 10),      # T4
    ], crs=4545)
    changes = gpd.GeoDataFrame({
        "CID": ["C1", "C2", "C3", "C4", "C5", "C6"],
        "TBLX": ["20", "20", "TD", "TD", "20", "YH"],
        "YXJ": [1, 3, 2, 3, 2, 3],
    }, geometry=[
        # C1 covers 6x20 = 120 m² of T1 = 30 % of T1 (>= 25 %), 120/300 = 40 % of C1: hit
        b(0, 0, 6, 50),
        # C2: 10x10 inside T2 = 1 % of T2 but 100 % of C2: hit (clause 2)
        b(150, 50, 10, 10),
        # C3: 2x20 = 40 m² of T3 = 10 %, 40/200 = 20 % of C3: no hit
        b(318, 0, 10, 20),
        # C4: far from everything: no hit
        b(1000, 1000, 20, 20),
        # C5: covers T4 fully (small truth): hit, counts for precision only
        b(400, 0, 10, 10),
        # C6: 10x20 = 200 m² of T1 = 50 %: hit (T1 found twice; best level 1 from C1)
        b(10, 0, 10, 20),
    ], crs=4545)
    return changes, truth


def test_hand_case(case):
    changes, truth = case
    r = evaluate(changes, truth, min_area_m2=200.0)
    o = r["overall"]
    # recall: T1, T2 found; T3 missed; T4 excluded -> 2/3
    assert (o["truth"], o["truth_hit"]) == (3, 2)
    assert o["recall"] == pytest.approx(2 / 3)
    # precision: C1, C2, C5, C6 hit; C3, C4 miss -> 4/6
    assert (o["changes"], o["changes_hit"]) == (6, 4)
    assert o["precision"] == pytest.approx(4 / 6)
    assert o["f1"] == pytest.approx(2 * (2 / 3) * (4 / 6) / (2 / 3 + 4 / 6))
    # per TBLX: truth 20 = {T1, T2} both found; truth TD = {T3} missed
    assert r["by_tblx"]["20"]["truth"] == 2 and r["by_tblx"]["20"]["recall"] == 1.0
    assert r["by_tblx"]["TD"]["recall"] == 0.0
    # detections 20 = {C1, C2, C5} all hit; TD = {C3, C4} none; YH = {C6} hit
    assert r["by_tblx"]["20"]["precision"] == 1.0
    assert r["by_tblx"]["TD"]["precision"] == 0.0
    assert r["by_tblx"]["YH"]["precision"] == 1.0 and r["by_tblx"]["YH"]["truth"] == 0
    # per YXJ: level 1 = {C1} hit; 2 = {C3, C5} one hit; 3 = {C2, C4, C6} two hit
    y = r["by_yxj"]
    assert [y[k]["precision"] for k in (1, 2, 3)] == pytest.approx([1.0, 0.5, 2 / 3])
    # recall by the most urgent matching level: T1 -> 1 (C1 beats C6), T2 -> 3 (C2)
    assert [y[k]["truth_hit"] for k in (1, 2, 3)] == [1, 0, 1]
    assert [y[k]["recall"] for k in (1, 2, 3)] == pytest.approx([1 / 3, 0.0, 1 / 3])
    assert y[3]["recall_cum"] == pytest.approx(o["recall"])
    json.dumps(r)  # JSON-ready for summary files


def test_boundaries_of_the_rule():
    # small integer coordinates so every area is exact in floating point
    truth = gpd.GeoDataFrame({"AREA_M2": [400.0] * 3}, geometry=[
        box(0, 0, 20, 20), box(100, 0, 120, 20), box(200, 0, 220, 20)], crs=4545)
    changes = gpd.GeoDataFrame(geometry=[
        box(-15, 0, 5, 20),          # 100 m² = exactly 25 % of T1 (and 25 % of C): hit
        box(94.95, 0, 104.95, 20),   # 99 m² = 24.75 % of T2, 49.5 % of C: no hit
        box(215, 0, 225, 2),         # 10 m² = 2.5 % of T3, exactly 50 % of C: hit
    ], crs=4545)
    r = evaluate(changes, truth)
    assert r["overall"]["truth_hit"] == 2 and r["overall"]["changes_hit"] == 2


def test_crs_are_matched(case):
    changes, truth = case
    r1 = evaluate(changes, truth)
    r2 = evaluate(changes, truth.to_crs(4490))
    r3 = evaluate(changes.to_crs(4490), truth.to_crs(4490))
    for r in (r2, r3):
        assert r["overall"] == pytest.approx(r1["overall"])
        assert r["by_yxj"] == r1["by_yxj"]


def test_area_computed_when_missing(case):
    changes, truth = case
    r = evaluate(changes, truth.drop(columns="AREA_M2"))
    # ellipsoidal areas equal the planar ones to < 1 % this close to the central meridian
    assert r["overall"]["truth"] == 3


def test_empty_inputs_and_errors(case):
    changes, truth = case
    r = evaluate(changes.iloc[:0], truth)
    assert r["overall"]["recall"] == 0.0 and r["overall"]["precision"] is None
    r = evaluate(changes, truth.iloc[:0])
    assert r["overall"]["recall"] is None and r["overall"]["precision"] == 0.0
    with pytest.raises(InputError, match="CRS"):
        evaluate(changes.set_crs(None, allow_override=True), truth)


def test_invalid_geometry_repaired(case):
    changes, truth = case
    from shapely.geometry import Polygon
    bow = Polygon([(X0, Y0), (X0 + 20, Y0 + 20), (X0 + 20, Y0), (X0, Y0 + 20)])  # bow-tie on T1
    ch = gpd.GeoDataFrame({"YXJ": [1]}, geometry=[bow], crs=4545)
    r = evaluate(ch, truth)
    assert r["invalid_fixed"]["changes"] == 1
    # the repaired bow-tie covers 200 m² = 50 % of T1
    assert r["overall"]["truth_hit"] == 1


def test_format(case):
    text = format_evaluation(evaluate(*case))
    assert "recall" in text and "precision" in text
    assert "TBLX 20" in text and "YXJ 1" in text and "66.7 %" in text
    assert len(text.splitlines()) < 20


def test_basic_farmland_row(case):
    """Truth on basic farmland (ON_JBNT): T1 and T3; detections on it (JBNTMJ > 0): C1 and C3.
    Recall: T1 found, T3 missed -> 1/2; precision: C1 hits T1, C3 hits nothing -> 1/2."""
    changes, truth = case
    truth = truth.assign(ON_JBNT=[True, False, True, False])
    changes = changes.assign(JBNTMJ=[120.0, 0.0, 50.0, 0.0, 0.0, 0.0])
    r = evaluate(changes, truth, min_area_m2=200.0)
    j = r["on_basic_farmland"]
    assert (j["truth"], j["truth_hit"], j["recall"]) == (2, 1, 0.5)
    assert (j["changes"], j["changes_hit"], j["precision"]) == (2, 1, 0.5)
    assert "on JBNT" in format_evaluation(r)
    # without the truth column there is no such row
    r = evaluate(changes, truth.drop(columns="ON_JBNT"), min_area_m2=200.0)
    assert r["on_basic_farmland"] is None and "on JBNT" not in format_evaluation(r)


def test_confidence_rows(case):
    """Precision per ZXDJ: 高 = {C1, C3, C6} two hit, 中 = {C2, C4} one hit, 低 = {C5} hit;
    a level nobody carries has no row."""
    changes, truth = case
    changes = changes.assign(ZXDJ=["高", "中", "高", "中", "低", "高"])
    r = evaluate(changes, truth, min_area_m2=200.0)
    z = r["by_zxdj"]
    assert list(z) == ["高", "中", "低"]
    assert [(z[k]["changes"], z[k]["changes_hit"]) for k in z] == [(3, 2), (2, 1), (1, 1)]
    assert z["高"]["precision"] == pytest.approx(2 / 3) and z["高"]["recall"] is None
    assert "ZXDJ 高" in format_evaluation(r)
    r = evaluate(changes.assign(ZXDJ="高"), truth)
    assert list(r["by_zxdj"]) == ["高"]
    assert evaluate(*case)["by_zxdj"] == {}
