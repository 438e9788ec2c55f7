"""Benchmark: county packages for one province quarter (7,000 polygons over 100 counties).

Synthetic but shaped like a real delivery: 100 counties of ~40 km across in EPSG:4545
(CGCS2000 GK, CM 108°E), county sizes drawn from a lognormal so a few counties hold hundreds
of polygons and many hold a few dozen, star-shaped change polygons of 0.3-30 亩, every
DESIGN.md attribute filled, and a ``read_chip`` that renders a smooth synthetic scene
(2 m pixels) with the changed polygons bright in the after date, so chips cost what real
ones do apart from the disk read.

Each county runs ``assign_batches`` then ``write_county_package`` with every format, in a
process pool (default 2 workers, as on the target machine). Prints the wall time (target:
at most 2 minutes on 2 cores), the workers' total CPU time (what the wall time would be on
otherwise idle cores: CPU / workers, plus disk waits), and per output type the wall and CPU
seconds summed over counties. "chips" includes the synthetic reader (~1 ms per polygon).

Usage::

    python bench/bench_export.py                       # 7,000 polygons, 100 counties
    python bench/bench_export.py --polygons 700 --counties 10 --workers 1   # quick
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FORMATS = ("gpkg", "shp", "kmz", "xlsx", "chips", "html", "qgis")
META = {"run_id": "bench", "config_hash": "sha256:bench", "version": "bench", "name": "基准测试省"}
RES = 2.0


def county_sizes(total: int, counties: int, rng: np.random.Generator) -> np.ndarray:
    """Lognormal county sizes summing to ``total`` (each at least 1)."""
    w = rng.lognormal(0.0, 0.8, counties)
    n = np.maximum(1, np.floor(w / w.sum() * total)).astype(int)
    n[np.argmax(n)] += total - n.sum()
    return n


def make_county(k: int, n: int, seed: int):
    """One synthetic county: ``n`` polygons in a 40 km square, EPSG:4545."""
    import geopandas as gpd
    from shapely.geometry import Polygon

    rng = np.random.default_rng(seed)
    col, row = k % 10, k // 10
    x0, y0 = 330_000 + col * 42_000, 2_400_000 + row * 42_000
    xs = x0 + rng.uniform(0, 40_000, n)
    ys = y0 + rng.uniform(0, 40_000, n)
    geoms = []
    for x, y in zip(xs, ys):
        m = int(rng.integers(5, 9))
        ang = 2 * np.pi * (np.arange(m) + rng.uniform(0, 0.8, m)) / m
        rad = rng.uniform(10, 60, m)
        geoms.append(Polygon(zip(x + rad * np.cos(ang), y + rad * np.sin(ang))))
    g = gpd.GeoDataFrame(geometry=geoms, crs=4545)
    area = g.geometry.area.to_numpy()
    code = f"45{k // 10 + 1:02d}{k % 10 + 1:02d}"
    yxj = rng.integers(1, 6, n)
    cen = g.geometry.centroid.to_crs(4490)
    g["JCBH"] = [f"{code}2026Q3{i + 1:05d}" for i in range(n)]
    g["XZQDM"], g["XZQMC"] = code, f"测试县{k + 1:03d}"
    g["QSX"], g["HSX"] = "2026-05-10", "2026-08-21"
    g["JCMJ"], g["JCMJM"] = area, area / (2000 / 3)
    g["TBLX"] = rng.choice(["20", "YH", "TD", "DL", "GF", "KT", "QT"], n)
    g["ZXD"] = rng.uniform(0.5, 1.0, n)
    g["ZXDJ"] = np.where(g["ZXD"] > 0.8, "高", "中")
    g["GDMJ"] = area * rng.uniform(0, 1, n)
    g["JBNTMJ"] = np.where(yxj == 1, g["GDMJ"] * 0.6, 0.0)
    g["STHXMJ"] = g["BHQMJ"] = g["PZMJ"] = 0.0
    g["BHQFQ"] = ""
    g["YXJ"] = yxj
    g["YXJF"] = 100 - 15 * yxj + rng.uniform(0, 10, n)
    g["YXJLY"] = np.where(yxj == 1, "永久基本农田非农化", "耕地非农化")
    g["QQJCBH"] = ""
    g["JD"], g["WD"] = cen.x, cen.y
    return code, g


def make_reader(county):
    """read_chip over a smooth synthetic scene; the after date is bright inside the polygons."""
    from affine import Affine

    boxes = np.array([g.bounds for g in county.geometry])

    def read_chip(bounds):
        minx, miny, maxx, maxy = bounds
        cols = int(math.ceil((maxx - minx) / RES))
        rows = int(math.ceil((maxy - miny) / RES))
        x = minx + (np.arange(cols) + 0.5) * RES
        y = maxy - (np.arange(rows) + 0.5) * RES
        X, Y = np.meshgrid(x, y)
        base = 800 + 300 * np.sin(X / 90.0) * np.cos(Y / 70.0)
        before = np.stack([base, base * 1.1 + 50, base * 0.9 + 100]).astype(np.uint16)
        after = before.copy()
        near = ((boxes[:, 2] >= minx) & (boxes[:, 0] <= maxx)
                & (boxes[:, 3] >= miny) & (boxes[:, 1] <= maxy))
        for a, b, c, d in boxes[near]:
            after[:, (X >= a) & (X <= c) & (Y >= b) & (Y <= d)] = 2500
        return before, after, Affine(RES, 0, minx, 0, -RES, maxy)

    return read_chip


def one_county(args) -> dict[str, float]:
    k, n, seed, out = args
    from pipeline.batches import assign_batches
    from pipeline.package import write_county_package

    code, county = make_county(k, n, seed)
    timings: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    county = assign_batches(county, quarter="2026Q3", xzqdm=code, issue_date=dt.date(2026, 10, 1))
    timings["batches"] = time.perf_counter() - t0
    timings["batches.cpu"] = time.process_time() - c0
    write_county_package(county, Path(out), xzqdm=code, xzqmc=county["XZQMC"].iloc[0],
                         quarter="2026Q3", run_meta=META, formats=FORMATS,
                         read_chip=make_reader(county), timings=timings)
    return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--polygons", type=int, default=7000)
    ap.add_argument("--counties", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="keep the packages here (default: temp, removed)")
    a = ap.parse_args()

    out = a.out or Path(tempfile.mkdtemp(prefix="tianyan_bench_export_"))
    out.mkdir(parents=True, exist_ok=True)
    sizes = county_sizes(a.polygons, a.counties, np.random.default_rng(0))
    jobs = sorted(((k, int(n), 1000 + k, str(out)) for k, n in enumerate(sizes)),
                  key=lambda j: -j[1])  # biggest first: better load balance
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=a.workers) as pool:
        results = list(pool.map(one_county, jobs))
    wall = time.perf_counter() - t0

    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_end = os.getloadavg()[0]

    total: dict[str, float] = {}
    for r in results:
        for key, v in r.items():
            total[key] = total.get(key, 0.0) + v
    zips = list(out.glob("*.zip"))
    size_mb = sum(p.stat().st_size for p in zips) / 1e6
    cpu_all = children.ru_utime + children.ru_stime
    print(f"export bench: {a.polygons} polygons, {a.counties} counties (largest {sizes.max()}, "
          f"median {int(np.median(sizes))}), {a.workers} workers, {os.cpu_count()} cores, "
          f"load average {load_start:.1f} -> {load_end:.1f}")
    print(f"wall time {wall:.1f} s (target <= 120 s); workers' CPU {cpu_all:.1f} s "
          f"= {cpu_all / a.workers:.1f} s per worker on idle cores; {len(zips)} zips, {size_mb:.0f} MB")
    outputs = sorted((k for k in total if not k.endswith(".cpu")), key=lambda k: -total[k])
    wall_sum = sum(total[k] for k in outputs)
    cpu_sum = sum(total[k + ".cpu"] for k in outputs)
    print(f"{'output':<10}{'wall s':>9}{'share':>8}{'CPU s':>9}{'share':>8}{'CPU ms/polygon':>16}")
    for k in outputs:
        w, c = total[k], total[k + ".cpu"]
        print(f"{k:<10}{w:>9.1f}{100 * w / wall_sum:>7.1f}%{c:>9.1f}{100 * c / cpu_sum:>7.1f}%"
              f"{1000 * c / a.polygons:>16.2f}")
    print(f"{'sum':<10}{wall_sum:>9.1f}{'':>8}{cpu_sum:>9.1f}")
    if a.out is None:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
