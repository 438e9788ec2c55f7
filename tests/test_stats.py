"""`tianyan stats`: county figures of a year from the registry, worked out by hand below.

Areas are given in 亩 and stored in m² (x 2000/3), as the registry holds them.

450502 海城区 (2026):  a 违法 拆除 80/70 · b 违法 60/40 · c 违法 补办 20/10 · d 合法 100/60 ·
                       e 伪变化 30/30 · f pending 10/5            (JCMJ 亩 / GDMJ 亩)
        not counted:   g 违法 50/50 withdrawn · h 违法 40/40 in 2025Q4
        illegal farmland 70 + 40 + 10 = 120 亩 > 100; construction farmland 120 + 60 = 180;
        ratio 120 / 180 = 66.7 % > 15 %  -> flagged; unrectified farmland 40
450503 银海区:         i 合法 200/150 · j 违法 50/20 -> ratio 20 / 170 = 11.8 %, 20 亩: not flagged
450512 铁山港区:       k 违法 500/400 · l 合法 3000/2800 -> 400 亩 > 100 but 400 / 3200 = 12.5 %:
        not flagged at 15 %, flagged at 10 %; unrectified farmland 400 -> ranked first
"""

import geopandas as gpd
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook
from shapely.geometry import box

from cli import main
from pipeline.registry import STATUS_WITHDRAWN, registry_path, write_registry
from pipeline.stats import Thresholds, county_stats, write_stats
from tiles.errors import ConfigError

MU = 2000 / 3
ROWS = [  # JCBH suffix, XZQDM, XZQMC, quarter, JCMJ 亩, GDMJ 亩, HCJG, ZGZT, withdrawn
    ("a", "450502", "海城区", "2026Q1", 80, 70, "违法", "拆除", False),
    ("b", "450502", "海城区", "2026Q2", 60, 40, "违法", "", False),
    ("c", "450502", "海城区", "2026Q3", 20, 10, "违法", "补办", False),
    ("d", "450502", "海城区", "2026Q3", 100, 60, "合法", "", False),
    ("e", "450502", "海城区", "2026Q3", 30, 30, "伪变化", "", False),
    ("f", "450502", "海城区", "2026Q3", 10, 5, "", "", False),
    ("g", "450502", "海城区", "2026Q3", 50, 50, "违法", "", True),
    ("h", "450502", "海城区", "2025Q4", 40, 40, "违法", "", False),
    ("i", "450503", "银海区", "2026Q2", 200, 150, "合法", "", False),
    ("j", "450503", "银海区", "2026Q2", 50, 20, "违法", "未整改", False),
    ("k", "450512", "铁山港区", "2026Q3", 500, 400, "违法", "", False),
    ("l", "450512", "铁山港区", "2026Q3", 3000, 2800, "合法", "", False),
]


@pytest.fixture
def workdir(tmp_path):
    reg = gpd.GeoDataFrame(
        {"JCBH": [f"{r[1]}{r[3]}{i:05d}" for i, r in enumerate(ROWS)], "XZQDM": [r[1] for r in ROWS],
         "XZQMC": [r[2] for r in ROWS], "JCJD": [r[3] for r in ROWS], "JCMJ": [r[4] * MU for r in ROWS],
         "GDMJ": [r[5] * MU for r in ROWS], "HCJG": [r[6] for r in ROWS], "ZGZT": [r[7] for r in ROWS],
         "ZT": [STATUS_WITHDRAWN if r[8] else ("已核查" if r[6] else "已下发") for r in ROWS]},
        geometry=[box(109 + i * 0.01, 21.5, 109.005 + i * 0.01, 21.505) for i in range(len(ROWS))], crs=4490)
    write_registry(reg, registry_path(tmp_path))
    return tmp_path


def test_county_figures_match_the_hand_calculation(workdir):
    from pipeline.registry import read_registry

    t = county_stats(read_registry(registry_path(workdir)), 2026).set_index("XZQDM")
    hc = t.loc["450502"]
    assert (hc["issued_n"], hc["verified_n"], hc["pending_n"]) == (6, 5, 1)
    assert hc["issued_mu"] == pytest.approx(300) and hc["issued_gd_mu"] == pytest.approx(215)
    assert (hc["v_违法_n"], hc["v_合法_n"], hc["v_伪变化_n"], hc["v_其他_n"]) == (3, 1, 1, 0)
    assert hc["v_违法_gd_mu"] == pytest.approx(120) and hc["construction_gd_mu"] == pytest.approx(180)
    assert (hc["rectified_n"], hc["rectified_mu"], hc["rectified_gd_mu"]) == (2, pytest.approx(100), pytest.approx(80))
    assert (hc["demolished_n"], hc["retro_n"]) == (1, 1)
    assert (hc["unrectified_n"], hc["unrectified_gd_mu"]) == (1, pytest.approx(40))
    assert hc["illegal_ratio"] == pytest.approx(120 / 180) and hc["flagged"]
    assert t.loc["450503", "illegal_ratio"] == pytest.approx(20 / 170) and not t.loc["450503", "flagged"]
    assert t.loc["450512", "illegal_ratio"] == pytest.approx(400 / 3200) and not t.loc["450512", "flagged"]
    assert t.sort_values("rank").index.tolist() == ["450512", "450502", "450503"]


def test_thresholds_are_configurable(workdir):
    from pipeline.registry import read_registry

    reg = read_registry(registry_path(workdir))
    t = county_stats(reg, 2026, Thresholds(illegal_ratio=0.10)).set_index("XZQDM")
    assert t["flagged"].to_dict() == {"450502": True, "450503": False, "450512": True}
    t = county_stats(reg, 2026, Thresholds(illegal_farmland_mu=150)).set_index("XZQDM")
    assert t["flagged"].to_dict() == {"450502": False, "450503": False, "450512": False}
    # denominator of the ratio: farmland of 违法 + 合法 + 伪变化 for 海城区 = 120 + 60 + 30
    t = county_stats(reg, 2026, Thresholds(construction_verdicts=("合法", "违法", "伪变化"))).set_index("XZQDM")
    assert t.loc["450502", "illegal_ratio"] == pytest.approx(120 / 210)
    with pytest.raises(ConfigError, match=r"\[stats\]\.illegal_ratio"):
        Thresholds.from_dict({"illegal_ratio": 15})
    with pytest.raises(ConfigError, match=r"\[stats\]\.construction_verdicts"):
        Thresholds.from_dict({"construction_verdicts": ["建设"]})


def test_other_years_and_empty_years(workdir):
    from pipeline.registry import read_registry

    reg = read_registry(registry_path(workdir))
    t = county_stats(reg, 2025).set_index("XZQDM")
    assert t.index.tolist() == ["450502"] and t.loc["450502", "v_违法_gd_mu"] == pytest.approx(40)
    assert county_stats(reg, 2025).loc[0, "illegal_ratio"] == pytest.approx(1.0)   # 40 / 40
    assert len(county_stats(reg, 2024)) == 0


def test_xlsx_and_html_outputs(workdir):
    table, paths = write_stats(workdir, 2026)
    assert paths["xlsx"] == workdir / "stats" / "2026" / "县级统计_2026.xlsx"
    wb = load_workbook(paths["xlsx"])
    ws = wb["县级统计"]
    assert ws["A1"].value == "排名" and ws["D1"].value == "下发" and ws["D2"].value == "图斑数"
    header1 = [c.value for c in ws[1]]
    header2 = [c.value for c in ws[2]]
    rows = {r[1]: r for r in ws.iter_rows(min_row=3, values_only=True)}
    col = header1.index("违法占用耕地比例")
    assert rows["450502"][col] == pytest.approx(120 / 180)
    gd_illegal = header1.index("违法") + [m for m in header2[header1.index("违法"):]].index("耕地(亩)")
    assert rows["450512"][gd_illegal] == pytest.approx(400)
    assert rows["450502"][header1.index("超过约谈阈值")] == "是"
    assert [r[0] for r in ws.iter_rows(min_row=3, values_only=True)] == [1, 2, 3]
    assert "约谈" in "".join(str(c.value) for c in wb["说明"]["A"])
    text = paths["html"].read_text(encoding="utf-8")
    assert text.count("<svg") == 1 and text.count("<rect") == 6            # 2 bars per county
    assert "100 亩" in text and "⚑" in text and text.count('class="flag"') == 1
    assert "66.7%" in text and "12.5%" in text


def test_cli_stats(workdir, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["stats", "--workdir", str(workdir)])          # year: the latest, 2026
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[1].split()[:2] == ["1", "450512"] and "约谈" in lines[2] and "约谈" not in lines[1]
    r = runner.invoke(main, ["stats", "--workdir", str(workdir), "--year", "2026", "--ratio", "0.1",
                             "--out", str(tmp_path / "o")])
    assert r.exit_code == 0 and "约谈" in r.output.splitlines()[1]
    assert (tmp_path / "o" / "县级统计_2026.html").exists()
    cfg = tmp_path / "c.toml"
    cfg.write_text('[imagery]\nbefore = "a"\nafter = "b"\n[layers.counties]\npath = "x.gpkg"\n'
                   '[stats]\nillegal_farmland_mu = 1000.0\n', encoding="utf-8")
    r = runner.invoke(main, ["stats", "--workdir", str(workdir), "--config", str(cfg)])
    assert r.exit_code == 0 and "约谈" not in r.output
    r = runner.invoke(main, ["stats", "--workdir", str(tmp_path / "empty")])
    assert r.exit_code == 2 and "registry.gpkg" in r.output
