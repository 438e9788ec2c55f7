"""KMZ for phone map apps (奥维, 两步路, Google Earth): one folder per batch.

Each polygon is a placemark holding its centre point and outline (MultiGeometry, so a
tap on either opens it), coloured by priority, with a description of the key attributes
and the before / after chips stored inside the KMZ (``files/...``). Each batch folder
also has its route line. Coordinates are CGCS2000 lon/lat (EPSG:4490), which phone apps
treat as WGS 84 (the two differ by centimetres).
"""
from __future__ import annotations

import zipfile
from collections.abc import Mapping
from html import escape
from pathlib import Path

import geopandas as gpd
import pandas as pd

from pipeline.package.fields import FIELDS_ZH

# priority level -> (RGB hex, label); KML colours are aabbggrr.
# Priority levels of overlay.priority: 1 most urgent .. 3.
LEVEL_COLOURS = {1: ("e41a1c", "1 最紧急"), 2: ("ff7f00", "2 紧急"), 3: ("ffd700", "3 一般")}
_DESC_FIELDS = ("YXJLY", "TBLX", "JCMJM", "GDMJ", "JBNTMJ", "QSX", "HSX", "JZRQ", "JD", "WD", "QQJCBH")


def kml_colour(rgb: str, alpha: int) -> str:
    """RGB hex + alpha (0-255) -> KML aabbggrr."""
    return f"{alpha:02x}{rgb[4:6]}{rgb[2:4]}{rgb[0:2]}"


def write_kmz(frame: gpd.GeoDataFrame, routes: gpd.GeoDataFrame, path: Path, *, title: str,
              chips: Mapping[str, tuple[Path, Path]] | None = None) -> Path:
    """Write the KMZ of one county.

    Parameters
    ----------
    frame : GeoDataFrame
        Issue frame (EPSG:4490, FIELDS columns).
    routes : GeoDataFrame
        Output of :func:`pipeline.package.batch_layer.batch_routes` (may be empty).
    path : Path
        The .kmz to write.
    title : str
        Document name shown in the app.
    chips : mapping JCBH -> (before PNG path, after PNG path), optional
        PNGs copied into the KMZ under ``files/`` and shown in the descriptions.

    Returns
    -------
    Path
    """
    chips = chips or {}
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<kml xmlns="http://www.opengis.net/kml/2.2">', "<Document>",
             f"<name>{escape(title)}</name>", "<open>1</open>"]
    for level, (rgb, _) in LEVEL_COLOURS.items():
        parts.append(
            f'<Style id="yxj{level}"><IconStyle><color>{kml_colour(rgb, 255)}</color><scale>1.1</scale>'
            "<Icon><href>http://maps.google.com/mapfiles/kml/shapes/placemark_circle.png</href></Icon>"
            f"</IconStyle><LabelStyle><scale>0.8</scale></LabelStyle>"
            f"<LineStyle><color>{kml_colour(rgb, 255)}</color><width>3</width></LineStyle>"
            f"<PolyStyle><color>{kml_colour(rgb, 80)}</color></PolyStyle></Style>")
    parts.append('<Style id="route"><LineStyle><color>ccffffff</color><width>2</width></LineStyle></Style>')

    route_by = {r.PCBH: r.geometry for r in routes.itertuples()} if len(routes) else {}
    batch = frame["PCBH"].fillna("未分批")
    for code in sorted(batch.unique()):
        g = frame[batch == code].sort_values(["PCXH", "JCBH"], na_position="last")
        due = sorted(str(v) for v in g["JZRQ"].dropna())
        head = f"批次 {code}（{len(g)} 个" + (f"，截止 {due[0]}）" if due else "）")
        parts += ["<Folder>", f"<name>{escape(head)}</name>"]
        if code in route_by:
            parts.append(f"<Placemark><name>{escape(f'{code} 路线')}</name><styleUrl>#route</styleUrl>"
                         f"<LineString><tessellate>1</tessellate><coordinates>"
                         f"{_coords(route_by[code].coords)}</coordinates></LineString></Placemark>")
        for row in g.itertuples(index=False):
            parts.append(_placemark(row._asdict(), chips))
        parts.append("</Folder>")
    parts += ["</Document>", "</kml>"]
    kml = "\n".join(parts).encode("utf-8")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("doc.kml", kml)  # first entry: the file readers open
        for before, after in chips.values():
            for p in (before, after):
                zf.write(p, f"files/{Path(p).name}", compress_type=zipfile.ZIP_STORED)
    return path


def _placemark(r: dict, chips: Mapping[str, tuple[Path, Path]]) -> str:
    level = 3 if _missing(r["YXJ"]) else min(max(int(r["YXJ"]), 1), 3)
    seq = "" if _missing(r["PCXH"]) else f"{int(r['PCXH']):02d} "
    rows = [f"<tr><th>{escape(FIELDS_ZH['JCBH'])}</th><td>{escape(str(r['JCBH']))}</td></tr>",
            f"<tr><th>{escape(FIELDS_ZH['YXJ'])}</th><td>{level}</td></tr>"]
    for f in _DESC_FIELDS:
        v = r.get(f)
        if _missing(v):
            continue
        text = f"{v:.6f}" if f in ("JD", "WD") else (f"{v:.2f}" if isinstance(v, float) else str(v))
        rows.append(f"<tr><th>{escape(FIELDS_ZH[f])}</th><td>{escape(text)}</td></tr>")
    desc = '<table border="1" cellpadding="2" style="border-collapse:collapse">' + "".join(rows) + "</table>"
    if r["JCBH"] in chips:
        b, a = (Path(p).name for p in chips[r["JCBH"]])
        desc += (f'<p>前时相 {escape(str(r.get("QSX") or ""))}<br/><img src="files/{escape(b)}" width="260"/></p>'
                 f'<p>后时相 {escape(str(r.get("HSX") or ""))}<br/><img src="files/{escape(a)}" width="260"/></p>')
    geom = r["geometry"]
    polys = "".join(_polygon(p) for p in getattr(geom, "geoms", [geom]))
    return (f"<Placemark><name>{escape(seq + str(r['JCBH']))}</name>"
            f"<description><![CDATA[{desc}]]></description><styleUrl>#yxj{level}</styleUrl>"
            f"<MultiGeometry><Point><coordinates>{r['JD']:.7f},{r['WD']:.7f}</coordinates></Point>"
            f"{polys}</MultiGeometry></Placemark>")


def _polygon(p) -> str:
    inner = "".join(f"<innerBoundaryIs><LinearRing><coordinates>{_coords(h.coords)}</coordinates>"
                    "</LinearRing></innerBoundaryIs>" for h in p.interiors)
    return (f"<Polygon><tessellate>1</tessellate><outerBoundaryIs><LinearRing><coordinates>"
            f"{_coords(p.exterior.coords)}</coordinates></LinearRing></outerBoundaryIs>{inner}</Polygon>")


def _missing(v) -> bool:
    return v is None or bool(pd.isna(v))


def _coords(coords) -> str:
    return " ".join(f"{x:.7f},{y:.7f}" for x, y, *_ in coords)
