"""The stages of one quarterly run. Each reads what the previous one wrote in the run directory,
so any stage can be rerun (``--from``) and a killed run resumes where it stopped.

plan -> detect (per tile, in parallel) -> merge -> overlay -> batches -> export

With one worker the detect stage runs its tiles in this process and reads the next tile in a
background thread while the current one is detected (:mod:`tiles.prefetch`).
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.windows import Window

from detect.classify import classify, with_persistence
from detect.detector import (HALO_PX, ChangeModel, DetectParams, detect_tile, fit_model,
                             reflectance_warning)
from detect.merge import apply_mmu, apply_reference, merge_seams
from detect.objects import empty_parts, tile_objects
from overlay.layers import code_text, read_layer
from overlay.overlay import overlay_changes
from overlay.priority import prioritize, priority_from_dict
from pipeline import report as run_report
from pipeline.atomic import atomic_path, write_json
from pipeline.batches import assign_batches
from pipeline.package.chip_reader import grid_chip_reader
from pipeline.config import Config
from pipeline.cluster.settings import choose_executor
from pipeline.executor import default_workers, run_tasks
from pipeline.package import write_county_package
from pipeline.quarter import Quarter
from pipeline.registry import link_to_earlier, record_issued
from pipeline.rundir import RunDir
from pipeline.schema import VERDICT_FIELDS, order_columns
from tiles.errors import InputError, InputFileError, TianyanError
from tiles.grid import Grid, Tile, make_grid, make_tiles
from tiles.imagery import DateImagery, check_pair, open_config_date
from tiles.prefetch import Prefetcher
from tiles.reader import has_common_data, read_tile, tile_scenes
from tiles.sample import sample_pair

log = logging.getLogger("tianyan")

STAGES = ("plan", "detect", "merge", "overlay", "batches", "export")
FIT_PIXELS = 4_000_000  # the scene-wide fit sees about this many pixels


@dataclass
class Outcome:
    """What a run ended with: failed tiles and counties are listed, never hidden."""

    failed_tiles: dict[str, str] = field(default_factory=dict)
    failed_counties: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 3 if (self.failed_tiles or self.failed_counties) else 0


# ---------------------------------------------------------------------------------------------
# plan
def stage_plan(cfg: Config, quarter: Quarter, rd: RunDir, manifest: dict, outcome: Outcome) -> None:
    """Resolve imagery, build the grid and tiles, and fit the detector's scene-wide model."""
    im, prev = cfg.imagery, quarter.previous()
    before, after = (open_config_date(label, im, quarter=str(quarter), prev_quarter=str(prev))
                     for label in ("before", "after"))
    if before.date >= after.date:
        raise InputError(f"{after.files[0]}: the after date {after.date} is not later than the before "
                         f"date {before.date} (check [imagery].before / after)")
    check_pair(before, after)
    reference = None
    if im["reference"]:
        reference = open_config_date("reference", im, quarter=str(quarter), prev_quarter=str(prev))
        if reference.date >= before.date:
            raise InputError(f"{reference.files[0]}: the reference date {reference.date} is not "
                             f"earlier than the before date {before.date}; [imagery].reference is "
                             f"the same season a year earlier, e.g. 'imagery/{{last_year_quarter}}/*.tif'")
        check_pair(reference, after)
    grid = make_grid(before.image_files(), after.image_files(), crs=cfg.run["crs"],
                     resolution=cfg.run["resolution"])
    tiles = make_tiles(grid, cfg.run["tile_size"], HALO_PX)
    params = DetectParams.from_dict(cfg.detect)
    model, decimate, reference_model = fit_scene_model(before, after, grid, params, cfg.run["decimation"],
                                                       im["resampling"], reference=reference)
    plan = {"quarter": str(quarter), "grid": grid.to_dict(), "halo": HALO_PX,
            "tiles": [{"id": t.id, "row": t.row, "col": t.col,
                       "core": [int(t.core.col_off), int(t.core.row_off), int(t.core.width), int(t.core.height)],
                       "halo": [int(t.halo.col_off), int(t.halo.row_off), int(t.halo.width), int(t.halo.height)]}
                      for t in tiles],
            "before": before.to_dict(), "after": after.to_dict(), "decimation": decimate,
            "resampling": im["resampling"], "params": cfg.detect, "model": model.to_dict()}
    if reference is not None:
        plan["reference"], plan["reference_model"] = reference.to_dict(), reference_model.to_dict()
    write_json(rd.path / "plan.json", plan)
    dates = (before, after) if reference is None else (before, after, reference)
    manifest["inputs"] = {f: _file_stamp(f) for f in sum((d.all_files() for d in dates), [])
                          + [spec["path"] for spec in cfg.layers.values()]}
    manifest["dates"] = {d.label: d.date for d in dates}
    manifest["grid"] = grid.to_dict()
    manifest["model"] = model.to_dict()
    manifest.pop("reference_model", None)
    manifest.pop("reference_veto", None)
    if reference is not None:
        manifest["reference_model"] = reference_model.to_dict()
    rd.event("plan", tiles=len(tiles), width=grid.width, height=grid.height, decimation=decimate)


def fit_scene_model(before: DateImagery, after: DateImagery, grid: Grid, params: DetectParams,
                    decimation: int = 0, resampling: str = "bilinear", *,
                    reference: DateImagery | None = None) -> tuple[ChangeModel, int, ChangeModel | None]:
    """Fit the detector's scene-wide model on a regular sample of the whole grid.

    Returns ``(model, decimation, reference_model)``: with a ``reference`` date (the same season
    a year earlier) the second model is fitted on (reference, after) from the same pass, for
    ``detect_tile``'s reference masks; otherwise it is None.

    Fitting once for the scene (not per tile) makes every tile use the same normalisation and
    statistics, so results do not depend on where tile edges fall. ``decimation`` 0 samples about
    FIT_PIXELS pixels; memory is bounded by that, not by the scene size. The same pass measures
    where each scene has data: ``before.footprints`` and ``after.footprints`` are set, so tiles
    without data are skipped unread. Parts of the sample that cannot be read (a corrupt block)
    are left out with a warning; their tiles fail later, naming file and window.
    """
    decimate = decimation or max(1, math.ceil(math.sqrt(grid.width * grid.height / FIT_PIXELS)))
    sample = sample_pair(before, after, grid, decimate, resampling=resampling, reference=reference)
    if not sample.valid.any():
        if sample.failed:
            raise InputFileError(f"no part of the imagery could be read for the scene-wide fit; "
                                 f"first failure: {sample.failed[0]}")
        raise InputError(f"{before.files[0]} / {after.files[0]}: no pixel is valid in both dates "
                         f"(all nodata or cloud)")
    before.footprints = sample.footprints["before"]
    after.footprints = sample.footprints["after"]
    for date, data, valid in ((before, sample.before, sample.valid), (after, sample.after, sample.valid),
                              (reference, sample.reference, sample.reference_valid)):
        why = date is not None and reflectance_warning(data, valid, date.roles, params.reflectance_scale)
        if why:
            log.warning("%s: %s ([detect] reflectance_scale; tianyan detect --set reflectance_scale=...)",
                        date.files[0], why)
    model = fit_model(sample.before, sample.after, sample.valid, before.roles, params)
    log.info("scene-wide fit, before -> after: %s", run_report.model_text(model.to_dict()))
    reference_model = None
    if reference is not None:
        reference.footprints = sample.footprints["reference"]
        try:
            reference_model = fit_model(sample.reference, sample.after, sample.reference_valid,
                                        reference.roles, params)
        except InputError as exc:
            raise InputError(f"{reference.files[0]}: the reference date cannot be compared with the "
                             f"after date ({exc}); check [imagery].reference or leave it empty") from None
        log.info("scene-wide fit, reference -> after: %s",
                 run_report.model_text(reference_model.to_dict()))
    return model, decimate, reference_model


def _file_stamp(path: str) -> dict:
    p = Path(path)
    if not p.exists():
        return {"missing": True}
    st = p.stat()
    return {"size": st.st_size, "mtime": _dt.datetime.fromtimestamp(st.st_mtime).isoformat(timespec="seconds")}


def load_plan(run_path: Path) -> dict:
    return json.loads((Path(run_path) / "plan.json").read_text(encoding="utf-8"))


def _tile_from_plan(t: dict) -> Tile:
    return Tile(t["row"], t["col"], Window(*t["core"]), Window(*t["halo"]))


# ---------------------------------------------------------------------------------------------
# detect (per tile)
_PLAN_CACHE: dict[str, tuple] = {}


@dataclass(frozen=True)
class Reference:
    """The optional third date (the same season a year earlier) and its model against the
    after date (``fit_model(reference, after)``)."""

    date: DateImagery
    model: ChangeModel


def _worker_plan(run_path: str):
    """The plan as objects, loaded once per worker process:
    ``(plan, grid, before, after, model, params, reference or None)``."""
    if run_path not in _PLAN_CACHE:
        plan = load_plan(Path(run_path))
        reference = None
        if "reference" in plan:
            reference = Reference(DateImagery.from_dict(plan["reference"]),
                                  ChangeModel.from_dict(plan["reference_model"]))
        _PLAN_CACHE[run_path] = (plan, Grid.from_dict(plan["grid"]),
                                 DateImagery.from_dict(plan["before"]), DateImagery.from_dict(plan["after"]),
                                 ChangeModel.from_dict(plan["model"]), DetectParams.from_dict(plan["params"]),
                                 reference)
    return _PLAN_CACHE[run_path]


def process_tile(grid: Grid, before: DateImagery, after: DateImagery, model: ChangeModel,
                 params: DetectParams, tile: Tile, resampling: str = "bilinear", *,
                 reference: Reference | None = None, read: Callable[[], tuple] | None = None):
    """Read a tile with its halo, detect, and polygonize its core.

    Returns ``(parts, layers, valid, read_seconds)``; ``layers`` is None when the core holds no
    valid pixel (nothing is detected there, and nothing beyond the read is computed).
    ``read_seconds`` is None when the scenes' footprints show no data of both dates in the core:
    then no file is opened at all. ``reference``: the optional third date, read too; the parts
    count the pixels it sees and the ones new since it (N_REFSEEN, N_REFNEW). ``read``, when
    given, returns the tile's ``read_tile`` result instead of reading here: the ``result`` of a
    read already started in another thread (a read error is raised here, for this tile);
    ``read_seconds`` is then the time this thread waited for it, not the time the read took.
    """
    empty = gpd.GeoDataFrame({"geometry": gpd.GeoSeries([], crs=grid.crs)}, crs=grid.crs)
    if not has_common_data(before, after, grid, tile.core):
        empty["TILE"] = tile.id
        return empty, None, np.zeros((int(tile.halo.height), int(tile.halo.width)), bool), None
    t0 = time.perf_counter()
    ref_date = reference.date if reference is not None else None
    if read is None:
        b, a, valid, r, rv = read_tile(before, after, ref_date, grid, tile.halo, resampling=resampling)
    else:
        b, a, valid, r, rv = read()
    t_read = time.perf_counter() - t0
    # a read-ahead hands over the files' integers (read_tile native=True): converted here, in
    # the thread that has time while the reading thread decodes the next tile
    b, a = b.astype(np.float32, copy=False), a.astype(np.float32, copy=False)
    core = tile.core_in_halo
    layers = None
    if valid[core].any():
        extra = {}
        if reference is not None:
            extra = dict(reference=r.astype(np.float32, copy=False), reference_valid=rv,
                         reference_model=reference.model)
        layers = detect_tile(b, a, valid, before.roles, model, params, **extra)
        parts = tile_objects(layers, valid, core, grid.window_transform(tile.halo), grid.crs)
    else:
        parts = empty
    parts["TILE"] = tile.id
    return parts, layers, valid, t_read


#: The one-process loop's read-ahead (see stage_detect); only this process's main thread uses it.
_AHEAD = Prefetcher()


def detect_one_tile(task: tuple) -> dict:
    """Worker task: process one tile of a run and write its part file atomically.

    ``task`` is ``(run path, tile)``, or ``(run path, tile, next tile or None)`` in the
    one-process loop: then this tile's read may already have been started in the background,
    and the next tile's read starts there before this tile is detected, so that GDAL decodes
    it while Numba's kernels work here. The returned ``read_s`` is the time this task waited
    for its read (all of the read when nothing was read ahead); ``prefetched`` says which.
    """
    run_path, t, *ahead = task
    plan, grid, before, after, model, params, reference = _worker_plan(run_path)
    tile = _tile_from_plan(t)
    t0 = time.perf_counter()
    pending = _AHEAD.take((run_path, tile.id))
    if ahead and ahead[0] is not None:
        _read_ahead(run_path, _tile_from_plan(ahead[0]))
    parts, layers, valid, t_read = process_tile(grid, before, after, model, params, tile,
                                                plan["resampling"], reference=reference,
                                                read=pending.result if pending is not None else None)
    prefetched, pending, layers = pending is not None, None, None  # let go of the arrays
    with atomic_path(Path(run_path) / "tiles" / f"{tile.id}.parquet") as tmp:
        parts.to_parquet(tmp)
    return {"tile": tile.id, "objects": len(parts), "valid_px": int(valid[tile.core_in_halo].sum()),
            "skipped": t_read is None, "read_s": round(t_read or 0.0, 3), "prefetched": prefetched,
            "total_s": round(time.perf_counter() - t0, 3)}


def _read_ahead(run_path: str, tile: Tile) -> None:
    """Start ``tile``'s read in the background thread, unless process_tile would read nothing.

    The footprints are tested here, in the calling thread (GEOS prepared geometries are not
    thread-safe); the thread gets the scenes to read and runs rasterio and NumPy only.
    """
    plan, grid, before, after, _, _, reference = _worker_plan(run_path)
    if not has_common_data(before, after, grid, tile.core):
        return
    ref_date = reference.date if reference is not None else None
    _AHEAD.start((run_path, tile.id), read_tile, before, after, ref_date, grid, tile.halo,
                 resampling=plan["resampling"],
                 scenes=tile_scenes(before, after, ref_date, grid, tile.halo),
                 native=True)


def stage_detect(cfg: Config, quarter: Quarter, rd: RunDir, manifest: dict, outcome: Outcome,
                 workers: int | None = None, executor: str | None = None, scheduler: str | None = None) -> None:
    plan = load_plan(rd.path)
    todo = [t for t in plan["tiles"] if not (rd.tiles / f"{t['id']}.parquet").exists()]
    workers = workers or cfg.run["workers"] or default_workers()
    workers = min(workers, max(1, len(todo)))
    log.info("detect: %d of %d tiles to do on %d worker(s)", len(todo), len(plan["tiles"]), workers)
    if workers == 1 and choose_executor(executor, scheduler, cfg.dask) == "local":
        # One process: each task names the next tile, whose read then runs in a background
        # thread while this tile is detected. Not with a process pool or Dask: they hand tiles
        # to whichever worker is free, so the next tile of the list is seldom the next one a
        # given process gets, and a read ahead would decode it there for nothing.
        tasks = [(str(rd.path), t, n) for t, n in zip(todo, todo[1:] + [None])]
    else:
        tasks = [(str(rd.path), t) for t in todo]
    done = 0
    try:
        for (_, t, *_), result, error in run_tasks(detect_one_tile, tasks, workers, executor=executor,
                                                   scheduler=scheduler, cfg=cfg):
            if error is not None:
                msg = str(error) if isinstance(error, TianyanError) else f"{type(error).__name__}: {error}"
                outcome.failed_tiles[t["id"]] = msg
                rd.event("tile_failed", tile=t["id"], error=msg)
                log.error("tile %s failed: %s", t["id"], msg)
            else:
                done += 1
                rd.event("tile", **result)
    finally:
        _AHEAD.close()                                       # no read outlives the stage
    manifest["failed_tiles"] = outcome.failed_tiles


# ---------------------------------------------------------------------------------------------
# merge
def stage_merge(cfg: Config, quarter: Quarter, rd: RunDir, manifest: dict, outcome: Outcome) -> None:
    """Join objects cut by tile seams, THEN apply the minimum mapping unit, then type them."""
    plan = load_plan(rd.path)
    crs = plan["grid"]["crs"]
    frames = [gpd.read_parquet(p) for p in sorted(rd.tiles.glob("*.parquet"))]
    frames = [f for f in frames if len(f)]
    params = DetectParams.from_dict(cfg.detect)
    if frames:
        parts = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=crs)
        merged = merge_seams(parts)
        left, seasonal = (apply_reference(merged, params.min_area_m2) if "reference" in plan
                          else (merged, merged.iloc[:0]))
        kept = apply_mmu(left, params.min_area_m2, params.mmu_outline_px)
        seasonal = apply_mmu(seasonal, params.min_area_m2, params.mmu_outline_px)
        objects = classify(kept)
    else:
        parts, merged, seasonal = [], [], []
        objects = classify(empty_parts(crs))      # no rows, every column the stages read
    with atomic_path(rd.path / "objects.parquet") as tmp:
        objects.to_parquet(tmp)
    manifest["counts"] = {"tile_parts": len(parts), "merged": len(merged), "after_mmu": len(objects)}
    if "reference" in plan:   # the polygons (>= the MMU) the reference date explained as seasonal
        manifest["reference_veto"] = {"polygons": len(seasonal), "area_m2": round(float(
            (seasonal["NPIX"] * seasonal["PX_AREA"]).sum()) if len(seasonal) else 0.0, 2)}
    rd.event("merge", parts=len(parts), merged=len(merged), kept=len(objects))


# ---------------------------------------------------------------------------------------------
# overlay: county, areas, priority, identity
def stage_overlay(cfg: Config, quarter: Quarter, rd: RunDir, manifest: dict, outcome: Outcome) -> None:
    objects = gpd.read_parquet(rd.path / "objects.parquet")
    weights = priority_from_dict(cfg.priority)
    gdf, report = overlay_changes(objects, cfg.layers)
    # registry: QQJCBH from earlier quarters (before priority: a repeat scores higher);
    # repeats of polygons judged 合法 / 伪变化 that did not grow are not issued again
    gdf, suppressed = link_to_earlier(rd.workdir, gdf, str(quarter), cfg.registry)
    # the previous quarter's polygon at the same place: a third signal for ZXDJ (before priority)
    gdf = with_persistence(gdf, str(quarter.previous()))
    gdf = prioritize(gdf, weights)
    gdf["QSX"] = manifest["dates"]["before"]
    gdf["HSX"] = manifest["dates"]["after"]
    if "QQJCBH" not in gdf:
        gdf["QQJCBH"] = ""
    gdf = assign_jcbh(gdf, quarter)
    for name in VERDICT_FIELDS:
        gdf[name] = ""
    gdf["PCBH"], gdf["PCXH"] = "", 0
    write_changes(gdf, rd.path / "changes.gpkg")
    outside = sorted(gdf.loc[gdf["XZQDM"] == "", "JCBH"].tolist())
    write_json(rd.path / "overlay_report.json", {**_jsonable(report), "outside_counties": outside,
                                                 "suppressed": _jsonable(suppressed)})
    rd.event("overlay", polygons=len(gdf), outside=len(outside), suppressed=len(suppressed))


def assign_jcbh(gdf: gpd.GeoDataFrame, quarter: Quarter) -> gpd.GeoDataFrame:
    """JCBH = XZQDM + year + 'Q' + quarter + 5-digit sequence, deterministic: within a county by
    priority level, then score (higher first), then position (north to south, west to east)."""
    gdf = gdf.copy()
    cent = gdf.geometry.representative_point()
    gdf["_y"] = -np.round(cent.y.to_numpy(), 1)
    gdf["_x"] = np.round(cent.x.to_numpy(), 1)
    gdf["_score"] = -np.round(gdf["YXJF"].astype(float).to_numpy(), 6)
    gdf["_code"] = gdf["XZQDM"].where(gdf["XZQDM"] != "", "000000")
    gdf = gdf.sort_values(["_code", "YXJ", "_score", "_y", "_x"], kind="mergesort")
    seq = gdf.groupby("_code").cumcount() + 1
    # astype(str): on no rows, map gives int64, which a string column cannot add
    gdf["JCBH"] = (gdf["_code"] + f"{quarter.year}Q{quarter.q}"
                   + seq.map("{:05d}".format).astype(str))
    gdf = gdf.drop(columns=["_y", "_x", "_score", "_code"])
    return gdf.reset_index(drop=True)


def write_changes(gdf: gpd.GeoDataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        order_columns(gdf).to_file(tmp, layer="changes", driver="GPKG", engine="pyogrio")


def read_changes(path: Path) -> gpd.GeoDataFrame:
    gdf = gpd.read_file(path, layer="changes", engine="pyogrio")
    for name in ("XZQDM", "XZQMC", "PCBH", "QQJCBH", *VERDICT_FIELDS):
        if name in gdf:
            gdf[name] = gdf[name].fillna("").astype(str)
    return gdf


# ---------------------------------------------------------------------------------------------
# batches
def stage_batches(cfg: Config, quarter: Quarter, rd: RunDir, manifest: dict, outcome: Outcome) -> None:
    gdf = read_changes(rd.path / "changes.gpkg")
    bc = cfg.batches
    due = {i + 1: int(d) for i, d in enumerate(bc["due_days"])}
    issue_date = _dt.date.fromisoformat(manifest.get("issue_date") or _dt.date.today().isoformat())
    manifest["issue_date"] = issue_date.isoformat()
    out = []
    for code, county in gdf[gdf["XZQDM"] != ""].groupby("XZQDM", sort=True):
        start = bc["start_points"].get(code)
        out.append(assign_batches(county, max_per_batch=bc["max_per_batch"], max_span_km=bc["max_span_km"],
                                  start_lonlat=tuple(start) if start else None, quarter=str(quarter),
                                  xzqdm=code, issue_date=issue_date, due_days=due))
    rest = gdf[gdf["XZQDM"] == ""]
    if len(rest):
        out.append(rest)
    result = gpd.GeoDataFrame(pd.concat(out, ignore_index=True), crs=gdf.crs) if out else gdf
    result = result.sort_values("JCBH", kind="mergesort").reset_index(drop=True)
    write_changes(result, rd.path / "changes.gpkg")
    rd.event("batches", batches=int(result.loc[result["PCBH"] != "", "PCBH"].nunique()) if len(result) else 0)


# ---------------------------------------------------------------------------------------------
# export
_EXPORT_CACHE: dict[str, dict] = {}


def _export_context(run_path: str) -> dict:
    """What every county package of a run needs, loaded once per worker process: the run's
    configuration and manifest, its changes, the chip reader and the county outlines."""
    if run_path not in _EXPORT_CACHE:
        from pipeline.config import load_config  # noqa: PLC0415 - the worker loads what the run used

        rd_path = Path(run_path)
        manifest = json.loads((rd_path / "run.json").read_text(encoding="utf-8"))
        cfg = load_config(manifest["config_file"])
        plan = load_plan(rd_path)
        grid = Grid.from_dict(plan["grid"])
        changes = read_changes(rd_path / "changes.gpkg")
        _EXPORT_CACHE[run_path] = {
            "cfg": cfg, "changes": changes,
            "read_chip": grid_chip_reader(DateImagery.from_dict(plan["before"]),
                                          DateImagery.from_dict(plan["after"]), grid,
                                          resampling=plan["resampling"]),
            "boundaries": _county_boundaries(cfg, changes, grid.crs),
            "run_meta": {"run_id": manifest.get("run_id"), "config_hash": manifest.get("config_hash"),
                         "version": manifest.get("versions", {}).get("tianyan"),
                         "quarter": manifest["quarter"], "name": cfg.run["name"],
                         "dates": manifest.get("dates", {})}}
    return _EXPORT_CACHE[run_path]


def export_one_county(task: tuple[str, str, tuple[str, ...]]) -> dict:
    """Worker task: build one county's package from the run directory (paths only travel)."""
    run_path, code, formats = task
    ctx = _export_context(run_path)
    cfg, changes = ctx["cfg"], ctx["changes"]
    county = changes[changes["XZQDM"] == code]
    start = cfg.batches["start_points"].get(code)
    path = write_county_package(county, Path(run_path) / "packages", xzqdm=code,
                                xzqmc=county["XZQMC"].iloc[0], quarter=ctx["run_meta"]["quarter"],
                                run_meta=ctx["run_meta"], formats=formats, read_chip=ctx["read_chip"],
                                shp_encoding=cfg.export["shp_encoding"],
                                start_lonlat=tuple(start) if start else None,
                                boundary=ctx["boundaries"].get(code))
    return {"county": code, "polygons": len(county), "file": path.name}


def stage_export(cfg: Config, quarter: Quarter, rd: RunDir, manifest: dict, outcome: Outcome,
                 counties: list[str] | None = None, formats: list[str] | None = None,
                 workers: int | None = None, executor: str | None = None,
                 scheduler: str | None = None) -> None:
    """One package per county, as parallel tasks (a county's failure is recorded, the others go
    on), then the province summary and report."""
    gdf = read_changes(rd.path / "changes.gpkg")
    formats = tuple(formats or cfg.export["formats"])
    codes = sorted(c for c in gdf["XZQDM"].unique() if c and (not counties or c in counties))
    workers = min(workers or cfg.run["workers"] or default_workers(), max(1, len(codes)))
    _EXPORT_CACHE.pop(str(rd.path), None)  # this process may hold an older state of the run
    packages = {}
    tasks = [(str(rd.path), code, formats) for code in codes]
    for (_, code, _), result, error in run_tasks(export_one_county, tasks, workers, executor=executor,
                                                 scheduler=scheduler, cfg=cfg):
        if error is not None:
            msg = str(error) if isinstance(error, TianyanError) else f"{type(error).__name__}: {error}"
            outcome.failed_counties[code] = msg
            rd.event("package_failed", county=code, error=msg)
            log.error("county %s package failed: %s", code, msg)
        else:
            packages[code] = result["file"]
            rd.event("package", **result)
    overlay_report = json.loads((rd.path / "overlay_report.json").read_text(encoding="utf-8"))
    summary = run_report.summarize(gdf, quarter=str(quarter), packages=packages,
                                   outside=overlay_report.get("outside_counties", []),
                                   failed_tiles=manifest.get("failed_tiles", {}),
                                   failed_counties=outcome.failed_counties, manifest=manifest,
                                   overlay_report=overlay_report)
    summary["suppressed"] = overlay_report.get("suppressed", [])
    # registry: what this export issued (idempotent; verdicts already returned are kept)
    record_issued(rd.workdir, gdf, quarter=str(quarter), counties=list(packages),
                  run_id=manifest.get("run_id", ""), issue_date=manifest.get("issue_date", ""),
                  settings=cfg.registry)
    write_json(rd.path / "summary.json", summary)
    run_report.write_html(rd.path / "report.html", summary, cfg.run["name"])
    manifest["failed_counties"] = outcome.failed_counties


def _county_boundaries(cfg: Config, gdf: gpd.GeoDataFrame, crs: str) -> dict:
    """County outlines (processing CRS) around the changes, for the packages' maps."""
    if not len(gdf):
        return {}
    spec = cfg.layers["counties"]
    counties = read_layer(spec, bbox=tuple(gdf.total_bounds), bbox_crs=gdf.crs,
                          columns=[spec["code_field"]]).to_crs(crs)
    codes = code_text(counties[spec["code_field"]])
    return {str(c): g for c, g in zip(codes, counties.geometry)}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return obj


STAGE_FUNCS = {"plan": stage_plan, "detect": stage_detect, "merge": stage_merge,
               "overlay": stage_overlay, "batches": stage_batches, "export": stage_export}
