"""Benchmark: Tianyan's overlay against geopandas.overlay on the same farmland layer.

A generated DLTB-like GeoPackage (default 1,000,000 parcels: a jittered 50 m grid over ~50 km,
DLBM codes, Chinese text fields, 1 % overlapping duplicates as dirty topology) and 20,000 change
polygons spread over it. Both sides start from the files on disk and end with the ellipsoidal
farmland area (m²) of every change with overlapping parcels counted once:

* Tianyan: ``overlay_changes(changes, {"counties", "farmland"})`` (it also assigns counties and
  measures JCMJ / centroids, which the baseline does not do);
* baseline: ``geopandas.read_file`` -> DLBM prefix filter -> ``geopandas.overlay(how=
  "intersection")`` -> ``dissolve`` per change -> the same ellipsoidal area function; run with
  geopandas' default reader and again with ``use_arrow=True`` (both printed).

Prints both times, the ratio and the largest relative area difference (must be ≤ 0.01 %).
The generated files are cached in ``--dir`` (default /tmp/tianyan_bench), never in the repo.

Usage::

    python bench/bench_overlay.py                      # full size (generation ~1 min once)
    python bench/bench_overlay.py --parcels 40000 --changes 2000   # quick
    python bench/bench_overlay.py --one-county          # changes in one quarter of the layer
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from overlay.areas import ellipsoidal_area  # noqa: E402
from overlay.overlay import overlay_changes  # noqa: E402

X0, Y0, CELL = 400_000.0, 2_500_000.0, 50.0  # EPSG:4545 (CGCS2000 GK, CM 108°E)
CODES = np.array(["0101", "0102", "0103", "0103K", "0201", "0301", "1001", "0702"])
FARMLAND = ["0101", "0102", "0103"]


def _atomic_write(gdf, path: Path, layer: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.gpkg")
    pyogrio.write_dataframe(gdf, tmp, layer=layer, driver="GPKG")
    os.replace(tmp, path)


def make_farmland(n_parcels: int, crs: str, seed: int, folder: Path) -> Path:
    """A DLTB-like GeoPackage of exactly ``n_parcels`` quadrilaterals (cached by parameters)."""
    path = folder / f"dltb_{n_parcels}_{crs.replace(':', '')}_{seed}.gpkg"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    side = int(np.sqrt(n_parcels * 0.99))
    gx, gy = np.meshgrid(np.arange(side + 1) * CELL + X0, np.arange(side + 1) * CELL + Y0)
    gx = gx + rng.uniform(-12, 12, gx.shape)
    gy = gy + rng.uniform(-12, 12, gy.shape)
    i, j = (a.ravel() for a in np.meshgrid(np.arange(side), np.arange(side), indexing="ij"))
    corners = [(i, j), (i, j + 1), (i + 1, j + 1), (i + 1, j), (i, j)]
    ring = np.stack([np.stack([gx[a, b], gy[a, b]], -1) for a, b in corners], 1)
    polys = shapely.polygons(ring)
    extra = n_parcels - len(polys)  # dirty topology: shifted duplicates overlapping their parcel
    dup = rng.choice(len(polys), extra, replace=False)
    polys = np.concatenate([polys, shapely.transform(polys[dup], lambda c: c + rng.uniform(-8, 8, 2))])
    dlbm = CODES[rng.integers(0, len(CODES), n_parcels)]
    gdf = gpd.GeoDataFrame({
        "BSM": np.arange(n_parcels, dtype=np.int64),
        "DLBM": dlbm,
        "DLMC": np.where(np.char.startswith(dlbm.astype(str), "01"), "耕地", "其他用地"),
        "QSDWDM": "450521101201",
        "ZLDWDM": "450521101201",
        "TBMJ": shapely.area(polys),
    }, geometry=polys, crs="EPSG:4545")
    if crs != "EPSG:4545":
        gdf = gdf.to_crs(crs)
    _atomic_write(gdf, path, "DLTB")
    return path


def make_counties(folder: Path, extent: float) -> Path:
    """Four counties (quadrants of the parcel area, grown by 1 km), delivered in EPSG:4490."""
    path = folder / f"xzq_{int(extent)}.gpkg"
    if path.exists():
        return path
    h = extent / 2
    boxes = [shapely.box(X0 - 1000 + dx, Y0 - 1000 + dy, X0 + dx + h + (1000 if dx else 0),
                         Y0 + dy + h + (1000 if dy else 0)) for dx in (0, h) for dy in (0, h)]
    gdf = gpd.GeoDataFrame({"XZQDM": ["450521", "450502", "450503", "450512"]},
                           geometry=shapely.segmentize(np.array(boxes), 500.0), crs="EPSG:4545")
    _atomic_write(gdf.to_crs(4490), path, "XZQ")
    return path


def make_changes(n: int, extent: float, seed: int, one_county: bool = False) -> gpd.GeoDataFrame:
    """Irregular hexagons of 10-60 m radius (about 0.3-17 亩), uniformly spread over the whole
    area, or over its south-west quarter (one county) with ``one_county``."""
    rng = np.random.default_rng(seed + 1)
    span = extent / 2 if one_county else extent
    cx = rng.uniform(X0, X0 + span, n)
    cy = rng.uniform(Y0, Y0 + span, n)
    r = rng.uniform(10, 60, (n, 1)) * rng.uniform(0.7, 1.0, (n, 6))
    ang = np.linspace(0, 2 * np.pi, 7)[:-1] + rng.uniform(0, np.pi, (n, 1))
    xy = np.stack([cx[:, None] + r * np.cos(ang), cy[:, None] + r * np.sin(ang)], -1)
    xy = np.concatenate([xy, xy[:, :1]], 1)
    return gpd.GeoDataFrame({"TBLX": ["20"] * n, "ZXD": np.full(n, 0.9)}, geometry=shapely.polygons(xy), crs="EPSG:4545")


def tianyan(changes, farmland: Path, counties: Path) -> np.ndarray:
    layers = {"counties": {"path": counties, "code_field": "XZQDM"},
              "farmland": {"path": farmland, "code_field": "DLBM", "codes": FARMLAND}}
    out, _ = overlay_changes(changes, layers)
    return out["GDMJ"].to_numpy()


def baseline(changes, farmland: Path, use_arrow: bool = False) -> np.ndarray:
    layer = gpd.read_file(farmland, use_arrow=use_arrow)
    layer = layer[layer["DLBM"].str.startswith(tuple(FARMLAND))].to_crs(changes.crs)
    ch = changes[["geometry"]].assign(cid=np.arange(len(changes)))
    pieces = gpd.overlay(ch, layer, how="intersection", keep_geom_type=True)
    merged = pieces.dissolve(by="cid")
    area = np.zeros(len(changes))
    area[merged.index.to_numpy()] = ellipsoidal_area(merged.geometry)
    return area


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parcels", type=int, default=1_000_000)
    ap.add_argument("--changes", type=int, default=20_000)
    ap.add_argument("--layer-crs", default="EPSG:4545", help="CRS the farmland file is written in")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/tianyan_bench"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one-county", action="store_true",
                    help="put all changes in one county (a quarter of the layer), as a per-county run sees them")
    args = ap.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    farmland = make_farmland(args.parcels, args.layer_crs, args.seed, args.dir)
    extent = int(np.sqrt(args.parcels * 0.99)) * CELL
    counties = make_counties(args.dir, extent)
    changes = make_changes(args.changes, extent, args.seed, args.one_county)
    print(f"data: {args.parcels:,} parcels ({farmland}), {args.changes:,} changes; "
          f"ready in {time.perf_counter() - t:.1f} s", flush=True)

    def timed(fn, *a, **kw):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn(*a, **kw)
        return result, time.perf_counter() - wall, time.process_time() - cpu

    ours, t_ours, c_ours = timed(tianyan, changes, farmland, counties)
    theirs, t_base, c_base = timed(baseline, changes, farmland)
    theirs_arrow, t_arrow, c_arrow = timed(baseline, changes, farmland, use_arrow=True)

    both = np.maximum(ours, theirs)
    rel = np.abs(ours - theirs) / np.where(both > 0, both, 1.0)
    print("                                           wall s   cpu s  (cpu: robust on a shared machine)")
    print(f"tianyan overlay_changes (read incl.):    {t_ours:7.2f} {c_ours:7.2f}")
    print(f"geopandas read_file + overlay + dissolve: {t_base:7.2f} {c_base:7.2f}   "
          f"ratio {t_base / t_ours:.2f}x wall, {c_base / c_ours:.2f}x cpu")
    print(f"  same, read_file(use_arrow=True):        {t_arrow:7.2f} {c_arrow:7.2f}   "
          f"ratio {t_arrow / t_ours:.2f}x wall, {c_arrow / c_ours:.2f}x cpu")
    print(f"farmland area: {ours.sum():,.1f} m² vs {theirs.sum():,.1f} m²; "
          f"max relative difference per change {rel.max():.2e} (limit 1e-4)")
    rel_arrow = np.abs(theirs_arrow - theirs).max() / max(theirs.max(), 1.0)
    return 0 if rel.max() <= 1e-4 and rel_arrow <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
