"""Province summary of a run (summary.json) and its printable HTML report."""
from __future__ import annotations

import html
from pathlib import Path

import geopandas as gpd

from pipeline.atomic import write_text


def summarize(gdf: gpd.GeoDataFrame, *, quarter: str, packages: dict, outside: list[str],
              failed_tiles: dict, failed_counties: dict, manifest: dict, overlay_report: dict) -> dict:
    """Counts and areas per county / priority level / change type; polygons outside every county."""
    def block(frame) -> dict:
        return {"polygons": int(len(frame)),
                "area_mu": round(float(frame["JCMJM"].sum()), 2) if len(frame) else 0.0,
                "farmland_mu": round(float(frame["GDMJ"].sum()) * 3 / 2000, 2) if len(frame) else 0.0,
                "basic_farmland_mu": round(float(frame["JBNTMJ"].sum()) * 3 / 2000, 2) if len(frame) else 0.0,
                "by_level": {str(k): int(v) for k, v in frame["YXJ"].value_counts().sort_index().items()},
                "by_type": {str(k): int(v) for k, v in frame["TBLX"].value_counts().sort_index().items()}}

    counties = {}
    for code, county in gdf[gdf["XZQDM"] != ""].groupby("XZQDM", sort=True):
        counties[code] = {"name": county["XZQMC"].iloc[0], **block(county), "package": packages.get(code)}
    reference = {}
    if "reference" in manifest.get("dates", {}):
        veto = manifest.get("reference_veto", {})
        m2 = float(veto.get("area_m2", 0.0))
        reference = {"date": manifest["dates"]["reference"],
                     "vetoed_polygons": int(veto.get("polygons", 0)), "vetoed_m2": m2,
                     "vetoed_mu": round(m2 * 3 / 2000, 2)}
    return {"quarter": quarter, "dates": manifest.get("dates", {}), "reference": reference,
            "models": {name: model_summary(manifest[key]) for name, key in
                       (("pair", "model"), ("reference", "reference_model")) if manifest.get(key)},
            "run_id": manifest.get("run_id"),
            "config_hash": manifest.get("config_hash"), "total": block(gdf), "counties": counties,
            "outside_counties": outside, "failed_tiles": failed_tiles,
            "failed_counties": failed_counties, "layers": overlay_report.get("layers", {})}


def model_summary(model: dict) -> dict:
    """What an analyst checks of a scene-wide detector fit (``ChangeModel.to_dict()``): IR-MAD's
    iterations and canonical correlations, and the radiometric normalisation of the after date
    (``after_norm = gain * after + offset``, DN) per band of the statistic, from how many
    invariant pixels of the sample."""
    return {"iterations": int(model["iterations"]),
            "coarse_iterations": int(model.get("coarse_iterations", 0)),
            "converged": bool(model["converged"]), "rho": [round(float(r), 4) for r in model["rho"]],
            "n_pixels": int(model["n_pixels"]), "n_invariant": int(model["n_invariant"]),
            "normalisation": {model["bands"][i]: {"gain": round(float(model["gain"][i]), 4),
                                                  "offset": round(float(model["offset"][i]), 1)}
                              for i in model["idx"]}}


def model_text(model: dict) -> str:
    """One log line on a fitted model (:func:`model_summary`)."""
    m = model_summary(model)
    its = (f"{m['coarse_iterations']} + {m['iterations']}" if m["coarse_iterations"]
           else f"{m['iterations']}")
    norm = ", ".join(f"{b} {g['gain']:.4f}/{g['offset']:+.1f}" for b, g in m["normalisation"].items())
    return (f"IR-MAD {its} iterations, {'converged' if m['converged'] else 'NOT converged'}, "
            f"rho {', '.join(f'{r:.4f}' for r in m['rho'])}; the after date normalised from "
            f"{m['n_invariant']:,} invariant px, gain/offset (DN): {norm}")


def _models_html(models: dict, dates: dict) -> str:
    """The report's section on the fitted models: one paragraph and one table per date pair."""
    e = html.escape
    parts = []
    for name, m in models.items():
        first = dates.get("before" if name == "pair" else "reference", "")
        pair = f"{'前时相' if name == 'pair' else '参考时相'} {first} → 后时相 {dates.get('after', '')}"
        its = (f"先在子样本上 {m['coarse_iterations']} 次、再在全部样本上 {m['iterations']} 次"
               if m["coarse_iterations"] else f"{m['iterations']} 次")
        state = "已收敛" if m["converged"] else "未收敛（达到 max_iter，请检查两期影像）"
        rows = "".join(f"<tr><td>{e(band)}</td><td>{g['gain']:.4f}</td><td>{g['offset']:.1f}</td></tr>"
                       for band, g in m["normalisation"].items())
        parts.append(
            f"<h3>{e(pair)}</h3><p>IR-MAD 迭代{its}，{state}；典型相关系数 ρ = "
            f"{', '.join(f'{r:.4f}' for r in m['rho'])}。后时相按不变像元 {m['n_invariant']:,} 个"
            f"（样本 {m['n_pixels']:,} 个）做辐射归一化：归一化值 = 增益 × DN + 偏移。</p>"
            f"<table><tr><th>波段</th><th>增益</th><th>偏移(DN)</th></tr>{rows}</table>")
    return "".join(parts) or "<p>无</p>"


def _reference_text(reference: dict) -> str:
    """The report's sentence on the reference date (the same season a year earlier), if any."""
    if not reference:
        return ""
    return (f"参考时相（去年同季）{html.escape(str(reference['date']))}：前后时相的变化图斑中 "
            f"{reference['vetoed_polygons']} 个（{reference['vetoed_mu']:.2f} 亩）在去年同季已是同样"
            f"地类（如每年此时泡田、收割），作为季节性变化剔除。")


def write_html(path: Path, summary: dict, title: str) -> None:
    e = html.escape
    rows = []
    for code, c in summary["counties"].items():
        levels = " / ".join(str(c["by_level"].get(str(k), 0)) for k in (1, 2, 3))
        rows.append(f"<tr><td>{e(code)}</td><td>{e(c['name'])}</td><td>{c['polygons']}</td>"
                    f"<td>{levels}</td><td>{c['area_mu']:.2f}</td><td>{c['farmland_mu']:.2f}</td>"
                    f"<td>{c['basic_farmland_mu']:.2f}</td><td>{e(str(c['package'] or '未生成'))}</td></tr>")
    t = summary["total"]
    failed = "".join(f"<li>{e(k)}: {e(v)}</li>" for k, v in
                     {**summary["failed_tiles"], **summary["failed_counties"]}.items())
    outside = ", ".join(e(j) for j in summary["outside_counties"]) or "无"
    held = "".join(f"<tr><td>{e(str(r.get('XZQDM', '')))}</td><td>{e(str(r.get('QQJCBH', '')))}</td>"
                   f"<td>{e(str(r.get('HCJG', '')))}</td><td>{e(str(r.get('reason', '')))}</td></tr>"
                   for r in summary.get("suppressed", []))
    doc = f"""<!DOCTYPE html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>{e(title)} {e(summary['quarter'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:4px 8px;text-align:right}}td:nth-child(2){{text-align:left}}</style>
</head><body>
<h1>{e(title)} — {e(summary['quarter'])}</h1>
<p>前时相 {e(summary['dates'].get('before', ''))}，后时相 {e(summary['dates'].get('after', ''))}；
图斑 {t['polygons']} 个，面积 {t['area_mu']:.2f} 亩，其中耕地 {t['farmland_mu']:.2f} 亩、永久基本农田
{t['basic_farmland_mu']:.2f} 亩。{_reference_text(summary.get('reference') or {})}</p>
<table><tr><th>行政区代码</th><th>行政区名称</th><th>图斑数</th><th>一/二/三级</th><th>面积(亩)</th>
<th>耕地(亩)</th><th>永久基本农田(亩)</th><th>核查包</th></tr>
{''.join(rows)}</table>
<h2>不在任何县内的图斑</h2><p>{outside}</p>
<h2>未再次下发的重复图斑</h2>
{('<table><tr><th>行政区代码</th><th>前期监测编号</th><th>前期核查结果</th><th>理由</th></tr>' + held + '</table>') if held else '<p>无</p>'}
<h2>失败的瓦片或县</h2><ul>{failed or '<li>无</li>'}</ul>
<h2>检测模型（全景拟合）</h2>
{_models_html(summary.get('models') or {}, summary['dates'])}
</body></html>
"""
    write_text(path, doc)
