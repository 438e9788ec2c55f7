"""One quarterly run: lock the workdir, run the stages in order, keep the manifest current.

A stage is skipped when run.json says it finished and nothing asks for it again (``from_stage``,
``fresh``, a changed setting or input file); the detect stage also skips tiles whose part file
exists, so a killed run resumes. Before anything runs, what a killed process left half-written
(hidden temporary files and staging folders) is removed.
"""
from __future__ import annotations

import logging
import shutil
import sys
import time
import uuid

from pipeline.config import Config
from pipeline.progress import Progress
from pipeline.quarter import Quarter
from pipeline.rundir import RunDir, WorkdirLock, now_iso
from pipeline.stages import STAGE_FUNCS, STAGES, Outcome, _file_stamp, load_plan
from pipeline.versions import versions
from tiles.errors import ConfigError

log = logging.getLogger("tianyan")

# The earliest stage whose output depends on a configuration section (or [run] key).
# None: the setting changes no result (worker count, statistics thresholds, the cluster).
SECTION_STAGE = {"imagery": "plan", "detect": "plan", "layers": "overlay", "priority": "overlay",
                 "registry": "overlay", "batches": "batches", "export": "export",
                 "stats": None, "dask": None}
RUN_KEY_STAGE = {"name": "export", "workers": None, "workdir": None}


def run_quarter(cfg: Config, quarter: Quarter, *, from_stage: str | None = None, fresh: bool = False,
                workers: int | None = None, workdir: str | None = None,
                progress: Progress | None = None, executor: str | None = None,
                scheduler: str | None = None) -> tuple[RunDir, Outcome]:
    """Run (or resume) the quarter; return the run directory and what failed.

    ``progress`` draws bars for the long stages; by default on stderr when it is a terminal
    and the log level shows INFO.
    """
    if from_stage and from_stage not in STAGES:
        raise ConfigError(f"--from {from_stage!r}: unknown stage (one of {', '.join(STAGES)})")
    rd = RunDir(workdir or cfg.workdir, str(quarter))
    if progress is None:
        progress = Progress(enabled=None if log.getEffectiveLevel() <= logging.INFO else False,
                            stream=sys.stderr)
    lock = WorkdirLock(rd.workdir)
    with lock:
        if fresh and rd.path.exists():
            shutil.rmtree(rd.path)
        rd.create()
        if lock.took_over:
            rd.event("lock_takeover", previous=lock.took_over)
        removed = rd.clean_leftovers()
        if removed:
            log.info("removed %d half-written file(s) of an interrupted run", len(removed))
            rd.event("leftovers_removed", paths=removed)
        manifest = rd.load()
        redo = _stage_to_redo(manifest, cfg)
        if redo and (from_stage is None or STAGES.index(redo[0]) < STAGES.index(from_stage)):
            log.warning("%s since the last run of %s: running again from %s", redo[1], quarter, redo[0])
            rd.event("redo", stage=redo[0], reason=redo[1])
            from_stage = redo[0]
        manifest.setdefault("run_id", f"{quarter}-{uuid.uuid4().hex[:8]}")
        manifest.update({"quarter": str(quarter), "config_file": str(cfg.path), "config_hash": cfg.hash,
                         "config": cfg.as_dict(), "versions": versions()})
        status = manifest.setdefault("stages", {})
        if from_stage:
            for name in STAGES[STAGES.index(from_stage):]:
                status.pop(name, None)
            if from_stage in ("plan", "detect"):
                for part in rd.tiles.glob("*.parquet"):
                    part.unlink()
        outcome = Outcome(failed_tiles={}, failed_counties={})
        rd.event("run_start", quarter=str(quarter), from_stage=from_stage, fresh=fresh,
                 resumed=[s for s in STAGES if status.get(s, {}).get("status") == "done"])
        rd.progress = progress
        try:
            _run_stages(cfg, quarter, rd, manifest, outcome, status, workers, progress, executor, scheduler)
        finally:
            progress.close()
            rd.progress = None
        rd.event("run_end", failed_tiles=len(outcome.failed_tiles),
                 failed_counties=len(outcome.failed_counties))
    return rd, outcome


def _run_stages(cfg, quarter, rd, manifest, outcome, status, workers, progress, executor=None,
                scheduler=None) -> None:
    ran = False  # once a stage runs, every later stage runs again on its new output
    for name in STAGES:
        if status.get(name, {}).get("status") == "done" and not ran:
            continue
        ran = True
        t0 = time.perf_counter()
        status[name] = {"status": "running", "started": now_iso()}
        rd.save(manifest)
        log.info("stage %s ...", name)
        progress.start(name, _units(name, rd))
        parallel = name in ("detect", "export")  # the stages made of tile / county tasks
        kwargs = {"workers": workers, "executor": executor, "scheduler": scheduler} if parallel else {}
        STAGE_FUNCS[name](cfg, quarter, rd, manifest, outcome, **kwargs)
        if name == "plan":
            manifest["imagery_globs"] = imagery_globs(cfg, str(quarter))
        progress.close()
        seconds = round(time.perf_counter() - t0, 2)
        # A detect stage with failed tiles is not done: a rerun redoes only those tiles.
        state = "failed" if name == "detect" and outcome.failed_tiles else "done"
        status[name] = {"status": state, "started": status[name]["started"],
                        "finished": now_iso(), "seconds": seconds}
        rd.save(manifest)
        rd.event("stage", stage=name, status=state, seconds=seconds)
        log.info("stage %s %s in %.1f s", name, state, seconds)


def _units(stage: str, rd: RunDir) -> int | None:
    """Units of work of a stage for its progress bar (None: unknown)."""
    if stage != "detect":
        return None
    try:
        tiles = load_plan(rd.path)["tiles"]
    except (OSError, ValueError, KeyError):
        return None
    return sum(1 for t in tiles if not (rd.tiles / f"{t['id']}.parquet").exists())


def _stage_to_redo(manifest: dict, cfg: Config) -> tuple[str, str] | None:
    """``(stage, reason)`` when a setting or an input file changed since the manifest was written."""
    if not manifest:
        return None
    found: list[tuple[str, str]] = []
    if manifest.get("config_hash") not in (None, cfg.hash):
        stage = config_restart_stage(manifest.get("config") or {}, cfg.as_dict())
        if stage:
            found.append((stage, "the configuration changed"))
    inputs = manifest.get("inputs") or {}
    layer_paths = {spec["path"] for spec in cfg.layers.values()}
    for path, stamp in inputs.items():
        if _file_stamp(path) != stamp:
            found.append(("overlay" if path in layer_paths else "plan", f"input {path} changed"))
    globbed = manifest.get("imagery_globs")
    if globbed:
        now = imagery_globs(cfg, manifest.get("quarter", ""))
        for key in sorted(set(globbed) | set(now)):
            added = sorted(set(now.get(key, [])) - set(globbed.get(key, [])))
            gone = sorted(set(globbed.get(key, [])) - set(now.get(key, [])))
            if added or gone:
                found.append(("plan", f"[imagery].{key} now matches "
                                      + (f"new file {added[0]}" if added else f"no longer {gone[0]}")))
    if not found:
        return None
    return min(found, key=lambda f: STAGES.index(f[0]))


def imagery_globs(cfg: Config, quarter: str) -> dict[str, list[str]]:
    """The files each plain imagery glob matches now, recorded when the plan is made so that a
    resumed run notices scenes that arrived (or vanished) since. ``{band}`` patterns and STAC
    items are left to the plan stage."""
    from tiles.imagery import expand

    try:
        q = Quarter.parse(quarter)
    except ConfigError:
        return {}
    out = {}
    for key in ("before", "after", "cloud_mask_before", "cloud_mask_after"):
        pattern = cfg.imagery.get(key) or ""
        if not pattern or "{band}" in pattern or pattern.lower().endswith(".json"):
            continue
        try:
            out[key] = expand(pattern, str(q), str(q.previous()), key)
        except Exception:  # noqa: BLE001 - a bad pattern is the plan stage's to report
            continue
    return out


def config_restart_stage(old: dict, new: dict) -> str | None:
    """The earliest stage whose results depend on a setting that differs between two
    configurations (``Config.as_dict()``), or None when no result depends on what changed."""
    stages = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section), new.get(section)
        if a == b:
            continue
        if section == "run":
            a, b = a or {}, b or {}
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    stages.append(RUN_KEY_STAGE.get(key, "plan"))
        else:
            stages.append(SECTION_STAGE.get(section, "plan"))
    stages = [s for s in stages if s]
    return min(stages, key=STAGES.index) if stages else None
