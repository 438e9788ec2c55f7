"""Benchmark of the change detector: speed against NumPy, compile cost, accuracy.

Prints, all measured in this run:
1. each Numba pass of ``detect.kernels`` against its plain NumPy reference (the ones the
   tests check it against): Mpx/s of both and the ratio;
2. the whole detector on an in-memory 4-band pair (fit_model on every 4th pixel +
   detect_tile, then + tile_objects): Mpx/s;
3. first-call cost: cold (fresh NUMBA_CACHE_DIR, in a subprocess) and warm (cache hit);
4. OA / kappa on the real Landsat pairs beside CVA + Otsu and |dNDVI| + Otsu.

Usage: ``python bench/bench_detect.py [--size 2048] [--repeat 3] [--demo DIR]``
(``--demo`` also scores a generated demo region against its truth).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numba  # noqa: E402
import numpy as np  # noqa: E402

from detect import kernels  # noqa: E402
from detect.detector import DetectParams, detect_tile, fit_model  # noqa: E402
from detect.objects import square_offsets, tile_objects  # noqa: E402
from detect.rules import rule_vector  # noqa: E402
from tests import test_detect_kernels as ref  # noqa: E402

BANDS = ("blue", "green", "red", "nir")
EMS = np.array([[0.03, 0.075, 0.04, 0.45], [0.07, 0.10, 0.15, 0.20], [0.05, 0.07, 0.05, 0.02],
                [0.25, 0.27, 0.28, 0.30], [0.09, 0.12, 0.15, 0.22], [0.035, 0.04, 0.035, 0.045]]).T


def make_pair(size, seed=0):
    """A 4-band uint16-like pair: 32-px parcels of six surfaces, gain/offset, noise, changes."""
    rng = np.random.default_rng(seed)
    n = size // 32 + 1
    lab_b = rng.integers(0, EMS.shape[1], (n, n))
    lab_a = np.where(rng.random((n, n)) < 0.1, rng.integers(0, EMS.shape[1], (n, n)), lab_b)
    up = lambda lab: lab.repeat(32, 0).repeat(32, 1)[:size, :size]
    x = EMS[:, up(lab_b)] * 10000 + rng.normal(0, 40, (4, size, size))
    y = (EMS[:, up(lab_a)] * 10000 + rng.normal(0, 60, (4, size, size))) * 1.07 + 250
    valid = np.ones((size, size), bool)
    valid[: size // 10, : size // 10] = False  # a cloud
    return x.astype(np.float32), y.astype(np.float32), valid


def timeit(fn, *args, repeat=3):
    fn(*args)  # compile / warm up
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, out


def row(name, npx, t_numba, t_numpy):
    print(f"  {name:<26} numba {npx / t_numba / 1e6:9.1f} Mpx/s   numpy {npx / t_numpy / 1e6:8.1f} Mpx/s"
          f"   ratio {t_numpy / t_numba:6.1f}x")


def bench_kernels(size, repeat):
    x, y, valid = make_pair(size)
    npx = size * size
    p = 4
    idx = np.arange(p, dtype=np.int64)
    params = DetectParams()
    model = fit_model(x[:, ::4, ::4], y[:, ::4, ::4], valid[::4, ::4], BANDS, params)
    _, mx, my, a, b, isg, gain, offset = model.arrays()
    roles = np.array([0, 1, 2, 3, -1], dtype=np.int64)
    rule = rule_vector(params, p)
    w = valid.astype(np.float32)
    shift = np.concatenate([mx, my])
    print(f"Numba passes vs NumPy references, {size} x {size} px, 4 bands, "
          f"{numba.get_num_threads()} Numba thread(s)")
    tn, _ = timeit(kernels.weighted_moments, x, y, idx, w, shift, repeat=repeat)
    tr, _ = timeit(ref.ref_moments, x, y, idx, w, shift, repeat=repeat)
    row("weighted_moments", npx, tn, tr)
    tn, _ = timeit(kernels.mad_chi2, x, y, idx, valid, mx, my, a, b, isg, repeat=repeat)
    tr, _ = timeit(ref.ref_mad, x, y, idx, valid, mx, my, a, b, isg, repeat=repeat)
    row("mad_chi2", npx, tn, tr)
    rn = np.ascontiguousarray(y[2:4])
    tn, ys = timeit(kernels.box_mean, rn, valid, 1, repeat=repeat)
    tr, _ = timeit(ref.ref_box_mean_np, rn, valid, 1, repeat=repeat)
    row("box_mean (2 bands, r=1)", npx, tn, tr)
    tn, out = timeit(kernels.change_pixels, x, y, ys, valid, idx, mx, my, a, b, isg, gain, offset,
                     roles, 1e-4, rule, repeat=repeat)
    tr, _ = timeit(ref.ref_change, x, y, ys, valid, idx, mx, my, a, b, isg, gain, offset, roles,
                   1e-4, rule, repeat=repeat)
    row("change_pixels", npx, tn, tr)
    flags = out[-1]
    tn, _ = timeit(kernels.vote_decide, flags, valid, 1, True, repeat=repeat)
    tr, _ = timeit(ref.ref_vote_decide, flags, valid, 1, True, repeat=repeat)
    row("vote_decide (r=1)", npx, tn, tr)
    m = (flags & kernels.FLAG_CHANGED) > 0
    lo, hi = square_offsets(3)
    tn, _ = timeit(kernels.erode_rect, m, lo, hi, repeat=repeat)
    tr, _ = timeit(ref.ref_erode, m, lo, hi, repeat=repeat)
    row("erode_rect (3 x 3)", npx, tn, tr)
    tn, _ = timeit(kernels.dilate_rect, m, lo, hi, repeat=repeat)
    tr, _ = timeit(ref.ref_dilate, m, lo, hi, repeat=repeat)
    row("dilate_rect (3 x 3)", npx, tn, tr)


def bench_detector(size, repeat):
    x, y, valid = make_pair(size, seed=1)
    npx = size * size
    params = DetectParams()

    def whole():
        model = fit_model(x[:, ::4, ::4], y[:, ::4, ::4], valid[::4, ::4], BANDS, params)
        return model, detect_tile(x, y, valid, BANDS, model, params)

    t_fit, model = timeit(fit_model, x[:, ::4, ::4], y[:, ::4, ::4], valid[::4, ::4], BANDS, params,
                          repeat=repeat)
    t_det, layers = timeit(detect_tile, x, y, valid, BANDS, model, params, repeat=repeat)
    t_all, _ = timeit(whole, repeat=repeat)
    from affine import Affine

    core = (slice(0, size), slice(0, size))
    t_obj, parts = timeit(tile_objects, layers, valid, core, Affine(2, 0, 5e5, 0, -2, 3e6),
                          "EPSG:4545", repeat=repeat)
    print(f"Whole detector, in-memory {size} x {size} 4-band pair, {numba.get_num_threads()} thread(s); "
          f"IR-MAD converged={model.converged} in {model.iterations} iterations")
    print(f"  fit_model (every 4th px)   {t_fit:7.3f} s")
    print(f"  detect_tile                {t_det:7.3f} s   {npx / t_det / 1e6:7.1f} Mpx/s")
    print(f"  fit + detect               {t_all:7.3f} s   {npx / t_all / 1e6:7.1f} Mpx/s")
    print(f"  tile_objects               {t_obj:7.3f} s   ({len(parts)} objects)")
    print(f"  fit + detect + objects     {t_all + t_obj:7.3f} s   {npx / (t_all + t_obj) / 1e6:7.1f} Mpx/s")


COLD = textwrap.dedent("""
    import sys, time
    t0 = time.perf_counter()
    sys.path.insert(0, {root!r})
    import numpy as np
    from detect.detector import DetectParams, fit_model, detect_tile
    t1 = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.uniform(100, 3000, (4, 64, 64)).astype(np.float32)
    y = (x * 1.1 + rng.normal(0, 50, x.shape)).astype(np.float32)
    v = np.ones((64, 64), bool)
    b = ("blue", "green", "red", "nir")
    m = fit_model(x, y, v, b, DetectParams())
    detect_tile(x, y, v, b, m, DetectParams())
    t2 = time.perf_counter()
    print(f"{{t1 - t0:.3f}} {{t2 - t1:.3f}}")
""")


def bench_compile():
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        code = COLD.format(root=str(ROOT))
        res = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                 text=True, check=True).stdout.split()
            res.append([float(v) for v in out])
    print("First call (import; first fit + detect on 64 x 64), separate processes:")
    print(f"  cold (empty NUMBA_CACHE_DIR)   import {res[0][0]:6.2f} s   first call {res[0][1]:6.2f} s")
    print(f"  warm (cache=True hit)          import {res[1][0]:6.2f} s   first call {res[1][1]:6.2f} s")


def bench_landsat():
    from tests import test_detect_landsat as ls

    if not ls.DATA.exists():
        print(f"Landsat: data not found at {ls.DATA}, skipped")
        return
    print("Landsat pairs, labelled pixels: (overall accuracy, kappa)")
    for city in ls.PAIRS:
        s_any = ls.scores(city, DetectParams(landuse_rules=False))
        s_lu = ls.scores(city, DetectParams(reflectance_scale=1 / 255))
        fmt = lambda t: f"({t[0]:.4f}, {t[1]:.4f})"
        print(f"  {city:<8} tianyan any-change {fmt(s_any['tianyan'])}   "
              f"tianyan land-use rules {fmt(s_lu['tianyan'])}   "
              f"CVA+Otsu {fmt(s_any['cva_otsu'])}   dNDVI+Otsu {fmt(s_any['dndvi_otsu'])}")


def bench_demo(demo_dir):
    import glob

    import geopandas as gpd
    import rasterio

    from detect.classify import classify
    from detect.merge import apply_mmu, merge_seams
    from pipeline.evaluate import evaluate

    d = Path(demo_dir)
    ms = sorted(glob.glob(str(d / "imagery" / "*" / "*_MS.tif")))
    cloud = glob.glob(str(d / "imagery" / "*" / "*_cloud.tif"))
    files = {"b": ms[0], "a": ms[1]}
    with rasterio.open(files["b"]) as s:
        x, tr, crs = s.read().astype(np.float32), s.transform, s.crs
    with rasterio.open(files["a"]) as s:
        y = s.read().astype(np.float32)
    valid = (x != 0).all(0) & (y != 0).all(0)
    if cloud:
        with rasterio.open(cloud[0]) as s:
            valid &= s.read(1) == 0
    params = DetectParams()
    t0 = time.perf_counter()
    model = fit_model(x[:, ::4, ::4], y[:, ::4, ::4], valid[::4, ::4], BANDS, params)
    layers = detect_tile(x, y, valid, BANDS, model, params)
    parts = tile_objects(layers, valid, (slice(None), slice(None)), tr, crs)
    objs = classify(apply_mmu(merge_seams(parts), params.min_area_m2))
    dt = time.perf_counter() - t0
    truth = gpd.read_file(d / "truth.gpkg", layer="truth")
    r = evaluate(objs, truth, min_area_m2=params.min_area_m2)["overall"]
    print(f"Demo {d} ({x.shape[2]} x {x.shape[1]} px, one tile, {dt:.1f} s): recall {r['recall']:.3f} "
          f"({r['truth_hit']}/{r['truth']}), precision {r['precision']:.3f} "
          f"({r['changes_hit']}/{r['changes']})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--demo", help="a demo directory written by pipeline.demo.make_demo")
    args = ap.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    bench_kernels(args.size, args.repeat)
    bench_detector(args.size, args.repeat)
    bench_compile()
    bench_landsat()
    if args.demo:
        bench_demo(args.demo)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
