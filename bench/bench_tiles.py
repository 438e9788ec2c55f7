"""Benchmark of imagery in, tiles out: peak memory against image size, and the detection stage's
speed against merely reading the same windows.

For each size (Gpx per date) and each encoding (DEFLATE + predictor 2, and uncompressed), a pair
of 4-band uint16 GeoTIFFs (tiled 256 x 256, 2 m, EPSG:4545) is generated strip by strip: fields
of random crops with noise, and bright built-up patches on vegetation in the after date. A
fresh interpreter then runs the plan and detect stages of a quarter on it (``--workers``
processes, ``--tile-size`` px) and afterwards reads every tile's halo window of both files with
plain ``rasterio`` (same files, same tiles, same number of processes, page cache as warm as for
the detector). Printed per run:

* peak RSS: the largest process of the run, from ``getrusage(RUSAGE_CHILDREN)`` of a wrapper
  process that only ran it (goal: flat with size, under 1.5 GB with the default tile size);
* plan and detect seconds; detect throughput in Mpx/s per date (read both dates, detect,
  polygonize, write part files) and the seconds the detect stage's tasks waited for
  ``tiles.reader`` (the tiles' ``read_s``). With ``--workers 1`` the next tile is read in a
  background thread while the current one is detected (``tiles.prefetch``), so that column is
  the part of the reads that detection did not hide; with a process pool each worker reads its
  own tiles, and it is all of them;
* read-only throughput and the ratio detect / read (goal >= 0.7 on DEFLATE).

Nothing is asserted: the figures are printed. Usage::

    python bench/bench_tiles.py                          # 0.06 and 0.25 Gpx per date
    python bench/bench_tiles.py --gpx 0.01 0.04 --tile-size 1024     # quick
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BANDS = ("blue", "green", "red", "nir")
RES, X0, Y0 = 2.0, 500000.0, 2500000.0
STRIP = 256
# crop / soil / built reflectances x 10000 per band (blue, green, red, nir)
COVER = np.array([[400, 800, 500, 3500], [600, 900, 1100, 2600], [900, 1200, 1500, 2200],
                  [500, 700, 600, 3000], [1500, 1700, 1900, 2300]], dtype=np.float32)
BUILT = np.array([2200, 2300, 2400, 2600], dtype=np.float32)


def strip(n: int, r0: int, h: int, seed: int, after: bool) -> np.ndarray:
    """Rows r0..r0+h of a synthetic scene: 64 px fields of random cover, noise, and (after)
    32 px built-up squares on one field in 40."""
    rows = np.arange(r0, r0 + h)[:, None]
    cols = np.arange(n)[None, :]
    field_id = (rows // 64) * 100003 + (cols // 64) * 7919
    cover = (field_id * 2654435761 % 2 ** 32) % len(COVER)
    img = COVER[cover].transpose(2, 0, 1).copy()
    if after:
        built = ((field_id * 40503 % 2 ** 32) % 40 == 0) & (rows % 64 < 32) & (cols % 64 < 32)
        img[:, built] = BUILT[:, None]
    rng = np.random.default_rng([seed, r0, int(after)])
    img += rng.normal(0, 40, img.shape).astype(np.float32)
    return np.clip(img, 1, 65535).astype(np.uint16)


def write_pair(folder: Path, n: int, compress: bool, seed: int = 1) -> tuple[str, str]:
    """Generate before/after GeoTIFFs of n x n px, strip by strip (memory ~ one strip)."""
    import rasterio
    from affine import Affine

    profile = dict(driver="GTiff", width=n, height=n, count=4, dtype="uint16", crs="EPSG:4545",
                   transform=Affine(RES, 0, X0, 0, -RES, Y0), nodata=0, tiled=True, blockxsize=256,
                   blockysize=256, interleave="pixel", BIGTIFF="IF_SAFER")
    if compress:
        profile.update(compress="deflate", predictor=2)
    paths = []
    for label, after in (("before_20260501", False), ("after_20260801", True)):
        path = folder / f"{label}.tif"
        with rasterio.open(path, "w", **profile) as dst:
            for r0 in range(0, n, STRIP):
                h = min(STRIP, n - r0)
                dst.write(strip(n, r0, h, seed, after), window=((r0, r0 + h), (0, n)))
        paths.append(str(path))
    return paths[0], paths[1]


def read_task(task):
    """Read one tile's halo window of both files with plain rasterio (the baseline)."""
    import rasterio
    from rasterio.windows import Window

    files, halo = task
    for f in files:
        with rasterio.open(f) as src:
            src.read(window=Window(*halo))
    return None


def child(spec: dict) -> dict:
    """Run plan + detect on the pair, then the read-only baseline; return the timings."""
    from detect.detector import DetectParams, detect_tile, fit_model
    from pipeline.config import config_from_dict
    from pipeline.executor import run_tasks
    from pipeline.quarter import Quarter
    from pipeline.rundir import RunDir
    from pipeline.stages import Outcome, load_plan, stage_detect, stage_plan

    work = Path(spec["dir"])
    raw = {"run": {"workdir": str(work / "runs"), "tile_size": spec["tile_size"], "workers": spec["workers"]},
           "imagery": {"before": spec["before"], "after": spec["after"], "bands": list(BANDS)},
           "layers": {"counties": {"path": str(work / "none.gpkg")}}}
    cfg = config_from_dict(raw, work / "bench.toml")
    quarter = Quarter.parse("2026Q3")
    rd = RunDir(cfg.workdir, str(quarter))
    shutil.rmtree(rd.path, ignore_errors=True)
    rd.create()
    manifest, outcome = {}, Outcome()
    # warm the detector's kernels here (workers load them from the Numba cache on their first tile)
    rng = np.random.default_rng(0)
    x = rng.uniform(500, 3000, (4, 64, 64)).astype(np.float32)
    v = np.ones((64, 64), bool)
    detect_tile(x, x * 1.01, v, BANDS, fit_model(x, x * 1.01, v, BANDS, DetectParams()), DetectParams())
    t0 = time.perf_counter()
    stage_plan(cfg, quarter, rd, manifest, outcome)
    t_plan = time.perf_counter() - t0
    t0 = time.perf_counter()
    stage_detect(cfg, quarter, rd, manifest, outcome, workers=spec["workers"])
    t_detect = time.perf_counter() - t0
    plan = load_plan(rd.path)
    tasks = [((spec["before"], spec["after"]), t["halo"]) for t in plan["tiles"]]
    t0 = time.perf_counter()
    errors = [e for _, _, e in run_tasks(read_task, tasks, spec["workers"]) if e is not None]
    t_read = time.perf_counter() - t0
    objects = sum(len(__import__("geopandas").read_parquet(p)) for p in rd.tiles.glob("*.parquet"))
    events = [json.loads(x) for x in rd.log_path.read_text(encoding="utf-8").splitlines()]
    t_tile_read = sum(e.get("read_s", 0.0) for e in events if e["event"] == "tile")
    return {"t_plan": t_plan, "t_detect": t_detect, "t_read": t_read, "tiles": len(plan["tiles"]),
            "t_tile_read": t_tile_read,
            "failed": len(outcome.failed_tiles) + len(errors), "objects": objects,
            "px": plan["grid"]["width"] * plan["grid"]["height"],
            "rss_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def measure(cmd: list[str]) -> None:
    """Run ``cmd``, pass its last stdout line on, and add the peak RSS of its process tree."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        sys.exit(proc.returncode)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["rss_peak_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpx", type=float, nargs="+", default=[0.06, 0.25], help="Gpx per date")
    ap.add_argument("--tile-size", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--encodings", nargs="+", default=["deflate", "none"], choices=["deflate", "none"])
    ap.add_argument("--dir", help="work folder (default: a temporary one, removed at the end)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--measure", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.measure:
        measure(args.measure)
        return
    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_tiles_"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"tile size {args.tile_size} px, {args.workers} worker(s), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; work folder {base}")
    print(f"{'Gpx':>6} {'enc':>8} {'MB/date':>8} {'gen s':>6} {'plan s':>7} {'detect s':>9} "
          f"{'Mpx/s':>7} {'(in read)':>9} {'read s':>7} {'read Mpx/s':>10} {'ratio':>6} {'peak RSS MB':>11} "
          f"{'objects':>8}")
    try:
        for gpx in args.gpx:
            n = int(round(math.sqrt(gpx * 1e9)))
            for enc in args.encodings:
                folder = base / f"{gpx}_{enc}"
                folder.mkdir(exist_ok=True)
                t0 = time.perf_counter()
                before, after = write_pair(folder, n, enc == "deflate")
                t_gen = time.perf_counter() - t0
                spec = {"dir": str(folder), "before": before, "after": after,
                        "tile_size": args.tile_size, "workers": args.workers}
                me = [sys.executable, __file__]
                out = subprocess.run(me + ["--measure"] + me + ["--child", json.dumps(spec)],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    raise SystemExit(f"run failed for {gpx} Gpx {enc}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                mpx = r["px"] / 1e6
                size_mb = os.path.getsize(before) / 2 ** 20
                print(f"{gpx:>6.3f} {enc:>8} {size_mb:>8.0f} {t_gen:>6.0f} {r['t_plan']:>7.1f} "
                      f"{r['t_detect']:>9.1f} {mpx / r['t_detect']:>7.2f} {r['t_tile_read']:>9.1f} "
                      f"{r['t_read']:>7.1f} "
                      f"{mpx / r['t_read']:>10.2f} {r['t_read'] / r['t_detect']:>6.2f} "
                      f"{r['rss_peak_mb']:>11.0f} {r['objects']:>8}"
                      + (f"  ({r['failed']} failed tiles)" if r["failed"] else ""), flush=True)
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)
    print("ratio = detection throughput / read-only throughput (same files, tiles and processes);\n"
          "(in read) = seconds the detect stage's tasks waited for tiles.reader (summed over tiles;\n"
          "  with 1 worker the next tile is read while the current one is detected: the reads not hidden);\n"
          "peak RSS = largest process of the run (plan + detect + read).")


if __name__ == "__main__":
    main()
