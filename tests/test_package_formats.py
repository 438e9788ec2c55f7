"""Every output of a full county package, opened with an independent reader.

GeoPackage / Shapefile / KML through pyogrio and fiona, XLSX through openpyxl, KMZ through
zipfile + GDAL's LIBKML, PNG through Pillow, the QGIS project through ElementTree, and the
HTML report through html.parser (and headless Chromium when installed).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import subprocess
import xml.etree.ElementTree as ET
import zipfile
from html.parser import HTMLParser
from urllib.parse import unquote

import fiona
import geopandas as gpd
import numpy as np
import openpyxl
import pyogrio
import pytest
from affine import Affine
from PIL import Image
from shapely.geometry import box

from pipeline.batches import assign_batches
from pipeline.package.chips import chip_bounds, joint_stretch, nice_length, to_rgb8, write_chips
from pipeline.package import verify_manifest, write_county_package
from pipeline.package.fields import FIELDS
from tests.test_package import META, make_county
from tiles.errors import ConfigError

ALL = ("gpkg", "shp", "kmz", "xlsx", "chips", "html", "qgis")
RES = 2.0


def scene(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Smooth synthetic 'before' reflectance (3 bands, uint16-like) at metre coordinates."""
    base = 800 + 300 * np.sin(x / 90.0) * np.cos(y / 70.0)
    return np.stack([base, base * 1.1 + 50, base * 0.9 + 100])


def make_reader(county: gpd.GeoDataFrame, *, fail: set[str] = frozenset()):
    """read_chip over the synthetic scene; 'after' is bright inside every polygon's bbox."""
    boxes = [g.bounds for g in county.geometry]
    ids = list(county["JCBH"])

    def read_chip(bounds):
        minx, miny, maxx, maxy = bounds
        cols = int(math.ceil((maxx - minx) / RES))
        rows = int(math.ceil((maxy - miny) / RES))
        xs = minx + (np.arange(cols) + 0.5) * RES
        ys = maxy - (np.arange(rows) + 0.5) * RES
        X, Y = np.meshgrid(xs, ys)
        for jcbh, (a, b, c, d) in zip(ids, boxes):
            if jcbh in fail and a >= minx and c <= maxx and b >= miny and d <= maxy:
                raise OSError("imagery missing for this window")
        before = scene(X, Y).astype(np.uint16)
        after = before.copy()
        for a, b, c, d in boxes:
            inside = (X >= a) & (X <= c) & (Y >= b) & (Y <= d)
            after[:, inside] = 2500
        return before, after, Affine(RES, 0, minx, 0, -RES, maxy)

    return read_chip


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    county = assign_batches(make_county(30, seed=11), max_per_batch=8, quarter="2026Q3",
                            xzqdm="450102", issue_date=dt.date(2026, 10, 1))
    timings: dict[str, float] = {}
    z = write_county_package(county, out, xzqdm="450102", xzqmc="兴宁区", quarter="2026Q3",
                             run_meta={**META, "name": "示例省 2026 年卫片"}, formats=ALL,
                             read_chip=make_reader(county), timings=timings)
    x = out / "x"
    with zipfile.ZipFile(z) as zf:
        zf.extractall(x)
    return county, z, x, timings


def test_manifest_and_timings(full):
    county, z, x, timings = full
    assert verify_manifest(z) == []
    m = json.loads((x / "manifest.json").read_text(encoding="utf-8"))
    assert m["formats"] == list(ALL) and m["warnings"] == []
    keys = set(ALL) | {"zip", "frame"}
    assert keys | {k + ".cpu" for k in keys} == set(timings)


def test_gpkg_sync_setting_restored(full):
    assert pyogrio.get_gdal_config_option("OGR_SQLITE_SYNCHRONOUS") is None


def test_gpkg_batch_layers(full):
    county, _, x, _ = full
    gpkg = x / "图斑.gpkg"
    layers = dict(pyogrio.list_layers(gpkg))
    assert set(layers) == {"变化图斑", "图斑中心点", "批次", "批次路线"}
    outlines = pyogrio.read_dataframe(gpkg, layer="批次")
    routes = pyogrio.read_dataframe(gpkg, layer="批次路线")
    pts = pyogrio.read_dataframe(gpkg, layer="图斑中心点")
    assert sorted(outlines["PCBH"]) == sorted(county["PCBH"].unique()) == sorted(routes["PCBH"])
    for r in outlines.itertuples():
        members = pts[pts["PCBH"] == r.PCBH]
        assert r.TBSL == len(members) and members.geometry.within(r.geometry).all()
    for r in routes.itertuples():
        members = pts[pts["PCBH"] == r.PCBH].sort_values("PCXH")
        coords = np.asarray(r.geometry.coords)
        np.testing.assert_allclose(coords, np.c_[members["JD"], members["WD"]] if len(members) > 1
                                   else np.repeat(np.c_[members["JD"], members["WD"]], 2, axis=0))
        # route length against an independent spherical sum (< 0.6 % apart)
        km = sum(_haversine(*a, *b) for a, b in zip(coords[:-1], coords[1:]))
        assert r.LCKM == pytest.approx(km, rel=0.006, abs=1e-3)


def test_shapefile_utf8(full):
    county, _, x, _ = full
    shp = x / "图斑_shp" / "变化图斑.shp"
    assert (x / "图斑_shp" / "变化图斑.cpg").read_text() == "UTF-8"
    with fiona.open(shp) as src:
        assert src.crs.to_epsg() == 4490
        names = list(src.schema["properties"])
        assert names == list(FIELDS) and all(len(n) <= 10 for n in names)
        got = {f.properties["JCBH"]: f.properties for f in src}
    assert set(got) == set(county["JCBH"])
    one = county.iloc[0]
    assert got[one["JCBH"]]["XZQMC"] == "兴宁区"
    assert got[one["JCBH"]]["JCMJ"] == pytest.approx(one["JCMJ"], rel=1e-9)
    pts = pyogrio.read_dataframe(x / "图斑_shp" / "图斑中心点.shp")
    assert len(pts) == len(county)


def test_shapefile_gbk_and_unencodable(tmp_path):
    county = assign_batches(make_county(6, seed=2), quarter="2026Q3", xzqdm="450102",
                            issue_date=dt.date(2026, 10, 1))
    z = write_county_package(county, tmp_path, xzqdm="450102", xzqmc="兴宁区", quarter="2026Q3",
                             run_meta=META, formats=("gpkg", "shp"), shp_encoding="GBK")
    with zipfile.ZipFile(z) as zf:
        zf.extractall(tmp_path / "x")
    folder = tmp_path / "x" / "图斑_shp"
    assert (folder / "变化图斑.cpg").read_text() == "936"
    raw = (folder / "变化图斑.dbf").read_bytes()
    assert raw[29] == 0x4D and "兴宁区".encode("gbk") in raw and "兴宁区".encode("utf-8") not in raw
    df = pyogrio.read_dataframe(folder / "变化图斑.shp")
    assert (df["XZQMC"] == "兴宁区").all() and set(df["YXJLY"]) == set(county["YXJLY"])

    # U+20000 (CJK extension B) has no GBK code: reported, no Shapefile, nothing mangled
    county.loc[county.index[2], "YXJLY"] = "占用\U00020000村耕地"
    out = tmp_path / "bad"
    z = write_county_package(county, out, xzqdm="450102", xzqmc="兴宁区", quarter="2026Q3",
                             run_meta=META, formats=("gpkg", "shp"), shp_encoding="GBK")
    with zipfile.ZipFile(z) as zf:
        names = zf.namelist()
        m = json.loads(zf.read("manifest.json"))
        readme = zf.read("README.txt").decode("utf-8-sig")
    assert not any(n.startswith("图斑_shp/") for n in names) and "图斑.gpkg" in names
    jcbh = county["JCBH"].iloc[2]
    assert any(jcbh in w and "U+20000" in w and "YXJLY" in w for w in m["warnings"])
    assert jcbh in readme
    with pytest.raises(ConfigError, match="shp_encoding"):
        write_county_package(county, out, xzqdm="450102", xzqmc="兴宁区", quarter="2026Q3",
                             run_meta=META, formats=("shp",), shp_encoding="Big5")


def test_kmz(full):
    county, _, x, _ = full
    kmz = x / "图斑.kmz"
    with zipfile.ZipFile(kmz) as zf:
        names = zf.namelist()
        kml = zf.read("doc.kml")
    assert names[0] == "doc.kml"
    root = ET.fromstring(kml)
    ns = {"k": "http://www.opengis.net/kml/2.2"}
    folders = root.findall(".//k:Folder", ns)
    assert len(folders) == county["PCBH"].nunique()
    styles = {s.get("id") for s in root.findall(".//k:Style", ns)}
    assert {f"yxj{i}" for i in range(1, 4)} <= styles
    marks = [p for p in root.findall(".//k:Placemark", ns) if p.find("k:MultiGeometry", ns) is not None]
    assert len(marks) == len(county)
    by_id = county.set_index("JCBH")
    for p in marks:
        jcbh = p.find("k:name", ns).text.split()[-1]
        assert p.find("k:styleUrl", ns).text == f"#yxj{by_id.loc[jcbh, 'YXJ']}"
        desc = p.find("k:description", ns).text
        for src in _img_sources(desc):
            assert src in names, src
        lon, lat = map(float, p.find(".//k:Point/k:coordinates", ns).text.split(","))
        assert lon == pytest.approx(by_id.loc[jcbh, "JD"], abs=1e-7)
    # GDAL's LIBKML driver reads the KMZ: one layer per batch folder
    layers = pyogrio.list_layers(kmz)
    assert len(layers) == county["PCBH"].nunique()
    total = sum(pyogrio.read_info(kmz, layer=name)["features"] for name, _ in layers)
    assert total == len(county) + county["PCBH"].nunique()  # placemarks + one route each


def test_chips_open_and_look_right(full):
    county, _, x, _ = full
    pngs = sorted((x / "影像").glob("*.png"))
    assert len(pngs) == 2 * len(county)
    for p in pngs:
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (320, 320)


def test_same_stretch_and_outline(tmp_path):
    """before == after outside the polygon: with one stretch those pixels are identical."""
    sq = box(500000, 2520000, 500040, 2520040)
    county = gpd.GeoDataFrame({"JCBH": ["4501022026Q300001"], "QSX": ["2026-05-10"],
                               "HSX": ["2026-08-21"]}, geometry=[sq], crs=4545)
    links, problems = write_chips(county, tmp_path, make_reader(county))
    assert problems == []
    b, a = (np.asarray(Image.open(tmp_path / n)) for n in links["4501022026Q300001"])
    minx, miny, maxx, maxy = chip_bounds(sq)
    side = maxx - minx
    assert side == pytest.approx(200.0)  # 40 m square -> 64 m < 200 m minimum window
    scale = 320 / side

    def px(xm, ym):
        return int((xm - minx) * scale), int((maxy - ym) * scale)

    # a pixel well outside the polygon and away from the labels: same colour in both
    c, r = px(500000 - 40, 2520000 + 20)
    assert (b[r, c] == a[r, c]).all()
    # inside the polygon the after chip is brighter
    c, r = px(500020, 2520020)
    assert a[r, c].astype(int).sum() > b[r, c].astype(int).sum() + 100
    # the outline (yellow) passes through the middle of the square's left edge
    c, r = px(500000, 2520020)
    near = b[r - 2:r + 3, c - 2:c + 3].reshape(-1, 3)
    assert any((p == (255, 235, 0)).all() for p in near)


def test_stretch_units():
    before = np.stack([np.arange(100.0).reshape(10, 10)] * 3)
    after = before + 100.0
    low, high = joint_stretch(before, after)
    # percentiles of 0..199 (both dates together): 2 % -> 3.98, 98 % -> 195.02
    np.testing.assert_allclose(low, 3.98)
    np.testing.assert_allclose(high, 195.02)
    rgb = to_rgb8(before, low, high)
    assert rgb.shape == (10, 10, 3) and rgb[0, 0, 0] == 0 and rgb[9, 9, 0] == round((99 - 3.98) / 191.04 * 255)
    masked = np.ma.masked_array(before, mask=before < 10)
    assert (to_rgb8(masked, low, high)[0, :9] == 0).all()
    assert [nice_length(v) for v in (0.7, 3, 7.5, 19, 160, 999)] == [0.5, 2, 5, 10, 100, 500]


def test_chip_failures_are_reported(tmp_path):
    county = assign_batches(make_county(5, seed=4), quarter="2026Q3", xzqdm="450102",
                            issue_date=dt.date(2026, 10, 1))
    bad = county["JCBH"].iloc[1]
    z = write_county_package(county, tmp_path, xzqdm="450102", xzqmc="兴宁区", quarter="2026Q3",
                             run_meta=META, formats=("xlsx", "chips", "html"),
                             read_chip=make_reader(county, fail={bad}))
    with zipfile.ZipFile(z) as zf:
        m = json.loads(zf.read("manifest.json"))
        pngs = [n for n in zf.namelist() if n.endswith("_before.png")]
    assert any(bad in w and "imagery missing" in w for w in m["warnings"])
    assert len(pngs) == 4 and not any(bad in n for n in pngs)


def test_ledger_links(full):
    county, _, x, _ = full
    ws = openpyxl.load_workbook(x / "台账.xlsx")["台账"]
    header = [c.value for c in ws[1]]
    assert header[len(FIELDS):] == ["前时相影像", "后时相影像"]
    for row in ws.iter_rows(min_row=2):
        for cell in row[len(FIELDS):]:
            target = unquote(cell.hyperlink.target)
            assert (x / target).is_file(), target


def test_qgis_project(full):
    county, _, x, _ = full
    qgs = x / "图斑.qgs"
    root = ET.parse(qgs).getroot()
    assert root.tag == "qgis"
    assert root.find("properties/Paths/Absolute").text == "false"
    layers = root.findall("projectlayers/maplayer")
    assert len(layers) == 4
    for ml in layers:
        ds = ml.find("datasource").text
        path, layer = ds.split("|layername=")
        assert path.startswith("./")
        assert layer in [n for n, _ in pyogrio.list_layers(qgs.parent / path)]
        assert ml.find("srs/spatialrefsys/authid").text == "EPSG:4490"
        r = ml.find("renderer-v2")
        if layer in ("变化图斑", "图斑中心点"):
            assert r.get("type") == "categorizedSymbol" and r.get("attr") == "YXJ"
            cats = [c.get("value") for c in r.findall("categories/category")]
            assert cats == ["1", "2", "3"]
            assert len(r.findall("symbols/symbol")) == 3
    tree_ids = [n.get("id") for n in root.findall("layer-tree-group/layer-tree-layer")]
    assert tree_ids == [ml.find("id").text for ml in layers]


class _Imgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.src, self.sections = [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.src.append(a["src"])
        if tag == "section":
            self.sections += 1


def _img_sources(html: str) -> list[str]:
    p = _Imgs()
    p.feed(html)
    return [unquote(s) for s in p.src]


def test_html_report_images_resolve(full):
    county, _, x, _ = full
    html = (x / "报告.html").read_text(encoding="utf-8")
    p = _Imgs()
    p.feed(html)
    assert p.sections == len(county)
    srcs = [unquote(s) for s in p.src]
    assert "总图.png" in srcs and len(srcs) == 1 + 2 * len(county)
    for s in srcs:
        assert (x / s).is_file(), s
    with Image.open(x / "总图.png") as im:
        assert im.format == "PNG" and im.size[0] == 1400
    assert "兴宁区" in html and "示例省 2026 年卫片" in html


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (Debian package 'chromium')")
def test_html_report_in_chromium(full, tmp_path):
    """Load the report in headless Chromium; every image must decode (naturalWidth > 0)."""
    _, _, x, _ = full
    page = x / "报告_check.html"
    probe = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
             "document.body.setAttribute('data-images',im.length);"
             "document.body.setAttribute('data-broken',im.filter(i=>!i.complete||i.naturalWidth===0).length);"
             "});</script></body>")
    page.write_text((x / "报告.html").read_text(encoding="utf-8").replace("</body>", probe),
                    encoding="utf-8")
    res = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                          f"--user-data-dir={tmp_path / 'profile'}", "--allow-file-access-from-files",
                          "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=90)
    page.unlink()
    dom = res.stdout
    assert 'data-broken="0"' in dom, res.stderr[-2000:]
    assert f'data-images="{1 + 2 * 30}"' in dom


def test_format_selection(tmp_path):
    county = assign_batches(make_county(4, seed=3), quarter="2026Q3", xzqdm="450102",
                            issue_date=dt.date(2026, 10, 1))
    z = write_county_package(county, tmp_path, xzqdm="450102", xzqmc="兴宁区", quarter="2026Q3",
                             run_meta=META, formats="kmz")
    with zipfile.ZipFile(z) as zf:
        assert sorted(zf.namelist()) == ["README.txt", "manifest.json", "图斑.kmz"]
    with pytest.raises(ConfigError, match="gpkg"):
        write_county_package(county, tmp_path, xzqdm="450102", xzqmc="兴宁区", quarter="2026Q3",
                             run_meta=META, formats=("qgis",))
    # chips asked for but no imagery reader: the package is still built, and says why
    z = write_county_package(county, tmp_path / "nochips", xzqdm="450102", xzqmc="兴宁区",
                             quarter="2026Q3", run_meta=META, formats=("xlsx", "chips"))
    with zipfile.ZipFile(z) as zf:
        assert not any(n.endswith(".png") for n in zf.namelist())
        assert any("read_chip" in w for w in json.loads(zf.read("manifest.json"))["warnings"])


def test_unbatched_county_still_packages(tmp_path):
    county = make_county(3, seed=9)  # no PCBH yet: no batch layers, everything else works
    z = write_county_package(county, tmp_path, xzqdm="450102", xzqmc="兴宁区", quarter="2026Q3",
                             run_meta=META, formats=("gpkg", "kmz", "html", "qgis"))
    with zipfile.ZipFile(z) as zf:
        zf.extractall(tmp_path / "x")
    assert set(dict(pyogrio.list_layers(tmp_path / "x" / "图斑.gpkg"))) == {"变化图斑", "图斑中心点"}
    assert verify_manifest(z) == []


def _haversine(lon1, lat1, lon2, lat2, r=6371.0088):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * r * math.asin(math.sqrt(a))
