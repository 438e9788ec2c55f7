"""One county's verification package: a zip the county opens without help.

``<XZQDM>_<XZQMC>_<QUARTER>.zip`` holds the GeoPackage, the ledger and whatever other
formats were asked for, a Chinese README and ``manifest.json`` (sha256 of every file).
Files are staged in a temporary folder next to the target and the zip is written under a
temporary name, then moved into place with ``os.replace``: a reader never sees half a zip.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import unicodedata
import zipfile
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from pathlib import Path

import geopandas as gpd
import pyogrio

from pipeline.package.batch_layer import batch_outlines, batch_routes
from pipeline.package.chips import ChipReader, write_chips
from pipeline.package.report import write_report
from pipeline.package.issue_frame import center_points, issue_frame
from pipeline.package.kmz import write_kmz
from pipeline.package.ledger import write_ledger
from pipeline.package.overview_map import write_overview_map
from pipeline.package.readme import readme_text
from pipeline.package.fields import (
    ALL_FORMATS, CHIP_DIR, FIELDS_ZH, GPKG_NAME, KMZ_NAME, LAYER_BATCHES, LAYER_POINTS,
    LAYER_POLYGONS, LAYER_ROUTES, LEDGER_NAME, MANIFEST_NAME, OVERVIEW_NAME, QGIS_NAME,
    README_NAME, REPORT_NAME, SHP_DIR,
)
from pipeline.package.shapefile import encoding_problems, normalise_encoding, write_shapefiles
from pipeline.package.qgis import write_qgis_project
from tiles.errors import ConfigError, InputError

log = logging.getLogger(__name__)

__all__ = ["FIELDS_ZH", "write_county_package", "package_name", "safe_name", "verify_manifest"]

_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_STORED = (".png", ".kmz", ".zip", ".jpg")


def write_county_package(
    county: gpd.GeoDataFrame,
    out_dir: Path,
    *,
    xzqdm: str,
    xzqmc: str,
    quarter: str,
    run_meta: Mapping[str, object],
    formats: Iterable[str] = ("gpkg", "xlsx"),
    read_chip: ChipReader | None = None,
    shp_encoding: str = "UTF-8",
    start_lonlat: tuple[float, float] | None = None,
    boundary=None,
    timings: dict[str, float] | None = None,
) -> Path:
    """Build the verification package of one county.

    Parameters
    ----------
    county : GeoDataFrame
        The county's change polygons in the processing CRS (e.g. EPSG:4545), with the
        DESIGN.md attributes (at least JCBH, JCMJ, YXJ; PCBH / PCXH / JZRQ from
        :func:`pipeline.batches.assign_batches`). Written in CGCS2000 lon/lat (EPSG:4490).
    out_dir : Path
        Folder for the zip (created if missing), e.g. ``runs/2026Q3/packages``.
    xzqdm, xzqmc : str
        County code and name; both go into the file name.
    quarter : str
        e.g. "2026Q3".
    run_meta : mapping
        ``run_id``, ``config_hash`` and ``version`` (Tianyan version) for the manifest;
        other keys (e.g. ``name``, the run's display name) are copied into it as they are.
    formats : iterable of str (or "a,b" text)
        Any of "gpkg", "shp", "kmz", "xlsx", "chips", "html", "qgis" (config
        ``export.formats``). "qgis" needs "gpkg". "chips" needs ``read_chip``; without it
        the package is built without chips and says so in its warnings. The KMZ, ledger
        and report show the chips when they were made. README.txt and
        manifest.json are always included.
    read_chip : callable, optional
        ``read_chip((minx, miny, maxx, maxy)) -> (before_rgb, after_rgb, transform)``, bounds
        in the processing CRS; see :mod:`pipeline.package.chips`.
    shp_encoding : str
        "UTF-8" (default) or "GBK" (config ``export.shp_encoding``). A value the encoding
        cannot hold is reported in the manifest's ``warnings`` and the README, and that
        county gets no Shapefile rather than a mangled one.
    start_lonlat : (float, float), optional
        Start of every batch route (the county seat), lon/lat CGCS2000, as given to
        ``assign_batches``.
    boundary : shapely geometry, optional
        County boundary in the CRS of ``county``, drawn on the overview map.
    timings : dict, optional
        Wall seconds per output type are added to it under the format's name ("frame"
        for the shared preparation, "zip" for README + manifest + zip), CPU seconds of
        this process under "<name>.cpu".

    Returns
    -------
    Path
        The zip, ``out_dir / "<XZQDM>_<XZQMC>_<QUARTER>.zip"`` (name made safe).

    Raises
    ------
    InputError
        Missing fields, CRS or geometry; ConfigError for an unknown format, a format
        without what it needs, or a run_meta key missing.
    """
    fmts = _check_formats(formats)
    if "qgis" in fmts and "gpkg" not in fmts:
        raise ConfigError("export.formats: \"qgis\" shows the GeoPackage; add \"gpkg\" to the formats")
    encoding = normalise_encoding(shp_encoding)
    meta = _check_meta(run_meta)
    clock = _Clock(timings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with clock("frame"):
        frame = issue_frame(county, xzqdm=xzqdm, xzqmc=xzqmc)
        proj = gpd.GeoDataFrame(frame.drop(columns="geometry"),
                                geometry=county.geometry.to_numpy(), crs=county.crs)
        points = center_points(frame)
        batched = frame["PCBH"].notna().any()
        outlines = batch_outlines(proj) if batched else None
        routes = batch_routes(frame, start_lonlat) if batched else None
    name = package_name(xzqdm, xzqmc, quarter)
    target = out_dir / name
    title = f"{xzqmc}（{xzqdm}）{quarter} 变化图斑"
    warnings: list[str] = []

    stage = Path(tempfile.mkdtemp(prefix=f".{safe_name(xzqdm)}_", dir=out_dir))
    try:
        chips: dict[str, tuple[str, str]] = {}
        if "chips" in fmts and read_chip is None:
            warnings.append("未生成影像截图：本次导出没有可读的影像（read_chip 未提供）")
        elif "chips" in fmts:
            with clock("chips"):
                links, problems = write_chips(proj, stage / CHIP_DIR, read_chip)
                chips = {k: (f"{CHIP_DIR}/{b}", f"{CHIP_DIR}/{a}") for k, (b, a) in links.items()}
                warnings += problems
        if "gpkg" in fmts:
            with clock("gpkg"):
                write_gpkg(frame, stage / GPKG_NAME, points=points, outlines=outlines, routes=routes)
        if "shp" in fmts:
            with clock("shp"):
                problems = encoding_problems(frame, encoding)
                if problems:
                    warnings.append(f"Shapefile 未生成：{len(problems)} 个属性值无法用 {encoding} 保存"
                                    "（请使用 GeoPackage）")
                    warnings += problems[:50]
                else:
                    write_shapefiles(frame, points, stage / SHP_DIR, encoding=encoding)
        if "kmz" in fmts:
            with clock("kmz"):
                write_kmz(frame, routes if routes is not None else frame.iloc[:0], stage / KMZ_NAME,
                          title=title, chips={k: (stage / b, stage / a) for k, (b, a) in chips.items()})
        if "xlsx" in fmts:
            with clock("xlsx"):
                write_ledger(frame, stage / LEDGER_NAME, chip_links=chips if chips else None)
        if "html" in fmts:
            with clock("html"):
                empty = gpd.GeoDataFrame(geometry=[], crs="EPSG:4490")
                write_overview_map(proj, outlines if outlines is not None else empty,
                                   routes if routes is not None else empty, stage / OVERVIEW_NAME,
                                   title=f"{safe_name(xzqdm)} {quarter}", boundary=boundary)
                write_report(frame, stage / REPORT_NAME, xzqdm=xzqdm, xzqmc=xzqmc, quarter=quarter,
                             run_meta=meta, overview=OVERVIEW_NAME, chips=chips, routes=routes)
        if "qgis" in fmts:
            with clock("qgis"):
                layers = {LAYER_POINTS: "Point", LAYER_POLYGONS: "Polygon"}
                if batched:
                    layers.update({LAYER_ROUTES: "Line", LAYER_BATCHES: "Polygon"})
                write_qgis_project(stage / QGIS_NAME, title=title, extent=_extent(frame, outlines),
                                   layers=layers)
        for w in warnings:
            log.warning("package %s: %s", name, w)
        with clock("zip"):
            (stage / README_NAME).write_text(
                readme_text(xzqdm=xzqdm, xzqmc=xzqmc, quarter=quarter, n=len(frame), formats=fmts,
                            warnings=warnings, dates=meta.get("dates")),
                encoding="utf-8-sig", newline="\r\n")
            files = sorted(p for p in stage.rglob("*") if p.is_file())
            manifest = {
                "package": name,
                "XZQDM": str(xzqdm),
                "XZQMC": str(xzqmc),
                "quarter": str(quarter),
                "polygons": len(frame),
                "formats": list(fmts),
                **meta,
                "warnings": warnings,
                "files": [{"path": p.relative_to(stage).as_posix(), "bytes": p.stat().st_size,
                           "sha256": sha256_file(p)} for p in files],
            }
            (stage / MANIFEST_NAME).write_text(
                json.dumps(manifest, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
            _zip_atomic(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return target


def write_gpkg(frame: gpd.GeoDataFrame, path: Path, *, points: gpd.GeoDataFrame | None = None,
               outlines: gpd.GeoDataFrame | None = None,
               routes: gpd.GeoDataFrame | None = None) -> Path:
    """GeoPackage in EPSG:4490: 变化图斑 (polygons), 图斑中心点 (points), and when the
    polygons are batched 批次 (batch outlines) and 批次路线 (route lines).

    Written to a file of its own in the package's staging folder (the package zip is
    what is atomic); each layer is one GDAL transaction.
    """
    with _no_sqlite_sync():
        pyogrio.write_dataframe(frame, path, layer=LAYER_POLYGONS, driver="GPKG",
                                promote_to_multi=True)
        pyogrio.write_dataframe(center_points(frame) if points is None else points, path,
                                layer=LAYER_POINTS, driver="GPKG")
        if outlines is not None and len(outlines):
            pyogrio.write_dataframe(outlines, path, layer=LAYER_BATCHES, driver="GPKG",
                                    promote_to_multi=True)
        if routes is not None and len(routes):
            pyogrio.write_dataframe(routes, path, layer=LAYER_ROUTES, driver="GPKG")
    return path


@contextmanager
def _no_sqlite_sync():
    """No fsync per SQLite commit while writing a staged GeoPackage (8x faster on a busy
    disk). Safe because the file is staged: only the finished zip is moved into place.
    The previous setting is restored; packages are built one per process, not per thread."""
    key = "OGR_SQLITE_SYNCHRONOUS"
    before = pyogrio.get_gdal_config_option(key)
    pyogrio.set_gdal_config_options({key: "OFF"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({key: before})


def package_name(xzqdm: str, xzqmc: str, quarter: str) -> str:
    """``<XZQDM>_<XZQMC>_<QUARTER>.zip`` with every part made safe for any file system."""
    return f"{safe_name(xzqdm)}_{safe_name(xzqmc)}_{safe_name(quarter)}.zip"


def safe_name(text: str, max_bytes: int = 80) -> str:
    """A file-name part valid on Windows, macOS and Linux.

    NFC-normalised; ``<>:"/\\|?*``, control characters and whitespace runs become "_";
    leading / trailing dots and spaces are removed; cut to ``max_bytes`` of UTF-8 on a
    character boundary. Empty results become "_".
    """
    s = unicodedata.normalize("NFC", str(text))
    s = _UNSAFE.sub("_", s)
    s = re.sub(r"\s+", "_", s).strip(" ._")
    while len(s.encode("utf-8")) > max_bytes:
        s = s[:-1]
    return s or "_"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_manifest(zip_path: Path) -> list[str]:
    """Problems found checking a package against its manifest (empty list: all good).

    Every file listed must be in the zip with the listed sha256, and every file of the
    zip except the manifest must be listed.
    """
    problems = []
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        if MANIFEST_NAME not in names:
            return [f"{zip_path}: no {MANIFEST_NAME}"]
        manifest = json.loads(zf.read(MANIFEST_NAME).decode("utf-8"))
        listed = {e["path"]: e["sha256"] for e in manifest.get("files", [])}
        for path, digest in listed.items():
            if path not in names:
                problems.append(f"{path}: listed in the manifest, missing from the zip")
            elif hashlib.sha256(zf.read(path)).hexdigest() != digest:
                problems.append(f"{path}: sha256 differs from the manifest")
        for path in sorted(names - set(listed) - {MANIFEST_NAME}):
            if not path.endswith("/"):
                problems.append(f"{path}: in the zip, not in the manifest")
    return problems


def _zip_atomic(stage: Path, target: Path) -> None:
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    # README first (what a person sees on opening), manifest last.
    files.sort(key=lambda p: (p.name != README_NAME, p.name == MANIFEST_NAME,
                              p.relative_to(stage).as_posix()))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".zip.tmp", dir=target.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for p in files:
                stored = p.suffix.lower() in _STORED
                zf.write(p, p.relative_to(stage).as_posix(),
                         compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a package is for sharing
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Clock:
    """Adds the wall and CPU seconds of each ``with clock(key):`` block to a dict (or nowhere)."""

    def __init__(self, sink: dict[str, float] | None):
        self.sink = sink

    @contextmanager
    def __call__(self, key: str):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            if self.sink is not None:
                cpu = key + ".cpu"
                self.sink[key] = self.sink.get(key, 0.0) + time.perf_counter() - t0
                self.sink[cpu] = self.sink.get(cpu, 0.0) + time.process_time() - c0


def _extent(frame: gpd.GeoDataFrame, outlines: gpd.GeoDataFrame | None) -> tuple[float, ...]:
    b = frame.total_bounds
    if outlines is not None and len(outlines):
        o = outlines.total_bounds
        b = (min(b[0], o[0]), min(b[1], o[1]), max(b[2], o[2]), max(b[3], o[3]))
    return tuple(float(v) for v in b)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f for f in formats.split(",") if f.strip()]
    fmts = tuple(dict.fromkeys(str(f).strip().lower() for f in formats))
    unknown = [f for f in fmts if f not in ALL_FORMATS]
    if unknown:
        raise ConfigError(f"export.formats: unknown format(s) {unknown}; "
                          f"choose from {', '.join(ALL_FORMATS)}")
    return fmts


def _check_meta(run_meta: Mapping[str, object]) -> dict[str, object]:
    meta = dict(run_meta or {})
    if "version" not in meta and "software_version" in meta:
        meta["version"] = meta.pop("software_version")
    missing = [k for k in ("run_id", "config_hash", "version") if k not in meta]
    if missing:
        raise InputError(f"package run_meta lacks {', '.join(missing)}; pass the run id, "
                         "config hash and Tianyan version from run.json")
    return meta
