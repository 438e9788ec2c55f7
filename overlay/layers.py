"""Reading reference layers (counties, 耕地, 永久基本农田, 生态保护红线, 自然保护地, 已批建设用地).

A layer spec is the dict the lead's config code builds from a ``[layers.<name>]`` table::

    {"path": Path, "layer": str?, "code_field": str?, "codes": [str]?, "name_field": str?,
     "encoding": str?, "zone_field": str?, "core_values": [str]?}

Reads push the bounding box down into GDAL (in the layer's own CRS) and ask only for the
columns needed, so a province-wide DLTB is never loaded whole for one county. Feature
selection by code (``codes``, prefix match, e.g. "0103" also takes "0103K") runs on the Arrow
column before any geometry is parsed (pandas when pyarrow is absent): nothing from the config
is ever spliced into SQL. Only features near the target polygons are then repaired and kept.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyproj
import shapely

from overlay.hygiene import clean_polygons
from tiles.errors import ConfigError, InputFileError

#: Layer names the overlay understands; only "counties" is mandatory.
LAYER_NAMES = (
    "counties", "farmland", "basic_farmland", "ecological_redline",
    "protected_areas", "approved", "facility_farmland",
)
SPEC_KEYS = {"path", "layer", "code_field", "codes", "name_field", "encoding", "zone_field", "core_values"}
_FIELD_KEYS = ("code_field", "name_field", "zone_field")
_AREAL_TYPES = ("Polygon", "MultiPolygon", "Unknown", "GeometryCollection", "CurvePolygon",
                "MultiSurface", "Surface", "PolyhedralSurface", "TIN")


def _gdal_path(path) -> str:
    """GDAL dataset name of a spec path: ``.gz`` through /vsigzip/ (e.g. ``counties.geojson.gz``),
    other ``.zip`` through /vsizip/ (Shapefile(s) at the root of the archive); ``.gdb.zip`` and
    ``.shp.zip`` GDAL opens itself; /vsi paths pass unchanged."""
    text = str(path)
    lower = text.lower()
    if text.startswith("/vsi") or lower.endswith((".gdb.zip", ".shp.zip")):
        return text
    if lower.endswith(".gz"):
        return "/vsigzip/" + text
    if lower.endswith(".zip"):
        return "/vsizip/" + text
    return text


def guess_dbf_encoding(path) -> str | None:
    """Encoding of a Shapefile's DBF that declares none (no .cpg, language driver id 0).

    Chinese tools often write GBK (CP936) without saying so; GDAL then assumes ISO-8859-1 and
    returns mojibake. The first MiB of records decides: pure ASCII -> None (nothing to decode),
    valid UTF-8 -> "UTF-8", anything else -> "GBK". Returns None as well when the file is not a
    Shapefile or declares its encoding (GDAL honours the declaration).
    """
    path = Path(path)
    if path.suffix.lower() != ".shp":
        return None
    if any(path.with_suffix(s).exists() for s in (".cpg", ".CPG")):
        return None
    dbf = next((path.with_suffix(s) for s in (".dbf", ".DBF") if path.with_suffix(s).exists()), None)
    if dbf is None:
        return None
    with open(dbf, "rb") as f:
        head = f.read(32)
        if len(head) < 32 or head[29] != 0:
            return None
        header_len = int.from_bytes(head[8:10], "little")
        record_len = max(int.from_bytes(head[10:12], "little"), 1)
        f.seek(header_len)
        sample = f.read((1 << 20) // record_len * record_len or record_len)
    if sample.isascii():
        return None
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        return "GBK"
    return "UTF-8"


def _where(spec) -> str:
    name = spec.get("layer")
    return f"{spec['path']}" + (f" (layer {name!r})" if name else "")


def _check_spec(spec) -> None:
    if not isinstance(spec, dict) or "path" not in spec:
        raise ConfigError(f"layer spec {spec!r} has no 'path'; give [layers.<name>] path = \"file.gpkg\"")
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ConfigError(f"layer spec for {spec['path']}: unknown key(s) {sorted(unknown)}; known: {sorted(SPEC_KEYS)}")
    codes = spec.get("codes")
    if codes is not None and (isinstance(codes, str) or not all(isinstance(c, str) and c for c in codes)):
        raise ConfigError(f"layer {spec['path']}: 'codes' must be a list of non-empty strings like [\"0101\", \"0102\"], got {codes!r}")
    if codes and not spec.get("code_field"):
        raise ConfigError(f"layer {spec['path']}: 'codes' given without 'code_field'; name the field holding the codes (e.g. code_field = \"DLBM\")")
    core = spec.get("core_values")
    if core is not None and (isinstance(core, str) or not all(isinstance(c, str) for c in core)):
        raise ConfigError(f"layer {spec['path']}: 'core_values' must be a list of strings like [\"核心保护区\"], got {core!r}")


def _stamp(path) -> tuple:
    """(size, mtime) of a file or FileGDB folder: the cache key that notices a replaced file."""
    try:
        st = os.stat(path)
    except OSError:
        return (None, None)
    return (st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _layer_names(path: str, stamp: tuple) -> tuple:
    try:
        return tuple(str(n) for n in pyogrio.list_layers(_gdal_path(path))[:, 0])
    except Exception as exc:  # GDAL raises several DataSource errors; all mean the same here
        raise InputFileError(f"cannot open layer file {path}: {exc}; check it is a GeoPackage, Shapefile, "
                             f"FileGDB or (gzipped) GeoJSON") from exc


@functools.lru_cache(maxsize=256)
def _read_info(path: str, stamp: tuple, layer: str, encoding) -> dict:
    # Opening a GeoJSON (above all a gzipped one) parses it whole: do it once per file version.
    return pyogrio.read_info(_gdal_path(path), layer=layer, encoding=encoding)


def resolve_layer(spec) -> str:
    """Name of the layer to read inside the file of ``spec``.

    Raises
    ------
    InputFileError
        The file is missing or unreadable, the named layer is absent, or the file holds several
        layers and the spec names none.
    """
    _check_spec(spec)
    path = spec["path"]
    if not str(path).startswith("/vsi") and not Path(path).exists():
        raise InputFileError(f"layer file {path} does not exist; fix 'path' in the [layers] table of the config")
    names = _layer_names(str(path), _stamp(path))
    wanted = spec.get("layer")
    if wanted:
        if wanted not in names:
            raise InputFileError(f"{path} has no layer {wanted!r}; its layers are {list(names)}; fix 'layer' in the config")
        return wanted
    if len(names) != 1:
        raise InputFileError(f"{path} holds {len(names)} layers {list(names)}; name one with 'layer = \"...\"' in the config")
    return names[0]


def layer_info(spec) -> dict:
    """Schema of the layer of ``spec`` checked against the spec: fields, CRS, geometry type.

    Returns
    -------
    dict
        ``layer`` (name), ``fields`` (list of str), ``crs`` (pyproj.CRS), ``geometry_type`` (str),
        ``features`` (int, -1 when the driver cannot count cheaply).

    Raises
    ------
    InputFileError
        Missing file or layer, no CRS, a field named in the spec that the layer lacks, or a
        point / line layer.
    """
    layer = resolve_layer(spec)
    path = spec["path"]
    info = _read_info(str(path), _stamp(path), layer, spec.get("encoding"))
    fields = [str(f) for f in info["fields"]]
    if info["crs"] is None:
        raise InputFileError(
            f"{path} layer {layer!r} has no CRS; add a .prj (Shapefile) or assign one with "
            f"ogr2ogr -a_srs EPSG:4490 (CGCS2000) before use")
    gtype = str(info["geometry_type"] or "Unknown")
    if not gtype.replace(" Z", "").replace(" M", "").replace("3D ", "") in _AREAL_TYPES:
        raise InputFileError(f"{path} layer {layer!r} holds {gtype} geometries; a reference layer must be polygons")
    for key in _FIELD_KEYS:
        field = spec.get(key)
        if field and field not in fields:
            raise InputFileError(f"{path} layer {layer!r} has no field {field!r} ({key}); its fields are {fields}; fix '{key}' in the config")
    return {"layer": layer, "fields": fields, "crs": pyproj.CRS.from_user_input(info["crs"]),
            "geometry_type": gtype, "features": int(info.get("features", -1))}


def layer_fields(spec) -> list[str]:
    """Attribute field names of the layer of ``spec``, after checking file, layer, CRS and fields.

    Cheap (reads the schema only): meant for ``tianyan validate`` before a long run.

    Raises
    ------
    InputFileError
        As :func:`layer_info`.
    """
    return layer_info(spec)["fields"]


def code_text(values) -> np.ndarray:
    """Codes as stripped text, vectorised: integers stay integers (450512, not "450512.0"),
    null becomes ""."""
    values = pd.Series(values)
    if pd.api.types.is_bool_dtype(values.dtype):
        values = values.astype(object)
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype(str).to_numpy(dtype=object)
    if pd.api.types.is_float_dtype(values.dtype):
        v = values.to_numpy(dtype=float)
        whole = np.isfinite(v) & (v == np.round(v))
        text = np.where(whole, np.round(np.where(whole, v, 0)).astype(np.int64).astype(str), v.astype(str))
        return np.where(np.isnan(v), "", text).astype(object)
    return values.astype(object).where(values.notna(), "").astype(str).str.strip().to_numpy(dtype=object)


def _prefix_mask(values, codes) -> np.ndarray:
    """Boolean mask of the codes that start with one of ``codes`` (e.g. "0103" takes "0103K")."""
    return pd.Series(code_text(values), dtype=object).str.startswith(tuple(codes)).to_numpy(dtype=bool)


def _prefix_mask_arrow(column, codes):
    """``_prefix_mask`` on an Arrow column without leaving Arrow for text and integer codes."""
    if pa.types.is_integer(column.type):
        column = pc.cast(column, pa.string())
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return pa.array(_prefix_mask(column.to_pandas(), codes))
    text = pc.utf8_trim_whitespace(column)
    mask = pc.starts_with(text, pattern=codes[0])
    for code in codes[1:]:
        mask = pc.or_(mask, pc.starts_with(text, pattern=code))
    return pc.fill_null(mask, False)


def _read(path, *, layer, columns, bbox, encoding, code_field, codes):
    """Read features; with pyarrow, rows are filtered by code before any WKB is parsed.

    Returns (attributes DataFrame, geometries ndarray, CRS, number of features read).
    """
    gpath = _gdal_path(path)
    if _USE_ARROW:
        meta, table = pyogrio.read_arrow(gpath, layer=layer, columns=columns, bbox=bbox, encoding=encoding)
        n_read = table.num_rows
        if codes:
            table = table.filter(_prefix_mask_arrow(table.column(code_field), codes))
        geom_name = meta["geometry_name"] or "wkb_geometry"
        wkb = table.column(geom_name).to_numpy(zero_copy_only=False)
        geoms = shapely.from_wkb(wkb, on_invalid="fix")
        attrs = table.drop_columns([geom_name]).to_pandas()
        return attrs, geoms, meta["crs"], n_read
    gdf = pyogrio.read_dataframe(gpath, layer=layer, columns=columns, bbox=bbox, encoding=encoding,
                                 force_2d=True, on_invalid="fix")
    n_read = len(gdf)
    if codes:
        gdf = gdf[_prefix_mask(gdf[code_field], codes)]
    return pd.DataFrame(gdf.drop(columns=gdf.geometry.name)), gdf.geometry.to_numpy(), gdf.crs, n_read


def _near_mask(geoms: np.ndarray, crs, near, margin: float) -> np.ndarray:
    """Features whose envelope meets the envelope (grown by ``margin``) of a ``near`` geometry."""
    if len(geoms) == 0:
        return np.zeros(0, dtype=bool)
    present = near.values[~shapely.is_missing(near.values)]
    grow = np.array([-1.0, -1.0, 1.0, 1.0]) * margin
    boxes = shapely.box(*(shapely.bounds(np.asarray(present, dtype=object)) + grow).T)
    if not near.crs.equals(crs):
        # densify so that long box edges stay covering after reprojection
        boxes = shapely.segmentize(boxes, max(margin, 1e-9) * 1000.0)
        boxes = gpd.GeoSeries(boxes, crs=near.crs).to_crs(crs).values
    hit = shapely.STRtree(geoms).query(boxes)[1]
    mask = np.zeros(len(geoms), dtype=bool)
    mask[hit] = True
    return mask


def read_layer(spec, *, bbox=None, bbox_crs=None, columns=None, near=None, near_margin=1.0) -> gpd.GeoDataFrame:
    """Read the features of one reference layer, filtered, cleaned, in the layer's own CRS.

    Parameters
    ----------
    spec : dict
        Layer spec (see module docstring). ``codes`` keep only features whose ``code_field``
        starts with one of the codes; ``encoding`` overrides the file's declared encoding
        (e.g. "GBK" for a Chinese shapefile without .cpg).
    bbox : tuple of float, optional
        (xmin, ymin, xmax, ymax) of the area of interest; only features whose envelope meets it
        are read (pushed down to GDAL and the file's spatial index). Default: the bounds of
        ``near`` when given.
    bbox_crs : CRS-like, optional
        CRS of ``bbox``; it is transformed (densified edges) into the layer's CRS. None means the
        CRS of ``near`` if given, else the layer's own CRS.
    columns : list of str, optional
        Attribute fields to read; default: the spec's code / name / zone fields. The code field
        is always read when ``codes`` filter the features.
    near : geopandas.GeoSeries, optional
        Target geometries (with a CRS): only features whose envelope meets the envelope of one
        of them, grown by ``near_margin`` (units of ``near.crs``), are kept and cleaned. This is
        what keeps a province layer cheap when changes are scattered over it.
    near_margin : float
        See ``near``; default 1 (metre in a projected CRS).

    Returns
    -------
    geopandas.GeoDataFrame
        Valid Polygon / MultiPolygon features in the layer's CRS, index reset. Invalid geometries
        are repaired (``make_valid``), null / empty / non-areal ones dropped. Counts are in
        ``gdf.attrs["read_stats"]``: ``read`` (features returned by GDAL), ``selected`` (after the
        code filter), ``candidates`` (after the ``near`` filter), ``repaired``, ``empty``
        (dropped) and ``kept``. A Shapefile without any encoding declaration and no
        ``encoding`` key is decoded with the guess of :func:`guess_dbf_encoding`, noted in
        ``gdf.attrs["encoding_guessed"]``.

    Raises
    ------
    InputFileError
        Missing file / layer / field, layer without CRS (see :func:`layer_info`).

    Examples
    --------
    >>> farmland = read_layer({"path": Path("dltb.gpkg"), "code_field": "DLBM",
    ...                        "codes": ["0101", "0102", "0103"]}, near=changes.geometry)  # doctest: +SKIP
    """
    info = layer_info(spec)
    path, layer, crs = spec["path"], info["layer"], info["crs"]
    if columns is None:
        columns = [spec[k] for k in _FIELD_KEYS if spec.get(k)]
    if spec.get("codes"):
        columns = [*columns, spec["code_field"]]  # the code filter needs its field
    columns = list(dict.fromkeys(columns))
    missing = [c for c in columns if c not in info["fields"]]
    if missing:
        raise InputFileError(f"{path} layer {layer!r} has no field(s) {missing}; its fields are {info['fields']}")
    if near is not None:
        if near.crs is None:
            raise InputFileError(f"read_layer {_where(spec)}: 'near' geometries have no CRS")
        if bbox is None and (~shapely.is_missing(near.values)).any():
            bbox, bbox_crs = tuple(near.total_bounds), near.crs
        bbox_crs = near.crs if bbox_crs is None else bbox_crs
    if bbox is not None:
        bbox = tuple(float(v) for v in bbox)
        if bbox_crs is not None:
            src = pyproj.CRS.from_user_input(bbox_crs)
            if not src.equals(crs):
                tr = pyproj.Transformer.from_crs(src, crs, always_xy=True)
                bbox = tr.transform_bounds(*bbox, densify_pts=21)
    encoding = spec.get("encoding")
    guessed = None if encoding else guess_dbf_encoding(path)
    try:
        attrs, geoms, read_crs, n_read = _read(path, layer=layer, columns=columns, bbox=bbox,
                                               encoding=encoding or guessed,
                                               code_field=spec.get("code_field"), codes=spec.get("codes"))
    except Exception as exc:
        raise InputFileError(f"cannot read {_where(spec)}: {exc}") from exc
    if read_crs is None:  # e.g. a driver that lost it: never guess
        raise InputFileError(f"{path} layer {layer!r} read without a CRS; assign one with ogr2ogr -a_srs")
    stats = {"read": n_read, "selected": len(geoms)}
    if near is not None:
        keep = _near_mask(geoms, crs, near, near_margin)
        attrs, geoms = attrs[keep], geoms[keep]
    stats["candidates"] = len(geoms)
    geoms, counts = clean_polygons(geoms)
    keep = ~shapely.is_missing(geoms)
    gdf = gpd.GeoDataFrame(attrs[keep].reset_index(drop=True), geometry=geoms[keep], crs=crs)
    stats.update(counts)
    stats["kept"] = len(gdf)
    gdf.attrs["read_stats"] = stats
    gdf.attrs["encoding_guessed"] = guessed
    gdf.attrs["source"] = _where(spec)
    return gdf


try:  # pyarrow (installed with pyogrio's arrow support) lets codes filter rows before WKB parsing
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError:  # pragma: no cover - the plain path gives the same result, slower
    pa = pc = None
_USE_ARROW = pa is not None
