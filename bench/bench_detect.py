"""Benchmark of the change detector: speed against NumPy, compile cost, accuracy.

Prints, all measured in this run:
1. each Numba pass of ``detect.kernels`` against its plain NumPy reference (the ones the
   tests check it against): Mpx/s of both and the ratio;
2. the whole detector on an in-memory 4-band pair: fit_model on every 4th pixel +
   detect_tile + tile_objects, Mpx/s by wall clock and by CPU time of all threads (the
   machine may be shared); fit_model on the whole pair as a scene sample, and its IR-MAD
   (started on a regular subsample) against IR-MAD from equal weights on all pixels; detect + objects alone, as the pipeline runs each tile (the model is fitted
   once per scene); and a pass that only reads the pair (the memory-bandwidth floor of
   any pass over it). Run twice: with glibc's defaults, where a tile's ~4 bytes/px of fresh
   output layers (flags, changed, evidence, strong; the float layers are summed per object
   from the pair) are page-faulted on every call, and in a child process that keeps freed
   memory in the heap (MALLOC_TRIM_THRESHOLD_ / MALLOC_MMAP_THRESHOLD_), as a worker
   that processes tile after tile can;
3. first-call cost: cold (fresh NUMBA_CACHE_DIR, in a subprocess) and warm (cache hit);
4. OA / kappa on the real Landsat pairs beside CVA + Otsu and |dNDVI| + Otsu.

Usage: ``python bench/bench_detect.py [--size 2048] [--repeat 3] [--quick] [--demo DIR]``.
``--quick`` (< 60 s with a warm cache): kernels on 1024 x 1024, the whole detector on --size,
warm start only. Every figure is the best of the calls made in ``BUDGET_S`` seconds (at least
``--repeat``; NumPy references too). ``--demo`` also scores a generated demo region.
"""
from __future__ import annotations

import argparse
import json
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

from detect import kernels, statistic  # noqa: E402
from detect.detector import DetectParams, detect_tile, fit_model  # noqa: E402
from detect.objects import tile_objects  # noqa: E402
from detect.rules import rule_vector  # noqa: E402
from tests import test_detect_fused as fused  # noqa: E402
from tests import test_detect_kernels as ref  # noqa: E402

BANDS = ("blue", "green", "red", "nir")
EMS = np.array([[0.03, 0.075, 0.04, 0.45], [0.07, 0.10, 0.15, 0.20], [0.05, 0.07, 0.05, 0.02],
                [0.25, 0.27, 0.28, 0.30], [0.09, 0.12, 0.15, 0.22], [0.035, 0.04, 0.035, 0.045]]).T
KEEP_HEAP = {"MALLOC_TRIM_THRESHOLD_": str(4 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}


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
    # band-sequential C order, as rasterio reads (EMS[:, lab] is band-interleaved)
    return (np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.float32),
            valid)


BUDGET_S = 0.3
"""Each timing repeats a call until it has run ``repeat`` times and for BUDGET_S seconds (at
most 100 calls), Numba and NumPy alike: a pass of 1-2 ms timed two or three times on a shared
machine mostly measures the scheduler."""


def best_of(fn, *args, repeat=3, warm=True, budget=BUDGET_S):
    """(best wall seconds, best CPU seconds of all threads, last result) over at least
    ``repeat`` runs that together take ``budget`` seconds."""
    out = fn(*args) if warm else None  # compile / warm up
    wall = cpu = np.inf
    start = time.perf_counter()
    for k in range(100):
        if k >= repeat and time.perf_counter() - start >= budget:
            break
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn(*args)
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, out


def row(name, npx, t_numba, t_numpy):
    print(f"  {name:<34} numba {npx / t_numba / 1e6:8.1f} Mpx/s   numpy {npx / t_numpy / 1e6:7.2f} "
          f"Mpx/s   ratio {t_numpy / t_numba:7.1f}x", flush=True)


def bench_kernels(size, repeat, np_repeat):
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
          f"{numba.get_num_threads()} Numba thread(s), threading layer {numba.threading_layer()}")
    print("  (* an unfused building block the tests compare a fused pass with; the detector runs "
          "the fused pass)")

    def pair(name, numba_fn, numpy_fn, *args, numpy_args=None):
        tn = best_of(numba_fn, *args, repeat=repeat)
        tr = best_of(numpy_fn, *(numpy_args or args), repeat=np_repeat, warm=False)
        row(name, npx, tn[0], tr[0])
        return tn[2]

    pair("weighted_moments", kernels.weighted_moments, ref.ref_moments, x, y, idx, w, shift)

    def np_irmad(x, y, idx, valid, mx, my, a, b, isg):
        _, wt = ref.ref_mad(x, y, idx, valid, mx, my, a, b, isg)
        return ref.ref_moments(x, y, idx, wt.astype(np.float32), np.concatenate([mx, my]))

    pair("irmad_moments (weights + moments)", kernels.irmad_moments, np_irmad, x, y, idx, valid,
         mx, my, a, b, isg)
    pair("mad_chi2", kernels.mad_chi2, ref.ref_mad, x, y, idx, valid, mx, my, a, b, isg)
    pair("robust_sigma (variates + medians)", statistic.robust_sigma, fused.ref_robust_sigma, x, y,
         idx, valid, mx, my, a, b)
    pair("index_noise", kernels.index_noise, fused.ref_index_noise, x, y, valid, w, roles, gain,
         offset, 1e-4)
    ys = ref.ref_box_mean_np(np.ascontiguousarray(y[2:4]), valid, 1)
    args = (idx, mx, my, a, b, isg, gain, offset, roles, 1e-4, rule)
    out = pair("change_pixels *", kernels.change_pixels, ref.ref_change, x, y, ys, valid, *args)

    def np_detect(x, y, valid, *args):
        wet_ys = fused.ref_wet_box(y, valid, roles, gain, offset, params.wet_ndwi, 1)
        return ref.ref_change(x, y, wet_ys, valid, *args)

    pair("detect_pixels (fused smoothing)", lambda *a_: kernels.detect_pixels(*a_, 1), np_detect,
         x, y, valid, *args)
    pair("pixel_flags (detect_pixels' flags)", lambda *a_: kernels.pixel_flags(*a_, 1),
         np_detect, x, y, valid, *args)
    flags = out[-1]
    pair("vote_decide (r=1) *", kernels.vote_decide, ref.ref_vote_decide, flags, valid, 1, True)
    m = (flags & kernels.FLAG_CHANGED) > 0
    pair("clean_decision (vote+open 2+close 3)", kernels.clean_decision, fused.ref_clean_decision,
         flags, valid, 1, True, True, 2, 3)
    lab = np.where(m, (np.arange(npx).reshape(size, size) // 997) % 300 + 1, 0).astype(np.int32)
    layers = [a_ for a_ in out[:8]] + [m, m]

    def np_sums(lab, n, *layers):
        flat = lab.ravel()
        return [np.bincount(flat, weights=np.asarray(v).ravel().astype(np.float64),
                            minlength=n + 1) for v in layers]

    pair("object_sums (12 sums) *", kernels.object_sums, np_sums, lab, 300, *layers)

    def np_sums_pair(lab, n, r0, c0, x, y, flags, *model):
        # NumPy's per-pixel layers of the labelled pixels only (gathered), then bincount
        ii, jj = np.nonzero(lab)
        xs, ys_ = x[:, ii, jj][:, None], y[:, ii, jj][:, None]
        out = ref.ref_change(xs, ys_, ys_[2:4], np.ones((1, ii.size), bool), *model, rule)
        f = flags[ii, jj]
        vals = [*out[:8], f & kernels.FLAG_EVIDENCE, f & kernels.FLAG_STRONG]
        k = lab[ii, jj]
        return [np.bincount(k, weights=np.asarray(v).ravel().astype(np.float64), minlength=n + 1)
                for v in vals]

    pair(f"object_sums_pair ({m.mean():.0%} px labelled)", kernels.object_sums_pair, np_sums_pair,
         lab, 300, 0, 0, x, y, flags, *args[:-1])


@numba.njit(parallel=True, cache=True)
def kernels_read_pair(x, y):
    """Sum of every band of both dates per row: the memory traffic of reading the pair once,
    the floor under any pass over it (printed as the detector's ceiling on this machine)."""
    h = x.shape[1]
    out = np.zeros(h)
    for i in numba.prange(h):
        s = 0.0
        for b in range(x.shape[0]):
            for j in range(x.shape[2]):
                s += x[b, i, j] + y[b, i, j]
        out[i] = s
    return out


def detector_figures(size, repeat):
    """The whole detector in this process; returns a dict of seconds and counts."""
    x, y, valid = make_pair(size, seed=1)
    params = DetectParams()
    xs, ys, vs = (np.ascontiguousarray(a[..., ::4, ::4]) for a in (x, y, valid))
    from affine import Affine

    core = (slice(0, size), slice(0, size))
    tr = Affine(2, 0, 5e5, 0, -2, 3e6)
    fit = best_of(fit_model, xs, ys, vs, BANDS, params, repeat=repeat)
    model = fit[2]
    det = best_of(detect_tile, x, y, valid, BANDS, model, params, repeat=repeat)
    obj = best_of(tile_objects, det[2], valid, core, tr, "EPSG:4545", repeat=repeat)

    def whole():
        m = fit_model(xs, ys, vs, BANDS, params)
        return tile_objects(detect_tile(x, y, valid, BANDS, m, params), valid, core, tr,
                            "EPSG:4545")

    allw = best_of(whole, repeat=repeat)
    tile = best_of(lambda: tile_objects(detect_tile(x, y, valid, BANDS, model, params), valid,
                                        core, tr, "EPSG:4545"), repeat=repeat)
    # with a reference date (another draw of the parcels standing in for a year earlier): the
    # cost of the reference's masks (a second flags pass and morphology) and per-object counts
    r = make_pair(size, seed=2)[0]
    ref_model = fit_model(np.ascontiguousarray(r[..., ::4, ::4]), ys, vs, BANDS, params)
    three = best_of(lambda: tile_objects(
        detect_tile(x, y, valid, BANDS, model, params, reference=r, reference_valid=valid,
                    reference_model=ref_model), valid, core, tr, "EPSG:4545"), repeat=repeat)
    touch = best_of(kernels_read_pair, x, y, repeat=repeat)
    scene = best_of(fit_model, x, y, valid, BANDS, params, repeat=max(1, repeat - 1))
    # IR-MAD alone on the scene sample: from the subsample's transform (as fit_model runs it)
    # and, as the baseline, from equal weights on all pixels
    idx, names = np.arange(4, dtype=np.int64), list(BANDS)
    irmad = []
    for cp in (statistic.COARSE_PIXELS, 0):
        w, c, res = best_of(statistic.fit_irmad, x, y, idx, valid, names, params.max_iter,
                            params.tol, params.ridge, cp, repeat=max(1, repeat - 1))
        irmad.append((w, c, res.coarse_iterations, res.iterations))
    return {"size": size, "threads": numba.get_num_threads(), "iterations": model.iterations,
            "converged": model.converged, "irmad": irmad,
            "objects": len(allw[2]), "fit": fit[:2], "detect": det[:2], "objects_t": obj[:2],
            "whole": allw[:2], "tile": tile[:2], "three": three[:2], "touch": touch[:2],
            "scene": scene[:2]}


def print_detector(f, label):
    npx = f["size"] ** 2
    rate = lambda t: f"{npx / t / 1e6:7.1f}"
    print(f"Whole detector, in-memory {f['size']} x {f['size']} 4-band pair, "
          f"{f['threads']} thread(s), {label}; IR-MAD converged={f['converged']} in "
          f"{f['iterations']} iterations")
    print("  (Mpx/s of the pair; cpu = CPU time of all threads)")
    for name, key in (("fit_model (every 4th px)", "fit"), ("detect_tile", "detect"),
                      ("tile_objects", "objects_t"), ("fit + detect + objects", "whole"),
                      ("detect + objects", "tile"), ("+ a reference date", "three"),
                      ("(only reading the pair)", "touch")):
        w, c = f[key]
        print(f"  {name:<26} {w:7.3f} s wall {rate(w)} Mpx/s   {c:7.3f} s cpu {rate(c)} Mpx/cpu-s")
    w, c = f["scene"]
    print(f"  fit_model, whole pair as a {npx / 1e6:.1f} Mpx scene sample: {w:.3f} s wall, "
          f"{c:.3f} s cpu; {f['objects']} objects")
    (wc, _, n0, n1), (wp, _, _, n2) = f["irmad"]
    print(f"  its IR-MAD: {wc:.3f} s starting on a {statistic.COARSE_PIXELS:,}-px subsample "
          f"({n0} + {n1} iterations) against {wp:.3f} s from equal weights on all pixels "
          f"({n2} iterations): ratio {wp / wc:.1f}x", flush=True)


def bench_detector(size, repeat):
    print_detector(detector_figures(size, repeat), "glibc malloc defaults (fresh pages per call)")
    env = dict(os.environ, **KEEP_HEAP)
    out = subprocess.run([sys.executable, __file__, "--detector-json", "--size", str(size),
                          "--repeat", str(repeat)], env=env, capture_output=True, text=True)
    if out.returncode == 0:
        print_detector(json.loads(out.stdout.strip().splitlines()[-1]),
                       "heap kept (MALLOC_TRIM_THRESHOLD_, MALLOC_MMAP_THRESHOLD_)")
    else:
        print(f"  heap-kept child failed: {out.stderr.strip().splitlines()[-1:]}")


COLD = textwrap.dedent("""
    import sys, time
    t0, c0 = time.perf_counter(), time.process_time()
    sys.path.insert(0, {root!r})
    import numpy as np
    from detect.detector import DetectParams, fit_model, detect_tile
    from detect.objects import tile_objects
    from affine import Affine
    t1, c1 = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(0)
    x = rng.uniform(100, 3000, (4, 64, 64)).astype(np.float32)
    y = (x * 1.1 + rng.normal(0, 50, x.shape)).astype(np.float32)
    v = np.ones((64, 64), bool)
    b = ("blue", "green", "red", "nir")
    m = fit_model(x, y, v, b, DetectParams())
    layers = detect_tile(x, y, v, b, m, DetectParams())
    tile_objects(layers, v, (slice(0, 64), slice(0, 64)), Affine(2, 0, 0, 0, -2, 0), "EPSG:4545")
    t2, c2 = time.perf_counter(), time.process_time()
    print(f"{{t1 - t0:.3f}} {{t2 - t1:.3f}} {{c2 - c1:.3f}}")
""")


def bench_compile(cold):
    code = COLD.format(root=str(ROOT))
    print("First call (import; first fit + detect + objects on 64 x 64), separate processes:")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        runs = (("cold (empty NUMBA_CACHE_DIR)", env), ("warm (cache=True hit)", env)) if cold \
            else (("warm (cache=True hit)", dict(os.environ)),)
        for label, e in runs:
            out = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True,
                                 text=True, check=True).stdout.split()
            imp, first, cpu = (float(v) for v in out)
            print(f"  {label:<30} import {imp:6.2f} s   first call {first:6.2f} s wall "
                  f"({cpu:6.2f} s cpu)", flush=True)
    if not cold:
        print("  cold start skipped in --quick (about 40 s of compilation on an idle 2-core machine)")


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
              f"CVA+Otsu {fmt(s_any['cva_otsu'])}   dNDVI+Otsu {fmt(s_any['dndvi_otsu'])}",
              flush=True)


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
    print(f"Demo {d} ({x.shape[2]} x {x.shape[1]} px, one tile, {dt:.1f} s): "
          f"recall {r['recall']:.3f} ({r['truth_hit']}/{r['truth']}), "
          f"precision {r['precision']:.3f} ({r['changes_hit']}/{r['changes']})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="side of the whole-detector pair (px)")
    ap.add_argument("--kernel-size", type=int, help="side for the per-pass table (default --size)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="a run under 60 s (warm cache)")
    ap.add_argument("--demo", help="a demo directory written by pipeline.demo.make_demo")
    ap.add_argument("--detector-json", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.detector_json:
        print(json.dumps(detector_figures(args.size, args.repeat)))
        return
    t0 = time.perf_counter()
    ksize = args.kernel_size or (min(args.size, 1024) if args.quick else args.size)
    repeat = min(args.repeat, 2) if args.quick else args.repeat
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    bench_kernels(ksize, repeat, 1 if args.quick else max(1, repeat - 1))
    bench_detector(args.size, repeat)
    bench_compile(cold=not args.quick)
    bench_landsat()
    if args.demo:
        bench_demo(args.demo)
    print(f"load average after: {os.getloadavg()[0]:.2f}; "
          f"bench took {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
