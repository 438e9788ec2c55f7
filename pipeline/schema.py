"""The attribute schema of a change polygon (DESIGN.md): field order, Chinese names, types.

One place for it: the run's changes.gpkg, the county packages and the ledger all use this.
"""
from __future__ import annotations

import geopandas as gpd

# (field, 中文, kind) in the order every output uses. kind: text, float, int.
SCHEMA: tuple[tuple[str, str, str], ...] = (
    ("JCBH", "监测编号", "text"),
    ("XZQDM", "行政区代码", "text"),
    ("XZQMC", "行政区名称", "text"),
    ("KXZQ", "跨行政区", "text"),
    ("QSX", "前时相", "text"),
    ("HSX", "后时相", "text"),
    ("JCMJ", "监测面积", "float"),
    ("JCMJM", "监测面积(亩)", "float"),
    ("TBLX", "图斑类型", "text"),
    ("ZXD", "置信度", "float"),
    ("ZXDJ", "置信等级", "text"),
    ("GDMJ", "耕地面积", "float"),
    ("JBNTMJ", "永久基本农田面积", "float"),
    ("STHXMJ", "生态保护红线面积", "float"),
    ("BHQMJ", "自然保护地面积", "float"),
    ("BHQHXMJ", "核心保护区面积", "float"),
    ("PZMJ", "已批建设用地面积", "float"),
    ("SSNYDMJ", "设施农用地面积", "float"),
    ("BHQFQ", "保护地分区", "text"),
    ("YXJ", "优先级", "int"),
    ("YXJF", "优先级分值", "float"),
    ("YXJLY", "优先级理由", "text"),
    ("PCBH", "批次编号", "text"),
    ("PCXH", "批次内序号", "int"),
    ("QQJCBH", "前期监测编号", "text"),
    ("JD", "经度", "float"),
    ("WD", "纬度", "float"),
    ("HCJG", "核查结果", "text"),
    ("WFLX", "违法类型", "text"),
    ("SJYT", "实际用途", "text"),
    ("HCRY", "核查人", "text"),
    ("HCRQ", "核查日期", "text"),
    ("HCSM", "核查说明", "text"),
)
FIELDS = tuple(f for f, _, _ in SCHEMA)
FIELDS_ZH = {f: zh for f, zh, _ in SCHEMA}
VERDICT_FIELDS = ("HCJG", "WFLX", "SJYT", "HCRY", "HCRQ", "HCSM")
VERDICTS = ("合法", "违法", "农村道路", "设施农用地", "临时用地", "其他", "伪变化")


def order_columns(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Schema fields first in their order, then any extra detector columns, geometry last."""
    geom = gdf.geometry.name
    first = [f for f in FIELDS if f in gdf.columns]
    rest = [c for c in gdf.columns if c not in first and c != geom]
    return gdf[first + rest + [geom]]
