"""One date's imagery as configured: the files (globs with {quarter}), band roles and date.

A date is one multi-band file or several scenes to mosaic (first valid pixel wins, in sorted
file order). Each scene keeps its own CRS; `tiles.reader` warps onto the processing grid.
"""
from __future__ import annotations

import datetime as _dt
import glob
import re
from dataclasses import dataclass, field
from pathlib import Path

import rasterio
from rasterio.errors import RasterioIOError

from tiles.errors import ConfigError, InputFileError

_DATE_IN_NAME = re.compile(r"(?<!\d)(20\d{2})(\d{2})(\d{2})(?!\d)")


@dataclass
class DateImagery:
    """The scenes of one date, with band indexes (1-based, file order) of each role."""

    label: str                      # "before" / "after"
    files: list[str]
    roles: tuple[str, ...]          # roles in array order, e.g. ("blue", "green", "red", "nir")
    indexes: tuple[int, ...]        # 1-based band index in the files for each role
    date: str                       # ISO date of acquisition
    nodata: list[float | None]      # per file
    crs: list[str]                  # per file, WKT or EPSG string
    cloud_masks: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "DateImagery":
        d = dict(d)
        d["roles"], d["indexes"] = tuple(d["roles"]), tuple(d["indexes"])
        return cls(**d)


def expand(pattern: str, quarter: str, prev_quarter: str, key: str) -> list[str]:
    """Fill {quarter}/{prev_quarter} and expand the glob; sorted, so the order is stable."""
    try:
        filled = pattern.format(quarter=quarter, prev_quarter=prev_quarter)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"[imagery].{key} = {pattern!r}: bad placeholder {exc} "
                          f"(only {{quarter}} and {{prev_quarter}} are known)") from None
    files = sorted(glob.glob(filled))
    return files


def open_date(label: str, pattern: str, roles_config: list[str], *, quarter: str, prev_quarter: str,
              date_override: str = "", nodata_override: float = -1,
              cloud_pattern: str = "") -> DateImagery:
    """Resolve one configured date (globs with placeholders) and check it; see ``open_files``."""
    files = expand(pattern, quarter, prev_quarter, label)
    if not files:
        raise InputFileError(f"[imagery].{label}: no file matches "
                             f"{pattern.format(quarter=quarter, prev_quarter=prev_quarter)!r} "
                             f"(check the path and the quarter)")
    masks = expand(cloud_pattern, quarter, prev_quarter, f"cloud_mask_{label}") if cloud_pattern else []
    if cloud_pattern and not masks:
        raise InputFileError(f"[imagery].cloud_mask_{label}: no file matches "
                             f"{cloud_pattern.format(quarter=quarter, prev_quarter=prev_quarter)!r}")
    return open_files(label, files, roles_config, date_override=date_override,
                      nodata_override=nodata_override, cloud_masks=masks)


def open_files(label: str, files: list[str], roles_config: list[str], *, date_override: str = "",
               nodata_override: float = -1, cloud_masks: list[str] | None = None,
               require_date: bool = True) -> DateImagery:
    """Check the files of one date (readable, CRS, enough bands) and find its acquisition date.

    Raises InputFileError naming the file and the fix.
    """
    roles = tuple(r for r in roles_config if r != "-")
    indexes = tuple(i + 1 for i, r in enumerate(roles_config) if r != "-")
    nodatas, crss, dates = [], [], []
    for f in files:
        if not Path(f).exists():
            raise InputFileError(f"{f}: file not found")
        try:
            with rasterio.open(f) as src:
                if src.crs is None:
                    raise InputFileError(f"{f}: has no CRS (assign one, e.g. gdal_edit.py -a_srs EPSG:4545)")
                if src.count < max(indexes):
                    raise InputFileError(f"{f}: has {src.count} bands but the band roles name "
                                         f"{len(roles_config)} ({', '.join(roles_config)})")
                nodatas.append(nodata_override if nodata_override != -1 else src.nodata)
                crss.append(src.crs.to_string())
                dates.append(_date_of(src, f))
        except RasterioIOError as exc:
            raise InputFileError(f"{f}: cannot be read as a raster ({exc})") from None
    if date_override:
        date = _check_iso(date_override, f"[imagery].{label}_date")
    else:
        known = sorted(d for d in dates if d)
        if not known and not require_date:
            known = [""]
        elif not known:
            raise InputFileError(f"{files[0]}: no acquisition date in the metadata or the file name "
                                 f"(set [imagery].{label}_date = \"YYYY-MM-DD\")")
        date = known[len(known) // 2]
    return DateImagery(label=label, files=list(files), roles=roles, indexes=indexes, date=date,
                       nodata=nodatas, crs=crss, cloud_masks=list(cloud_masks or []))


def _date_of(src, path: str) -> str:
    """Acquisition date from the tags (ACQUISITION_DATE, TIFFTAG_DATETIME) or the file name."""
    tags = src.tags()
    for key in ("ACQUISITION_DATE", "acquisition_date", "DATE_ACQUIRED"):
        if tags.get(key):
            try:
                return _check_iso(tags[key][:10], key)
            except ConfigError:
                pass
    stamp = tags.get("TIFFTAG_DATETIME", "")
    m = re.match(r"(\d{4})[:-](\d{2})[:-](\d{2})", stamp)
    if m:
        return f"{m.group(1)}-{m.group(2)}-{m.group(3)}"
    m = _DATE_IN_NAME.search(Path(path).name)
    if m:
        try:
            return _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
        except ValueError:
            return ""
    return ""


def _check_iso(text: str, key: str) -> str:
    try:
        return _dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise ConfigError(f"{key} = {text!r} is not a date (use YYYY-MM-DD)") from None
