"""The Shapefile set of a county package, with a .cpg naming the DBF encoding.

UTF-8 by default; GBK (code page 936) when configured, for older Chinese tools. A text
value that the encoding cannot hold, or that is longer than a DBF field (254 bytes), is
never replaced or cut: :func:`encoding_problems` lists it and the package skips the
Shapefile for that county with a warning naming the polygon, field and character.
"""
from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyogrio

from pipeline.package.fields import FIELDS, LAYER_POINTS, LAYER_POLYGONS, SCHEMA
from tiles.errors import ConfigError

# encoding (config value) -> (Python codec, GDAL ENCODING option, .cpg text, DBF LDID byte)
ENCODINGS = {
    "UTF-8": ("utf-8", "UTF-8", "UTF-8", 0x00),
    "GBK": ("gbk", "CP936", "936", 0x4D),
}
_ALIASES = {"UTF8": "UTF-8", "UTF-8": "UTF-8", "GBK": "GBK", "CP936": "GBK", "936": "GBK",
            "GB2312": "GBK"}
DBF_TEXT_BYTES = 254

assert all(len(f) <= 10 for f in FIELDS), "DBF field names are at most 10 characters"


def normalise_encoding(encoding: str) -> str:
    """Config value -> "UTF-8" or "GBK"; anything else is a ConfigError."""
    key = str(encoding).strip().upper().replace("_", "-")
    if key not in _ALIASES:
        raise ConfigError(f"export.shp_encoding = {encoding!r}; use \"UTF-8\" (default) or \"GBK\"")
    return _ALIASES[key]


def encoding_problems(frame: gpd.GeoDataFrame, encoding: str) -> list[str]:
    """Text values the DBF cannot hold in ``encoding``, one line each (empty: none).

    Each line names the JCBH, the field, the offending character (or the byte length)
    and the fix.
    """
    enc = normalise_encoding(encoding)
    codec = ENCODINGS[enc][0]
    problems = []
    text_fields = [f for f in FIELDS if SCHEMA[f][1] in ("text", "date")]
    ids = frame["JCBH"].astype(str).to_numpy()
    for f in text_fields:
        for jcbh, v in zip(ids, frame[f].to_numpy(dtype=object)):
            if v is None or not isinstance(v, str):
                continue
            try:
                raw = v.encode(codec)
            except UnicodeEncodeError as e:
                bad = v[e.start:e.end]
                problems.append(f"{jcbh} {f}: character {bad!r} (U+{ord(bad[0]):04X}) has no {enc} "
                                "code; set export.shp_encoding = \"UTF-8\" or use the GeoPackage")
                continue
            if len(raw) > DBF_TEXT_BYTES:
                problems.append(f"{jcbh} {f}: {len(raw)} bytes in {enc}, a DBF text field holds "
                                f"{DBF_TEXT_BYTES}; use the GeoPackage for the full text")
    return problems


def write_shapefiles(frame: gpd.GeoDataFrame, points: gpd.GeoDataFrame, folder: Path,
                     *, encoding: str = "UTF-8") -> list[Path]:
    """Write 变化图斑.shp and 图斑中心点.shp (EPSG:4490) with .cpg files into ``folder``.

    The caller checks :func:`encoding_problems` first; this function assumes every value
    encodes. Returns the written .shp paths.
    """
    enc = normalise_encoding(encoding)
    _, gdal_enc, cpg, ldid = ENCODINGS[enc]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, df in ((LAYER_POLYGONS, frame), (LAYER_POINTS, points)):
        shp = folder / f"{name}.shp"
        pyogrio.write_dataframe(df, shp, driver="ESRI Shapefile", encoding=gdal_enc)
        # The .cpg (read by ArcGIS, QGIS and GDAL) and the DBF language driver id (older
        # readers) both name the code page.
        shp.with_suffix(".cpg").write_text(cpg, encoding="ascii")
        with open(shp.with_suffix(".dbf"), "r+b") as f:
            f.seek(29)
            f.write(bytes([ldid]))
        out.append(shp)
    return out
