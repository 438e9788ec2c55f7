"""Benchmark of the detector's quality on demo scenes it was not tuned on.

For each seed a demo region is generated (cached in ``--dir``) and a whole quarter is run
(``run_quarter``, fresh); the change polygons are scored against the generator's truth with
``pipeline.evaluate`` (the same matching rule as ``tianyan evaluate``). Printed per seed and
pooled: recall and precision; the false polygons by the seasonal story of the farmland parcel
they mostly lie in (the demo's ``seasonal`` truth layer: ``flood:flooded``, ``harvest:tilled`` ...,
``other`` when none); recall on basic farmland (truth ON_JBNT); the missed truth polygons
as TBLX/material/m² (``J`` on basic farmland).
This is where a change to the detector's rules shows what it buys and costs.

Usage::

    python bench/bench_quality.py                          # seeds 201-206 at 1200 px
    python bench/bench_quality.py --seeds 201 202 --size 800
    python bench/bench_quality.py --set wet_ndwi=0.05 --set mmu_outline_px=0  # [detect] overrides
    python bench/bench_quality.py --two-dates      # without the reference date a year earlier
    python bench/bench_quality.py --reference-scenes 2  # the reference from two clouded scenes
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUARTER = "2026Q3"


def false_by_story(changes, truth, seasonal) -> Counter:
    """Change polygons that touch no truth polygon, by the seasonal story of their main parcel."""
    import geopandas as gpd  # noqa: PLC0415 - after sys.path is set

    ch = changes[["geometry"]].assign(cid=range(len(changes)))
    touched = gpd.sjoin(ch, truth[["geometry"]], predicate="intersects").cid.unique()
    false = ch[~ch.cid.isin(touched)]
    moved = seasonal[seasonal.BEFORE != seasonal.AFTER]
    label = moved.KIND + ":" + moved.AFTER
    if "REFERENCE" in moved:                   # the parcel's state a year earlier
        label = label + " (ref " + moved.REFERENCE + ")"
    story = moved.assign(story=label)[["geometry", "story"]]
    pieces = gpd.overlay(false, story, how="intersection", keep_geom_type=True)
    pieces["a"] = pieces.area
    main = pieces.sort_values("a").drop_duplicates("cid", keep="last").set_index("cid").story
    return Counter(main.reindex(false.cid).fillna("other"))


def misses(changes, truth, min_area_m2=200.0) -> list[str]:
    """Truth polygons >= the MMU that no change polygon touches."""
    import geopandas as gpd  # noqa: PLC0415

    tr = truth.assign(tid=range(len(truth)))
    found = gpd.sjoin(tr[["tid", "geometry"]], changes[["geometry"]], predicate="intersects").tid
    lost = tr[(tr.AREA_M2 >= min_area_m2) & ~tr.tid.isin(found)]
    return [f"{r.TBLX}/{r.MATERIAL}/{int(r.AREA_M2)}{'/J' if r.ON_JBNT else ''}"
            for r in lost.itertuples()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[201, 202, 203, 204, 205, 206])
    ap.add_argument("--size", type=int, default=1200, help="scene edge in pixels (2 m)")
    ap.add_argument("--tile", type=int, default=512, help="tile edge in pixels")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a [detect] key (TOML/JSON value), e.g. wet_ndwi=0.05")
    ap.add_argument("--two-dates", action="store_true",
                    help="leave out the demo's reference date (the same season a year earlier)")
    ap.add_argument("--reference-scenes", type=int, default=1,
                    help="scenes of the reference date, each with its own cloud mask ({scene})")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/tianyan_bench/quality"),
                    help="cache folder for the generated regions")
    args = ap.parse_args()

    import geopandas as gpd  # noqa: PLC0415

    from pipeline.config import load_config  # noqa: PLC0415
    from pipeline.demo import make_demo  # noqa: PLC0415
    from pipeline.evaluate import evaluate  # noqa: PLC0415
    from pipeline.quarter import Quarter  # noqa: PLC0415
    from pipeline.run import run_quarter  # noqa: PLC0415

    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value)
    print(f"{len(args.seeds)} seed(s) at {args.size} px, tiles of {args.tile}, "
          f"[detect] overrides {overrides or 'none'}, "
          f"{'two dates' if args.two_dates else 'with the reference date'}"
          f"{f' of {args.reference_scenes} scenes' if args.reference_scenes > 1 else ''}")
    pooled = Counter()
    stories = Counter()
    for seed in args.seeds:
        scenes = f"_r{args.reference_scenes}" if args.reference_scenes > 1 else ""
        root = args.dir / f"{args.size}_{args.tile}_{seed}{scenes}"
        if not (root / "demo.toml").exists():
            make_demo(root, width=args.size, height=args.size, tile_size=args.tile, seed=seed,
                      reference_scenes=args.reference_scenes)
        cfg = load_config(root / "demo.toml")
        cfg.detect.update(overrides)
        if args.two_dates:
            cfg.imagery["reference"] = cfg.imagery["cloud_mask_reference"] = ""
        t0 = time.perf_counter()
        rd, outcome = run_quarter(cfg, Quarter.parse(QUARTER), workers=args.workers, fresh=True)
        changes = gpd.read_file(rd.path / "changes.gpkg", layer="changes")
        truth = gpd.read_file(root / "truth.gpkg", layer="truth")
        seasonal = gpd.read_file(root / "truth.gpkg", layer="seasonal")
        result = evaluate(changes, truth)
        ev, jb = result["overall"], result["on_basic_farmland"]
        false = false_by_story(changes, truth, seasonal)
        stories.update(false)
        for k in ("truth", "truth_hit", "changes", "changes_hit"):
            pooled[k] += ev[k]
        pooled["jbnt"] += jb["truth"]
        pooled["jbnt_hit"] += jb["truth_hit"]
        for level, d in result["by_zxdj"].items():
            pooled[f"zxdj {level}"] += d["changes"]
            pooled[f"zxdj {level} hit"] += d["changes_hit"]
        print(f"seed {seed}: recall {ev['recall']:.3f} ({ev['truth_hit']}/{ev['truth']}), "
              f"precision {ev['precision']:.3f} ({ev['changes_hit']}/{ev['changes']}), "
              f"on basic farmland {jb['truth_hit']}/{jb['truth']}, "
              f"{time.perf_counter() - t0:.0f} s, exit {outcome.exit_code}")
        print(f"   false polygons by parcel story: {dict(false.most_common())}")
        print(f"   missed: {misses(changes, truth) or 'none'}")
    print(f"pooled: recall {pooled['truth_hit'] / max(pooled['truth'], 1):.3f} "
          f"({pooled['truth_hit']}/{pooled['truth']}), precision "
          f"{pooled['changes_hit'] / max(pooled['changes'], 1):.3f} "
          f"({pooled['changes_hit']}/{pooled['changes']}), recall on basic farmland "
          f"{pooled['jbnt_hit'] / max(pooled['jbnt'], 1):.3f} "
          f"({pooled['jbnt_hit']}/{pooled['jbnt']}); "
          "goal recall >= 0.95 (1.0 on basic farmland), precision >= 0.8")
    print("precision by confidence level (ZXDJ): " + ", ".join(
        f"{level} {pooled[f'zxdj {level} hit'] / pooled[f'zxdj {level}']:.3f} "
        f"({pooled[f'zxdj {level} hit']}/{pooled[f'zxdj {level}']})"
        for level in ("高", "中", "低") if pooled[f"zxdj {level}"]))
    print(f"false polygons by parcel story, all seeds: {dict(stories.most_common())}")


if __name__ == "__main__":
    main()
