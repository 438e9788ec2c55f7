"""County statistics of a year from the registry (``tianyan stats``): XLSX and HTML with a chart.

Per county, over the polygons issued in the year's quarters (withdrawn ones left out): issued,
verified, not yet verified, each verdict (HCJG), rectified (拆除 / 补办) and unrectified illegal
polygons, each as a count, an area and a farmland area in 亩 (JCMJ and GDMJ are ellipsoidal m²
on CGCS2000; 1 亩 = 2000/3 m²). 违法占用耕地比例 = farmland of the polygons judged 违法 / farmland
of the polygons judged one of ``construction_verdicts`` (default 合法 and 违法: farmland taken by
new construction). A county is flagged (约谈) when its illegal farmland exceeds
``illegal_farmland_mu`` AND its ratio exceeds ``illegal_ratio``. Counties are ranked by
unrectified illegal farmland, most first.
"""
from __future__ import annotations

import datetime as _dt
import html
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter

from pipeline.atomic import atomic_path, write_text
from pipeline.package.ledger import set_text
from pipeline.registry import RECTIFIED, STATUS_WITHDRAWN, read_registry, registry_path
from pipeline.schema import VERDICTS
from tiles.errors import ConfigError, InputFileError

MU_M2 = 2000.0 / 3.0

# (key, Chinese label) of each category; every category has n, mu (area 亩), gd_mu (farmland 亩)
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("issued", "下发"), ("verified", "已核查"), ("pending", "未核查"),
    *((f"v_{v}", v) for v in VERDICTS),
    ("rectified", "违法已整改"), ("demolished", "其中拆除"), ("retro", "其中补办"),
    ("unrectified", "违法未整改"),
)
MEASURES: tuple[tuple[str, str], ...] = (("n", "图斑数"), ("mu", "面积(亩)"), ("gd_mu", "耕地(亩)"))


@dataclass(frozen=True)
class Thresholds:
    """The ``[stats]`` settings (configs/default.toml documents them)."""

    illegal_farmland_mu: float = 100.0
    illegal_ratio: float = 0.15
    construction_verdicts: tuple[str, ...] = ("合法", "违法")

    @classmethod
    def from_dict(cls, d: dict | None) -> "Thresholds":
        d = dict(d or {})
        t = cls(float(d.get("illegal_farmland_mu", cls.illegal_farmland_mu)),
                float(d.get("illegal_ratio", cls.illegal_ratio)),
                tuple(d.get("construction_verdicts", cls.construction_verdicts)))
        if t.illegal_farmland_mu < 0:
            raise ConfigError(f"[stats].illegal_farmland_mu = {t.illegal_farmland_mu}: give 亩 >= 0, e.g. 100")
        if not 0 <= t.illegal_ratio <= 1:
            raise ConfigError(f"[stats].illegal_ratio = {t.illegal_ratio}: give a share in [0, 1], e.g. 0.15")
        bad = [v for v in t.construction_verdicts if v not in VERDICTS]
        if bad or not t.construction_verdicts:
            raise ConfigError(f"[stats].construction_verdicts: {bad[0] if bad else 'empty'!r} — give verdicts "
                              f"from {', '.join(VERDICTS)}")
        return t


def county_stats(registry: pd.DataFrame, year: int, thresholds: Thresholds = Thresholds()) -> pd.DataFrame:
    """One row per county of the polygons issued in ``year``, ranked by unrectified farmland.

    Parameters
    ----------
    registry : DataFrame
        :func:`pipeline.registry.read_registry` (JCJD, XZQDM, XZQMC, JCMJ, GDMJ, HCJG, ZGZT, ZT).
    year : int
        Calendar year of the quarters (JCJD "2026Q1" … "2026Q4").
    thresholds : Thresholds

    Returns
    -------
    DataFrame
        Columns XZQDM, XZQMC, ``<category>_<measure>`` for CATEGORIES x MEASURES (n int, 亩
        floats), construction_gd_mu (the ratio's denominator, 亩), illegal_ratio (NaN when the
        denominator is 0), flagged (bool), rank (1 = most unrectified farmland).
    """
    reg = registry[(registry["JCJD"].astype(str).str[:4] == str(year))
                   & (registry["ZT"] != STATUS_WITHDRAWN) & (registry["XZQDM"].astype(str) != "")]
    hcjg = reg["HCJG"].astype(str)
    zgzt = reg["ZGZT"].astype(str)
    illegal = hcjg == "违法"
    masks = {"issued": pd.Series(True, index=reg.index), "verified": hcjg != "", "pending": hcjg == "",
             **{f"v_{v}": hcjg == v for v in VERDICTS},
             "rectified": illegal & zgzt.isin(RECTIFIED), "demolished": illegal & (zgzt == "拆除"),
             "retro": illegal & (zgzt == "补办"), "unrectified": illegal & ~zgzt.isin(RECTIFIED)}
    mu = pd.to_numeric(reg["JCMJ"], errors="coerce").fillna(0.0) / MU_M2
    gd = pd.to_numeric(reg["GDMJ"], errors="coerce").fillna(0.0) / MU_M2
    construction = hcjg.isin(thresholds.construction_verdicts)
    rows = []
    for code, idx in reg.groupby("XZQDM", sort=True).groups.items():
        names = reg.loc[idx, "XZQMC"].astype(str)
        row = {"XZQDM": str(code), "XZQMC": names[names != ""].iloc[0] if (names != "").any() else ""}
        for key, _ in CATEGORIES:
            m = masks[key].loc[idx]
            row[f"{key}_n"] = int(m.sum())
            row[f"{key}_mu"] = float(mu.loc[idx][m].sum())
            row[f"{key}_gd_mu"] = float(gd.loc[idx][m].sum())
        row["construction_gd_mu"] = float(gd.loc[idx][construction.loc[idx]].sum())
        rows.append(row)
    cols = (["XZQDM", "XZQMC"] + [f"{k}_{m}" for k, _ in CATEGORIES for m, _ in MEASURES]
            + ["construction_gd_mu"])
    out = pd.DataFrame(rows, columns=cols)
    denom = out["construction_gd_mu"].to_numpy(dtype=float)
    illegal_gd = out["v_违法_gd_mu"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["illegal_ratio"] = np.where(denom > 0, illegal_gd / np.where(denom > 0, denom, 1), np.nan)
    out["flagged"] = ((out["v_违法_gd_mu"] > thresholds.illegal_farmland_mu)
                      & (out["illegal_ratio"].fillna(0) > thresholds.illegal_ratio))
    out = out.sort_values(["unrectified_gd_mu", "XZQDM"], ascending=[False, True], kind="mergesort")
    out["rank"] = np.arange(1, len(out) + 1)
    return out.reset_index(drop=True)


def latest_year(registry: pd.DataFrame) -> int:
    """The latest year that has issued polygons (this year when the registry is empty)."""
    years = [int(q[:4]) for q in registry["JCJD"].astype(str) if q[:4].isdigit()]
    return max(years) if years else _dt.date.today().year


def write_stats(workdir: str | os.PathLike, year: int | None = None, *, thresholds: Thresholds = Thresholds(),
                out_dir: str | os.PathLike | None = None) -> tuple[pd.DataFrame, dict[str, Path]]:
    """Compute the year's county statistics from ``<workdir>/registry.gpkg`` and write them.

    Returns the table and ``{"xlsx": path, "html": path}``; files go to ``out_dir`` (default
    ``<workdir>/stats/<year>/``) as 县级统计_<year>.xlsx / .html, each written atomically.
    """
    path = registry_path(workdir)
    if not path.exists():
        raise InputFileError(f"{path}: no registry yet; run and export a quarter with this --workdir first")
    registry = read_registry(path)
    year = int(year) if year is not None else latest_year(registry)
    table = county_stats(registry, year, thresholds)
    out = Path(out_dir) if out_dir else Path(workdir) / "stats" / str(year)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"xlsx": out / f"县级统计_{year}.xlsx", "html": out / f"县级统计_{year}.html"}
    write_stats_xlsx(table, paths["xlsx"], year=year, thresholds=thresholds)
    write_text(paths["html"], stats_html(table, year=year, thresholds=thresholds))
    return table, paths


# ---------------------------------------------------------------------------------------------
# XLSX
def write_stats_xlsx(table: pd.DataFrame, path: Path, *, year: int, thresholds: Thresholds) -> Path:
    """Sheet 县级统计 (two header rows: category over its three measures) and sheet 说明."""
    wb = Workbook()
    ws = wb.active
    ws.title = "县级统计"
    lead = [("rank", "排名"), ("XZQDM", "行政区代码"), ("XZQMC", "行政区名称")]
    tail = [("construction_gd_mu", "新增建设占用耕地(亩)"), ("illegal_ratio", "违法占用耕地比例"),
            ("flagged", "超过约谈阈值")]
    bold, center = Font(bold=True), Alignment(horizontal="center", vertical="center", wrap_text=True)
    col = 1
    for key, zh in lead:
        ws.cell(1, col, zh)
        ws.merge_cells(start_row=1, start_column=col, end_row=2, end_column=col)
        col += 1
    for key, zh in CATEGORIES:
        ws.cell(1, col, zh)
        ws.merge_cells(start_row=1, start_column=col, end_row=1, end_column=col + len(MEASURES) - 1)
        for k, (_, mzh) in enumerate(MEASURES):
            ws.cell(2, col + k, mzh)
        col += len(MEASURES)
    for key, zh in tail:
        ws.cell(1, col, zh)
        ws.merge_cells(start_row=1, start_column=col, end_row=2, end_column=col)
        col += 1
    for row in ws.iter_rows(min_row=1, max_row=2):
        for cell in row:
            cell.font, cell.alignment = bold, center
    keys = ([k for k, _ in lead] + [f"{k}_{m}" for k, _ in CATEGORIES for m, _ in MEASURES]
            + [k for k, _ in tail])
    red = PatternFill("solid", fgColor="F4CCCC")
    for r, rec in enumerate(table.to_dict("records"), start=3):
        for c, key in enumerate(keys, start=1):
            v = rec[key]
            cell = ws.cell(r, c)
            if key in ("XZQDM", "XZQMC"):
                set_text(cell, str(v))
            elif key == "flagged":
                set_text(cell, "是" if v else "")
            elif key == "illegal_ratio":
                cell.value = None if (v is None or math.isnan(v)) else float(v)
                cell.number_format = "0.0%"
            elif key.endswith("_n") or key == "rank":
                cell.value = int(v)
            else:
                cell.value = round(float(v), 2)
                cell.number_format = "0.00"
        if rec["flagged"]:
            for c in range(1, len(keys) + 1):
                ws.cell(r, c).fill = red
    ws.freeze_panes = "D3"
    for c in range(1, len(keys) + 1):
        ws.column_dimensions[get_column_letter(c)].width = 12 if c != 3 else 14
    notes = wb.create_sheet("说明")
    for line in _notes(year, thresholds):
        notes.append([line])
    notes.column_dimensions["A"].width = 100
    with atomic_path(path) as tmp:
        wb.save(tmp)
    return path


def _notes(year: int, t: Thresholds) -> list[str]:
    return [
        f"{year} 年各县卫片图斑核查统计（来源：registry.gpkg，已撤销的图斑不计）",
        "面积为 CGCS2000 椭球面积，1 亩 = 2000/3 平方米；耕地为图斑与耕地图层的重叠面积。",
        "违法已整改 = 核查结果为“违法”且整改情况为“拆除”或“补办”；违法未整改 = 其余“违法”图斑。",
        f"违法占用耕地比例 = 违法图斑耕地面积 ÷ 核查结果为 {'、'.join(t.construction_verdicts)} 的图斑耕地面积。",
        f"超过约谈阈值：违法占用耕地超过 {t.illegal_farmland_mu:g} 亩且比例超过 {t.illegal_ratio:.0%}。",
        "排名按违法未整改耕地面积从多到少。",
    ]


# ---------------------------------------------------------------------------------------------
# HTML
def stats_html(table: pd.DataFrame, *, year: int, thresholds: Thresholds) -> str:
    """A self-contained page: notes, an SVG bar chart and the ranked table."""
    e = html.escape
    head = ("<tr><th>排名</th><th>行政区代码</th><th>行政区名称</th><th>下发</th><th>已核查</th>"
            "<th>违法</th><th>违法耕地(亩)</th><th>违法已整改耕地(亩)</th><th>违法未整改耕地(亩)</th>"
            "<th>新增建设占用耕地(亩)</th><th>违法占用耕地比例</th><th>约谈阈值</th></tr>")
    rows = []
    for r in table.to_dict("records"):
        ratio = "—" if math.isnan(r["illegal_ratio"]) else f"{r['illegal_ratio']:.1%}"
        cls = ' class="flag"' if r["flagged"] else ""
        rows.append(f"<tr{cls}><td>{r['rank']}</td><td>{e(r['XZQDM'])}</td><td>{e(r['XZQMC'])}</td>"
                    f"<td>{r['issued_n']}</td><td>{r['verified_n']}</td><td>{r['v_违法_n']}</td>"
                    f"<td>{r['v_违法_gd_mu']:.2f}</td><td>{r['rectified_gd_mu']:.2f}</td>"
                    f"<td>{r['unrectified_gd_mu']:.2f}</td><td>{r['construction_gd_mu']:.2f}</td>"
                    f"<td>{ratio}</td><td>{'超过' if r['flagged'] else ''}</td></tr>")
    notes = "".join(f"<li>{e(n)}</li>" for n in _notes(year, thresholds)[1:])
    return f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>{year} 年县级核查统计</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-top:1em}}
td,th{{border:1px solid #999;padding:3px 8px;text-align:right}}td:nth-child(3){{text-align:left}}
tr.flag td{{background:#f4cccc}}</style></head><body>
<h1>{year} 年各县卫片图斑核查统计</h1>
<ul>{notes}</ul>
<h2>违法占用耕地（亩）</h2>
{bar_chart_svg(table, thresholds)}
<table>{head}{''.join(rows) or '<tr><td colspan="12">无数据</td></tr>'}</table>
</body></html>
"""


def bar_chart_svg(table: pd.DataFrame, thresholds: Thresholds) -> str:
    """Horizontal stacked bars per county: illegal farmland rectified (grey) + unrectified (red
    when flagged, orange otherwise), a dashed line at the farmland threshold; rank order."""
    e = html.escape
    bar_h, gap, left, width = 18, 6, 170, 520
    n = len(table)
    top = 20
    height = top + n * (bar_h + gap) + 30
    vmax = max([thresholds.illegal_farmland_mu * 1.1]
               + [float(v) for v in table.get("v_违法_gd_mu", pd.Series(dtype=float))] + [1.0])
    scale = width / vmax
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" height="{height}" '
             f'role="img" aria-label="各县违法占用耕地">']
    for i, r in enumerate(table.to_dict("records")):
        y = top + i * (bar_h + gap)
        done, todo = float(r["rectified_gd_mu"]), float(r["unrectified_gd_mu"])
        colour = "#cc0000" if r["flagged"] else "#e69138"
        parts.append(f'<text x="{left - 6}" y="{y + bar_h - 4}" text-anchor="end" font-size="12">'
                     f'{e(r["XZQMC"] or r["XZQDM"])}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{done * scale:.1f}" height="{bar_h}" fill="#999999">'
                     f'<title>已整改 {done:.2f} 亩</title></rect>')
        parts.append(f'<rect x="{left + done * scale:.1f}" y="{y}" width="{todo * scale:.1f}" height="{bar_h}" '
                     f'fill="{colour}"><title>未整改 {todo:.2f} 亩</title></rect>')
        parts.append(f'<text x="{left + (done + todo) * scale + 4:.1f}" y="{y + bar_h - 4}" font-size="11">'
                     f'{done + todo:.1f}{" ⚑" if r["flagged"] else ""}</text>')
    x = left + thresholds.illegal_farmland_mu * scale
    parts.append(f'<line x1="{x:.1f}" y1="{top - 10}" x2="{x:.1f}" y2="{height - 20}" stroke="#000" '
                 f'stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" font-size="11">'
                 f'{thresholds.illegal_farmland_mu:g} 亩</text>')
    parts.append("</svg>")
    return "\n".join(parts)
