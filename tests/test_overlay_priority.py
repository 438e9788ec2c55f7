"""Priority: the default weights reproduce the policy order of DOMAIN.md on hand-made polygons."""
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from overlay.overlay import overlay_changes
from overlay.priority import DEFAULT_PRIORITY, prioritize, priority_from_dict
from tiles.errors import ConfigError

X0, Y0 = 500_000.0, 3_000_000.0


def box(x0, y0, x1, y1):
    return shapely.box(X0 + x0, Y0 + y0, X0 + x1, Y0 + y1)


def write(tmp_path, name, geoms, **data):
    path = tmp_path / name
    gpd.GeoDataFrame(data or {"BSM": range(len(geoms))}, geometry=geoms, crs=4545).to_file(path)
    return {"path": path}


@pytest.fixture
def ranked(tmp_path):
    """Seven 40 m x 40 m polygons (2.4 亩) in a row, measured against real layer files."""
    cells = {name: box(100 * i, 0, 100 * i + 40, 40) for i, name in enumerate(
        ["jbnt_house", "redline_house", "core_house", "farm_house", "farm_pond", "bare_house", "approved_house"])}
    farmland = [cells[k] for k in ("jbnt_house", "farm_house", "farm_pond", "approved_house")]
    layers = {
        "counties": {**write(tmp_path, "xzq.gpkg", [box(-1000, -1000, 2000, 1000)], XZQDM=["450502"]),
                     "code_field": "XZQDM"},
        "farmland": write(tmp_path, "gd.gpkg", farmland),
        "basic_farmland": write(tmp_path, "jbnt.gpkg", [cells["jbnt_house"], cells["approved_house"]]),
        "ecological_redline": write(tmp_path, "sthx.gpkg", [cells["redline_house"]]),
        "protected_areas": {**write(tmp_path, "zrbhd.gpkg", [cells["core_house"]], GNFQ=["核心保护区"]),
                            "zone_field": "GNFQ", "core_values": ["核心保护区"]},
        "approved": write(tmp_path, "pzyd.gpkg", [cells["approved_house"]]),
    }
    tblx = ["20", "20", "20", "20", "KT", "20", "20"]
    ch = gpd.GeoDataFrame({"TBLX": tblx, "ZXD": 0.9, "ZXDJ": "高"}, geometry=list(cells.values()), crs=4545,
                          index=list(cells))
    out, _ = overlay_changes(ch, layers)
    return prioritize(out)


def test_policy_order(ranked):
    s = ranked["YXJF"]
    assert s["jbnt_house"] > s["redline_house"] > s["farm_house"] > s["farm_pond"] > s["bare_house"]
    assert s["jbnt_house"] > s["core_house"] > s["farm_house"]
    # inside approved land: far lower than the same house on basic farmland outside it
    assert s["approved_house"] < 0.5 * s["jbnt_house"]
    assert list(ranked.loc[["jbnt_house", "redline_house", "core_house", "farm_house"], "YXJ"]) == [1, 1, 1, 2]
    assert ranked.loc["bare_house", "YXJ"] == 3


def test_reason_text(ranked):
    assert ranked.loc["jbnt_house", "YXJLY"] == "占永久基本农田2.4亩；占耕地2.4亩；疑似建(构)筑物；置信度高"
    assert ranked.loc["core_house", "YXJLY"] == "占自然保护地核心保护区2.4亩；疑似建(构)筑物；置信度高"
    assert ranked.loc["farm_pond", "YXJLY"] == "占耕地2.4亩；疑似坑塘/水面；置信度高"
    assert ranked.loc["approved_house", "YXJLY"].endswith("位于已批建设用地内")
    assert ranked["YXJ"].dtype == np.int64


def test_hand_computed_score():
    mu = 2000 / 3
    df = pd.DataFrame({"JCMJ": [2 * mu], "JBNTMJ": [mu], "GDMJ": [2 * mu], "PZMJ": [0.5 * mu],
                       "TBLX": ["YH"], "ZXD": [0.6], "QQJCBH": ["4505022026Q200003"]})
    out = prioritize(df)
    w = DEFAULT_PRIORITY
    layer = w["hit"]["JBNTMJ"] + w["hit"]["GDMJ"] + w["per_mu"]["JBNTMJ"] * 1 + w["per_mu"]["GDMJ"] * 2 + 2
    expected = 0.9 * 0.8 * (1 - 0.8 * 0.25) * layer + 10
    assert out["YXJF"].iloc[0] == pytest.approx(round(expected, 2))
    assert "置信度中" in out["YXJLY"].iloc[0] and "前期图斑4505022026Q200003重复出现" in out["YXJLY"].iloc[0]
    assert "部分位于已批建设用地0.5亩" in out["YXJLY"].iloc[0]


def test_repeat_bonus_and_custom_weights():
    df = pd.DataFrame({"JCMJ": [1000.0, 1000.0], "TBLX": ["QT", "QT"], "QQJCBH": ["", "X"]})
    out = prioritize(df, {"repeat_bonus": 50, "level1_min": 45, "tblx": {"QT": 1.0}})
    assert out["YXJF"].iloc[1] - out["YXJF"].iloc[0] == pytest.approx(50)
    assert list(out["YXJ"]) == [3, 1]


@pytest.mark.parametrize("table, match", [
    ({"bonus": 1}, "unknown key 'bonus'"),
    ({"hit": {"XYZ": 1}}, r"\[priority.hit\] unknown key 'XYZ'"),
    ({"per_mu": {"GDMJ": "3"}}, "per_mu.GDMJ = '3'"),
    ({"approved_discount": 1.5}, "approved_discount"),
    ({"level1_min": 1, "level2_min": 2}, "level1_min"),
    ({"repeat_bonus": -1}, "negative"),
    ({"confidence_cuts": [0.9, 0.1]}, "confidence_cuts"),
    ({"tblx": 3}, "must be a table"),
])
def test_priority_from_dict_rejects(table, match):
    with pytest.raises(ConfigError, match=match):
        priority_from_dict(table)


def test_priority_from_dict_merges_without_touching_defaults():
    w = priority_from_dict({"tblx": {"KS": 0.9}, "hit": {"GDMJ": 25}})
    assert w["tblx"]["KS"] == 0.9 and w["tblx"]["20"] == 1.0 and w["hit"]["GDMJ"] == 25.0
    assert "KS" not in DEFAULT_PRIORITY["tblx"] and DEFAULT_PRIORITY["hit"]["GDMJ"] == 20.0
