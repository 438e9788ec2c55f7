"""The Chinese README of a county package: what is inside and how to send results back."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipeline.package.fields import (
    CHIP_DIR, GPKG_NAME, HCJG_VALUES, KMZ_NAME, LAYER_BATCHES, LAYER_POINTS, LAYER_POLYGONS, LAYER_ROUTES,
    LEDGER_NAME, MANIFEST_NAME, QGIS_NAME, REPORT_NAME, SHP_DIR,
)

_CONTENTS = {
    "gpkg": f"{GPKG_NAME}：GeoPackage 矢量数据（CGCS2000 经纬度，EPSG:4490），图层“{LAYER_POLYGONS}”"
            f"（图斑面）、“{LAYER_POINTS}”（中心点）、“{LAYER_BATCHES}”（外业批次范围）和“{LAYER_ROUTES}”（批次路线）。"
            "可用 QGIS、ArcGIS Pro 直接打开。",
    "shp": f"{SHP_DIR}/：Shapefile 格式的同一批图斑（.cpg 文件注明字符编码），供 ArcMap 等软件使用。",
    "kmz": f"{KMZ_NAME}：手机地图软件（奥维互动地图、两步路、Google 地球等）可直接导入，"
           "按批次分文件夹，颜色表示优先级，点击图斑可看前后时相影像和主要属性。",
    "xlsx": f"{LEDGER_NAME}：核查台账，每个图斑一行，表头为中文；黄色列为县级填写的核查结果。",
    "chips": f"{CHIP_DIR}/：每个图斑的前时相、后时相影像截图（PNG，真彩色，同一拉伸）。",
    "html": f"{REPORT_NAME}：可打印的图斑报告（总图、汇总表、每个图斑一页），用浏览器打开。",
    "qgis": f"{QGIS_NAME}：QGIS 工程文件，双击即可按优先级分色显示全部图层（请保持文件夹结构不变）。",
}


def readme_text(*, xzqdm: str, xzqmc: str, quarter: str, n: int, formats: Sequence[str],
                warnings: Sequence[str] = (), dates: Mapping[str, str] | None = None) -> str:
    """README.txt body (the caller writes it as UTF-8 with BOM and CRLF for Notepad).

    ``dates``: the run's image dates (before, after, and reference when the run had one).
    """
    lines = [
        f"{xzqmc}（{xzqdm}）{quarter} 卫片执法变化图斑核查包",
        "",
        f"本包共下发变化图斑 {n} 个。卫片图斑只是问题线索，每个图斑都需要实地核查。",
        "优先级 YXJ：1 最紧急（永久基本农田非农化），数字越大越不紧急；请按批次编号 PCBH 和",
        "批次内序号 PCXH 安排外业，在截止日期 JZRQ 之前完成。",
    ]
    dates = dict(dates or {})
    if dates.get("before") and dates.get("after"):
        lines.append(f"影像时相：前时相 QSX {dates['before']}，后时相 HSX {dates['after']}。")
    if dates.get("reference"):
        lines += [f"参考时相（去年同季）{dates['reference']}：与去年同期相同的季节性变化（如每年此时泡田、",
                  "收割）已剔除，不再下发；参考时相有云处仍按前后两时相判断，这类图斑未经去年同期核对，",
                  "置信等级 ZXDJ 最高为“中”（上季度同一位置也有图斑的除外）。"]
    lines += [
        "",
        "一、包内文件",
    ]
    for f in formats:
        if f in _CONTENTS:
            lines.append(f"  - {_CONTENTS[f]}")
    lines += [
        f"  - {MANIFEST_NAME}：每个文件的 SHA-256 校验值及本次运行编号，用于核对文件是否完整。",
        "",
        "二、填写核查结果",
        f"  在 {GPKG_NAME} 的“{LAYER_POLYGONS}”图层属性表或 {LEDGER_NAME} 中，按监测编号 JCBH 逐个填写：",
        f"  - 核查结果 HCJG（只能填：{'、'.join(HCJG_VALUES)}）",
        "  - 违法类型 WFLX、实际用途 SJYT、核查人 HCRY、核查日期 HCRQ（格式 YYYY-MM-DD）、核查说明 HCSM",
        "  请不要修改监测编号 JCBH 和其他下发字段，不要增删图斑；两个文件填写一个即可。",
        "",
        "三、上报",
        f"  把填好的 {GPKG_NAME} 或 {LEDGER_NAME}（连同 {MANIFEST_NAME}）重新压缩为一个 zip 文件，",
        "  文件名保持原包名（可在末尾加“_回传”），报送省级卫片执法工作联系人。",
        "",
        "坐标系：CGCS2000 地理坐标（EPSG:4490）；面积单位：平方米（m²），1 亩 = 666.67 平方米。",
    ]
    if warnings:
        lines += ["", "四、注意（生成本包时发现的问题）"] + [f"  - {w}" for w in warnings]
    return "\n".join(lines) + "\n"
