"""`tianyan ingest`: returned county packages are untrusted; each failure mode is rejected with what
and where, and a rejected package changes nothing (registry bytes, returned folders).

The packages are built by the real package writer (pipeline.package) from a small synthetic run;
a "county" fills them in with pyogrio / openpyxl and zips them like the tools counties use.
"""
import datetime as dt
import io
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import geopandas as gpd
import pyogrio
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook
from shapely.geometry import box

from cli import main
from pipeline.ingest import Limits, ingest_packages
from pipeline.package import write_county_package
from pipeline.package.fields import FIELDS_ZH, GPKG_NAME, LAYER_POLYGONS, LEDGER_NAME, LEDGER_SHEET
from pipeline.registry import read_registry, record_issued, registry_path
from pipeline.stages import write_changes

TODAY = dt.date.today()
ISSUE = TODAY - dt.timedelta(days=30)
CHECKED = (TODAY - dt.timedelta(days=10)).isoformat()
QUARTER = "2026Q3"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
COUNTIES = {"450502": ("海城区", 3), "450503": ("银海区", 2)}


def _changes() -> gpd.GeoDataFrame:
    rows, geoms = [], []
    for k, (code, (name, n)) in enumerate(COUNTIES.items()):
        for i in range(n):
            g = box(430_000 + 300 * i, 2_380_000 + 2000 * k, 430_000 + 300 * i + 80, 2_380_000 + 2000 * k + 60)
            rows.append({"JCBH": f"{code}{QUARTER}{i + 1:05d}", "XZQDM": code, "XZQMC": name,
                         "QSX": "2026-05-18", "HSX": "2026-08-23", "JCMJ": g.area, "JCMJM": g.area * 3 / 2000,
                         "TBLX": "20", "GDMJ": 0.5 * g.area, "YXJ": 1, "YXJF": 50.0, "PCBH": f"{code}-P01",
                         "PCXH": i + 1, "QQJCBH": ""})
            geoms.append(g)
    return gpd.GeoDataFrame(rows, geometry=geoms, crs="EPSG:4545")


@pytest.fixture(scope="module")
def issued(tmp_path_factory):
    """A run directory with changes.gpkg, run.json and one package per county, and the registry."""
    workdir = tmp_path_factory.mktemp("ingest") / "runs"
    run = workdir / QUARTER
    (run / "packages").mkdir(parents=True)
    changes = _changes()
    write_changes(changes, run / "changes.gpkg")
    (run / "run.json").write_text(json.dumps({"quarter": QUARTER, "issue_date": ISSUE.isoformat(),
                                              "run_id": "2026Q3-test", "dates": {"before": "2026-05-18",
                                                                                 "after": "2026-08-23"}}))
    packages = {}
    for code, county in changes.groupby("XZQDM"):
        packages[code] = write_county_package(
            county, run / "packages", xzqdm=code, xzqmc=COUNTIES[code][0], quarter=QUARTER,
            run_meta={"run_id": "2026Q3-test", "config_hash": "x", "version": "test"}, formats=("gpkg", "xlsx"))
    record_issued(workdir, changes, quarter=QUARTER, counties=list(COUNTIES), run_id="2026Q3-test",
                  issue_date=ISSUE.isoformat(), settings={})
    return run, packages


@pytest.fixture
def run(issued, tmp_path):
    """A fresh copy of the issued run and registry for each test."""
    src, packages = issued
    workdir = tmp_path / "runs"
    shutil.copytree(src.parent, workdir)
    return workdir / QUARTER, {k: workdir / QUARTER / "packages" / p.name for k, p in packages.items()}


def unpack(package: Path, dest: Path) -> Path:
    with zipfile.ZipFile(package) as zf:
        zf.extractall(dest)
    return dest


def fill_gpkg(folder: Path, verdicts: dict, drop: tuple = ()) -> None:
    """Fill verdict fields of the package's GeoPackage as a county does in QGIS."""
    path = folder / GPKG_NAME
    df = pyogrio.read_dataframe(path, layer=LAYER_POLYGONS)
    for jcbh, fields in verdicts.items():
        for f, v in fields.items():
            df.loc[df["JCBH"] == jcbh, f] = v
    df = df.drop(columns=list(drop))
    pyogrio.write_dataframe(df, path, layer=LAYER_POLYGONS, driver="GPKG")


def fill_ledger(folder: Path, verdicts: dict) -> None:
    """Fill verdict cells of 台账.xlsx by their Chinese headers, as a county does in Excel."""
    path = folder / LEDGER_NAME
    wb = load_workbook(path)
    ws = wb[LEDGER_SHEET]
    header = {c.value: c.column for c in ws[1]}
    for f in {f for v in verdicts.values() for f in v}:
        if FIELDS_ZH.get(f, f) not in header and f not in header:     # a column the county adds
            header[f] = ws.max_column + 1
            ws.cell(1, header[f], f)
    for row in ws.iter_rows(min_row=2, max_col=ws.max_column):
        jcbh = row[header[FIELDS_ZH["JCBH"]] - 1].value
        for f, v in verdicts.get(jcbh, {}).items():
            ws.cell(row[0].row, header.get(FIELDS_ZH.get(f, f), header.get(f))).value = v
    wb.save(path)


def rezip(folder: Path, dest: Path, extra: list = ()) -> Path:
    """Zip ``folder`` (UTF-8 names) plus ``extra`` members: (ZipInfo or name, bytes)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
        for info, data in extra:
            zf.writestr(info, data)
    return dest


def returned(run_pkgs, tmp_path, code="450502", gpkg=None, ledger=None, extra=(), drop_files=(),
             name=None) -> Path:
    run, packages = run_pkgs
    folder = unpack(packages[code], tmp_path / f"unpacked_{code}_{name or 'r'}")
    if gpkg:
        fill_gpkg(folder, gpkg)
    if ledger:
        fill_ledger(folder, ledger)
    for f in drop_files:
        (folder / f).unlink()
    return rezip(folder, tmp_path / (name or f"{code}_returned.zip"), list(extra))


def j(code, i):
    return f"{code}{QUARTER}{i:05d}"


def unchanged(run: Path):
    """Snapshot of what an ingest may change: the registry bytes and the returned folders."""
    reg = registry_path(run.parent).read_bytes()
    stored = sorted(str(p.relative_to(run.parent)) for p in (run.parent / "returned").rglob("*")) \
        if (run.parent / "returned").exists() else []
    return reg, [s for s in stored if not s.endswith(QUARTER) and s != "returned"]


def reject(run, zip_path, *needles, limits=Limits()):
    before = unchanged(run)
    [result] = ingest_packages(run, [zip_path], limits=limits)
    assert not result.accepted
    text = "\n".join(result.problems)
    for needle in needles:
        assert needle in text, text
    assert unchanged(run) == before
    assert not list((run.parent / "returned" / QUARTER).glob(".staging-*"))
    return text


# ---------------------------------------------------------------------------------------------
def test_verdicts_from_the_geopackage_reach_the_registry_with_photos(run, tmp_path):
    path = returned(run, tmp_path, gpkg={j("450502", 1): {"HCJG": "违法", "HCRQ": CHECKED, "HCRY": "张三",
                                                          "WFLX": "非农违法", "HCSM": "=HYPERLINK(\"x\")"},
                                         j("450502", 2): {"HCJG": "合法", "HCRQ": CHECKED}},
                    extra=[(f"照片/{j('450502', 1)}_1.jpg", JPEG), (f"照片/{j('450502', 1)}_2.jpg", JPEG)])
    [r] = ingest_packages(run[0], [path])
    assert r.accepted, r.problems
    assert (r.xzqdm, r.rows, r.verified, r.photos) == ("450502", 2, 2, 2)
    reg = read_registry(registry_path(run[0].parent)).set_index("JCBH")
    one = reg.loc[j("450502", 1)]
    assert (one["HCJG"], one["HCRQ"], one["HCRY"], one["ZT"]) == ("违法", CHECKED, "张三", "已核查")
    assert one["HCSM"] == "=HYPERLINK(\"x\")"                   # kept as text, never evaluated
    assert reg.loc[j("450502", 3), "ZT"] == "已下发" and reg.loc[j("450502", 3), "HCJG"] == ""
    stored = Path(r.stored)
    assert (stored / "照片" / f"{j('450502', 1)}_1.jpg").read_bytes() == JPEG
    assert json.loads((stored / "receipt.json").read_text(encoding="utf-8"))["verified"] == 2


def test_verdicts_from_the_ledger_alone_with_excel_dates(run, tmp_path):
    when = dt.datetime.combine(TODAY - dt.timedelta(days=5), dt.time())
    path = returned(run, tmp_path, code="450503", ledger={j("450503", 2): {"HCJG": "伪变化", "HCRQ": when}},
                    drop_files=(GPKG_NAME,))
    [r] = ingest_packages(run[0], [path])
    assert r.accepted, r.problems
    reg = read_registry(registry_path(run[0].parent)).set_index("JCBH")
    assert reg.loc[j("450503", 2), "HCJG"] == "伪变化"
    assert reg.loc[j("450503", 2), "HCRQ"] == when.date().isoformat()


def test_geopackage_and_ledger_must_agree(run, tmp_path):
    path = returned(run, tmp_path, gpkg={j("450502", 1): {"HCJG": "违法", "HCRQ": CHECKED}},
                    ledger={j("450502", 1): {"HCJG": "合法", "HCRQ": CHECKED}})
    text = reject(run[0], path, j("450502", 1), "台账.xlsx", "图斑.gpkg", "'合法' differs from '违法'")
    assert "row 2" in text


def test_rectification_only_for_illegal_and_from_the_allowed_values(run, tmp_path):
    ok = returned(run, tmp_path, gpkg={j("450502", 1): {"HCJG": "违法", "HCRQ": CHECKED}},
                  ledger={j("450502", 1): {"整改情况": "拆除"}}, name="ok.zip")
    [r] = ingest_packages(run[0], [ok])
    assert r.accepted, r.problems
    assert read_registry(registry_path(run[0].parent)).set_index("JCBH").loc[j("450502", 1), "ZGZT"] == "拆除"
    bad = returned(run, tmp_path, ledger={j("450502", 2): {"HCJG": "合法", "HCRQ": CHECKED, "整改情况": "拆除"},
                                          j("450502", 3): {"HCJG": "违法", "HCRQ": CHECKED, "整改情况": "已拆"}},
                   name="bad.zip")
    reject(run[0], bad, "整改情况 (ZGZT) is for 违法 polygons only", "'已拆' is not one of")


@pytest.mark.parametrize("fields,needle", [
    ({"HCJG": "违规", "HCRQ": CHECKED}, "核查结果 (HCJG) '违规' is not a verdict code"),
    ({"HCJG": "合法"}, "核查日期 (HCRQ) is missing"),
    ({"HCJG": "合法", "HCRQ": "下周"}, "'下周' is not a date"),
    ({"HCJG": "合法", "HCRQ": (TODAY + dt.timedelta(days=3)).isoformat()}, "is in the future"),
    ({"HCJG": "合法", "HCRQ": (ISSUE - dt.timedelta(days=1)).isoformat()}, "before the polygons were issued"),
    ({"HCJG": "合法", "HCRQ": CHECKED, "HCSM": "ok\x07bell"}, "control character"),
    ({"HCJG": "合法", "HCRQ": CHECKED, "HCSM": "长" * 2001}, "more than 2000"),
])
def test_bad_values_are_named_with_row_and_jcbh(run, tmp_path, fields, needle):
    path = returned(run, tmp_path, gpkg={j("450502", 2): fields})
    reject(run[0], path, needle, f"{path.name}/{GPKG_NAME} row 2 (JCBH {j('450502', 2)})")


def test_jcbh_must_be_issued_once_to_one_county(run, tmp_path):
    folder = unpack(run[1]["450502"], tmp_path / "u")
    df = pyogrio.read_dataframe(folder / GPKG_NAME, layer=LAYER_POLYGONS)
    df.loc[0, "JCBH"] = j("450502", 99)            # never issued
    df.loc[1, "JCBH"] = j("450502", 3)             # twice
    pyogrio.write_dataframe(df, folder / GPKG_NAME, layer=LAYER_POLYGONS, driver="GPKG")
    text = reject(run[0], rezip(folder, tmp_path / "dup.zip"), f"JCBH {j('450502', 99)}): 监测编号 was not issued",
                  "appears twice (rows 2 and 3)")
    df = pyogrio.read_dataframe(folder / GPKG_NAME, layer=LAYER_POLYGONS)
    df["JCBH"] = [j("450502", 1), j("450502", 2), j("450503", 1)]
    pyogrio.write_dataframe(df, folder / GPKG_NAME, layer=LAYER_POLYGONS, driver="GPKG")
    reject(run[0], rezip(folder, tmp_path / "two.zip"), "rows of 2 counties (450502, 450503)")
    df["JCBH"] = [j("450502", 1), j("450502", 2), f"4505022026Q200003"]
    pyogrio.write_dataframe(df, folder / GPKG_NAME, layer=LAYER_POLYGONS, driver="GPKG")
    reject(run[0], rezip(folder, tmp_path / "q.zip"), "监测编号 of quarter 2026Q2, this run is 2026Q3")


def test_missing_layer_or_columns_are_named(run, tmp_path):
    path = returned(run, tmp_path, gpkg=None, drop_files=(LEDGER_NAME,), name="nocol.zip")
    folder = unpack(path, tmp_path / "nocol")
    fill_gpkg(folder, {}, drop=("HCJG", "HCRQ"))
    reject(run[0], rezip(folder, tmp_path / "nocol2.zip"), "missing column(s) 核查结果 (HCJG), 核查日期 (HCRQ)",
           GPKG_NAME)
    folder = unpack(run[1]["450502"], tmp_path / "nolayer")
    (folder / GPKG_NAME).unlink()
    gpd.GeoDataFrame({"a": [1]}, geometry=[box(0, 0, 1, 1)], crs=4490).to_file(folder / GPKG_NAME, layer="other")
    (folder / LEDGER_NAME).unlink()
    reject(run[0], rezip(folder, tmp_path / "nolayer.zip"), "no layer '变化图斑' (found: other)")
    folder = unpack(run[1]["450502"], tmp_path / "none")
    (folder / GPKG_NAME).unlink()
    (folder / LEDGER_NAME).unlink()
    reject(run[0], rezip(folder, tmp_path / "none.zip"), f"neither {GPKG_NAME} nor {LEDGER_NAME} found")


# ---------------------------------------------------------------------------------------------
# the zip itself
def _symlink(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target


@pytest.mark.parametrize("member,needle", [
    (("../../escape.txt", b"x"), "climbs out of the package folder"),
    (("照片/../../../escape.jpg", JPEG), "climbs out of the package folder"),
    (("/tmp/escape.txt", b"x"), "absolute path"),
    (("C:/Windows/escape.txt", b"x"), "absolute path"),
    (("..\\..\\escape.txt", b"x"), "climbs out"),
    (_symlink("照片/passwd.jpg", "/etc/passwd"), "symbolic link"),
    (("run.sh", b"#!/bin/sh\n"), "file type .sh not accepted"),
    (("照片/fake.jpg", b"MZ\x90\x00 this is an exe"), "is not the .jpg file its name says"),
    (("图斑.GPKG", b"x"), "appears twice"),
])
def test_unsafe_members_are_rejected_and_nothing_is_written(run, tmp_path, member, needle):
    path = returned(run, tmp_path, gpkg={j("450502", 1): {"HCJG": "合法", "HCRQ": CHECKED}}, extra=[member])
    reject(run[0], path, needle)
    assert not list(tmp_path.rglob("escape*")) and not list(run[0].parent.rglob("escape*"))


def set_flag(zip_path: Path, member: str, bit: int) -> None:
    """Set a general-purpose flag bit of a member in both its local and central headers
    (zipfile never writes the encryption bit itself)."""
    data = bytearray(zip_path.read_bytes())
    name = member.encode("utf-8")
    for sig, flag_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        start = 0
        while (i := data.find(sig, start)) >= 0:
            start = i + 4
            if data[i + name_at:i + name_at + len(name)] == name:
                data[i + flag_at] |= bit
    zip_path.write_bytes(bytes(data))


def test_encrypted_members_are_rejected(run, tmp_path):
    path = returned(run, tmp_path, extra=[("photos/secret.jpg", JPEG)])
    set_flag(path, "photos/secret.jpg", 0x1)
    with zipfile.ZipFile(path) as zf:
        assert zf.getinfo("photos/secret.jpg").flag_bits & 0x1
    reject(run[0], path, "encrypted")


def test_zip_bombs_and_limits(run, tmp_path):
    bomb = returned(run, tmp_path, extra=[("照片/bomb.jpg", JPEG + b"\x00" * (30 << 20))], name="bomb.zip")
    assert bomb.stat().st_size < 1 << 20            # 30 MB of zeros in well under 1 MB
    reject(run[0], bomb, "compression ratio", "(zip bomb?)")
    ok = returned(run, tmp_path, extra=[(f"照片/p{i}.jpg", JPEG) for i in range(5)], name="many.zip")
    reject(run[0], ok, "members, more than the 5 allowed", limits=Limits(max_files=5))
    reject(run[0], ok, "more than the 0.001 MB allowed", limits=Limits(max_zip_mb=0.001))
    reject(run[0], ok, "uncompressed in all, more than", limits=Limits(max_total_mb=0.01))


def test_not_a_zip_and_missing_file(run, tmp_path):
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK but not really")
    reject(run[0], junk, "not a zip file")
    [r] = ingest_packages(run[0], [tmp_path / "nope.zip"])
    assert not r.accepted and "file not found" in r.problems[0]


def test_xml_with_a_dtd_or_entities_is_rejected(run, tmp_path):
    folder = unpack(run[1]["450502"], tmp_path / "xml")
    (folder / GPKG_NAME).unlink()
    ledger = folder / LEDGER_NAME
    with zipfile.ZipFile(ledger) as zf:
        parts = {n: zf.read(n) for n in zf.namelist()}
    sheet = next(n for n in parts if n.startswith("xl/worksheets/sheet"))
    laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>')
    body = parts[sheet].split(b"?>", 1)[1] if parts[sheet].startswith(b"<?xml") else parts[sheet]
    parts[sheet] = laughs + body
    with zipfile.ZipFile(ledger, "w") as zf:
        for n, data in parts.items():
            zf.writestr(n, data)
    reject(run[0], rezip(folder, tmp_path / "xml.zip"), "declares a DTD or entity", sheet)


def test_gbk_member_names_from_chinese_windows_tools(run, tmp_path):
    """Names in GBK without the UTF-8 flag (Windows 'send to compressed folder' on Chinese
    Windows): read as the county meant them."""
    class GbkInfo(zipfile.ZipInfo):
        def _encodeFilenameFlags(self):
            return self.filename.encode("gbk"), self.flag_bits & ~0x800

    folder = unpack(run[1]["450502"], tmp_path / "gbk")
    fill_gpkg(folder, {j("450502", 3): {"HCJG": "其他", "HCRQ": CHECKED}})
    path = tmp_path / "gbk.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.writestr(GbkInfo(p.relative_to(folder).as_posix()), p.read_bytes())
        zf.writestr(GbkInfo("照片/现场.jpg"), JPEG)
    with zipfile.ZipFile(path) as zf:
        assert GPKG_NAME not in zf.namelist()          # Python alone would get the names wrong
    [r] = ingest_packages(run[0], [path])
    assert r.accepted, r.problems
    assert (Path(r.stored) / "照片" / "现场.jpg").exists() and r.photos == 1
    assert read_registry(registry_path(run[0].parent)).set_index("JCBH").loc[j("450502", 3), "HCJG"] == "其他"


def test_a_second_return_updates_and_blanks_do_not_erase(run, tmp_path):
    first = returned(run, tmp_path, gpkg={j("450502", 1): {"HCJG": "违法", "HCRQ": CHECKED, "HCRY": "张三"}},
                     name="first.zip")
    second = returned(run, tmp_path, ledger={j("450502", 1): {"整改情况": "补办"}}, drop_files=(GPKG_NAME,),
                      name="second.zip")
    results = ingest_packages(run[0], [first, second])
    assert all(r.accepted for r in results), [r.problems for r in results]
    row = read_registry(registry_path(run[0].parent)).set_index("JCBH").loc[j("450502", 1)]
    assert (row["HCJG"], row["HCRY"], row["ZGZT"]) == ("违法", "张三", "补办")
    assert "second.zip" in row["HSWJ"]


def test_cli_exit_codes_and_messages(run, tmp_path):
    good = returned(run, tmp_path, gpkg={j("450502", 1): {"HCJG": "合法", "HCRQ": CHECKED}}, name="good.zip")
    bad = returned(run, tmp_path, code="450503", gpkg={j("450503", 1): {"HCJG": "违规", "HCRQ": CHECKED}},
                   name="bad.zip")
    runner = CliRunner()
    r = runner.invoke(main, ["ingest", "--run", str(run[0]), str(good)])
    assert r.exit_code == 0 and "accepted good.zip: county 450502" in r.output
    r = runner.invoke(main, ["ingest", "--run", str(run[0]), str(good), str(bad)])
    assert r.exit_code == 3 and "rejected bad.zip: nothing changed" in r.output and "'违规'" in r.output
    r = runner.invoke(main, ["ingest", "--run", str(run[0]), str(bad)])
    assert r.exit_code == 2
    r = runner.invoke(main, ["ingest", "--run", str(tmp_path), str(good)])
    assert r.exit_code == 2 and "not a run directory" in r.output
    log = [json.loads(l) for l in (run[0] / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {"ingest", "ingest_rejected"} <= {e["event"] for e in log}
