"""The Dask executor on a 2-worker LocalCluster (processes=True): same contract as the local
executor, a killed worker's task reruns elsewhere, a task failing everywhere is reported, the
GDAL / Numba settings reach the workers, and a demo quarter gives the same outputs as locally.

The task functions below are module-level so that worker processes import them by name.
"""
import json
import logging
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from cli import main  # noqa: E402
from pipeline.cluster.executor import local_cluster  # noqa: E402
from pipeline.cluster.settings import dask_settings  # noqa: E402
from pipeline.executor import run_tasks  # noqa: E402
from tiles.errors import TianyanError  # noqa: E402

QUARTER = "2026Q3"


class _Cfg:
    """The two attributes of a Config that run_tasks reads."""

    def __init__(self, **dask):
        self.dask, self.path = dask, Path("test.toml")


# ------------------------------------------------------------------------ tasks run on workers
def square(x):
    return x * x


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x


def settings_seen(_):
    import numba
    import rasterio

    from pipeline.cluster.worker import _STATE

    with rasterio.Env():
        cachemax = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
    return {"pid": os.getpid(), "numba": numba.get_num_threads(), "cores": len(os.sched_getaffinity(0)),
            "malloc_relaxed": _STATE["malloc_relaxed"],
            "gdal_cachemax": cachemax, "env": {k: os.environ.get(k) for k in
                                              ("NUMBA_NUM_THREADS", "GDAL_DISABLE_READDIR_ON_OPEN",
                                               "GDAL_HTTP_TIMEOUT", "AWS_SECRET_ACCESS_KEY")}}


def die_first_time(task):
    """Kill this worker process on the first attempt; return both attempts' pids on the next."""
    marker, _ = task
    marker = Path(marker)
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return int(marker.read_text()), os.getpid()


def die_always(_):
    os.kill(os.getpid(), signal.SIGKILL)


def count_then_fail(task):
    folder, x = task
    Path(folder, f"attempt-{os.getpid()}-{len(os.listdir(folder))}").write_text("")
    raise OSError(f"unreadable block in item {x}")


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster():
    """One 2-process LocalCluster for the module; a task may kill 2 workers before it fails."""
    settings = dask_settings({"allowed_failures": 1, "dashboard": ":0", "gdal_cachemax_mb": 64})
    with local_cluster(settings, 2) as lc:
        yield lc.scheduler_address


def on(address, **dask):
    return {"executor": "dask", "scheduler": address, "cfg": _Cfg(**dask)}


# ------------------------------------------------------------------------------------- tests
def test_every_task_runs_once_with_the_local_contract(cluster):
    out = list(run_tasks(square, range(12), 2, **on(cluster)))
    assert sorted(item for item, _, _ in out) == list(range(12))
    assert all(err is None and res == item * item for item, res, err in out)


def test_no_items_starts_nothing():
    assert list(run_tasks(square, [], 2, executor="dask", scheduler="tcp://127.0.0.1:9")) == []


def test_an_exception_is_retried_then_reported_and_the_others_finish(cluster, tmp_path):
    out = {item: (res, err) for item, res, err in run_tasks(fail_on_three, range(6), 2, **on(cluster))}
    assert [out[i][0] for i in (0, 1, 2, 4, 5)] == [0, 1, 2, 4, 5]
    assert isinstance(out[3][1], ValueError) and "bad item 3" in str(out[3][1])
    # retries = 1: a raising task runs twice, then its error comes back as with the local executor
    (item, res, err), = run_tasks(count_then_fail, [(str(tmp_path), 7)], 1, **on(cluster, retries=1))
    assert res is None and isinstance(err, OSError) and "item 7" in str(err)
    assert len(list(tmp_path.glob("attempt-*"))) == 2


def test_worker_settings_reach_the_workers(cluster, monkeypatch):
    monkeypatch.setenv("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-workers")
    out = [res for _, res, err in run_tasks(settings_seen, range(8), 2,
                                           **on(cluster, gdal_cachemax_mb=64,
                                                env={"GDAL_HTTP_TIMEOUT": "30"}))]
    assert out and all(r["pid"] != os.getpid() for r in out)
    for r in out:
        # 2 worker processes on this machine: Numba threads x processes <= cores
        assert r["numba"] == max(1, r["cores"] // 2)
        assert r["env"]["NUMBA_NUM_THREADS"] == str(r["numba"])
        assert r["gdal_cachemax"] == 64 * 2**20      # GDAL's own block cache size, bytes
        assert r["env"]["GDAL_DISABLE_READDIR_ON_OPEN"] == "EMPTY_DIR"
        assert r["env"]["GDAL_HTTP_TIMEOUT"] == "30"
        assert r["env"]["AWS_SECRET_ACCESS_KEY"] is None
        if sys.platform.startswith("linux"):   # the nanny's MALLOC_TRIM_THRESHOLD_ is undone
            assert r["malloc_relaxed"]


def test_the_dashboard_address_is_logged(cluster, caplog):
    caplog.set_level(logging.INFO, logger="tianyan")
    list(run_tasks(square, [1], 1, **on(cluster)))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "dask: dashboard http://" in text and "/status" in text
    assert f"scheduler {cluster}" in text


def test_a_killed_workers_task_reruns_on_another_worker(cluster, tmp_path):
    tasks = [(str(tmp_path / "marker"), 0)]
    (item, res, err), = run_tasks(die_first_time, tasks, 2, **on(cluster))
    assert err is None, err
    first_pid, second_pid = res
    assert first_pid != second_pid          # the first process is gone; another one finished it


def test_a_task_that_kills_every_worker_is_reported_failed(cluster):
    (item, res, err), = run_tasks(die_always, ["x"], 2, **on(cluster))
    assert res is None and isinstance(err, TianyanError)
    assert "died while running it" in str(err) and "allowed" in str(err)


def test_a_scheduler_file_is_followed_and_a_missing_one_named(cluster, tmp_path):
    sched = tmp_path / "scheduler.json"
    sched.write_text(json.dumps({"type": "Scheduler", "address": cluster}))
    out = list(run_tasks(square, [2, 3], 1, executor="dask", scheduler=str(sched), cfg=_Cfg()))
    assert sorted(res for _, res, _ in out) == [4, 9]
    with pytest.raises(TianyanError, match=r"missing\.json: scheduler file not found within 0\.5 s"):
        list(run_tasks(square, [1], 1, executor="dask", scheduler=str(tmp_path / "missing.json"),
                       cfg=_Cfg(connect_timeout_s=0.5)))


def test_an_unreachable_scheduler_is_one_clear_error():
    with pytest.raises(TianyanError, match=r"tcp://127\.0\.0\.1:9: no Dask scheduler answered"):
        list(run_tasks(square, [1], 1, executor="dask", scheduler="tcp://127.0.0.1:9",
                       cfg=_Cfg(connect_timeout_s=1)))


# ------------------------------------------------------------------- a demo quarter, CLI to CLI
@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The small demo run by the local executor in this process (its Numba threads: all cores;
    the Dask workers below have cores // 2 each, so equal outputs also show thread-independence)."""
    from pipeline.demo import make_demo

    out = tmp_path_factory.mktemp("demo_dask")
    make_demo(out, width=400, height=400, tile_size=256)
    toml = out / "demo.toml"
    # county packages only as GeoPackage: the other formats are built from the same changes.gpkg
    toml.write_text(re.sub(r"(?m)^formats = \[.*\]$", 'formats = ["gpkg"]', toml.read_text(encoding="utf-8")),
                    encoding="utf-8")
    r = CliRunner().invoke(main, ["run", "--config", str(toml), "--quarter", QUARTER,
                                  "--workers", "1", "--workdir", str(out / "local")])
    assert r.exit_code == 0, r.output
    return out


def _changes(run: Path) -> pd.DataFrame:
    gdf = gpd.read_file(run / "changes.gpkg", layer="changes").sort_values("JCBH").reset_index(drop=True)
    return gdf


def _copy_planned_run(src: Path, dst: Path) -> None:
    """The run directory after plan: detect and every later stage run again from it."""
    shutil.copytree(src, dst)
    shutil.rmtree(dst / "tiles")


def test_dask_localcluster_gives_the_same_outputs_as_local(local_run):
    out = local_run
    _copy_planned_run(out / "local" / QUARTER, out / "dask" / QUARTER)
    r = CliRunner().invoke(main, ["run", "--config", str(out / "demo.toml"), "--quarter", QUARTER,
                                  "--workdir", str(out / "dask"), "--executor", "dask", "--workers", "2",
                                  "--from", "detect"])
    assert r.exit_code == 0, r.output
    log = [json.loads(line) for line in (out / "dask" / QUARTER / "log.jsonl").read_text().splitlines()]
    last = max(i for i, e in enumerate(log) if e["event"] == "run_start")
    plan = json.loads((out / "local" / QUARTER / "plan.json").read_text())
    assert sorted(e["tile"] for e in log[last:] if e["event"] == "tile") == sorted(t["id"] for t in plan["tiles"])

    a, b = _changes(out / "local" / QUARTER), _changes(out / "dask" / QUARTER)
    assert len(a) > 0 and list(a.columns) == list(b.columns)
    assert list(a["JCBH"]) == list(b["JCBH"])
    assert a.geometry.geom_equals_exact(b.geometry, tolerance=1e-6).all()
    for col in a.columns.drop("geometry"):
        if pd.api.types.is_float_dtype(a[col]):
            np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9, err_msg=col)
        else:
            assert a[col].fillna("").astype(str).tolist() == b[col].fillna("").astype(str).tolist(), col
    # the same part files, tile by tile
    for part in sorted((out / "local" / QUARTER / "tiles").glob("*.parquet")):
        pa, pb = gpd.read_parquet(part), gpd.read_parquet(out / "dask" / QUARTER / "tiles" / part.name)
        assert len(pa) == len(pb), part.name
        assert pa.geometry.geom_equals_exact(pb.geometry, tolerance=1e-6).all(), part.name


def test_a_tile_failing_everywhere_is_listed_and_exit_3(local_run, cluster):
    out = local_run
    run = out / "broken" / QUARTER
    _copy_planned_run(out / "local" / QUARTER, run)
    plan = json.loads((run / "plan.json").read_text())
    bad = plan["tiles"][0]
    bad["halo"] = [bad["halo"][0], bad["halo"][1], -5, -5]   # a window no reader can read
    (run / "plan.json").write_text(json.dumps(plan))
    r = CliRunner().invoke(main, ["run", "--config", str(out / "demo.toml"), "--quarter", QUARTER,
                                  "--workdir", str(out / "broken"), "--scheduler", cluster, "--from", "detect"])
    assert r.exit_code == 3, r.output
    assert f"failed tile {bad['id']}" in r.output
    assert not (run / "tiles" / f"{bad['id']}.parquet").exists()
    others = [t["id"] for t in plan["tiles"][1:]]
    assert all((run / "tiles" / f"{t}.parquet").exists() for t in others)
    manifest = json.loads((run / "run.json").read_text())
    assert list(manifest["failed_tiles"]) == [bad["id"]]
    assert (run / "changes.gpkg").exists()      # the run went on without the failed tile
