"""The county's XLSX ledger (台账): one row per polygon, Chinese headers, verdict drop-down.

Text from data is always stored as a string cell; a string starting with = + - @ (or a
tab / carriage return) also gets Excel's quote prefix, so neither opening the file nor
editing the cell later turns it into a formula (CSV/formula injection).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation

from pipeline.package.fields import (
    FIELDS, FIELDS_ZH, HCJG_VALUES, LEDGER_SHEET, SCHEMA, UNITS, VERDICT_FIELDS,
)

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER_FORMATS = {"JD": "0.000000", "WD": "0.000000"}  # other floats: "0.00"
_WIDE = {"JCBH": 20, "XZQMC": 12, "YXJLY": 40, "PCBH": 20, "QQJCBH": 20, "HCSM": 30,
         "SJYT": 14, "WFLX": 12, "HCJG": 12}
LINK_HEADERS = ("前时相影像", "后时相影像")


def write_ledger(frame: pd.DataFrame, path: Path, *,
                 chip_links: Mapping[str, tuple[str, str]] | None = None) -> Path:
    """Write the ledger of one county.

    Parameters
    ----------
    frame : DataFrame
        Output of :func:`pipeline.package.issue_frame.issue_frame` (FIELDS columns; geometry ignored).
    path : Path
        The .xlsx to write (overwritten; the caller makes the package atomic).
    chip_links : mapping JCBH -> (before_png, after_png), optional
        Paths relative to the ledger; adds two hyperlink columns 前时相影像 / 后时相影像.

    Returns
    -------
    Path
        ``path``.
    """
    wb = Workbook()
    ws = wb.active
    ws.title = LEDGER_SHEET
    headers = [FIELDS_ZH[f] for f in FIELDS]
    if chip_links is not None:
        headers += list(LINK_HEADERS)
    ws.append(headers)
    bold = Font(bold=True)
    verdict_fill = PatternFill("solid", fgColor="FFF2CC")
    for c, field in enumerate(FIELDS, start=1):
        cell = ws.cell(row=1, column=c)
        cell.font = bold
        cell.alignment = Alignment(horizontal="center", vertical="center", wrap_text=True)
        if field in VERDICT_FIELDS:
            cell.fill = verdict_fill
        ws.column_dimensions[get_column_letter(c)].width = _WIDE.get(field, 11)

    columns = [frame[f].to_numpy(dtype=object) for f in FIELDS]
    n = len(frame)
    for r in range(n):
        row = r + 2
        for c, field in enumerate(FIELDS, start=1):
            v = columns[c - 1][r]
            if _blank(v):
                continue
            cell = ws.cell(row=row, column=c)
            kind = SCHEMA[field][1]
            if kind in ("float", "int"):
                cell.value = float(v) if kind == "float" else int(v)
                if kind == "float":
                    cell.number_format = _NUMBER_FORMATS.get(field, "0.00")
            else:
                set_text(cell, str(v))
        if chip_links is not None:
            links = chip_links.get(str(columns[0][r]))
            for k, target in enumerate(links or ()):
                cell = ws.cell(row=row, column=len(FIELDS) + 1 + k)
                set_text(cell, LINK_HEADERS[k][:3])
                cell.hyperlink = target
                cell.style = "Hyperlink"
    if chip_links is not None:
        for k in range(len(LINK_HEADERS)):
            ws.column_dimensions[get_column_letter(len(FIELDS) + 1 + k)].width = 11

    last = max(n + 1, 2)
    col_hcjg = get_column_letter(FIELDS.index("HCJG") + 1)
    dv = DataValidation(type="list", formula1='"' + ",".join(HCJG_VALUES) + '"',
                        allow_blank=True, showDropDown=False, showErrorMessage=True,
                        errorTitle="核查结果", error="请从下拉列表中选择：" + "、".join(HCJG_VALUES),
                        promptTitle="核查结果", prompt="请选择：" + "、".join(HCJG_VALUES))
    dv.add(f"{col_hcjg}2:{col_hcjg}{last}")
    ws.add_data_validation(dv)
    ws.freeze_panes = "B2"
    ws.auto_filter.ref = f"A1:{get_column_letter(len(headers))}{last}"
    _explain_sheet(wb)
    wb.save(path)
    return path


def set_text(cell, text: str) -> None:
    """Store ``text`` as a string cell that Excel never evaluates as a formula."""
    cell.value = text
    cell.data_type = "s"
    if text.startswith(FORMULA_START):
        cell.quotePrefix = True


def _explain_sheet(wb: Workbook) -> None:
    ws = wb.create_sheet("说明")
    ws.append(["字段代码", "中文名称", "说明"])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for f in FIELDS:
        note = "由县级核查后填写" if f in VERDICT_FIELDS else ""
        if f == "HCJG":
            note = "由县级填写，取值：" + "、".join(HCJG_VALUES)
        elif f == "HCRQ":
            note = "由县级填写，格式 YYYY-MM-DD"
        elif UNITS.get(f) == "m²":
            note = "平方米，CGCS2000 椭球面积"
        elif f in ("JD", "WD"):
            note = "度，CGCS2000"
        elif f == "YXJ":
            note = "1 为最紧急"
        elif f == "JZRQ":
            note = "核查截止日期"
        ws.append([f, FIELDS_ZH[f], note])
    ws.column_dimensions["A"].width = 10
    ws.column_dimensions["B"].width = 18
    ws.column_dimensions["C"].width = 50


def _blank(v: object) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and np.isnan(v):
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False
