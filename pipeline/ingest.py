"""Take back county packages with the verdict fields filled in (``tianyan ingest``).

A returned zip is untrusted. Before anything is written it must pass, in this order:
- the zip: a zip file within the size limit; no member path that is absolute or climbs out
  (zip slip), no symlink or other special file, no encrypted member, no two members with the
  same name, member count, member size, total size and compression ratio within limits (zip
  bombs); file types from an allow-list; extraction counts the bytes it really gets;
- the tables: 图斑.gpkg layer 变化图斑 (an SQLite GeoPackage) and / or 台账.xlsx sheet 台账
  (itself a zip: the same limits, and no DTD or entity in any XML part; openpyxl parses with
  defusedxml when it is installed) with JCBH and the verdict fields under their Chinese or
  field names;
- every row: JCBH issued by this run to one county (the package's), no row twice, HCJG one of
  the verdict codes, HCRQ a real date between the issue date and today when HCJG is given,
  整改情况 (ZGZT) only for 违法, text without control characters and of bounded length, and the
  two tables agreeing where both are filled.
A package that fails any check changes nothing and the error lists what and where. One that
passes is kept under ``<workdir>/returned/<quarter>/<XZQDM>/<time>_<sha8>/`` (with receipt.json)
and its verdicts go into ``<workdir>/registry.gpkg`` in one atomic replacement, under the
registry lock.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd
import pyogrio

from pipeline.package.fields import (FIELDS_ZH, GPKG_NAME, LAYER_POLYGONS, LEDGER_NAME, LEDGER_SHEET,
                                     MANIFEST_NAME)
from pipeline.registry import (FIELDS_ZH as REGISTRY_ZH, LOCK_NAME, RETURNED_FIELDS, ZGZT_VALUES,
                               apply_verdicts, read_registry, register_issued, registry_path,
                               remove_stale_temps, write_registry)
from pipeline.rundir import RunDir, WorkdirLock, now_iso
from pipeline.schema import VERDICTS
from tiles.errors import InputError, InputFileError

log = logging.getLogger("tianyan")

MB = 1 << 20
JCBH_RE = re.compile(r"^(\d{6})(\d{4})Q([1-4])(\d{5})$")
ALLOWED_SUFFIXES = frozenset("""
.gpkg .gpkg-wal .gpkg-shm .xlsx .xls .csv .txt .json .html .htm .kmz .kml .qgs .qgz .qmd
.shp .shx .dbf .prj .cpg .sbn .sbx .xml
.jpg .jpeg .png .heic .heif .webp .tif .tiff .bmp .gif .mp4 .mov .pdf .doc .docx .wps
""".split())
JUNK = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$|Thumbs\.db$|desktop\.ini$|~\$)", re.IGNORECASE)
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".heic", ".heif", ".webp", ".tif", ".tiff", ".bmp", ".gif"})
MAGIC = {".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",), ".png": (b"\x89PNG\r\n\x1a\n",),
         ".gpkg": (b"SQLite format 3\x00",), ".xlsx": (b"PK\x03\x04",)}
XML_FORBIDDEN = [s.encode(enc) for s in ("<!DOCTYPE", "<!ENTITY")
                 for enc in ("utf-8", "utf-16-le", "utf-16-be")]
# header (Chinese or field name) -> field, for the fields ingest reads
_WANTED = ("JCBH", *RETURNED_FIELDS)
HEADERS = {**{FIELDS_ZH.get(f, REGISTRY_ZH.get(f, f)): f for f in _WANTED}, **{f: f for f in _WANTED}}
DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%Y%m%d", "%Y年%m月%d日")


@dataclass(frozen=True)
class Limits:
    """Bounds on a returned package (zip bombs, abuse); all sizes uncompressed unless said."""

    max_zip_mb: float = 1024        # the zip file itself
    max_total_mb: float = 4096      # all members together
    max_file_mb: float = 1024       # one member
    max_files: int = 10_000
    max_ratio: float = 200.0        # uncompressed / compressed, for members over 1 MB
    max_rows: int = 200_000
    max_text: int = 2000            # characters in one text field
    xlsx_max_mb: float = 200        # all parts of the ledger together
    xlsx_max_parts: int = 500


@dataclass
class IngestResult:
    """What happened to one returned package."""

    package: str
    accepted: bool
    xzqdm: str = ""
    rows: int = 0            # rows with anything filled in
    verified: int = 0        # rows with a verdict (HCJG)
    photos: int = 0
    stored: str = ""
    problems: list[str] = field(default_factory=list)


class PackageRejected(InputError):
    """A returned package failed a check; nothing was changed. ``problems`` lists each one."""

    def __init__(self, package: str, problems: list[str]):
        self.package, self.problems = package, problems
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{package}: rejected, nothing changed: {problems[0]}{more}")


def ingest_packages(run_path: str | os.PathLike, zips: list[str | os.PathLike], *,
                    limits: Limits = Limits(), today: _dt.date | None = None) -> list[IngestResult]:
    """Check and take back returned county packages of one run.

    Parameters
    ----------
    run_path : path-like
        The quarter's run directory (``<workdir>/<quarter>``) that issued the packages.
    zips : list of path-like
        Returned packages; each is accepted or rejected on its own.
    limits : Limits
        Size and count bounds.
    today : date, optional
        Latest allowed 核查日期 (default: today).

    Returns
    -------
    list of IngestResult
        One per zip, in order; rejected ones carry ``problems`` ("what and where").

    Raises
    ------
    InputFileError
        ``run_path`` is not a finished run directory.
    """
    run = _RunInfo.load(Path(run_path))
    today = today or _dt.date.today()
    results = []
    with WorkdirLock(run.workdir, name=LOCK_NAME, wait=120):
        base = run.workdir / "returned" / run.quarter
        base.mkdir(parents=True, exist_ok=True)
        for old in base.glob(".staging-*"):  # a killed ingest's leftovers (we hold the lock)
            shutil.rmtree(old, ignore_errors=True)
        remove_stale_temps(run.workdir)
        for z in zips:
            try:
                results.append(_ingest_one(run, Path(z), base, limits, today))
            except PackageRejected as exc:
                log.error("%s", exc)
                run.rd.event("ingest_rejected", package=str(z), problems=exc.problems[:50])
                results.append(IngestResult(str(z), False, problems=exc.problems))
    return results


# ---------------------------------------------------------------------------------------------
@dataclass
class _RunInfo:
    rd: RunDir
    workdir: Path
    quarter: str
    issued: dict[str, str]          # JCBH -> XZQDM
    names: dict[str, str]           # XZQDM -> XZQMC
    earliest: _dt.date | None       # no verdict can be dated before this (issue date)
    changes: object                 # GeoDataFrame of changes.gpkg
    manifest: dict

    @classmethod
    def load(cls, path: Path) -> "_RunInfo":
        from pipeline.stages import read_changes

        path = path.resolve()
        changes_path, manifest_path = path / "changes.gpkg", path / "run.json"
        if not changes_path.exists() or not manifest_path.exists():
            raise InputFileError(f"{path}: not a run directory (no run.json / changes.gpkg); give --run "
                                 "the quarter's folder, e.g. runs/2026Q3")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        changes = read_changes(changes_path)
        inside = changes[changes["XZQDM"] != ""]
        earliest = None
        for text in (manifest.get("issue_date"), (manifest.get("dates") or {}).get("after")):
            if text:
                earliest = _dt.date.fromisoformat(str(text)[:10])
                break
        return cls(rd=RunDir(path.parent, path.name), workdir=path.parent,
                   quarter=str(manifest.get("quarter") or path.name),
                   issued=dict(zip(inside["JCBH"], inside["XZQDM"])),
                   names=dict(zip(inside["XZQDM"], inside["XZQMC"])), earliest=earliest,
                   changes=changes, manifest=manifest)


def _ingest_one(run: _RunInfo, zip_path: Path, base: Path, limits: Limits, today: _dt.date) -> IngestResult:
    label = zip_path.name
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=base))
    try:
        digest = _check_zip_file(zip_path, limits)
        files = _extract(zip_path, staging, limits)
        table, photos, xzqdm = _read_returned(run, staging, files, limits, today, label)
        stamp = f"{_dt.datetime.now().strftime('%Y%m%dT%H%M%S')}_{digest[:8]}"
        final = base / xzqdm / stamp
        n = 1
        while final.exists():
            n += 1
            final = base / xzqdm / f"{stamp}_{n}"
        receipt = {"package": label, "sha256": digest, "bytes": zip_path.stat().st_size,
                   "received": now_iso(), "XZQDM": xzqdm, "quarter": run.quarter,
                   "rows": len(table), "verified": int((table["HCJG"] != "").sum()), "photos": photos}
        (staging / "receipt.json").write_text(json.dumps(receipt, ensure_ascii=False, indent=2),
                                              encoding="utf-8")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)
    except PackageRejected:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        _commit(run, table, xzqdm, source=f"{label} sha256:{digest[:12]}")
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)  # the registry is unchanged: keep nothing
        raise
    run.rd.event("ingest", package=label, county=xzqdm, rows=len(table),
                 verified=receipt["verified"], photos=photos, stored=str(final))
    log.info("ingested %s: county %s, %d row(s), %d verdict(s), %d photo(s)", label, xzqdm,
             len(table), receipt["verified"], photos)
    return IngestResult(str(zip_path), True, xzqdm=xzqdm, rows=len(table), verified=receipt["verified"],
                        photos=photos, stored=str(final))


def _commit(run: _RunInfo, table: pd.DataFrame, xzqdm: str, source: str) -> None:
    """Apply the verdicts to the registry in one atomic replacement (the caller holds the lock)."""
    path = registry_path(run.workdir)
    reg = read_registry(path)
    present = set(reg.loc[reg["JCJD"] == run.quarter, "JCBH"])
    if not set(table["JCBH"]) <= present:
        # The run was exported before it kept a registry, or the registry was moved away:
        # record what the run issued to this county first (keeps any verdicts already there).
        reg = register_issued(reg, run.changes, quarter=run.quarter, counties={xzqdm},
                              run_id=str(run.manifest.get("run_id", "")),
                              issue_date=str(run.manifest.get("issue_date", "")))
    reg = apply_verdicts(reg, table, received=now_iso(), source=source)
    write_registry(reg, path)


# ---------------------------------------------------------------------------------------------
# the zip
def _check_zip_file(path: Path, limits: Limits) -> str:
    if not path.is_file():
        raise PackageRejected(str(path), [f"{path}: file not found"])
    size = path.stat().st_size
    if size > limits.max_zip_mb * MB:
        raise PackageRejected(path.name, [f"{path.name}: {size / MB:.0f} MB, more than the "
                                          f"{limits.max_zip_mb:g} MB allowed for a returned package"])
    if not zipfile.is_zipfile(path):
        raise PackageRejected(path.name, [f"{path.name}: not a zip file"])
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(MB), b""):
            h.update(block)
    return h.hexdigest()


def check_members(zf: zipfile.ZipFile, label: str, *, max_files: int, max_file_bytes: float,
                  max_total_bytes: float, max_ratio: float,
                  allowed: frozenset[str] | None = ALLOWED_SUFFIXES) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """The regular-file members of a zip with safe relative paths, or PackageRejected.

    Refuses: absolute paths, drive letters, ``..`` (zip slip), control characters, symlinks
    and other special files, encryption, duplicate names (case-insensitive), too many
    members, too large members or totals, compression ratios above ``max_ratio`` (for members
    over 1 MB) and, when ``allowed`` is given, other file types. Junk (``__MACOSX/``,
    ``.DS_Store``, ``Thumbs.db``, Office ``~$`` lock files) is skipped.
    """
    problems: list[str] = []
    infos = zf.infolist()
    if len(infos) > max_files:
        raise PackageRejected(label, [f"{label}: {len(infos)} members, more than the {max_files} allowed"])
    out, seen, total = [], set(), 0
    for info in infos:
        name = member_name(info)
        where = f"{label}: member {name!r}"
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            problems.append(f"{where}: control character in the name")
            continue
        norm = name.replace("\\", "/")
        if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
            problems.append(f"{where}: absolute path (would be written outside the package folder)")
            continue
        parts = [p for p in norm.split("/") if p not in ("", ".")]
        if ".." in parts:
            problems.append(f"{where}: path climbs out of the package folder ('..')")
            continue
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            problems.append(f"{where}: symbolic link (not allowed)")
            continue
        if info.is_dir() or not parts:
            continue
        if kind and kind != stat.S_IFREG:
            problems.append(f"{where}: special file (not allowed)")
            continue
        if info.flag_bits & 0x1:
            problems.append(f"{where}: encrypted (send the package without a password)")
            continue
        if JUNK.search(norm):
            continue
        rel = PurePosixPath(*parts)
        key = rel.as_posix().casefold()
        if key in seen:
            problems.append(f"{where}: appears twice")
            continue
        seen.add(key)
        if info.file_size > max_file_bytes:
            problems.append(f"{where}: {info.file_size / MB:.0f} MB uncompressed, more than "
                            f"{max_file_bytes / MB:g} MB")
            continue
        if info.file_size > MB and info.file_size > max_ratio * max(info.compress_size, 1):
            problems.append(f"{where}: compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1, "
                            f"more than {max_ratio:g}:1 (zip bomb?)")
            continue
        suffix = _suffix(rel.name)
        if allowed is not None and suffix not in allowed:
            problems.append(f"{where}: file type {suffix or '(none)'} not accepted "
                            f"(photos, documents and the package's own files are)")
            continue
        total += info.file_size
        out.append((info, rel))
    if total > max_total_bytes:
        problems.append(f"{label}: {total / MB:.0f} MB uncompressed in all, more than "
                        f"{max_total_bytes / MB:g} MB")
    if problems:
        raise PackageRejected(label, problems)
    return out


def member_name(info: zipfile.ZipInfo) -> str:
    """A member's name as its writer meant it.

    Without the UTF-8 flag zipfile decodes names as CP437; Chinese Windows tools write GBK
    there and Info-ZIP writes UTF-8, so the raw bytes are decoded as UTF-8, else GB18030.
    """
    name = info.filename
    if info.flag_bits & 0x800 or name.isascii():
        return name
    try:
        raw = name.encode("cp437")
    except UnicodeEncodeError:
        return name
    for enc in ("utf-8", "gb18030"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return name


def _suffix(name: str) -> str:
    low = name.lower()
    for s in (".gpkg-wal", ".gpkg-shm"):
        if low.endswith(s):
            return s
    return PurePosixPath(low).suffix


def _extract(zip_path: Path, dest: Path, limits: Limits) -> list[Path]:
    """Extract the safe members under ``dest``; count the bytes really decompressed."""
    label = zip_path.name
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageRejected(label, [f"{label}: unreadable zip ({exc})"]) from None
    root = dest.resolve()
    out = []
    with zf:
        members = check_members(zf, label, max_files=limits.max_files, max_file_bytes=limits.max_file_mb * MB,
                                max_total_bytes=limits.max_total_mb * MB, max_ratio=limits.max_ratio)
        budget = limits.max_total_mb * MB
        for info, rel in members:
            target = dest.joinpath(*rel.parts)
            if root not in target.resolve().parents:  # belt and braces after check_members
                raise PackageRejected(label, [f"{label}: member {rel.as_posix()!r} resolves outside the folder"])
            target.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
                with zf.open(info) as src, os.fdopen(fd, "wb") as dst:
                    for block in iter(lambda: src.read(MB), b""):
                        written += len(block)
                        budget -= len(block)
                        if written > info.file_size or budget < 0:
                            raise PackageRejected(label, [f"{label}: member {rel.as_posix()!r} decompresses "
                                                          "to more than it declares (zip bomb?)"])
                        dst.write(block)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
                    NotImplementedError) as exc:
                raise PackageRejected(label, [f"{label}: member {rel.as_posix()!r} cannot be extracted "
                                              f"({type(exc).__name__}: {exc})"]) from None
            magic = MAGIC.get(_suffix(rel.name))
            if magic and written:
                with open(target, "rb") as fh:
                    head = fh.read(16)
                if not any(head.startswith(m) for m in magic):
                    raise PackageRejected(label, [f"{label}: member {rel.as_posix()!r} is not the "
                                                  f"{_suffix(rel.name)} file its name says"])
            out.append(target)
    return out


# ---------------------------------------------------------------------------------------------
# the tables
def _read_returned(run: _RunInfo, root: Path, files: list[Path], limits: Limits, today: _dt.date,
                   label: str) -> tuple[pd.DataFrame, int, str]:
    gpkgs = _pick(files, GPKG_NAME, ".gpkg")
    ledgers = _pick(files, LEDGER_NAME, ".xlsx")
    problems: list[str] = []
    for kind, found in (("GeoPackage", gpkgs), ("ledger", ledgers)):
        if len(found) > 1:
            problems.append(f"{label}: {len(found)} {kind} files ({', '.join(_rel(p, root) for p in found)}); "
                            "return one")
    if not gpkgs and not ledgers:
        problems.append(f"{label}: neither {GPKG_NAME} nor {LEDGER_NAME} found; return the county "
                        "package with the verdict fields filled in")
    if problems:
        raise PackageRejected(label, problems)
    tables = []
    if gpkgs:
        tables.append((f"{label}/{_rel(gpkgs[0], root)}", _read_gpkg(gpkgs[0], label, root, limits)))
    if ledgers:
        tables.append((f"{label}/{_rel(ledgers[0], root)}", _read_ledger(ledgers[0], label, root, limits)))
    checked = [_check_rows(run, df, where, limits, today) for where, df in tables]
    problems = [p for _, ps in checked for p in ps]
    table, where = _combine([rows for rows, _ in checked], problems)
    # 整改情况 only for 违法: the verdict may come with it or from an earlier return
    recorded = _recorded_verdicts(run)
    for rec in table.to_dict("records"):
        verdict = rec["HCJG"] or recorded.get(rec["JCBH"], "")
        if rec["ZGZT"] and verdict != "违法":
            problems.append(f"{where[(rec['JCBH'], 'ZGZT')]}: 整改情况 (ZGZT) is for 违法 polygons only; "
                            f"核查结果 is {verdict or 'blank'}")
    counties = sorted({run.issued[j] for j in table["JCBH"]})
    if len(counties) > 1:
        problems.append(f"{label}: rows of {len(counties)} counties ({', '.join(counties)}); "
                        "return one county's package at a time")
    if not counties and not problems:
        problems.append(f"{label}: no row with a 监测编号 (JCBH); return the table as issued")
    xzqdm = counties[0] if counties else ""
    manifest_code = _manifest_county(root, label, problems)
    if manifest_code and xzqdm and manifest_code != xzqdm:
        problems.append(f"{label}/{MANIFEST_NAME}: package of county {manifest_code}, rows of county {xzqdm}")
    if problems:
        raise PackageRejected(label, problems)
    table = table[(table[list(RETURNED_FIELDS)] != "").any(axis=1)].reset_index(drop=True)
    photos = sum(1 for p in files if _suffix(p.name) in PHOTO_SUFFIXES and not _is_package_image(p, root))
    return table, photos, xzqdm


def _is_package_image(path: Path, root: Path) -> bool:
    """Images the province put in the package (overview map, chips) are not county photos."""
    from pipeline.package.fields import CHIP_DIR, OVERVIEW_NAME

    rel = path.relative_to(root).parts
    return path.name == OVERVIEW_NAME or CHIP_DIR in rel[:-1]


def _pick(files: list[Path], name: str, suffix: str) -> list[Path]:
    named = [p for p in files if p.name == name]
    return named or [p for p in files if p.name.lower().endswith(suffix)]


def _rel(p: Path, root: Path) -> str:
    return p.relative_to(root).as_posix()


def _manifest_county(root: Path, label: str, problems: list[str]) -> str:
    """XZQDM of the package's manifest.json ("" when there is none: it is optional)."""
    found = list(root.rglob(MANIFEST_NAME))
    if len(found) > 1:
        problems.append(f"{label}: {len(found)} {MANIFEST_NAME} files; return one county's package")
        return ""
    if not found or found[0].stat().st_size > MB:
        return ""
    try:
        return str(json.loads(found[0].read_text(encoding="utf-8")).get("XZQDM", ""))
    except (ValueError, UnicodeDecodeError, AttributeError):
        problems.append(f"{label}/{_rel(found[0], root)}: not valid JSON")
        return ""


def _read_gpkg(path: Path, label: str, root: Path, limits: Limits) -> pd.DataFrame:
    where = f"{label}/{_rel(path, root)}"
    try:
        layers = [name for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # noqa: BLE001 - any driver error is a rejection
        raise PackageRejected(label, [f"{where}: not a readable GeoPackage ({exc})"]) from None
    if LAYER_POLYGONS not in layers:
        raise PackageRejected(label, [f"{where}: no layer {LAYER_POLYGONS!r} (found: {', '.join(layers) or 'none'})"])
    try:
        info = pyogrio.read_info(path, layer=LAYER_POLYGONS)
        if info["features"] > limits.max_rows:
            raise PackageRejected(label, [f"{where}: {info['features']} rows, more than {limits.max_rows}"])
        df = pyogrio.read_dataframe(path, layer=LAYER_POLYGONS, read_geometry=False)
    except PackageRejected:
        raise
    except Exception as exc:  # noqa: BLE001
        raise PackageRejected(label, [f"{where}: layer {LAYER_POLYGONS!r} cannot be read ({exc})"]) from None
    return _map_headers(df, where, label, start_row=1)


def _read_ledger(path: Path, label: str, root: Path, limits: Limits) -> pd.DataFrame:
    where = f"{label}/{_rel(path, root)}"
    _check_xlsx_container(path, where, label, limits)
    from openpyxl import load_workbook

    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # noqa: BLE001 - any parser error is a rejection
        raise PackageRejected(label, [f"{where}: not a readable XLSX workbook ({type(exc).__name__}: {exc})"]) from None
    try:
        if LEDGER_SHEET not in wb.sheetnames:
            raise PackageRejected(label, [f"{where}: no sheet {LEDGER_SHEET!r} (found: {', '.join(wb.sheetnames)})"])
        rows = wb[LEDGER_SHEET].iter_rows(values_only=True)
        header = next(rows, None) or ()
        data = []
        for n, row in enumerate(rows, start=2):
            if n - 1 > limits.max_rows:
                raise PackageRejected(label, [f"{where}: more than {limits.max_rows} rows"])
            if row is None or all(v is None or (isinstance(v, str) and not v.strip()) for v in row):
                continue
            data.append((n, row))
    finally:
        wb.close()
    names = [("" if h is None else str(h).strip()) for h in header]
    twice = sorted({h for h in names if h in HEADERS and names.count(h) > 1})
    if twice:
        raise PackageRejected(label, [f"{where}: column {twice[0]!r} appears twice in the header row"])
    names = [h if h and names.count(h) == 1 else f"_c{i}" for i, h in enumerate(names)]
    df = pd.DataFrame([(list(r) + [None] * len(names))[:len(names)] for _, r in data], columns=names)
    df = _map_headers(df, where, label, start_row=None)
    df["_row"] = [n for n, _ in data]
    return df


def _check_xlsx_container(path: Path, where: str, label: str, limits: Limits) -> None:
    """An XLSX is a zip of XML parts: bounded, and no DTD / entity declarations anywhere."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageRejected(label, [f"{where}: not a valid XLSX ({exc})"]) from None
    with zf:
        members = check_members(zf, where, max_files=limits.xlsx_max_parts,
                                max_file_bytes=limits.xlsx_max_mb * MB, max_total_bytes=limits.xlsx_max_mb * MB,
                                max_ratio=limits.max_ratio, allowed=None)
        for info, rel in members:
            if _suffix(rel.name) not in (".xml", ".rels", ".vml"):
                continue
            try:
                with zf.open(info) as fh:
                    data = fh.read(int(limits.xlsx_max_mb * MB) + 1)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise PackageRejected(label, [f"{where}: part {info.filename} unreadable ({exc})"]) from None
            if any(token in data for token in XML_FORBIDDEN):
                raise PackageRejected(label, [f"{where}: part {info.filename} declares a DTD or entity "
                                              "(not allowed in a ledger)"])


def _map_headers(df: pd.DataFrame, where: str, label: str, start_row: int | None) -> pd.DataFrame:
    mapped = {}
    for col in df.columns:
        f = HEADERS.get(str(col).strip())
        if f and f not in mapped.values():
            mapped[col] = f
    missing = [f for f in ("JCBH", "HCJG", "HCRQ") if f not in mapped.values()]
    if missing:
        names = ", ".join(f"{FIELDS_ZH.get(f, f)} ({f})" for f in missing)
        raise PackageRejected(label, [f"{where}: missing column(s) {names}; return the table as issued "
                                      "with the verdict columns filled in"])
    out = df[list(mapped)].rename(columns=mapped)
    for f in _WANTED:
        if f not in out:
            out[f] = None
    out = out[list(_WANTED)].copy()
    out["_row"] = range(start_row, start_row + len(out)) if start_row is not None else None
    return out


def _check_rows(run: _RunInfo, df: pd.DataFrame, where: str, limits: Limits,
                today: _dt.date) -> tuple[pd.DataFrame, list[str]]:
    """Typed rows (text, "" for blank, ISO dates) and the problems found, each naming the row."""
    problems: list[str] = []
    rows = []
    seen: dict[str, int] = {}
    for rec in df.to_dict("records"):
        n = rec.pop("_row")
        at = f"{where} row {n}"
        jcbh = _cell_text(rec.get("JCBH"))
        vals = {"JCBH": jcbh}
        if not jcbh:
            if any(_cell_text(rec.get(f)) for f in RETURNED_FIELDS):
                problems.append(f"{at}: verdict given without 监测编号 (JCBH)")
            continue
        at = f"{at} (JCBH {jcbh})"
        m = JCBH_RE.match(jcbh)
        if not m:
            problems.append(f"{at}: 监测编号 {jcbh!r} is not of the form 4505022026Q300001")
            continue
        if f"{m.group(2)}Q{m.group(3)}" != run.quarter:
            problems.append(f"{at}: 监测编号 of quarter {m.group(2)}Q{m.group(3)}, this run is {run.quarter}")
            continue
        if jcbh not in run.issued:
            problems.append(f"{at}: 监测编号 was not issued by this run")
            continue
        if jcbh in seen:
            problems.append(f"{at}: 监测编号 appears twice (rows {seen[jcbh]} and {n})")
            continue
        seen[jcbh] = n
        for f in RETURNED_FIELDS:
            if f == "HCRQ":
                continue
            v = rec.get(f)
            text = _cell_text(v)
            bad = _bad_text(text, limits)
            if bad:
                problems.append(f"{at}: {FIELDS_ZH.get(f, REGISTRY_ZH.get(f))} ({f}) {bad}")
            vals[f] = text
        if vals["HCJG"] and vals["HCJG"] not in VERDICTS:
            problems.append(f"{at}: 核查结果 (HCJG) {vals['HCJG']!r} is not a verdict code "
                            f"(one of {'、'.join(VERDICTS)})")
        if vals["ZGZT"] and vals["ZGZT"] not in ZGZT_VALUES:
            problems.append(f"{at}: 整改情况 (ZGZT) {vals['ZGZT']!r} is not one of {'、'.join(ZGZT_VALUES)}")
        date, bad = _cell_date(rec.get("HCRQ"))
        if bad:
            problems.append(f"{at}: 核查日期 (HCRQ) {bad}")
        elif date is None and vals["HCJG"]:
            problems.append(f"{at}: 核查日期 (HCRQ) is missing; a verdict needs the date of the check")
        elif date is not None:
            if date > today:
                problems.append(f"{at}: 核查日期 (HCRQ) {date} is in the future")
            elif run.earliest and date < run.earliest:
                problems.append(f"{at}: 核查日期 (HCRQ) {date} is before the polygons were issued "
                                f"({run.earliest})")
        vals["HCRQ"] = date.isoformat() if date else ""
        vals["_where"] = at
        rows.append(vals)
    out = pd.DataFrame(rows, columns=["JCBH", *RETURNED_FIELDS, "_where"])
    return out, problems


def _combine(tables: list[pd.DataFrame], problems: list[str]) -> tuple[pd.DataFrame, dict]:
    """One row per JCBH from the GeoPackage and the ledger; where both are filled they must agree.

    Returns the rows and, per (JCBH, field), where its value came from (file and row).
    """
    merged: dict[str, dict] = {}
    where: dict[tuple[str, str], str] = {}
    for rows in tables:
        for rec in rows.to_dict("records"):
            jcbh = rec["JCBH"]
            have = merged.setdefault(jcbh, {"JCBH": jcbh, **{f: "" for f in RETURNED_FIELDS}})
            for f in RETURNED_FIELDS:
                if not rec[f]:
                    continue
                if have[f] and have[f] != rec[f]:
                    problems.append(f"{rec['_where']}: {FIELDS_ZH.get(f, REGISTRY_ZH.get(f))} ({f}) "
                                    f"{rec[f]!r} differs from {have[f]!r} in {where[(jcbh, f)]}")
                have[f] = rec[f]
                where.setdefault((jcbh, f), rec["_where"])
    out = pd.DataFrame(list(merged.values()), columns=["JCBH", *RETURNED_FIELDS])
    return out.sort_values("JCBH", kind="mergesort").reset_index(drop=True), where


def _recorded_verdicts(run: _RunInfo) -> dict[str, str]:
    """HCJG already in the registry for this quarter (the caller holds the registry lock)."""
    reg = read_registry(registry_path(run.workdir))
    this = reg[reg["JCJD"] == run.quarter]
    return dict(zip(this["JCBH"], this["HCJG"]))


def _cell_text(v) -> str:
    if v is None or v is pd.NaT:
        return ""
    if isinstance(v, float):
        if v != v:  # NaN
            return ""
        return str(int(v)) if v.is_integer() else str(v)
    if isinstance(v, (_dt.datetime, _dt.date, pd.Timestamp)):
        return pd.Timestamp(v).date().isoformat()
    return str(v).strip()


def _bad_text(text: str, limits: Limits) -> str:
    if len(text) > limits.max_text:
        return f"is {len(text)} characters long, more than {limits.max_text}"
    if any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in text):
        return "holds a control character"
    return ""


def _cell_date(v) -> tuple[_dt.date | None, str]:
    """A verification date from a cell: a date, or text in a common Chinese date form."""
    if v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip()):
        return None, ""
    if v is pd.NaT:
        return None, ""
    if isinstance(v, (_dt.datetime, pd.Timestamp)):
        return pd.Timestamp(v).date(), ""
    if isinstance(v, _dt.date):
        return v, ""
    if isinstance(v, str):
        text = v.strip()
        for fmt in DATE_FORMATS:
            try:
                return _dt.datetime.strptime(text, fmt).date(), ""
            except ValueError:
                continue
        return None, f"{text!r} is not a date (write YYYY-MM-DD)"
    return None, f"{v!r} is not a date (write YYYY-MM-DD)"
