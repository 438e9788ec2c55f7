"""Resume: a run killed with SIGKILL at random moments and rerun ends where an uninterrupted one does.

The uninterrupted reference and the killed-and-resumed run are separate processes (`tianyan run`
through a subprocess) on the same small demo, each with its own workdir. Compared: the
attributes and geometry of changes.gpkg, the JCBH, every GeoPackage layer's attribute table and
every ledger cell inside every county package (zip timestamps, run ids and file hashes that
hold them are ignored), the registry and summary.json. The cheap rules around it (what a changed
setting or input reruns, leftovers, progress bars) are unit-tested below.
"""
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import shapely
from openpyxl import load_workbook

from pipeline.progress import Progress
from pipeline.rundir import RunDir
from pipeline.run import config_restart_stage

REPO = Path(__file__).resolve().parents[1]
QUARTER = "2026Q3"
SEED = 20261122
RANDOM_ROUNDS = 3


def tianyan_cmd() -> list[str]:
    """The installed console script when there is one, else the same entry point via -m."""
    script = Path(sys.executable).with_name("tianyan")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cli"]


def start_run(config: Path, workdir: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(tianyan_cmd() + ["-q", "run", "--config", str(config), "--quarter", QUARTER,
                                             "--workdir", str(workdir), "--workers", "1"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def log_events(workdir: Path) -> list[dict]:
    path = workdir / QUARTER / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def signature(e: dict) -> tuple:
    return (e["event"], e.get("stage"), e.get("tile"), e.get("county"))


PROGRESS = {"plan", "stage", "tile", "merge", "overlay", "batches", "package"}


def follow(proc: subprocess.Popen, workdir: Path, seen: int, target: tuple | None = None,
           timeout: float = 300.0) -> tuple[bool, list[tuple[tuple, float]]]:
    """Poll log.jsonl (every 20 ms) for the events after the first ``seen``; stop when the event
    ``target`` arrives (True) or the process ends (False). Returns the arrival time of each."""
    arrivals: list[tuple[tuple, float]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = proc.poll() is not None
        events = log_events(workdir)[seen:]
        for e in events[len(arrivals):]:
            arrivals.append((signature(e), time.monotonic()))
        if target is not None and any(sig == target for sig, _ in arrivals):
            return True, arrivals
        if done:
            return False, arrivals
        time.sleep(0.02)
    raise AssertionError("the run neither logged the awaited event nor ended")


def kill_group(proc: subprocess.Popen) -> bool:
    """SIGKILL the run and everything it started; True when it was still running."""
    alive = proc.poll() is None
    if alive:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    return alive


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The reference run, then a run killed at random moments and resumed until it finishes.

    A random moment: the reference's progress events (start, plan, each tile, each stage, each
    county package ...) cut the run into pieces of work; a kill picks a piece at random (seeded,
    one in each third of the run) and a random instant within its duration in the reference.
    """
    from pipeline.demo import make_demo

    root = tmp_path_factory.mktemp("resume")
    make_demo(root / "demo", width=400, height=400, tile_size=160)   # 3 x 3 tiles
    config = root / "demo" / "demo.toml"

    ref = root / "reference"
    t0 = time.monotonic()
    proc = start_run(config, ref)
    _, arrivals = follow(proc, ref, 0)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    reference_seconds = time.monotonic() - t0
    pieces = [(sig, arrivals[k + 1][1] - t) for k, (sig, t) in enumerate(arrivals[:-1])
              if sig[0] in PROGRESS | {"run_start"}]
    assert len(pieces) > 15, pieces

    killed = root / "killed"
    rng = random.Random(SEED)
    n = len(pieces)   # one random piece in each third of the run
    picks = [rng.randrange(k * n // RANDOM_ROUNDS, (k + 1) * n // RANDOM_ROUNDS) for k in range(RANDOM_ROUNDS)]
    rounds = []
    for k in range(RANDOM_ROUNDS + 1):
        logged = {signature(e) for e in log_events(killed)}
        if k < RANDOM_ROUNDS:   # a random piece not done yet, a random instant inside it
            todo = [p for p in pieces[picks[k]:] if p[0] not in logged]
            target, gap = todo[0] if todo else (None, 0.0)
            delay = rng.uniform(0.0, gap)
        else:                   # and once in the middle of the export: after a county's package
            todo = [p for p in pieces if p[0][0] == "package" and p[0] not in logged]
            target, gap = todo[0] if todo else (None, 0.0)
            delay = rng.uniform(0.0, 0.3)
        if target is None:
            continue
        seen = len(log_events(killed))
        proc = start_run(config, killed)
        reached, _ = follow(proc, killed, seen, target)
        if reached:
            time.sleep(delay)
        alive = kill_group(proc)
        interrupted = alive and not any(e["event"] == "run_end" for e in log_events(killed)[seen:])
        new = [e for e in log_events(killed)[seen:] if e["event"] in PROGRESS]
        rounds.append({"after": ":".join(str(v) for v in target if v), "delay": round(delay, 2),
                       "interrupted": interrupted,
                       "last_logged": ":".join(str(v) for v in signature(new[-1]) if v) if new else "-"})
    proc = start_run(config, killed)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    print(f"reference {reference_seconds:.1f} s; kills: {rounds}")
    return ref / QUARTER, killed / QUARTER, rounds


def test_the_kills_interrupted_the_run(runs):
    _, killed, rounds = runs
    assert sum(r["interrupted"] for r in rounds) >= 2, rounds
    events = [e["event"] for e in log_events(killed.parent)]
    # each interrupted kill left the lock file behind; the next run took it over and said so
    assert events.count("lock_takeover") >= sum(r["interrupted"] for r in rounds)
    assert all(s["status"] == "done"
               for s in json.loads((killed / "run.json").read_text(encoding="utf-8"))["stages"].values())
    assert not (killed.parent / ".lock").exists()
    assert "redo" not in events                   # nothing looked changed to the resumed runs


def _read_changes(path: Path) -> gpd.GeoDataFrame:
    gdf = pyogrio.read_dataframe(path, layer="changes")
    return gdf.sort_values("JCBH", kind="mergesort").reset_index(drop=True)


def test_changes_and_jcbh_are_the_same(runs):
    ref, killed, _ = runs
    a, b = _read_changes(ref / "changes.gpkg"), _read_changes(killed / "changes.gpkg")
    assert len(a) > 5
    assert list(a["JCBH"]) == list(b["JCBH"])
    pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"),
                                  check_exact=False, rtol=1e-9)
    assert shapely.equals_exact(a.geometry.to_numpy(), b.geometry.to_numpy(), tolerance=1e-6).all()


def _package_tables(zip_path: Path, tmp: Path) -> dict:
    """Every GeoPackage layer's attributes and every ledger cell of a package zip."""
    out = {}
    with zipfile.ZipFile(zip_path) as zf:
        out["names"] = sorted(zf.namelist())
        for name in out["names"]:
            if name.endswith(".gpkg"):
                local = tmp / f"{zip_path.stem}.gpkg"
                local.write_bytes(zf.read(name))
                for layer, _ in pyogrio.list_layers(local):
                    df = pyogrio.read_dataframe(local, layer=layer, read_geometry=False)
                    out[f"{name}:{layer}"] = df
                local.unlink()
            elif name.endswith(".xlsx"):
                wb = load_workbook(io.BytesIO(zf.read(name)), read_only=True)
                for ws in wb.worksheets:
                    out[f"{name}:{ws.title}"] = [list(r) for r in ws.iter_rows(values_only=True)]
                wb.close()
    return out


def test_packages_have_the_same_contents(runs, tmp_path):
    ref, killed, _ = runs
    names = sorted(p.name for p in (ref / "packages").glob("*.zip"))
    assert names and names == sorted(p.name for p in (killed / "packages").glob("*.zip"))
    assert not [p for p in (killed / "packages").iterdir() if p.name.startswith(".")], "leftovers"
    for name in names:
        a = _package_tables(ref / "packages" / name, tmp_path)
        b = _package_tables(killed / "packages" / name, tmp_path)
        assert a.keys() == b.keys() and a["names"] == b["names"], name
        assert any(k.endswith(":变化图斑") for k in a), name
        for key in a:
            if isinstance(a[key], pd.DataFrame):
                pd.testing.assert_frame_equal(a[key], b[key], check_exact=False, rtol=1e-9, obj=f"{name} {key}")
            else:
                assert a[key] == b[key], f"{name} {key}"


def test_registry_and_summary_are_the_same(runs):
    ref, killed, _ = runs
    a = pyogrio.read_dataframe(ref.parent / "registry.gpkg", read_geometry=False).drop(columns="RUNID")
    b = pyogrio.read_dataframe(killed.parent / "registry.gpkg", read_geometry=False).drop(columns="RUNID")
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9)
    sa = json.loads((ref / "summary.json").read_text(encoding="utf-8"))
    sb = json.loads((killed / "summary.json").read_text(encoding="utf-8"))
    for s in (sa, sb):
        s.pop("run_id", None)
    assert sa == sb
    assert sa["suppressed"] == []                 # one quarter: nothing earlier to repeat


# ---------------------------------------------------------------------------------------------
# the rules around resuming
def _cfg(**sections):
    base = {"run": {"name": "x", "workers": 0, "tile_size": 2048, "crs": "EPSG:4545"},
            "imagery": {"before": "a"}, "detect": {}, "layers": {"counties": {"path": "c"}},
            "priority": {}, "batches": {"max_per_batch": 25}, "export": {"formats": ["gpkg"]},
            "dask": {}, "registry": {"max_growth": 1.2}, "stats": {"illegal_ratio": 0.15}}
    for key, value in sections.items():
        base[key] = {**base[key], **value}
    return base


@pytest.mark.parametrize("change,stage", [
    ({"run": {"workers": 4}}, None),                       # results do not depend on it
    ({"stats": {"illegal_ratio": 0.2}}, None),
    ({"dask": {"scheduler": "tcp://x"}}, None),
    ({"run": {"name": "y"}}, "export"),
    ({"export": {"formats": ["gpkg", "kmz"]}}, "export"),
    ({"batches": {"max_per_batch": 10}}, "batches"),
    ({"registry": {"max_growth": 2.0}}, "overlay"),
    ({"priority": {"level1_min": 50}}, "overlay"),
    ({"layers": {"counties": {"path": "d"}}}, "overlay"),
    ({"detect": {"min_area_m2": 400}}, "plan"),
    ({"run": {"tile_size": 1024}}, "plan"),
    ({"imagery": {"before": "b"}, "batches": {"max_per_batch": 3}}, "plan"),   # the earliest wins
])
def test_a_changed_setting_reruns_from_the_first_stage_it_affects(change, stage):
    assert config_restart_stage(_cfg(), _cfg(**change)) == stage


def test_changed_or_new_inputs_rerun_from_plan_or_overlay(tmp_path):
    from pipeline.config import load_config
    from pipeline.run import _stage_to_redo, imagery_globs
    from pipeline.stages import _file_stamp

    (tmp_path / "img" / "2026Q2").mkdir(parents=True)
    (tmp_path / "img" / "2026Q3").mkdir(parents=True)
    before, after = tmp_path / "img/2026Q2/a.tif", tmp_path / "img/2026Q3/b.tif"
    layer = tmp_path / "xzq.gpkg"
    for p in (before, after, layer):
        p.write_bytes(b"x")
    cfg_path = tmp_path / "c.toml"
    cfg_path.write_text('[imagery]\nbefore = "img/{prev_quarter}/*.tif"\nafter = "img/{quarter}/*.tif"\n'
                        '[layers.counties]\npath = "xzq.gpkg"\n', encoding="utf-8")
    cfg = load_config(cfg_path)
    manifest = {"quarter": QUARTER, "config_hash": cfg.hash, "config": cfg.as_dict(),
                "inputs": {str(p): _file_stamp(str(p)) for p in (before, after, layer)},
                "imagery_globs": imagery_globs(cfg, QUARTER)}
    assert manifest["imagery_globs"] == {"before": [str(before)], "after": [str(after)]}
    assert _stage_to_redo(manifest, cfg) is None
    layer.write_bytes(b"xy")
    assert _stage_to_redo(manifest, cfg)[0] == "overlay"
    (tmp_path / "img/2026Q3/c.tif").write_bytes(b"x")           # a scene arrived late
    stage, reason = _stage_to_redo(manifest, cfg)
    assert stage == "plan" and "c.tif" in reason
    (tmp_path / "img/2026Q3/c.tif").unlink()
    before.unlink()                                               # a scene vanished
    stage, reason = _stage_to_redo(manifest, cfg)
    assert stage == "plan" and "a.tif" in reason


def test_leftovers_of_a_killed_run_are_removed_and_outputs_kept(tmp_path):
    rd = RunDir(tmp_path, QUARTER)
    rd.create()
    keep = [rd.path / "changes.gpkg", rd.tiles / "0_0.parquet", rd.packages / "450502_海城区_2026Q3.zip",
            rd.path / ".hidden_but_not_temp"]
    gone = [rd.path / ".changes.k2j3.tmp.gpkg", rd.tiles / ".0_1.abc.tmp.parquet",
            rd.packages / ".450503_银海区_2026Q3.x1.zip.tmp"]
    for p in keep + gone:
        p.write_bytes(b"x")
    staging = rd.packages / ".450503_q8"
    (staging / "影像").mkdir(parents=True)
    (staging / "影像" / "a.png").write_bytes(b"x")
    removed = rd.clean_leftovers()
    assert all(p.exists() for p in keep)
    assert not any(p.exists() for p in gone) and not staging.exists()
    assert len(removed) == 4


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_only_on_a_terminal():
    quiet = io.StringIO()
    p = Progress(stream=quiet)
    p.start("detect", 3)
    p.on_event("tile", {})
    p.close()
    assert not p.enabled and quiet.getvalue() == ""

    tty = _Tty()
    p = Progress(stream=tty, mininterval=0)
    assert p.enabled
    p.start("detect", 3)
    for _ in range(3):
        p.on_event("tile", {})
    p.on_event("package", {})            # another stage's unit: not counted here
    text = tty.getvalue()
    p.close()
    assert "detect tiles" in text and "3/3" in text and "4/3" not in text


def test_quiet_run_through_cli_draws_no_bar_and_logs_nothing(tmp_path):
    """-q: stderr carries only warnings and errors; a non-terminal never gets a bar."""
    from click.testing import CliRunner

    from cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text('[imagery]\nbefore = "img/{prev_quarter}/*.tif"\nafter = "img/{quarter}/*.tif"\n'
                   '[layers.counties]\npath = "x.gpkg"\n', encoding="utf-8")
    r = CliRunner().invoke(main, ["-q", "run", "--config", str(cfg), "--quarter", QUARTER,
                                  "--workdir", str(tmp_path / "w")])
    assert r.exit_code == 2
    assert "\r" not in r.output and "INFO" not in r.output and "stage plan" not in r.output
