"""Printable HTML report of one county package.

Summary (counts and 亩 by priority, type and batch), the overview map, the table of all
polygons, then one A4 page per polygon with its chips, attributes and a blank field
record (核查记录) to fill by hand. Plain HTML + CSS, no script, images by relative path,
so it opens offline from the unzipped package and prints from any browser.
"""
from __future__ import annotations

from collections.abc import Mapping
from html import escape
from pathlib import Path
from urllib.parse import quote

import geopandas as gpd
import pandas as pd

from pipeline.package.kmz import LEVEL_COLOURS
from pipeline.package.fields import FIELDS, FIELDS_ZH, HCJG_VALUES, UNITS, VERDICT_FIELDS

MU_M2 = 2000.0 / 3.0

_CSS = """
@page { size: A4; margin: 14mm; }
body { font-family: "Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", "SimSun", sans-serif;
       font-size: 10.5pt; color: #111; max-width: 190mm; margin: auto; }
h1 { font-size: 17pt; } h2 { font-size: 13pt; border-bottom: 1px solid #888; }
table { border-collapse: collapse; margin: 4px 0 10px; }
th, td { border: 1px solid #999; padding: 2px 5px; text-align: left; }
td.n { text-align: right; }
img.map { width: 100%; border: 1px solid #999; }
.page { break-before: page; page-break-before: always; }
.chips { display: flex; gap: 4mm; } .chips figure { margin: 0; width: 50%; }
.chips img { width: 100%; border: 1px solid #999; } figcaption { text-align: center; }
.lv { display: inline-block; width: 1.6em; text-align: center; color: #fff; border-radius: 3px; }
.form td { height: 8mm; min-width: 40mm; }
"""


def write_report(frame: gpd.GeoDataFrame, path: Path, *, xzqdm: str, xzqmc: str, quarter: str,
                 run_meta: Mapping[str, object], overview: str | None,
                 chips: Mapping[str, tuple[str, str]] | None = None,
                 routes: pd.DataFrame | None = None) -> Path:
    """Write the report.

    Parameters
    ----------
    frame : GeoDataFrame
        Issue frame (FIELDS columns).
    path : Path
        The .html to write (UTF-8).
    overview : str, optional
        Path of the overview map PNG relative to the report.
    chips : mapping JCBH -> (before, after) paths relative to the report, optional
    routes : DataFrame, optional
        PCBH -> LCKM (route km) from :func:`pipeline.package.batch_layer.batch_routes`.
    """
    chips = chips or {}
    title = f"{xzqmc}（{xzqdm}）{quarter} 卫片执法变化图斑核查报告"
    h = ["<!DOCTYPE html>", '<html lang="zh-CN"><head><meta charset="utf-8">',
         f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
         f"<h1>{escape(title)}</h1>"]
    meta = [str(run_meta.get("name", "")), f"运行编号 {run_meta.get('run_id', '')}",
            f"配置 {str(run_meta.get('config_hash', ''))[:16]}", f"Tianyan {run_meta.get('version', '')}"]
    h.append(f"<p>{escape(' · '.join(m for m in meta if m.strip()))}</p>")
    h += _summary(frame, routes)
    if overview:
        h += ["<h2>总图</h2>",
              f'<img class="map" src="{quote(overview)}" alt="总图：图斑按优先级着色，框为外业批次">']
    h += _table(frame)
    for row in frame.sort_values(["PCBH", "PCXH", "JCBH"], na_position="last").itertuples(index=False):
        h += _polygon_page(row._asdict(), chips)
    h.append("</body></html>")
    path.write_text("\n".join(h), encoding="utf-8")
    return path


def _summary(frame: pd.DataFrame, routes: pd.DataFrame | None) -> list[str]:
    mu = pd.to_numeric(frame["JCMJ"], errors="coerce") / MU_M2
    gd = pd.to_numeric(frame["GDMJ"], errors="coerce").fillna(0) / MU_M2
    jb = pd.to_numeric(frame["JBNTMJ"], errors="coerce").fillna(0) / MU_M2
    nb = frame["PCBH"].nunique()
    out = ["<h2>汇总</h2>", "<table><tr><th>图斑数</th><th>总面积(亩)</th><th>耕地(亩)</th>"
           "<th>永久基本农田(亩)</th><th>批次数</th></tr>",
           f'<tr><td class="n">{len(frame)}</td><td class="n">{mu.sum():.2f}</td>'
           f'<td class="n">{gd.sum():.2f}</td><td class="n">{jb.sum():.2f}</td><td class="n">{nb}</td></tr></table>']
    out.append("<table><tr><th>优先级</th><th>图斑数</th><th>面积(亩)</th><th>截止日期</th></tr>")
    for level, g in frame.groupby("YXJ", sort=True):
        due = sorted(str(v) for v in g["JZRQ"].dropna())
        out.append(f"<tr><td>{_level(level)}</td><td class='n'>{len(g)}</td>"
                   f"<td class='n'>{mu[g.index].sum():.2f}</td><td>{escape(due[0] if due else '')}</td></tr>")
    out.append("</table><table><tr><th>图斑类型</th><th>图斑数</th><th>面积(亩)</th></tr>")
    for code, g in frame.groupby(frame["TBLX"].fillna("—"), sort=True):
        out.append(f"<tr><td>{escape(str(code))}</td><td class='n'>{len(g)}</td>"
                   f"<td class='n'>{mu[g.index].sum():.2f}</td></tr>")
    out.append("</table>")
    if nb:
        km = {} if routes is None or not len(routes) else dict(zip(routes["PCBH"], routes["LCKM"]))
        out.append("<table><tr><th>批次</th><th>图斑数</th><th>最高优先级</th><th>截止日期</th>"
                   "<th>路线(km)</th></tr>")
        for code, g in frame.groupby("PCBH", sort=True):
            due = sorted(str(v) for v in g["JZRQ"].dropna())
            dist = f"{km[code]:.1f}" if code in km else ""
            out.append(f"<tr><td>{escape(str(code))}</td><td class='n'>{len(g)}</td>"
                       f"<td>{_level(g['YXJ'].min())}</td><td>{escape(due[0] if due else '')}</td>"
                       f"<td class='n'>{dist}</td></tr>")
        out.append("</table>")
    return out


def _table(frame: pd.DataFrame) -> list[str]:
    cols = ["PCBH", "PCXH", "JCBH", "YXJ", "TBLX", "JCMJM", "JZRQ", "YXJLY"]
    out = ["<h2>图斑一览</h2>", "<table><tr>" + "".join(f"<th>{escape(FIELDS_ZH[c])}</th>" for c in cols) + "</tr>"]
    for r in frame.sort_values(["PCBH", "PCXH", "JCBH"], na_position="last").itertuples(index=False):
        d = r._asdict()
        cells = []
        for c in cols:
            v = d[c]
            if c == "YXJ":
                cells.append(f"<td>{_level(v)}</td>")
            elif c == "JCBH":
                cells.append(f'<td><a href="#{escape(str(v))}">{escape(str(v))}</a></td>')
            else:
                cls = ' class="n"' if isinstance(v, (int, float)) else ""
                cells.append(f"<td{cls}>{escape(_fmt(c, v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return out


def _polygon_page(d: dict, chips: Mapping[str, tuple[str, str]]) -> list[str]:
    jcbh = str(d["JCBH"])
    out = [f'<section class="page" id="{escape(jcbh)}">',
           f"<h2>{escape(jcbh)} {_level(d['YXJ'])} 批次 {escape(_fmt('PCBH', d['PCBH']))} "
           f"第 {escape(_fmt('PCXH', d['PCXH']))} 个</h2>"]
    if jcbh in chips:
        b, a = chips[jcbh]
        out.append('<div class="chips">'
                   f'<figure><img src="{quote(b)}" alt="前时相 {escape(jcbh)}">'
                   f"<figcaption>前时相 {escape(_fmt('QSX', d['QSX']))}</figcaption></figure>"
                   f'<figure><img src="{quote(a)}" alt="后时相 {escape(jcbh)}">'
                   f"<figcaption>后时相 {escape(_fmt('HSX', d['HSX']))}</figcaption></figure></div>")
    out.append("<table>")
    for f in FIELDS:
        if f in VERDICT_FIELDS or f == "JCBH":
            continue
        v = _fmt(f, d[f])
        if v:
            unit = f" ({UNITS[f]})" if f in UNITS else ""
            out.append(f"<tr><th>{escape(FIELDS_ZH[f] + unit)}</th><td>{escape(v)}</td></tr>")
    out.append("</table><h3>核查记录</h3><table class='form'>")
    out.append(f"<tr><th>{FIELDS_ZH['HCJG']}</th><td>" + "　".join(f"□{v}" for v in HCJG_VALUES) + "</td></tr>")
    for f in VERDICT_FIELDS[1:]:
        out.append(f"<tr><th>{escape(FIELDS_ZH[f])}</th><td></td></tr>")
    out.append("</table></section>")
    return out


def _level(v) -> str:
    if v is None or pd.isna(v):
        return ""
    level = int(v)
    rgb = LEVEL_COLOURS[min(max(level, 1), 3)][0]
    return f'<span class="lv" style="background:#{rgb}">{level}</span>'


def _fmt(field: str, v) -> str:
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return ""
    if field in ("JD", "WD"):
        return f"{float(v):.6f}"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)
