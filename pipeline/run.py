"""One quarterly run: lock the workdir, run the stages in order, keep the manifest current.

A stage is skipped when run.json says it finished and nothing asks for it again (``from_stage``,
``fresh``); the detect stage also skips tiles whose part file exists, so a killed run resumes.
"""
from __future__ import annotations

import logging
import shutil
import time
import uuid

from pipeline.config import Config
from pipeline.quarter import Quarter
from pipeline.rundir import RunDir, WorkdirLock, now_iso
from pipeline.stages import STAGE_FUNCS, STAGES, Outcome
from pipeline.versions import versions
from tiles.errors import ConfigError

log = logging.getLogger("tianyan")


def run_quarter(cfg: Config, quarter: Quarter, *, from_stage: str | None = None, fresh: bool = False,
                workers: int | None = None, workdir: str | None = None) -> tuple[RunDir, Outcome]:
    """Run (or resume) the quarter; return the run directory and what failed."""
    if from_stage and from_stage not in STAGES:
        raise ConfigError(f"--from {from_stage!r}: unknown stage (one of {', '.join(STAGES)})")
    rd = RunDir(workdir or cfg.workdir, str(quarter))
    with WorkdirLock(rd.workdir):
        if fresh and rd.path.exists():
            shutil.rmtree(rd.path)
        rd.create()
        manifest = rd.load()
        if manifest.get("config_hash") not in (None, cfg.hash) and not from_stage:
            log.warning("configuration changed since the last run of %s: starting over from plan", quarter)
            from_stage = "plan"
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
        rd.event("run_start", quarter=str(quarter), from_stage=from_stage, fresh=fresh)
        ran = False  # once a stage runs, every later stage runs again on its new output
        for name in STAGES:
            if status.get(name, {}).get("status") == "done" and not ran:
                continue
            ran = True
            t0 = time.perf_counter()
            status[name] = {"status": "running", "started": now_iso()}
            rd.save(manifest)
            log.info("stage %s ...", name)
            kwargs = {"workers": workers} if name == "detect" else {}
            STAGE_FUNCS[name](cfg, quarter, rd, manifest, outcome, **kwargs)
            seconds = round(time.perf_counter() - t0, 2)
            # A detect stage with failed tiles is not done: a rerun redoes only those tiles.
            state = "failed" if name == "detect" and outcome.failed_tiles else "done"
            status[name] = {"status": state, "started": status[name]["started"],
                            "finished": now_iso(), "seconds": seconds}
            rd.save(manifest)
            rd.event("stage", stage=name, status=state, seconds=seconds)
            log.info("stage %s %s in %.1f s", name, state, seconds)
        rd.event("run_end", failed_tiles=len(outcome.failed_tiles),
                 failed_counties=len(outcome.failed_counties))
    return rd, outcome
