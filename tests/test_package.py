"""County package: zip name, GeoPackage, ledger, README and manifest, read back independently."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import zipfile
from pathlib import Path

import fiona
import geopandas as gpd
import numpy as np
import openpyxl
import pyogrio
import pytest
from pyproj import Transformer
from shapely.geometry import Polygon

from pipeline.batches import assign_batches
from pipeline.package import FIELDS_ZH, package_name, safe_name, verify_manifest, write_county_package
from pipeline.package.fields import FIELDS, HCJG_VALUES, VERDICT_FIELDS
from tiles.errors import ConfigError, InputError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
COUNTIES = DATA / "counties_tianditu" / "tianditu_counties_jiangsu_guangxi.geojson"
META = {"run_id": "2026Q3-20261001T0200", "config_hash": "sha256:abc123", "version": "0.1.0"}
NASTY = ["=HYPERLINK(\"http://x\",\"点\")", "+1234", "-2+3", "@SUM(A1)", "普通文本"]


def make_county(n: int = 40, *, seed: int = 0, center=(500000.0, 2520000.0), spread=15000.0,
                xzqdm: str = "450102", xzqmc: str = "兴宁区", inside=None) -> gpd.GeoDataFrame:
    """Synthetic change polygons of one county in EPSG:4545 with the DESIGN.md attributes.

    ``inside``: a polygon (EPSG:4545) the centres are drawn from (rejection sampling).
    """
    rng = np.random.default_rng(seed)
    cx, cy = [], []
    while len(cx) < n:
        x = center[0] + rng.uniform(-spread, spread)
        y = center[1] + rng.uniform(-spread, spread)
        if inside is None or inside.contains(Polygon([(x - 60, y - 60), (x + 60, y - 60),
                                                      (x + 60, y + 60), (x - 60, y + 60)])):
            cx.append(x)
            cy.append(y)
    geoms = []
    for x, y in zip(cx, cy):
        k = rng.integers(4, 8)
        ang = 2 * np.pi * (np.arange(k) + rng.uniform(0, 0.8, k)) / k  # star-shaped: simple
        rad = rng.uniform(12, 50, k)
        geoms.append(Polygon(zip(x + rad * np.cos(ang), y + rad * np.sin(ang))))
    g = gpd.GeoDataFrame(geometry=geoms, crs=4545)
    area = g.geometry.area.to_numpy()
    yxj = rng.integers(1, 4, n)  # overlay.priority levels 1..3
    g["JCBH"] = [f"{xzqdm}2026Q3{i + 1:05d}" for i in range(n)]
    g["XZQDM"] = xzqdm
    g["XZQMC"] = xzqmc
    g["QSX"] = "2026-05-10"
    g["HSX"] = "2026-08-21"
    g["JCMJ"] = area
    g["JCMJM"] = area / (2000 / 3)
    g["TBLX"] = rng.choice(["20", "YH", "TD", "DL", "GF", "KT", "QT"], n)
    g["ZXD"] = rng.uniform(0.5, 1.0, n)
    g["ZXDJ"] = np.where(g["ZXD"] > 0.8, "高", "中")
    g["GDMJ"] = area * rng.uniform(0, 1, n)
    g["JBNTMJ"] = np.where(yxj == 1, g["GDMJ"] * 0.5, 0.0)
    g["STHXMJ"] = 0.0
    g["BHQMJ"] = 0.0
    g["PZMJ"] = 0.0
    g["BHQFQ"] = None
    g["YXJ"] = yxj
    g["YXJF"] = 100 - 15 * yxj + rng.uniform(0, 10, n)
    g["YXJLY"] = [NASTY[i % len(NASTY)] if i < len(NASTY) else "占用永久基本农田" for i in range(n)]
    g["QQJCBH"] = None
    cen = g.geometry.centroid.to_crs(4490)
    g["JD"] = cen.x
    g["WD"] = cen.y
    g["HCJG"] = "违法"  # must come out blank: verdicts are the county's to fill
    return g


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("pk")
    county = assign_batches(make_county(), quarter="2026Q3", xzqdm="450102",
                            issue_date=dt.date(2026, 10, 1))
    z = write_county_package(county, out, xzqdm="450102", xzqmc="兴宁区", quarter="2026Q3",
                             run_meta=META)
    x = out / "x"
    with zipfile.ZipFile(z) as zf:
        zf.extractall(x)
    return county, z, x


def test_zip_name_and_contents(built):
    county, z, x = built
    assert z.name == "450102_兴宁区_2026Q3.zip"
    assert [p.name for p in z.parent.iterdir() if p != x] == [z.name]  # no temp file / folder left
    umask = os.umask(0o022)
    os.umask(umask)
    assert z.stat().st_mode & 0o777 == 0o666 & ~umask  # shareable, not mkstemp's 0600
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        assert zf.testzip() is None
    assert names[0] == "README.txt" and names[-1] == "manifest.json"
    assert {"图斑.gpkg", "台账.xlsx"} <= set(names)


def test_manifest_hashes(built):
    _, z, x = built
    m = json.loads((x / "manifest.json").read_text(encoding="utf-8"))
    assert m["run_id"] == META["run_id"] and m["config_hash"] == META["config_hash"]
    assert m["version"] == "0.1.0" and m["polygons"] == 40
    listed = {e["path"]: e for e in m["files"]}
    assert set(listed) == {p.relative_to(x).as_posix() for p in x.rglob("*")
                           if p.is_file() and p.name != "manifest.json"}
    for path, e in listed.items():
        data = (x / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["sha256"] and len(data) == e["bytes"]
    assert verify_manifest(z) == []


def test_verify_manifest_finds_tampering(built, tmp_path):
    _, z, _ = built
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(z) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "README.txt":
                data += b"x"
            dst.writestr(info, data)
        dst.writestr("extra.txt", b"1")
    problems = verify_manifest(bad)
    assert any("README.txt" in p for p in problems) and any("extra.txt" in p for p in problems)


def test_gpkg_layers_schema_and_geometry(built):
    county, _, x = built
    gpkg = x / "图斑.gpkg"
    layers = dict(pyogrio.list_layers(gpkg))
    assert layers["变化图斑"] in ("MultiPolygon", "Polygon") and layers["图斑中心点"] == "Point"
    poly = pyogrio.read_dataframe(gpkg, layer="变化图斑")
    assert poly.crs.to_epsg() == 4490
    assert list(poly.columns[:-1]) == list(FIELDS)
    for f in VERDICT_FIELDS:
        assert poly[f].isna().all(), f
    src = county.set_index("JCBH")
    got = poly.set_index("JCBH")
    assert set(got.index) == set(src.index)
    np.testing.assert_allclose(got.loc[src.index, "JCMJ"], src["JCMJ"])
    assert (got.loc[src.index, "PCBH"] == src["PCBH"]).all()
    assert got["YXJLY"].tolist().count(NASTY[0]) == 1  # stored as plain text
    # geometry: vertices transformed independently with pyproj agree to ~1e-8 deg
    tr = Transformer.from_crs(4545, 4490, always_xy=True)
    for jcbh in list(src.index[:5]):
        xs, ys = np.asarray(src.loc[jcbh, "geometry"].exterior.coords).T
        lon, lat = tr.transform(xs, ys)
        g = got.loc[jcbh, "geometry"]
        g = g.geoms[0] if g.geom_type == "MultiPolygon" else g
        np.testing.assert_allclose(np.asarray(g.exterior.coords), np.c_[lon, lat], atol=1e-8)
    # the points sit at JD / WD; read with fiona as a second, independent reader
    with fiona.open(gpkg, layer="图斑中心点") as pts:
        assert len(pts) == len(county)
        for feat in pts:
            lon, lat = feat.geometry["coordinates"]
            assert lon == pytest.approx(feat.properties["JD"]) and lat == pytest.approx(feat.properties["WD"])


def test_ledger(built):
    county, _, x = built
    wb = openpyxl.load_workbook(x / "台账.xlsx")
    ws = wb["台账"]
    headers = [c.value for c in ws[1]]
    assert headers == [FIELDS_ZH[f] for f in FIELDS]
    assert FIELDS_ZH["JCBH"] == "监测编号" and FIELDS_ZH["HCJG"] == "核查结果"
    assert ws.max_row == len(county) + 1
    col = {f: i for i, f in enumerate(FIELDS)}
    rows = list(ws.iter_rows(min_row=2, values_only=True))
    by_id = {r[col["JCBH"]]: r for r in rows}
    src = county.set_index("JCBH")
    for jcbh, r in by_id.items():
        assert r[col["JCMJ"]] == pytest.approx(src.loc[jcbh, "JCMJ"])
        assert r[col["YXJ"]] == src.loc[jcbh, "YXJ"]
        assert r[col["PCXH"]] == src.loc[jcbh, "PCXH"]
        assert all(r[col[f]] is None for f in VERDICT_FIELDS)
    # drop-down on the whole HCJG column of the data rows
    letter = openpyxl.utils.get_column_letter(col["HCJG"] + 1)
    dvs = ws.data_validations.dataValidation
    hc = [d for d in dvs if f"{letter}2" in d.sqref and f"{letter}{len(county) + 1}" in d.sqref]
    assert len(hc) == 1 and hc[0].type == "list"
    assert hc[0].formula1.strip('"').split(",") == list(HCJG_VALUES)
    # no formula anywhere: openpyxl types and the raw sheet XML
    for row in ws.iter_rows():
        for c in row:
            assert c.data_type != "f", c.coordinate
    texts = {c.value for row in ws.iter_rows(min_row=2) for c in row if isinstance(c.value, str)}
    assert set(NASTY) <= texts
    with zipfile.ZipFile(x / "台账.xlsx") as zf:
        sheet = zf.read("xl/worksheets/sheet1.xml").decode("utf-8")
    assert "<f>" not in sheet and "<f " not in sheet


def test_readme(built):
    _, _, x = built
    raw = (x / "README.txt").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    text = raw.decode("utf-8-sig")
    assert "兴宁区" in text and "HCJG" in text and "zip" in text and "伪变化" in text
    assert "时相" not in text           # META names no dates


def test_readme_names_the_dates_and_the_reference(tmp_path):
    """A run with a reference date tells the county which dates were compared and that changes
    that were the same at this season last year were left out."""
    dates = {"before": "2026-05-18", "after": "2026-08-23", "reference": "2025-08-17"}
    zpath = write_county_package(make_county(3), tmp_path, xzqdm="450102", xzqmc="兴宁区",
                                 quarter="2026Q3", run_meta={**META, "dates": dates},
                                 formats=("gpkg",))
    with zipfile.ZipFile(zpath) as zf:
        text = zf.read("README.txt").decode("utf-8-sig")
    assert "前时相 QSX 2026-05-18，后时相 HSX 2026-08-23" in text
    assert "参考时相（去年同季）2025-08-17" in text
    assert "置信等级 ZXDJ 最高为“中”" in text          # why a change under its clouds is 中
    without = {k: v for k, v in dates.items() if k != "reference"}
    zpath = write_county_package(make_county(3), tmp_path / "b", xzqdm="450102", xzqmc="兴宁区",
                                 quarter="2026Q3", run_meta={**META, "dates": without},
                                 formats=("gpkg",))
    with zipfile.ZipFile(zpath) as zf:
        text = zf.read("README.txt").decode("utf-8-sig")
    assert "后时相 HSX 2026-08-23" in text and "参考时相" not in text


def test_safe_names():
    assert safe_name('兴宁区/城:北*?"<>|') == "兴宁区_城_北"
    assert safe_name("  .. ") == "_"
    assert len(safe_name("县" * 100).encode()) <= 80
    assert package_name("450102", "A B\tC", "2026Q3") == "450102_A_B_C_2026Q3.zip"
    assert re.fullmatch(r"[^<>:\"/\\|?*]+", package_name("450102", "a/b", "2026Q3"))


def test_errors(tmp_path):
    county = make_county(3)
    with pytest.raises(ConfigError, match="format"):
        write_county_package(county, tmp_path, xzqdm="450102", xzqmc="兴宁区", quarter="2026Q3",
                             run_meta=META, formats=("gpkg", "pdf"))
    with pytest.raises(InputError, match="config_hash"):
        write_county_package(county, tmp_path, xzqdm="450102", xzqmc="兴宁区", quarter="2026Q3",
                             run_meta={"run_id": "r", "version": "0.1"})
    with pytest.raises(InputError, match="JCMJ"):
        write_county_package(county.drop(columns="JCMJ"), tmp_path, xzqdm="450102", xzqmc="兴宁区",
                             quarter="2026Q3", run_meta=META)
    with pytest.raises(InputError, match="450103"):
        write_county_package(county, tmp_path, xzqdm="450103", xzqmc="x", quarter="2026Q3",
                             run_meta=META)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


@pytest.mark.skipif(not COUNTIES.exists(), reason=f"real county boundaries not found at {COUNTIES}")
def test_real_county_points_inside_boundary(tmp_path):
    """Polygons drawn inside 兴宁区 (450102) in EPSG:4545 land inside it in the package (EPSG:4490)."""
    xzq = pyogrio.read_dataframe(COUNTIES, where="district_adcode = 450102")
    assert len(xzq) == 1
    boundary_ll = xzq.geometry.iloc[0]
    boundary = xzq.set_crs(4490, allow_override=True).to_crs(4545).geometry.iloc[0]
    c = boundary.centroid
    county = make_county(25, seed=5, center=(c.x, c.y), spread=12000, inside=boundary)
    county = county.drop(columns=["JD", "WD"])  # the package computes them
    z = write_county_package(county, tmp_path, xzqdm="450102", xzqmc=xzq["district_name"].iloc[0],
                             quarter="2026Q3", run_meta=META)
    with zipfile.ZipFile(z) as zf:
        zf.extractall(tmp_path / "x")
    pts = pyogrio.read_dataframe(tmp_path / "x" / "图斑.gpkg", layer="图斑中心点")
    assert pts.geometry.within(boundary_ll).all()
    assert pts["JD"].between(108.0, 108.7).all() and pts["WD"].between(22.6, 23.2).all()


def test_blank_text_from_run_becomes_null(tmp_path):
    """The run's changes.gpkg stores blank text as "": the package writes NULL, not ""."""
    county = make_county(4, seed=8)
    county["BHQFQ"] = ""
    county["QQJCBH"] = ""
    county["PCBH"] = ""
    z = write_county_package(county, tmp_path, xzqdm="450102", xzqmc="兴宁区", quarter="2026Q3",
                             run_meta=META, formats=("gpkg",))
    with zipfile.ZipFile(z) as zf:
        zf.extractall(tmp_path / "x")
    df = pyogrio.read_dataframe(tmp_path / "x" / "图斑.gpkg", layer="变化图斑")
    assert df["BHQFQ"].isna().all() and df["QQJCBH"].isna().all() and df["PCBH"].isna().all()
    assert "批次" not in dict(pyogrio.list_layers(tmp_path / "x" / "图斑.gpkg"))
