"""Acquisition dates of imagery: from the file's tags, a configurable file-name pattern, or YYYYMMDD.

A file-name pattern is a regular expression searched in the file's name (not its folder), with
named groups ``year`` + ``month`` + ``day`` or ``year`` + ``doy`` (day of the year), e.g.
``(?P<year>\\d{4})(?P<doy>\\d{3})BJC`` for Landsat scene ids such as ``LT51200382000124BJC00``.
The pattern is only matched, never evaluated.
"""
from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from tiles.errors import ConfigError

DEFAULT_NAME_PATTERN = r"(?<!\d)(?P<year>(?:19|20)\d{2})(?P<month>\d{2})(?P<day>\d{2})(?!\d)"
DATE_TAGS = ("ACQUISITION_DATE", "acquisition_date", "DATE_ACQUIRED")


def compile_date_pattern(pattern: str, key: str = "[imagery].date_pattern") -> re.Pattern:
    """Compile a file-name date pattern; empty gives the built-in YYYYMMDD pattern.

    Raises ConfigError naming ``key`` when the expression is invalid or lacks the groups.
    """
    try:
        rx = re.compile(pattern or DEFAULT_NAME_PATTERN)
    except re.error as exc:
        raise ConfigError(f"{key} = {pattern!r} is not a regular expression ({exc})") from None
    groups = set(rx.groupindex)
    if not ({"year", "month", "day"} <= groups or {"year", "doy"} <= groups):
        raise ConfigError(f"{key} = {pattern!r} needs named groups (?P<year>..)(?P<month>..)(?P<day>..) "
                          f"or (?P<year>..)(?P<doy>..), e.g. '_(?P<year>\\d{{4}})(?P<month>\\d{{2}})"
                          f"(?P<day>\\d{{2}})_'")
    return rx


def date_from_name(path: str, pattern: re.Pattern) -> str:
    """ISO date found by ``pattern`` in the file name of ``path``; "" when none or not a real date."""
    m = pattern.search(Path(path).name)
    if not m:
        return ""
    g = m.groupdict()
    try:
        year = int(g["year"])
        if g.get("doy"):
            return (_dt.date(year, 1, 1) + _dt.timedelta(days=int(g["doy"]) - 1)).isoformat() \
                if 1 <= int(g["doy"]) <= (366 if _is_leap(year) else 365) else ""
        return _dt.date(year, int(g["month"]), int(g["day"])).isoformat()
    except (TypeError, ValueError, KeyError):
        return ""


def date_from_tags(tags: dict) -> str:
    """ISO date from ACQUISITION_DATE-like tags or TIFFTAG_DATETIME; "" when none."""
    for key in DATE_TAGS:
        text = (tags.get(key) or "")[:10]
        if text:
            try:
                return _dt.date.fromisoformat(text).isoformat()
            except ValueError:
                pass
    m = re.match(r"(\d{4})[:-](\d{2})[:-](\d{2})", tags.get("TIFFTAG_DATETIME", ""))
    if m:
        try:
            return _dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
        except ValueError:
            return ""
    return ""


def check_iso(text: str, key: str) -> str:
    """``text`` as an ISO date, or ConfigError naming ``key``."""
    try:
        return _dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise ConfigError(f"{key} = {text!r} is not a date (use YYYY-MM-DD)") from None


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
