"""What a county package holds: the issued schema and the names of files and layers.

The field order, Chinese headers and verdict codes come from the run's schema
(``pipeline/schema.py``, DESIGN.md); the package adds JZRQ (截止日期, the batch due date)
and marks date fields so writers format them as ISO text. The ingest of returned packages
reads the file and layer names defined here.
"""
from __future__ import annotations

from pipeline import schema as _run_schema

_DATES = {"QSX", "HSX", "HCRQ", "JZRQ"}


def _package_schema() -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for name, zh, kind in _run_schema.SCHEMA:
        out[name] = (zh, "date" if name in _DATES else kind)
        if name == "PCXH":
            out["JZRQ"] = ("截止日期", "date")
    return out


# field -> (Chinese header, kind); kind is "text", "float", "int" or "date" (ISO text).
SCHEMA: dict[str, tuple[str, str]] = _package_schema()
"""The run's schema (pipeline/schema.py) plus JZRQ, the batch due date, after PCXH."""

FIELDS: tuple[str, ...] = tuple(SCHEMA)
"""Field order of every export."""

FIELDS_ZH: dict[str, str] = {name: zh for name, (zh, _) in SCHEMA.items()}
"""Field name -> Chinese header (XLSX ledger, report, KMZ descriptions)."""

VERDICT_FIELDS: tuple[str, ...] = tuple(_run_schema.VERDICT_FIELDS)
"""Fields blank when issued and filled by the county."""

HCJG_VALUES: tuple[str, ...] = tuple(_run_schema.VERDICTS)
"""Verdict codes a county may enter in HCJG (DOMAIN.md)."""

# Unit of numeric fields in the report: areas (…MJ) in m², JD / WD in degrees.
UNITS: dict[str, str] = {
    **{f: "m²" for f, (_, kind) in SCHEMA.items() if kind == "float" and f.endswith("MJ")},
    "JD": "°", "WD": "°",
}

# Names inside a county package (the ingest of returned packages reads the same names).
GPKG_NAME = "图斑.gpkg"
LAYER_POLYGONS = "变化图斑"
LAYER_POINTS = "图斑中心点"
LAYER_BATCHES = "批次"
LAYER_ROUTES = "批次路线"
LEDGER_NAME = "台账.xlsx"
LEDGER_SHEET = "台账"
SHP_DIR = "图斑_shp"
KMZ_NAME = "图斑.kmz"
CHIP_DIR = "影像"
REPORT_NAME = "报告.html"
OVERVIEW_NAME = "总图.png"
QGIS_NAME = "图斑.qgs"
README_NAME = "README.txt"
MANIFEST_NAME = "manifest.json"

ALL_FORMATS: tuple[str, ...] = ("gpkg", "shp", "kmz", "xlsx", "chips", "html", "qgis")
