"""Benchmark of the Dask executor: tile-stage speedup of 2 workers over 1, overhead per task,
and the per-core rate that the README's province projection uses.

On a generated demo region (cached in ``--dir``), after the plan stage:

1. in-process baseline: every tile's ``detect_one_tile`` in this process, 1 Numba thread;
2. the same tiles on a LocalCluster of 1 worker and of 2 workers (processes, 1 thread, 1 Numba
   thread each: workers scale out, each worker is one core). Each is timed on its second pass
   (the first loads the Numba cache and the imports in the workers); the cluster start is not
   in the time, it is printed apart;
3. overhead per task: no-op tasks carrying the same (run path, tile) payload through the same
   submit / collect path on 1 worker, and (Dask 1 worker - in-process) / tiles.

Prints times, the speedup 2 over 1 in wall time (goal >= 1.7x; the machine's load average is
printed because other processes take cores from the workers) and as 2 x the ratio of CPU time
per tile (what the two workers would reach on idle cores), Mpx/s per core, and the projection
of one province quarter (120 Gpx per date at 2 m) on 1, 16, 64 and 256 cores.

Usage::

    python bench/bench_dask.py                         # 4000 x 4000 px, tiles of 1000 (16 tiles)
    python bench/bench_dask.py --size 2000 --tile 500  # quicker; per-task costs weigh more
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROVINCE_PX = 120e9  # pixels per date of one province quarter at 2 m (~480,000 km²)


def noop(task):
    """A task that does nothing with its (run path, tile) payload: pure executor overhead."""
    return None


def timed_tile(task) -> float:
    """``detect_one_tile``; returns the CPU seconds of its process meanwhile (less sensitive than
    wall time to other processes taking the cores)."""
    from pipeline.stages import detect_one_tile

    c0 = time.process_time()
    detect_one_tile(task)
    return time.process_time() - c0


def make_run(folder: Path, size: int, tile: int) -> tuple[Path, list, dict]:
    """Generate (once) the demo region and plan its quarter: the run path, its tasks, the plan."""
    from pipeline.config import load_config
    from pipeline.demo import make_demo
    from pipeline.quarter import Quarter
    from pipeline.rundir import RunDir
    from pipeline.stages import Outcome, stage_plan

    demo = folder / f"demo_{size}_{tile}"
    if not (demo / "demo.toml").exists():
        make_demo(demo, width=size, height=size, tile_size=tile)
    cfg = load_config(demo / "demo.toml")
    rd = RunDir(demo / "bench_runs", "2026Q3")
    if not (rd.path / "plan.json").exists():
        rd.create()
        stage_plan(cfg, Quarter.parse("2026Q3"), rd, {}, Outcome())
    plan = json.loads((rd.path / "plan.json").read_text(encoding="utf-8"))
    return rd.path, [(str(rd.path), t) for t in plan["tiles"]], plan


def time_in_process(tasks: list, repeat: int) -> dict:
    """Best wall time and CPU time of the tile tasks, one after another in this process."""
    import numba

    numba.set_num_threads(1)
    for task in tasks:  # warm: imports, Numba cache, GDAL
        timed_tile(task)
    passes = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        cpu = sum(timed_tile(task) for task in tasks)
        passes.append((time.perf_counter() - t0, cpu))
    return {"tiles": min(p[0] for p in passes), "cpu": min(p[1] for p in passes)}


def time_on_cluster(tasks: list, workers: int, repeat: int) -> dict:
    """Best wall time of the tile tasks and of as many no-op tasks on a fresh LocalCluster."""
    from pipeline.cluster.executor import connect, prepare_workers, submit_and_collect
    from pipeline.cluster.settings import dask_settings

    settings = dask_settings({"numba_threads": 1, "dashboard": "", "retries": 0})
    t0 = time.perf_counter()
    with connect(settings, workers) as client:
        client.wait_for_workers(workers)
        prepare_workers(client, settings, preload=("pipeline.stages",))
        start = time.perf_counter() - t0

        def run(func, items):
            t = time.perf_counter()
            out = list(submit_and_collect(client, func, items, settings))
            failed = [e for _, _, e in out if e is not None]
            if failed:
                raise SystemExit(f"bench: a task failed: {failed[0]}")
            return time.perf_counter() - t, sum(r or 0.0 for _, r, _ in out)

        run(timed_tile, tasks)  # warm: Numba cache and GDAL in every worker
        passes = [run(timed_tile, tasks) for _ in range(repeat)]
        noops = [tasks[i % len(tasks)] for i in range(max(200, len(tasks)))]
        run(noop, noops[:workers * 4])
        noop_s = min(run(noop, noops)[0] for _ in range(repeat)) / len(noops)
    return {"start": start, "tiles": min(p[0] for p in passes), "cpu": min(p[1] for p in passes),
            "noop_per_task": noop_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=4000, help="scene edge in pixels (2 m)")
    ap.add_argument("--tile", type=int, default=1000, help="tile edge in pixels")
    ap.add_argument("--repeat", type=int, default=3, help="timed passes; the best is kept")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/tianyan_bench"), help="cache folder")
    args = ap.parse_args()
    os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    args.dir.mkdir(parents=True, exist_ok=True)

    run_path, tasks, plan = make_run(args.dir, args.size, args.tile)
    px = plan["grid"]["width"] * plan["grid"]["height"]
    print(f"scene {plan['grid']['width']} x {plan['grid']['height']} px, {len(tasks)} tiles of "
          f"{args.tile} px (+ halo {plan['halo']}), cores {os.cpu_count()}, "
          f"load average before {os.getloadavg()[0]:.2f}")

    local = time_in_process(tasks, args.repeat)
    one = time_on_cluster(tasks, 1, args.repeat)
    two = time_on_cluster(tasks, 2, args.repeat)
    n = len(tasks)
    speedup = one["tiles"] / two["tiles"]
    rate_wall, rate_cpu = px / one["tiles"] / 1e6, px / one["cpu"] / 1e6  # per core: 1 worker, 1 thread
    print(f"in-process, 1 Numba thread : {local['tiles']:7.2f} s wall, {1e3 * local['cpu'] / n:6.0f} ms CPU per tile")
    print(f"Dask, 1 worker             : {one['tiles']:7.2f} s wall, {1e3 * one['cpu'] / n:6.0f} ms CPU per tile "
          f"(cluster start {one['start']:.1f} s, not counted)")
    print(f"Dask, 2 workers            : {two['tiles']:7.2f} s wall, {1e3 * two['cpu'] / n:6.0f} ms CPU per tile "
          f"(cluster start {two['start']:.1f} s, not counted)")
    print(f"speedup 2 workers over 1   : {speedup:.2f}x wall (goal >= 1.7x); "
          f"{2 * one['cpu'] / two['cpu']:.2f}x from CPU per tile (what idle cores would give)")
    print(f"overhead per task          : {1e3 * one['noop_per_task']:.1f} ms (no-op round trip, 1 worker); "
          f"{1e3 * (one['tiles'] - local['tiles']) / n:+.1f} ms wall, "
          f"{1e3 * (one['cpu'] - local['cpu']) / n:+.1f} ms CPU per tile (Dask 1 worker - in-process)")
    print(f"per-core rate              : {rate_cpu:.2f} Mpx/s per CPU second, {rate_wall:.2f} Mpx/s wall "
          f"(scene pixels; both dates read, halo included)")
    load = os.getloadavg()[0]
    print(f"load average after         : {load:.2f} on {os.cpu_count()} cores"
          + ("  (busy machine: other processes took cores, wall times are pessimistic)"
             if load > (os.cpu_count() or 1) else ""))
    efficiency = min(1.0, speedup / 2)
    print(f"projection, one province quarter ({PROVINCE_PX / 1e9:.0f} Gpx per date at 2 m), tile stage only, "
          f"at {rate_cpu:.2f} Mpx/s per core and the measured 2-worker efficiency {efficiency:.2f} "
          f"(and at 1.00):")
    for cores in (1, 16, 64, 256):
        ideal = PROVINCE_PX / (rate_cpu * 1e6) / cores / 3600
        measured = ideal / (efficiency if cores > 1 else 1.0)
        print(f"  {cores:4d} cores: {measured:7.1f} h   (ideal {ideal:6.1f} h)")


if __name__ == "__main__":
    main()
